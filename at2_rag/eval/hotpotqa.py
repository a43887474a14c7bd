"""Reader for HotpotQA rows (distractor setting, jsonl): used by the demo, calibration and benchmarks."""

from __future__ import annotations

import html
import json
from pathlib import Path

from pydantic import BaseModel, Field

from ..errors import InvalidInputError
from ..sources import Source


class HotpotExample(BaseModel):
    id: str
    question: str
    answer: str
    sources: list[Source] = Field(description="The ten passages, each with HotpotQA's own sentence spans.")
    gold: list[int] = Field(description="Indices of the passages holding supporting facts.")
    supporting: list[tuple[int, int]] = Field(description="Supporting facts: (passage index, sentence index).")

    @property
    def answer_sentence(self) -> str:
        """The gold answer written as a short sentence: a stand-in for a correct answer from a strong LLM."""
        return f"The answer is {self.answer.strip()}."


def _passage(sentences: list[str]) -> tuple[str, list[tuple[int, int]], dict[int, int]]:
    """Joined text, the span of each non-blank sentence in it, and HotpotQA sentence id -> span index."""
    raw = "".join(sentences)
    lead = len(raw) - len(raw.lstrip())
    text = raw.strip()
    spans, ids, pos = [], {}, -lead
    for sent_id, sentence in enumerate(sentences):
        a = pos + len(sentence) - len(sentence.lstrip())
        b = pos + len(sentence.rstrip())
        pos += len(sentence)
        a, b = max(a, 0), min(b, len(text))
        if b > a:
            ids[sent_id] = len(spans)
            spans.append((a, b))
    return text, spans, ids


def load_hotpotqa(path: str | Path, limit: int | None = None) -> list[HotpotExample]:
    """Read rows: each passage becomes a Source (title + joined sentences, with HotpotQA's sentence spans);
    gold = passages in supporting_facts; supporting = the supporting sentences themselves.

    A line that is not valid UTF-8 JSON with the HotpotQA keys raises ``InvalidInputError`` naming the file and line.
    """
    examples = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                examples.append(_example(json.loads(raw.decode("utf-8"))))
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                reason = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
                raise InvalidInputError(
                    f"{path}:{number}: not a HotpotQA row ({type(exc).__name__}: {reason})") from None
            if limit is not None and len(examples) >= limit:
                break
    return examples


def _example(row: dict) -> HotpotExample:
    facts = {(fact["title"], fact["sent_id"]) for fact in row.get("supporting_facts", [])}
    sources, supporting = [], []
    for i, p in enumerate(row["context"]):
        text, spans, ids = _passage(p["sentences"])
        # titles come HTML-escaped in the dump ("Stone Barns Center for Food &amp; Agriculture")
        sources.append(Source(id=f"{row['id']}:{i}", title=html.unescape(p["title"]), text=text,
                              sentences=spans, metadata={"title": p["title"]}))
        supporting += [(i, ids[s]) for title, s in sorted(facts) if title == p["title"] and s in ids]
    gold = sorted({i for i, _ in supporting})
    return HotpotExample(id=row["id"], question=row["question"].strip(), answer=row["answer"], sources=sources,
                         gold=gold, supporting=supporting)

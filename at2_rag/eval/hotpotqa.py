"""Reader for HotpotQA rows (distractor setting, jsonl): used by the demo, calibration and benchmarks."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from ..errors import InvalidInputError
from ..evidence import components, zscore
from ..passages import Passage


class HotpotExample(BaseModel):
    id: str
    question: str
    answer: str
    passages: list[Passage] = Field(description="The ten passages, each with HotpotQA's own sentence spans.")
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
    """Read rows: each passage becomes a Passage (title + joined sentences, with HotpotQA's sentence spans);
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
    passages, supporting = [], []
    for i, p in enumerate(row["context"]):
        text, spans, ids = _passage(p["sentences"])
        # titles come HTML-escaped in the dump ("Stone Barns Center for Food &amp; Agriculture")
        passages.append(Passage(id=f"{row['id']}:{i}", title=html.unescape(p["title"]), text=text,
                              sentences=spans, metadata={"title": p["title"]}))
        supporting += [(i, ids[s]) for title, s in sorted(facts) if title == p["title"] and s in ids]
    gold = sorted({i for i, _ in supporting})
    return HotpotExample(id=row["id"], question=row["question"].strip(), answer=row["answer"], passages=passages,
                         gold=gold, supporting=supporting)


# ---- evidence components and supporting-fact labels of a row (shared by calibration and the citation bench) --

def titled_sentences(example_sources, sentences) -> list[str]:
    """"Title: sentence" for each source sentence (questions name the entities that titles carry)."""
    return [f"{example_sources[i].title}: {example_sources[i].text[a:b]}" if example_sources[i].title
            else example_sources[i].text[a:b] for i, a, b in sentences]


def record_components(record: dict, example: HotpotExample, passages: Sequence[int] | None = None
                      ) -> dict[str, np.ndarray]:
    """Every evidence component for a record (embedding similarities come from the record), over all source
    sentences or those of ``passages`` only."""
    passages = range(len(example.passages)) if passages is None else passages
    columns = sentence_columns(example, passages)
    sentences = [(i, a, b) for i in passages for a, b in example.passages[i].sentence_spans()]
    values = components(example.question, record["targets"], titled_sentences(example.passages, sentences),
                        np.asarray(record["at2_sentence"])[:, columns])
    values["emb_qa"] = np.asarray(record["emb_qa"])[:, columns]
    values["emb_qa_z"] = zscore(values["emb_qa"])
    return values


def _offsets(example: HotpotExample) -> np.ndarray:
    """Index of each passage's first sentence among all of the row's sentences (and the total at the end)."""
    return np.cumsum([0] + [len(s.sentence_spans()) for s in example.passages])


def sentence_columns(example: HotpotExample, passages: Sequence[int]) -> np.ndarray:
    offsets = _offsets(example)
    return np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in passages]).astype(int)


def supporting_labels(example: HotpotExample, n_targets: int) -> np.ndarray:
    """``[targets, source sentences]`` 1 where the sentence is a supporting fact of the row."""
    offsets = _offsets(example)
    labels = np.zeros(int(offsets[-1]))
    for i, j in example.supporting:
        labels[offsets[i] + j] = 1
    return np.tile(labels, (n_targets, 1))


def cached_records(examples: Sequence[HotpotExample], work_dir: str | Path, kinds: Sequence[str], make,
                   desc: str, progress: bool = True) -> dict[str, list[dict]]:
    """Records per kind, one JSON file per (kind, row) under ``work_dir``, made by ``make(example, kind)`` when
    the file is missing (existing files are reused: a run resumes where it stopped)."""
    from tqdm.auto import tqdm

    out: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for kind in kinds:
        folder = Path(work_dir) / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i, ex in enumerate(tqdm(examples, desc=f"{desc} ({kind})", disable=not progress)):
            path = folder / f"{i:05d}-{ex.id}.json"
            if not path.is_file():
                path.write_text(json.dumps(make(ex, kind)))
            out[kind].append(json.loads(path.read_text()))
    return out


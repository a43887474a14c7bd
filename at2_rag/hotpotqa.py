"""Reader for HotpotQA rows (distractor setting, jsonl): used by the demo, training and benchmarks."""

from __future__ import annotations

import html
import json
from pathlib import Path

from pydantic import BaseModel

from .sources import Source


class HotpotExample(BaseModel):
    id: str
    question: str
    answer: str
    sources: list[Source]
    gold: list[int]


def load_hotpotqa(path: str | Path, limit: int | None = None) -> list[HotpotExample]:
    """Read rows: each passage becomes a Source (title + joined sentences); gold = passages in supporting_facts."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            gold_titles = {fact["title"] for fact in row.get("supporting_facts", [])}
            sources = [  # titles come HTML-escaped in the dump ("Stone Barns Center for Food &amp; Agriculture")
                Source(id=f"{row['id']}:{i}", title=html.unescape(p["title"]), text="".join(p["sentences"]).strip(),
                       metadata={"title": p["title"]})
                for i, p in enumerate(row["context"])
            ]
            gold = [i for i, p in enumerate(row["context"]) if p["title"] in gold_titles]
            examples.append(HotpotExample(id=row["id"], question=row["question"].strip(), answer=row["answer"],
                                          sources=sources, gold=gold))
            if limit is not None and len(examples) >= limit:
                break
    return examples

"""`at2-rag demo`: the main job on bundled data. A stand-in for the user's LLM answers; at2-rag reads that
answer in one pass, prunes the retrieved passages (AT2 fused with the retriever), cites every answer sentence
with the supporting sentence, and marks what no passage supports. Then the fully local mode: the attributor
drafts the answer itself. Tables go to stdout, progress to stderr, the citation view to an HTML page.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from .attributor import AT2Attributor
from .evidence import tfidf_similarity
from .results import CitedResponse
from .passages import Passage
from .view import cited_html, page

STAND_IN = "stand-in LLM"
INVENTED = "It was carved from a single block of green jade."


class DemoItem(BaseModel):
    label: str
    question: str
    passages: list[Passage]
    answer: str | None
    gold: list[int]
    kind: str


def retriever(passages: Sequence[Passage]):
    """The retriever's score of each passage for a question: MiniLM when it is installed (offline), else TF-IDF."""
    try:
        from .embeddings import minilm_embedder, question_similarity

        embed = minilm_embedder()
        return "MiniLM", lambda q, ps: question_similarity(embed, q, [f"{p.title}: {p.text}" for p in ps])
    except ImportError:
        return "TF-IDF", lambda q, ps: tfidf_similarity([q], [f"{p.title}: {p.text}" for p in ps])[0]


def hotpot_items(examples) -> list[DemoItem]:
    """HotpotQA rows answered by a stand-in: the gold answer as a sentence plus one supporting-fact sentence."""
    items = []
    for ex in examples:
        i, j = ex.supporting[0]
        a, b = ex.passages[i].sentence_spans()[j]
        fact = ex.passages[i].text[a:b].strip()
        items.append(DemoItem(label=f"HotpotQA {ex.id}", question=ex.question, passages=ex.passages,
                              answer=f"{ex.answer_sentence} {fact}", gold=ex.gold, kind="hotpotqa"))
    return items


def rag_items(rag_dir: Path, retrieve, k: int = 4) -> list[DemoItem]:
    """The shared RAG corpus: each question's retrieved top-k paragraphs, its capable-LLM answer, and the first
    answer again with an invented sentence appended (abstention)."""
    corpus = [json.loads(line) for line in (rag_dir / "corpus.jsonl").read_text().splitlines() if line.strip()]
    everything = [Passage(id=str(n), title=row["title"], text=row["text"]) for n, row in enumerate(corpus)]
    items = []
    for row in (json.loads(line) for line in (rag_dir / "questions.jsonl").read_text().splitlines() if line.strip()):
        scores = np.asarray(retrieve(row["question"], everything))
        top = sorted(np.argsort(-scores, kind="stable")[:k].tolist())
        passages = [everything[i] for i in top]
        gold = [n for n, p in enumerate(passages) if p.title in row["gold_titles"]]
        items.append(DemoItem(label="shared RAG corpus", question=row["question"], passages=passages,
                              answer=row["answer"], gold=gold, kind="rag"))
    if items:
        first = items[0]
        items.append(first.model_copy(update={"label": "shared RAG corpus, one invented sentence",
                                              "answer": f"{first.answer} {INVENTED}"}))
    return items


def _clip(text: str, width: int) -> str:
    return textwrap.shorten(" ".join(text.split()), width, placeholder="...")


def table(item: DemoItem, cited: CitedResponse, kept: list[int], ranking: list[float], retriever_scores,
          retriever_name: str, drafter: str, seconds: float) -> str:
    """The compact terminal view of one question."""
    att = cited.attribution
    at2_rank = {i: r + 1 for r, i in enumerate(np.argsort(-np.asarray(att.scores), kind="stable"))}
    ret_rank = {i: r + 1 for r, i in enumerate(np.argsort(-np.asarray(retriever_scores), kind="stable"))}
    lines = [f"Q: {item.question}   [{item.label}; answer by {drafter}]",
             f"  {'':4} {'fused':>5} {'AT2':>4} {retriever_name[:6]:>6}  passage"]
    for i in sorted(range(len(att.passages)), key=lambda k: -ranking[k]):
        mark = "kept" if i in kept else "    "
        gold = " (gold)" if i in item.gold else ""
        fused = sorted(range(len(ranking)), key=lambda k: -ranking[k]).index(i) + 1
        lines.append(f"  {mark:4} {fused:>5} {at2_rank[i]:>4} {ret_rank[i]:>6}  [{i + 1}] {att.passages[i].title}{gold}")
    lines.append(f"  {'support':>7}  answer sentence -> citation")
    for c in cited.citations:
        if c.supported and c.passages:
            best = c.passages[0]
            cite = f"[{best.index + 1}] \"{_clip(best.quote, 70)}\""
        else:
            cite = "UNSUPPORTED"
        lines.append(f"  {c.support:>7.2f}  {_clip(c.sentence, 60)}")
        lines.append(f"  {'':>7}    -> {cite}")
    lines.append(f"  time {seconds:.1f} s (one pass over {len(att.passages)} passages, "
                 f"{att.timings.get('forward_s', att.timings.get('generate_s', 0.0)):.1f} s of it the model)")
    return "\n".join(lines)


def run(attributor: AT2Attributor, items: Sequence[DemoItem], retrieve, retriever_name: str, top_k: int | None,
        local: DemoItem | None, html_out: Path) -> list[dict]:
    """Attribute, prune and cite every item (and the local-mode item), print tables, write the page."""
    fragments, summary = [], []
    jobs = [(item, item.answer, STAND_IN) for item in items]
    if local is not None:
        jobs.append((local.model_copy(update={"label": "FULLY LOCAL MODE: the attributor drafts"}), None,
                     f"the attributor ({attributor.lm.model_id})"))
    for n, (item, answer, drafter) in enumerate(jobs, 1):
        print(f"[{n}/{len(jobs)}] {item.question}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        scores = np.asarray(retrieve(item.question, item.passages), dtype=float).tolist()
        attribution = attributor.attribute(item.question, item.passages, response=answer)
        kind = "llm" if answer is not None else "attributor"
        adaptive = top_k is None and attributor.keep_rule is not None
        pruned = attributor.pipeline.prune(attribution, top_n=None if adaptive else min(top_k or 2, len(item.passages)),
                                           threshold="auto" if adaptive else None, retriever_scores=scores,
                                           drafter=kind)
        cited = attributor.pipeline.cite(attribution)
        compressed = attributor.pipeline.compress(attribution, "auto", scores, kind) if adaptive else None
        seconds = time.perf_counter() - start
        print(table(item, cited, pruned.indices, pruned.ranking, scores, retriever_name, drafter, seconds), flush=True)
        if compressed is not None:
            print(f"  compressed (budget auto): {compressed.tokens_before} -> {compressed.tokens_after} tokens, "
                  f"{len(compressed.kept)} of {len(compressed.ranking)} sentences kept (struck through in the view)",
                  flush=True)
        print(flush=True)
        fragments.append(cited_html(cited, kept=pruned.indices, ranking=pruned.ranking, retriever_scores=scores,
                                    title=f"{item.question} — {item.label}; answer by {drafter}",
                                    compressed=compressed))
        summary.append({"question": item.question, "label": item.label, "kept": pruned.indices, "gold": item.gold,
                        "cited": sorted({s.index for c in cited.citations for s in c.passages}),
                        "unsupported": cited.unsupported, "seconds": seconds,
                        "tokens": None if compressed is None else [compressed.tokens_before, compressed.tokens_after]})
    html_out.parent.mkdir(parents=True, exist_ok=True)
    html_out.write_text(page(fragments, "at2-rag demo: your LLM answers, at2-rag prunes and cites"), encoding="utf-8")
    print(f"citation view: {html_out}")
    return summary

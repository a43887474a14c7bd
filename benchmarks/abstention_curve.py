"""Top-sentence precision of an evidence model against its abstention threshold, from `at2-rag lab calibrate` records.

For each records directory (one per sentence θ), the evidence model is fit exactly as `at2-rag lab calibrate` fits
it; then every train response sentence's top evidence is ranked by probability and the hit rate (top sentence is
a supporting fact) is printed over the top n sentences, pooled and per drafter kind, with the threshold the
calibration would choose. It shows how much margin the 80% precision target has.

    python benchmarks/abstention_curve.py runs/calibrate runs/calibrate-new --json runs/abstention_curve.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from at2_rag.fit.calibrate import (
    EVIDENCE_SETS,
    KINDS,
    evidence_inputs,
    fit_on_rows,
    top_evidence,
)
from at2_rag.eval.hotpotqa import load_hotpotqa
from at2_rag.fit.calibrate import abstention_threshold

DEPTHS = (10, 20, 40, 80, 120, 160)


def _records(folder: Path, n_rows: int) -> dict[str, list[dict]]:
    out = {kind: [json.loads(p.read_text()) for p in sorted((folder / kind).glob("*.json"))] for kind in KINDS}
    short = {kind: len(r) for kind, r in out.items() if len(r) != n_rows}
    if short:
        raise SystemExit(f"{folder}: expected {n_rows} records per kind, found {short}")
    return out


def curve(folder: Path, examples, model_name: str, precision: float) -> dict:
    """Threshold and cumulative hit rate at each depth of the top-probability ranking, pooled and per kind."""
    records = _records(folder, len(examples))
    comps, labels, subs = evidence_inputs(records, examples)
    model = fit_on_rows(model_name, EVIDENCE_SETS[model_name], comps["llm"], labels["llm"], subs["llm"],
                        range(len(examples)))
    per_kind = {kind: top_evidence(model, comps[kind], labels[kind]) for kind in KINDS}
    tops = np.concatenate([t for t, _ in per_kind.values()])
    hits = np.concatenate([h for _, h in per_kind.values()])
    kinds = np.concatenate([[kind] * len(t) for kind, (t, _) in per_kind.items()])
    order = np.argsort(-tops, kind="stable")
    cumulative = np.cumsum(hits[order]) / np.arange(1, len(order) + 1)
    return {
        "records": str(folder), "model": model_name, "n_sentences": len(tops),
        "threshold": abstention_threshold(tops, hits, precision),
        "hit_rate": {"pooled": float(hits.mean()), **{k: float(hits[kinds == k].mean()) for k in KINDS}},
        "n_per_kind": {k: int((kinds == k).sum()) for k in KINDS},
        "precision_at_depth": {str(n): {"precision": float(cumulative[n - 1]), "probability": float(tops[order][n - 1])}
                               for n in DEPTHS if n <= len(order)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="`at2-rag lab calibrate --work-dir` folders")
    parser.add_argument("--data", default="../shared/data/hotpotqa/train.jsonl", help="the rows the records cover")
    parser.add_argument("--limit", type=int, default=110, help="train rows the records cover")
    parser.add_argument("--model", default="hybrid", choices=sorted(EVIDENCE_SETS))
    parser.add_argument("--precision", type=float, default=0.8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    examples = load_hotpotqa(args.data, args.limit)
    results = [curve(folder, examples, args.model, args.precision) for folder in args.records]
    depths = [n for n in DEPTHS if str(n) in results[0]["precision_at_depth"]]
    print(f"{args.model} evidence, top-sentence precision over the top n train response sentences "
          f"(threshold for {args.precision:.0%} precision)\n")
    print("| records | threshold | hit rate pooled / " + " / ".join(KINDS) + " | "
          + " | ".join(f"top {n}" for n in depths) + " |")
    print("|---" * (len(depths) + 3) + "|")
    for r in results:
        rates = " / ".join(f"{r['hit_rate'][k]:.2f}" for k in ("pooled", *KINDS))
        cells = " | ".join(f"{r['precision_at_depth'][str(n)]['precision']:.2f} "
                           f"(p ≥ {r['precision_at_depth'][str(n)]['probability']:.3f})" for n in depths)
        print(f"| {r['records']} | {r['threshold']:.4f} | {rates} | {cells} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"precision_target": args.precision, "results": results}, indent=2))


if __name__ == "__main__":
    main()

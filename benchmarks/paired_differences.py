"""Markdown tables from an `at2-rag lab evaluate --json` result: every scorer side by side, then paired differences
(one scorer minus each other on the same examples, 95% bootstrap over examples) and win/tie/loss counts.

    python benchmarks/paired_differences.py docs/results/evaluate_sentence.json --scorer "at2[...]"
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from at2_rag.eval.metrics import bootstrap_ci


def _metric(record: dict, name: str) -> float:
    return record["lds"] if name == "lds" else record["top_k_drop"][name]


def tables(result: dict, scorer: str) -> str:
    ks = list(next(iter(result["scorers"].values()))["top_k_drop"])
    metrics = ["lds", *ks]
    records = result["records"]
    base_seconds = result["scorers"][scorer]["seconds_per_example"]
    lines = [f"n = {result['n_examples']} examples, {result['level']} passages ({result['mean_units']:.1f} per "
             f"example), {result['responses']} responses, {result['n_lds_masks']} LDS masks", "",
             "| scorer | LDS [95% CI] | " + " | ".join(f"top-{k} drop [95% CI]" for k in ks)
             + " | s / example | time vs " + scorer + " |", "|---" * (len(ks) + 4) + "|"]
    for name, s in result["scorers"].items():
        cells = [f"{s['lds']:.3f} [{s['lds_ci95'][0]:.3f}, {s['lds_ci95'][1]:.3f}]"]
        cells += [f"{s['top_k_drop'][k]:.3f} [{s['top_k_drop_ci95'][k][0]:.3f}, {s['top_k_drop_ci95'][k][1]:.3f}]"
                  for k in ks]
        ratio = s["seconds_per_example"] / base_seconds if base_seconds else float("nan")
        times = f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['seconds_per_example']:.4g} | {times} |")
    lines += ["", f"Paired differences, {scorer} minus each scorer on the same examples (95% bootstrap); "
              "examples where it is higher / equal / lower:", "",
              "| vs | " + " | ".join("LDS" if m == "lds" else f"top-{m} drop" for m in metrics) + " |",
              "|---" * (len(metrics) + 1) + "|"]
    for name in result["scorers"]:
        if name == scorer:
            continue
        cells = []
        for m in metrics:
            diff = np.array([_metric(r[scorer], m) - _metric(r[name], m) for r in records])
            lo, hi = bootstrap_ci(diff)
            wins = f"{int((diff > 1e-9).sum())}/{int((np.abs(diff) <= 1e-9).sum())}/{int((diff < -1e-9).sum())}"
            cells.append(f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] ({wins})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", help="JSON written by at2-rag lab evaluate --json")
    parser.add_argument("--scorer", default="at2", help="the scorer compared with every other one")
    args = parser.parse_args(argv)
    with open(args.result) as f:
        print(tables(json.load(f), args.scorer))


if __name__ == "__main__":
    main()

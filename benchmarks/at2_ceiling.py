"""How good can any single θ be? AT2's LDS with the shipped coefficients against θ fitted on the evaluated rows.

Reads an `at2-rag lab evaluate --work-dir` directory (ablations cached per example), regenerates each row's
features (one generation per row) and reports LDS on the same 32 masks for:
  shipped   - the coefficients AT2 uses (trained on the train split);
  cross-fit - θ fitted on the other half of these rows (2 folds): what more same-distribution data buys;
  in-sample - θ fitted on all of these rows, masks included: an optimistic ceiling for a head-linear surrogate;
  esm-N     - the per-example LASSO from the evaluation records, for reference.
The fitted θ are diagnostics only; they are never shipped (they see validation rows).

    python benchmarks/at2_ceiling.py --work-dir runs/evaluate40 --limit 40 --json runs/at2_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from at2_rag import AT2Attributor
from at2_rag.ablation import random_masks
from at2_rag.eval.hotpotqa import load_hotpotqa
from at2_rag.eval.metrics import lds
from at2_rag.fit.theta import fit_theta


def load_rows(attributor: AT2Attributor, data: Path, limit: int, work_dir: Path, n_lds_masks: int) -> list[dict]:
    rows = []
    for i, ex in enumerate(load_hotpotqa(data, limit)):
        cached = work_dir / f"{i:05d}-{ex.id}" / "ablations.npz"
        if not cached.is_file():
            continue
        job = attributor.pipeline.jobs([ex.question], [ex.passages])[0]
        with np.load(cached, allow_pickle=False) as z:
            if str(z["response"]) != job.response:
                raise SystemExit(f"{cached}: cached response differs from this model's; wrong --work-dir or model")
            lookup = {m.tobytes(): o for m, o in zip(z["masks"], z["outputs"])}
        masks = random_masks(len(ex.passages), n_lds_masks, 0.5, seed=10_000 + i)
        outputs = np.stack([lookup[m.tobytes()] for m in masks])
        records = {p.stem: json.loads(p.read_text()) for p in cached.parent.glob("*.json")}
        rows.append({"job": job, "item": {"features": job.features.numpy(), "masks": masks, "outputs": outputs},
                     "records": records})
    return rows


def mean_lds(rows: list[dict], theta: torch.Tensor) -> float:
    return float(np.mean([lds(r["job"], (r["job"].features @ theta).numpy(), r["item"]["masks"],
                              r["item"]["outputs"]) for r in rows]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/evaluate40")
    parser.add_argument("--data", default="../shared/data/hotpotqa/validation.jsonl")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--model")
    parser.add_argument("--coefficients")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--n-lds-masks", type=int, default=32)
    parser.add_argument("--json", default="runs/at2_ceiling.json")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    attributor = AT2Attributor.from_pretrained(args.model, args.coefficients, max_new_tokens=32)
    rows = load_rows(attributor, Path(args.data), args.limit, Path(args.work_dir), args.n_lds_masks)
    if len(rows) < 4:
        raise SystemExit(f"only {len(rows)} evaluated rows in {args.work_dir}; run `at2-rag lab evaluate --work-dir` first")
    items = [r["item"] for r in rows]
    results = {"shipped": mean_lds(rows, attributor.scorer.coefficients.theta)}
    half = len(rows) // 2
    folds = [(rows[:half], items[half:]), (rows[half:], items[:half])]
    cross = [mean_lds(test, fit_theta(train_items, steps=args.steps, progress=False)) * len(test)
             for test, train_items in folds]
    results["cross-fit"] = sum(cross) / len(rows)
    results["in-sample"] = mean_lds(rows, fit_theta(items, steps=args.steps, progress=False))
    results["average-attention"] = mean_lds(rows, torch.full_like(attributor.scorer.coefficients.theta,
                                                                  1 / attributor.scorer.coefficients.theta.numel()))
    for name in sorted({n for r in rows for n in r["records"]}):
        if name.startswith("esm-") and all(name in r["records"] for r in rows):
            results[name] = float(np.mean([r["records"][name]["lds"] for r in rows]))

    print(f"\nLDS on {len(rows)} evaluated rows ({args.n_lds_masks} masks each); θ fits: {args.steps} Adam steps")
    print(f"{'θ':<20} {'LDS':>7}")
    for name, value in results.items():
        print(f"{name:<20} {value:>7.3f}")
    out = {"model": attributor.lm.model_id, "n_examples": len(rows), "steps": args.steps, "lds": results,
           "seconds": time.perf_counter() - start}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Surrogates beyond one free weight per head, all still one pass, compared by train cross-fit (5 folds by base
train row) on the same collected files: the paper-faithful fit, early stopping, shrinkage toward uniform, a
scale-free sparsity penalty, one weight per layer, and per-source covariates (a constant and the source's
position in the prompt). Every variant but the covariates is a plain θ over heads, shippable as it is.

    python benchmarks/surrogates.py --level sentence --train runs/gold/sentence \
        --json docs/results/surrogates_sentence.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import _designs, _row_of  # noqa: E402

from at2_rag.eval.metrics import bootstrap_ci  # noqa: E402
from at2_rag.fit.theta import Design, _item, crossfit_correlations  # noqa: E402

VARIANTS = {
    "linear (paper: 1000 steps)": {},
    "early stop, 25 steps": {"steps": 25},
    "early stop, 50 steps": {"steps": 50},
    "early stop, 100 steps": {"steps": 100},
    "early stop, 250 steps": {"steps": 250},
    "shrink to uniform 0.01": {"shrink": 0.01},
    "shrink to uniform 0.1": {"shrink": 0.1},
    "shrink to uniform 1": {"shrink": 1.0},
    "sparsity 0.1": {"l1": 0.1},
    "sparsity 1": {"l1": 1.0},
    "one weight per layer": {"tie": "layer"},
    "one weight per layer, 100 steps": {"tie": "layer", "steps": 100},
    "+ constant and position covariates": {"covariates": True},
}


def _tied(design: Design, heads: int) -> Design:
    """Features summed over the heads of each layer: θ with one weight per layer (expanded back per head)."""
    x = np.asarray(design.x, dtype=np.float32)
    return Design(x.reshape(*x.shape[:-1], -1, heads).sum(-1).astype(np.float16), design.y, design.groups)


def _with_covariates(paths: list[Path], level: str) -> tuple[Design, Design]:
    """Per-source features plus a constant and the relative position, standardised by the fit."""
    chunk = 1 if level == "passage" else None
    rows = np.array([_row_of(p) for p in paths])

    def extend(item: dict) -> dict:
        f = item["features"].astype(np.float32)
        n = f.shape[1]
        position = np.broadcast_to(np.linspace(0, 1, n)[None, :, None], (f.shape[0], n, 1))
        scale = float(np.abs(f).mean())  # covariates on the features' scale, so neither dominates the start
        return {**item, "features": np.concatenate([f, scale * np.ones_like(position), scale * position], -1)}

    designs = []
    for c in (chunk, None):
        d = Design.from_items([extend(_item(p, ("attention-weight",), c)) for p in paths])
        d.groups = rows[d.groups]
        designs.append(d)
    return designs[0], designs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", choices=["passage", "sentence"], required=True)
    parser.add_argument("--train", required=True, nargs="+", help="folders of collected files")
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--only", help="variant names to run, joined by |")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    paths = sorted(p for folder in args.train for p in Path(folder).glob("[0-9]*.npz"))
    fit, scored = _designs(paths, args.level)
    results, baseline = {}, None
    for name, options in VARIANTS.items():
        if args.only and name not in args.only.split("|"):
            continue
        start = time.perf_counter()
        options = dict(options)
        kwargs = {"steps": options.pop("steps", 1000), **options}
        f, s = fit, scored
        if kwargs.pop("tie", None):
            f, s = _tied(fit, args.heads), _tied(scored, args.heads)
        if kwargs.pop("covariates", False):
            f, s = _with_covariates(paths, args.level)
            kwargs["standardize"] = True
        values, groups = crossfit_correlations(f, 5, s, **kwargs)
        per_row = {int(g): float(values[groups == g].mean()) for g in np.unique(groups)}
        record = {"crossfit": float(values.mean()), "crossfit_ci95": bootstrap_ci(list(per_row.values())),
                  "per_row": per_row, "options": VARIANTS[name], "seconds": time.perf_counter() - start}
        if baseline is None:
            baseline = per_row
        diff = [per_row[g] - baseline[g] for g in per_row]
        record.update(vs_linear=float(np.mean(diff)), vs_linear_ci95=bootstrap_ci(diff))
        results[name] = record
        print(f"{name:<38} crossfit {record['crossfit']:.3f} [{record['crossfit_ci95'][0]:.3f}, "
              f"{record['crossfit_ci95'][1]:.3f}]  vs linear {record['vs_linear']:+.3f} "
              f"[{record['vs_linear_ci95'][0]:+.3f}, {record['vs_linear_ci95'][1]:+.3f}]", flush=True)
    out = {"level": args.level, "files": len(paths), "rows": len({_row_of(p) for p in paths}),
           "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/surrogates.py " + " ".join(sys.argv[1:]),
           "variants": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

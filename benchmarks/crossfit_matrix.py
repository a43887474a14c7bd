"""Train cross-fit of θ fit to one ablation signal and scored on another: the regression target (the paper's
whole-response log-odds or the mean per-token log-odds) and the ablation method (removal or attention mask).

Each ``--runs NAME=DIR`` is a folder of collected files (``at2-rag lab train --work-dir``) for the same rows and
keep-masks (collection seeds masks by row index, whatever the method), so a θ fit on one signal can be scored
on another fold by fold. Prints the matrix and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np

from at2_rag.ablation import OBJECTIVES
from at2_rag.fit.theta import Design, cross_fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=DIR of collected .npz files")
    parser.add_argument("--targets", default=",".join(OBJECTIVES))
    parser.add_argument("--chunk-tokens", type=int, default=None, help="fit on chunks of this many tokens")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    designs, scored = {}, {}
    for spec in args.runs:
        name, folder = spec.split("=", 1)
        paths = sorted(Path(folder).glob("[0-9]*.npz"))
        for target in args.targets.split(","):
            key = f"{name}/{target}"
            designs[key] = Design.load(paths, objective=objective, chunk_tokens=args.chunk_tokens)
            scored[key] = Design.load(paths, objective=objective) if args.chunk_tokens else designs[key]
    shapes = {key: d.y.shape for key, d in scored.items()}
    if len(set(shapes.values())) != 1:
        raise SystemExit(f"the runs differ in targets or masks: {shapes}")
    for a, b in zip(scored.values(), list(scored.values())[1:]):
        if not np.array_equal(a.groups, b.groups):
            raise SystemExit("the runs hold different rows")
    matrix = {fit: {score: cross_fit(designs[fit], 5, scored[score], steps=args.steps) for score in scored}
              for fit in designs}
    print(f"{'fit on / scored on':<34}" + "".join(f"{k:>34}" for k in scored))
    for fit, row in matrix.items():
        print(f"{fit:<34}" + "".join(f"{row[k]:>34.3f}" for k in scored))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"date": date.today().isoformat(), "runs": args.runs,
                                           "chunk_tokens": args.chunk_tokens, "steps": args.steps,
                                           "rows": int(len(set(next(iter(scored.values())).groups.tolist()))),
                                           "crossfit": matrix}, indent=2))


if __name__ == "__main__":
    main()

"""AT2 learning curve: is the gap to ESM data? θ fit on 10..110 train rows (and with recombined contexts added),
scored by train cross-fit and by validation LDS, with LDS fit against log(training examples).

Train: collected example files (``at2-rag lab train`` work directories; ``--extra`` adds recombined contexts).
Cross-fit folds go by base train row, so no question is on both sides of a fold. Validation: the first
``--rows`` validation rows, gold answer teacher-forced, the same 32 LDS masks (seed 10,000 + row) and the same
ablation cache layout as ``at2-rag lab evaluate``, so its ESM rows on those examples compare one to one and a later
``evaluate`` with the same ``--work-dir`` reuses the ablations.

    python benchmarks/learning_curve.py --level sentence --train runs/gold/sentence \
        --extra runs/recombined/sentence --work-dir runs/eval-sentence --rows 20 --ks 1,3,5 \
        --json docs/results/learning_curve_sentence.json --plot docs/learning_curve_sentence.png
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from at2_rag.eval.metrics import bootstrap_ci, lds
from at2_rag.fit.theta import Design, _item, crossfit_correlations, fit_theta

SIZES = (10, 25, 50, 80, 110)


def _row_of(path: Path) -> int:
    """Base train row of a collected file: a recombined file records it, a per-row file is named by it."""
    with np.load(path, allow_pickle=False) as item:
        if "base_row" in item:
            return int(item["base_row"])
    return int(re.match(r"(\d+)-", path.name).group(1))


def _designs(paths: list[Path], level: str) -> tuple[Design, Design]:
    """(fit design, sentence-target design) with groups = base train row. Passage θ fit on every response
    token (``chunk_tokens=1``, the shipped recipe); both are scored on response sentences."""
    chunk = 1 if level == "passage" else None
    rows = np.array([_row_of(p) for p in paths])
    families = ("attention-weight",)
    items = [_item(p, families, None) for p in paths]
    scored = Design.from_items(items)
    scored.groups = rows[scored.groups]
    if chunk is None:
        return scored, scored
    fit = Design.from_items([_item(p, families, chunk) for p in paths])
    fit.groups = rows[fit.groups]
    return fit, scored


def _crossfit(fit: Design, scored: Design, steps: int) -> dict:
    values, groups = crossfit_correlations(fit, 5, scored, steps=steps)
    per_row = [float(values[groups == g].mean()) for g in np.unique(groups)]
    return {"crossfit": float(values.mean()), "crossfit_ci95": bootstrap_ci(per_row)}


def _validation_jobs(level: str, rows: int, work: Path, ks: list[int]):
    """Jobs of the first ``rows`` validation rows and their LDS ablation outputs (cached as evaluate caches)."""
    from at2_rag import AT2Attributor
    from at2_rag.ablation import random_masks
    from at2_rag.eval.attribution import AblationCache, _check_manifest
    from at2_rag.eval.hotpotqa import load_hotpotqa

    attributor = AT2Attributor.from_pretrained(max_new_tokens=32)
    manifest = {"model": attributor.lm.model_id, "n_lds_masks": 32, "ks": ks, "level": level, "responses": "gold"}
    _check_manifest(work, manifest)
    examples = load_hotpotqa(Path("../shared/data/hotpotqa/validation.jsonl"), rows)
    out = []
    for i, ex in enumerate(examples):
        start = time.perf_counter()
        job = attributor.pipeline.jobs([ex.question], [ex.passages], [ex.answer_sentence],
                              families=["attention-weight"])[0].at_level(level)
        example_dir = work / f"{i:05d}-{ex.id}"
        example_dir.mkdir(parents=True, exist_ok=True)
        masks = random_masks(job.num_units, 32, 0.5, seed=10_000 + i)
        outputs = AblationCache(job, example_dir / "ablations.npz")(masks)
        out.append((job, masks, outputs))
        print(f"validation row {i}: {job.num_units} units, {time.perf_counter() - start:.0f}s", flush=True)
    return out


def _validation_lds(theta: torch.Tensor, jobs) -> list[float]:
    values = []
    for job, masks, outputs in jobs:
        scores = (job.family_features(("attention-weight",)) @ theta.to(job.token_features.device)).cpu().numpy()
        values.append(lds(job, scores, masks, outputs))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", choices=["passage", "sentence"], required=True)
    parser.add_argument("--train", required=True, help="collected per-row files (at2-rag lab train --work-dir)/<level>")
    parser.add_argument("--extra", help="collected recombined-context files to add on top of all rows")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--draws", type=int, default=3, help="random row subsets per size below the full set")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20, help="validation rows")
    parser.add_argument("--ks", default="1,3,5", help="top-k list of the evaluate run sharing --work-dir")
    parser.add_argument("--work-dir", required=True, help="validation ablation cache (evaluate's layout)")
    parser.add_argument("--save-theta", help="folder for every fitted θ (.npy), for evaluate --extra-coefficients")
    parser.add_argument("--reference", help="an evaluate JSON on the same rows: its per-row LDS of every scorer "
                        "(ESM-32, the shipped θ) is put beside the curve on exactly these rows")
    parser.add_argument("--json", required=True)
    parser.add_argument("--plot")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    paths = sorted(Path(args.train).glob("[0-9]*.npz"))
    row_ids = sorted({_row_of(p) for p in paths})
    fit_all, scored_all = _designs(paths, args.level)
    jobs = _validation_jobs(args.level, args.rows, Path(args.work_dir), [int(k) for k in args.ks.split(",")])
    fits = []

    def run(name: str, fit: Design, scored: Design, n_examples: int, n_rows: int, draw: int) -> None:
        start = time.perf_counter()
        record = {"name": name, "examples": n_examples, "rows": n_rows, "draw": draw, **_crossfit(fit, scored,
                                                                                                   args.steps)}
        theta = fit_theta(fit, steps=args.steps, progress=False)
        values = _validation_lds(theta, jobs)
        record.update(validation_lds=float(np.mean(values)), validation_lds_per_row=values,
                      validation_lds_ci95=bootstrap_ci(values))
        if args.save_theta:
            Path(args.save_theta).mkdir(parents=True, exist_ok=True)
            np.save(Path(args.save_theta) / f"{args.level}-{name}-{draw}.npy", theta.numpy())
        fits.append(record)
        print(f"{name:<24} draw {draw}  examples {n_examples:>5}  crossfit {record['crossfit']:.3f}  "
              f"validation LDS {record['validation_lds']:.3f}  ({time.perf_counter() - start:.0f}s)", flush=True)

    for n in (int(s) for s in args.sizes.split(",")):
        draws = 1 if n >= len(row_ids) else args.draws
        for d in range(draws):
            chosen = set(np.random.default_rng(d).permutation(row_ids)[:n].tolist())
            keep_fit, keep_scored = np.isin(fit_all.groups, list(chosen)), np.isin(scored_all.groups, list(chosen))
            run(f"rows-{min(n, len(row_ids))}", fit_all.subset(keep_fit), scored_all.subset(keep_scored),
                len(chosen), len(chosen), d)
    if args.extra:
        extra = sorted(Path(args.extra).glob("[0-9]*.npz"))
        fit_x, _ = _designs(paths + extra, args.level)
        contexts = len({str(np.load(p, allow_pickle=False)["context"].item()) for p in extra})
        # scored on the rows' own targets only, so its cross-fit compares with rows-110 one to one
        run(f"rows+{contexts}-contexts", fit_x, scored_all, len(paths) + len(extra), len(row_ids), 0)

    reference = {}
    if args.reference:
        records = json.loads(Path(args.reference).read_text())["records"][: args.rows]
        for name in records[0]:
            values = [r[name]["lds"] for r in records]
            reference[name] = {"lds": float(np.mean(values)), "lds_ci95": bootstrap_ci(values)}
        from at2_rag import AT2Attributor

        shipped = AT2Attributor.from_pretrained(max_new_tokens=32)
        scorer = shipped.sentence_scorer if args.level == "sentence" else shipped.scorer
        check = _validation_lds(scorer.coefficients.theta, jobs)
        reference["at2 (shipped, recomputed here)"] = {"lds": float(np.mean(check)), "lds_ci95": bootstrap_ci(check)}

    base = [f for f in fits if f["name"].startswith("rows-")]
    sizes = np.array([f["examples"] for f in base], dtype=float)
    trend = {}
    for key in ("crossfit", "validation_lds"):
        slope, intercept = np.polyfit(np.log(sizes), [f[key] for f in base], 1)
        trend[key] = {"slope_per_log_example": float(slope), "intercept": float(intercept),
                      "predicted_at": {str(n): float(intercept + slope * np.log(n)) for n in (110, 1000, 4000)}}
    result = {"level": args.level, "validation_rows": args.rows, "train_rows": len(row_ids), "fits": fits,
              "reference": reference, "trend_vs_log_examples": trend, "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/learning_curve.py " + " ".join(sys.argv[1:])}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\n{'fit':<24} {'examples':>8} {'crossfit':>9} {'validation LDS [95% CI]':>26}")
    for f in fits:
        ci = f["validation_lds_ci95"]
        print(f"{f['name']:<24} {f['examples']:>8} {f['crossfit']:>9.3f} "
              f"{f['validation_lds']:>10.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
    for name, r in reference.items():
        print(f"{name:<40} LDS {r['lds']:.3f} [{r['lds_ci95'][0]:.3f}, {r['lds_ci95'][1]:.3f}]")
    for key, t in trend.items():
        print(f"{key}: {t['slope_per_log_example']:+.4f} per log(example); predicted at 1000: "
              f"{t['predicted_at']['1000']:.3f}")
    if args.plot:
        _plot(result, args.plot)


def _plot(result: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, color in (("crossfit", "train cross-fit (Pearson)", "tab:blue"),
                              ("validation_lds", "validation LDS (Spearman)", "tab:orange")):
        base = [f for f in result["fits"] if f["name"].startswith("rows-")]
        ax.scatter([f["examples"] for f in base], [f[key] for f in base], color=color, alpha=0.5, label=label)
        t = result["trend_vs_log_examples"][key]
        xs = np.geomspace(min(f["examples"] for f in base), 1000, 50)
        ax.plot(xs, t["intercept"] + t["slope_per_log_example"] * np.log(xs), color=color, ls="--", lw=1)
        if key == "validation_lds" and "esm-32" in result["reference"]:
            ax.axhline(result["reference"]["esm-32"]["lds"], color="gray", ls=":", label="ESM-32 validation LDS")
        for f in result["fits"]:
            if not f["name"].startswith("rows-"):
                ax.scatter([f["examples"]], [f[key]], color=color, marker="*", s=140, label=f"{label}, +recombined")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel("correlation")
    ax.set_title(f"AT2 learning curve, {result['level']} passages (SmolLM2-135M)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()

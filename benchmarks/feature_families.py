"""Which one-pass features predict ablations best? Fit θ for each feature family (and their concatenation) on the
same collected train ablations, with the same Pearson objective, and report the in-sample correlation (the
ceiling of a linear surrogate on those features) and the 5-fold cross-fitted one (by example). The L2 penalty
and the fitting targets (whole response sentences, or chunks of a few response tokens: more targets from the same
ablations) of each family are chosen by cross-fit on train; correlations are always measured on sentence targets.
Writes one coefficient file per family and a JSON table.

Validation numbers come from ``at2-rag lab evaluate --extra-coefficients <files>`` (see docs/benchmarks.md).

    python benchmarks/feature_families.py --work-dir runs/train --level sentence --responses gold \
        --out-dir runs/families --json docs/results/feature_families_sentence.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from at2_rag.attention import FAMILIES
from at2_rag.cli import _data, _digest, _rows
from at2_rag.lm import load_model
from at2_rag.fit.theta import collect_examples, train, write_summary

SPECS = ("attention-weight", "value-norm", "output-norm", "+".join(FAMILIES))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="runs/train", help="collected ablations (at2-rag lab train --work-dir)")
    parser.add_argument("--level", choices=["passage", "sentence"], default="sentence")
    parser.add_argument("--responses", choices=["generated", "gold"], default="gold")
    parser.add_argument("--data", help="the train jsonl the ablations were collected on")
    parser.add_argument("--model")
    parser.add_argument("--l2", default="0,0.001,0.01", help="L2 penalties tried, chosen by cross-fit")
    parser.add_argument("--chunk-tokens", default="none",
                        help="fitting targets tried, chosen by cross-fit: 'none' (response sentences) or a number "
                             "of response tokens per chunk, comma-separated (e.g. none,1)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out-dir", default="runs/families")
    parser.add_argument("--json", default="runs/feature_families.json")
    args = parser.parse_args(argv)

    penalties = [float(v) for v in args.l2.split(",")]
    chunks = [None if v.strip() == "none" else int(v) for v in args.chunk_tokens.split(",")]
    data = _data(args.data, "train")
    work = Path(args.work_dir) / args.level
    paths = sorted(work.glob("[0-9]*.npz"))
    examples = _rows(data, len(paths))
    lm = load_model(args.model)
    start = time.perf_counter()
    responses = [ex.answer_sentence for ex in examples] if args.responses == "gold" else None
    collect_examples(lm, examples, work, args.level, responses=responses, families=FAMILIES)  # features only
    featurize_s = time.perf_counter() - start
    source = f"{data.name} (sha256 {_digest(data)}, first {len(paths)} rows, responses: {args.responses})"
    rows = {}
    for spec in SPECS:
        best, tried = None, []
        for l2, chunk in itertools.product(penalties, chunks):
            command = (f"at2-rag lab train --source-kind {args.level} --responses {args.responses} --limit {len(paths)} "
                       f"--families {spec} --l2 {l2} --steps {args.steps}"
                       + (f" --chunk-tokens {chunk}" if chunk else ""))
            coefficients = train(lm, paths, args.level, source, spec.split("+"), steps=args.steps, l2=l2,
                                 chunk_tokens=chunk, command=command, progress=False)
            m = coefficients.metadata.metrics
            print(f"{spec:<40} l2 {l2:<6} chunks {chunk or '-':<4} in-sample {m['train_correlation']:.3f}  "
                  f"cross-fit {m['crossfit_correlation']:.3f}", flush=True)
            tried.append({"l2": l2, "chunk_tokens": chunk, **m})
            if best is None or m["crossfit_correlation"] > best.metadata.metrics["crossfit_correlation"]:
                best = coefficients
        name = f"{args.level}.{spec}.safetensors"
        path = best.save(Path(args.out_dir) / name)
        write_summary(best, path.with_suffix(".json"))
        rows[spec] = {"file": str(path), **best.metadata.metrics, "notes": best.metadata.notes, "tried": tried}
    result = {"model": lm.model_id, "level": args.level, "responses": args.responses, "n_examples": len(paths),
              "featurize_seconds": featurize_s, "families": rows,
              "date": time.strftime("%Y-%m-%d"), "machine": "2-core CPU VM"}
    print(f"\n{'family':<40} {'in-sample':>10} {'cross-fit':>10} {'uniform':>8}")
    for spec, r in rows.items():
        print(f"{spec:<40} {r['train_correlation']:>10.3f} {r['crossfit_correlation']:>10.3f} "
              f"{r['train_correlation_uniform']:>8.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

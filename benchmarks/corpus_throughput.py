"""Corpus attribution throughput: attributions per minute in one process and on a local Ray instance with 1 and 2
model-holding actors, on the same records (HotpotQA validation rows, ten passages each, the gold answer as a
short sentence teacher-forced: the "cite logged answers" workload). Two rates: end to end (Ray's include
starting the actors and loading one model per actor; the one-process run loads its model before the clock), and
steady (after the first result lands). Needs at2-rag[ray].

    python benchmarks/corpus_throughput.py --limit 16 --workers 1,2 --json docs/results/corpus_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from at2_rag.cli import _data, _rows


def _records(examples) -> list[dict]:
    return [{"id": ex.id, "query": ex.question, "passages": [[s.title or "", s.text] for s in ex.passages],
             "response": ex.answer_sentence} for ex in examples]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--workers", default="1,2", help="Ray actor counts to run")
    parser.add_argument("--model")
    parser.add_argument("--json", default="runs/corpus_throughput.json")
    args = parser.parse_args(argv)

    from at2_rag import AT2Attributor
    from at2_rag.corpus import run_local

    examples = _rows(_data(args.data, "validation"), args.limit)
    records = _records(examples)
    kwargs = {"model": args.model}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = _write(tmp / "in.jsonl", records)
        attributor = AT2Attributor.from_pretrained(**kwargs)
        rows["one process"] = run_local(attributor, data, tmp / "local.jsonl", progress=False)

        import ray

        from at2_rag.distributed import init_ray, run_ray

        for n in (int(w) for w in args.workers.split(",")):
            start = time.perf_counter()
            init_ray("local")
            startup = time.perf_counter() - start
            counts = run_ray(data, tmp / f"ray{n}.jsonl", kwargs, workers=n, batch_size=1, progress=False)
            ray.shutdown()
            rows[f"ray, {n} worker{'s' if n > 1 else ''}"] = {**counts, "ray_startup_seconds": startup}
    for row in rows.values():
        row["per_minute"] = 60 * row["written"] / row["seconds"]
        row["steady_per_minute"] = 60 * (row["written"] - 1) / (row["seconds"] - row["first_result_seconds"])
    base = rows["one process"]["steady_per_minute"]
    print(f"{'run':<18} {'records':>8} {'seconds':>8} {'first at':>9} {'per minute':>11} {'steady':>8} {'ratio':>6}")
    for name, row in rows.items():
        row["steady_ratio"] = row["steady_per_minute"] / base
        print(f"{name:<18} {row['written']:>8} {row['seconds']:>8.1f} {row['first_result_seconds']:>9.1f} "
              f"{row['per_minute']:>11.2f} {row['steady_per_minute']:>8.2f} {row['steady_ratio']:>5.2f}x")
    result = {"model": attributor.lm.model_id, "records": len(records), "workload": "HotpotQA validation rows, "
              "10 passages, gold answer sentence teacher-forced", "runs": rows, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()}-core CPU, {platform.machine()}"}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

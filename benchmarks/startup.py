"""What a user waits for in a new process: import, load, and the first ``cite`` of a 2k-token answer.

Each measurement is a fresh Python process (``--child``) that imports at2_rag, loads the bundled attributor in
one number format and cites once. Two states per format: ``no copy`` (an empty ``AT2_RAG_CACHE``: the GGUF file
is read through transformers, and the converted copy is written) and ``copy`` (the copy that run left: what
every later process gets; ``at2_rag/model_cache.py``). States and formats are interleaved within each round;
medians over ``--repeats`` rounds.

    python benchmarks/startup.py --repeats 5 --json docs/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(spec: dict) -> dict:
    """Time import, load and the first cite in this (fresh) process."""
    start = time.perf_counter()
    from at2_rag import AT2Attributor, Passage

    imported = time.perf_counter()
    attributor = AT2Attributor.from_pretrained(precision=spec["precision"])
    loaded = time.perf_counter()
    result = attributor.cite(spec["query"], [Passage(**p) for p in spec["sources"]], spec["answer"])
    done = time.perf_counter()
    return {"import_s": imported - start, "load_s": loaded - imported, "first_cite_s": done - loaded,
            "total_s": done - start, "citations": len(result.citations), "loaded_as": attributor.lm.precision}


def prepare(length: int, new_tokens: int, data: Path) -> dict:
    """Sources filling ``length`` tokens with float32's greedy answer (as benchmarks/cost.py), made once."""
    sys.path.insert(0, str(HERE))
    from cost import QUERY, fitted_sources

    from at2_rag.lm import load_model

    lm = load_model(precision="float32")
    sources, layout = fitted_sources(lm, data, length, new_tokens)
    answer = lm.decode(lm.generate([layout.input_ids], new_tokens, stop_at_eos=False)[0])
    return {"query": QUERY, "sources": [p.model_dump() for p in sources], "answer": answer,
            "tokens": len(layout) + len(lm.encode_response(answer))}


def run(spec: dict, precision: str, cache: str) -> dict:
    env = {**os.environ, "AT2_RAG_CACHE": cache}
    done = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps({**spec, "precision": precision}),
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data" / "hotpotqa" / "validation.jsonl"))
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return
    spec = prepare(args.length, args.new_tokens, Path(args.data))
    precisions = [p for p in args.precisions.split(",") if p]
    runs: dict = {p: {"no copy": [], "copy": []} for p in precisions}
    for round_ in range(args.repeats):
        for precision in precisions:
            with tempfile.TemporaryDirectory(prefix="at2-startup-") as cache:
                for state in ("no copy", "copy"):  # the first run writes the copy the second reads
                    runs[precision][state].append(run(spec, precision, cache))
                    r = runs[precision][state][-1]
                    print(f"round {round_ + 1} {precision:>9} {state:>7}: import {r['import_s']:.1f} s, load "
                          f"{r['load_s']:.1f} s, first cite {r['first_cite_s']:.2f} s, total {r['total_s']:.1f} s",
                          flush=True)
    table = {p: {state: {key: statistics.median(r[key] for r in rows) for key in
                         ("import_s", "load_s", "first_cite_s", "total_s")} for state, rows in by_state.items()}
             for p, by_state in runs.items()}
    print(f"\nmedian of {args.repeats} rounds, {spec['tokens']} tokens, fresh process each")
    print(f"{'precision':>9} {'state':>7} {'import s':>8} {'load s':>7} {'first cite s':>12} {'total s':>8} "
          f"{'load+cite s':>11}")
    for precision, by_state in table.items():
        for state, m in by_state.items():
            print(f"{precision:>9} {state:>7} {m['import_s']:>8.1f} {m['load_s']:>7.1f} {m['first_cite_s']:>12.2f} "
                  f"{m['total_s']:>8.1f} {m['load_s'] + m['first_cite_s']:>11.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": "python benchmarks/startup.py " + " ".join(sys.argv[1:]), "date": date.today().isoformat(),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "tokens": spec["tokens"], "repeats": args.repeats, "median": table, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()

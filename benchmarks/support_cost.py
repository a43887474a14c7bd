"""Cost of deciding `supported` for a given answer, by context length, in one run: a plain forward pass, the
attribution pass (teacher-forced, both levels captured), the detector's extra work (the short pass without the
context when its inputs need it, lexical facts, the logistic model) and the whole `cite` call, as seconds and as
ratios to the forward pass. Also the work after the pass with the model signals computed (what every call did
before 2026-12-06) and without them (now, since the shipped detector reads none). Contexts are HotpotQA
validation passages concatenated to the target length; the answer is a two-sentence text of about 40 tokens.

    python benchmarks/support_cost.py --data ../shared/data/hotpotqa/validation.jsonl --lengths 512,2048 \
        --json docs/results/support_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from at2_rag import AT2Attributor
from at2_rag.eval.hotpotqa import load_hotpotqa

ANSWER = ("The answer comes from the passages above, which name the people and places involved. "
          "It was first recorded in 1844 and later moved to a museum in New York.")


def context(rows, tokens: int, tokenizer) -> list[tuple[str, str]]:
    out, total = [], 0
    for row in rows:
        for source in row.passages:
            out.append((source.title or "", source.text))
            total += len(tokenizer(source.text, add_special_tokens=False)["input_ids"]) + 8
            if total >= tokens:
                return out
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", required=True, help="HotpotQA jsonl whose passages fill the context")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    attributor = AT2Attributor.from_pretrained()
    lm, rows = attributor.lm, load_hotpotqa(args.data, 40)
    results = []
    for length in (int(n) for n in args.lengths.split(",")):
        passages = context(rows, length, lm.tokenizer)
        query = rows[0].question
        pipeline = attributor.pipeline
        job = pipeline.jobs([query], [passages], [ANSWER])[0]
        prompt, response = job.layout.input_ids, job.response_ids
        attributor.cite(query, passages, response=ANSWER)  # warm-up
        forward = best_of(lambda: lm.response_logprobs([prompt], [response]), args.repeats)
        attribution_pass = best_of(lambda: pipeline.jobs([query], [passages], [ANSWER]), args.repeats)
        extra = best_of(lambda: pipeline.cite(pipeline.score(job)), args.repeats)
        with_signals = best_of(lambda: pipeline.cite(pipeline.score(job, signals=True)), args.repeats)
        whole = best_of(lambda: attributor.cite(query, passages, response=ANSWER), args.repeats)
        results.append({"context_tokens": len(prompt), "answer_tokens": len(response), "forward_s": forward,
                        "attribution_pass_s": attribution_pass, "detector_extra_s": extra,
                        "after_pass_with_signals_s": with_signals, "signals_saved_s": with_signals - extra, "cite_s": whole,
                        "cite_over_forward": whole / forward})
    meta = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "model": lm.model_id,
            "detector_inputs": len(attributor.detector.inputs) if attributor.detector else 0,
            "detector_needs_no_context_pass": bool(attributor.detector and attributor.detector.needs_no_context)}
    print(f"{lm.model_id} on cpu ({meta['threads']} threads), {meta['date']}; detector needs the no-context pass: "
          f"{meta['detector_needs_no_context_pass']}")
    print(f"{'prompt tokens':>13} {'forward s':>10} {'attribution pass s':>19} {'after pass s':>13} "
          f"{'with signals s':>15} {'cite s':>8} {'cite / forward':>15}")
    for r in results:
        print(f"{r['context_tokens']:>13} {r['forward_s']:>10.3f} {r['attribution_pass_s']:>19.3f} "
              f"{r['detector_extra_s']:>13.3f} {r['after_pass_with_signals_s']:>15.3f} {r['cite_s']:>8.3f} "
              f"{r['cite_over_forward']:>14.2f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()

"""Cost of attribution vs generation, forward pass, ESM-32 and eager output_attentions, by context length; the
capture of all three feature families (attention weight, value norm, output norm) beside the paper's one.

Everything is measured in one process on one model: wall time with time.perf_counter, and peak memory as
the process's RSS high-water mark (reset before each measurement through /proc/self/clear_refs) or, on
CUDA, torch.cuda.max_memory_allocated. Extra memory = peak of the method - peak of a plain forward pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from at2_rag import AT2Attributor
from at2_rag.attention import DEFAULT_FAMILIES, FAMILIES, FeatureCapture
from at2_rag.coefficients import CoefficientMetadata, Coefficients
from at2_rag.eval.hotpotqa import load_hotpotqa
from at2_rag.features import collect
from at2_rag.prompts import build_prompt
from at2_rag.scorers import AT2Scorer, ESMScorer
from at2_rag.sources import Source

NEW_TOKENS = 32


def peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def measure(fn, device: str, repeats: int = 1) -> tuple[float, float, object]:
    """Best of ``repeats`` runs: the smallest wall time and the smallest peak (both are only ever inflated by noise)."""
    times, peaks = [], []
    for _ in range(repeats):
        reset_peak(device)
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peaks.append(peak_mb(device))
    return min(times), min(peaks), out


def synthetic_sources(lm, data: Path, n_tokens: int, n_sources: int = 10) -> list[Source]:
    """About ``n_tokens`` of real HotpotQA passage text, cut into ``n_sources`` sources."""
    text = " ".join(s.text for ex in load_hotpotqa(data) for s in ex.sources)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][: n_tokens]
    step = len(ids) // n_sources
    return [Source(id=str(i), title=f"Passage {i + 1}", text=lm.tokenizer.decode(ids[i * step : (i + 1) * step]))
            for i in range(n_sources)]


def eager_attention_bytes(lm, length: int) -> float:
    return lm.num_layers * lm.num_heads * length * length * 4 / 2**20


def run_length(attributor: AT2Attributor, length: int, data: Path, device: str, esm_max: int,
               eager_max: int, repeats: int) -> dict:
    lm = attributor.lm
    query = "Which of these passages mention a film?"
    budget = length - NEW_TOKENS  # prompt + response fill ``length`` tokens, so 8192 is the default model's window
    n_tokens = budget
    for _ in range(5):  # template, few-shot turns and headers take a few hundred tokens: shrink until it fits
        sources = synthetic_sources(lm, data, n_tokens)
        layout = build_prompt(lm.tokenizer, query, sources)
        if len(layout) <= budget:
            break
        n_tokens -= len(layout) - budget
    ids = layout.input_ids
    row: dict = {"prompt_tokens": len(ids)}

    lm.generate([ids[:64]], 2)  # warm-up
    t, base_peak, out = measure(lambda: lm.generate([ids], NEW_TOKENS, stop_at_eos=False), device, repeats)
    row["generate_s"], row["generate_peak_mb"] = t, base_peak
    response = out[0]

    def capture(families=DEFAULT_FAMILIES):
        return FeatureCapture.for_spans([layout.token_spans], [0], len(ids), len(sources), lm.num_layers,
                                        lm.num_heads, lm.device, families=families)

    t, peak, _ = measure(lambda: lm.generate([ids], NEW_TOKENS, capture=capture(), stop_at_eos=False), device, repeats)
    row["generate_with_capture_s"] = t
    row["at2_capture_overhead_s"] = t - row["generate_s"]
    row["at2_capture_extra_peak_mb"] = peak - base_peak
    t, peak, _ = measure(lambda: lm.generate([ids], NEW_TOKENS, capture=capture(FAMILIES), stop_at_eos=False), device,
                         repeats)
    row["all_families_capture_overhead_s"] = t - row["generate_s"]
    row["all_families_capture_extra_peak_mb"] = peak - base_peak

    t, forward_peak, _ = measure(lambda: lm.response_logprobs([ids], [response]), device, repeats)
    row["forward_s"], row["forward_peak_mb"] = t, forward_peak

    def teacher_forced():
        job = collect(lm, [query], [sources], responses=[lm.decode(response)])[0]
        return attributor.scorer.score(job)

    t, peak, _ = measure(teacher_forced, device, repeats)
    row["at2_teacher_forced_s"] = t
    job = collect(lm, [query], [sources], responses=[lm.decode(response)], families=FAMILIES)[0]
    scorer = AT2Scorer(Coefficients(theta=torch.ones(len(FAMILIES) * lm.num_layers * lm.num_heads), metadata=(
        CoefficientMetadata(model_id=lm.model_id, model_type=lm.fingerprint["model_type"], num_layers=lm.num_layers,
                            num_heads=lm.num_heads, source_kind="passage", feature_family="+".join(FAMILIES)))))
    row["all_families_score_s"], _, _ = measure(lambda: scorer.score(job), device, repeats)
    row["at2_extra_peak_mb"] = peak - forward_peak
    row["at2_extra_analytic_mb"] = lm.num_heads * NEW_TOKENS * len(ids) * 4 * 2 / 2**20

    if length <= esm_max:
        job = collect(lm, [query], [sources], responses=[lm.decode(response)])[0]
        t, _, _ = measure(lambda: ESMScorer(n_ablations=32).score(job), device)
        row["esm32_s"] = t

    row["eager_attentions_analytic_mb"] = eager_attention_bytes(lm, len(ids) + NEW_TOKENS - 1)
    if length <= eager_max:
        full = torch.tensor([ids + response[:-1]], device=lm.device)

        def eager():
            lm.model.set_attn_implementation("eager")
            try:
                with torch.inference_mode():
                    return len(lm.model(full, output_attentions=True, logits_to_keep=1).attentions)
            finally:
                lm.model.set_attn_implementation("at2")

        t, peak, _ = measure(eager, device)
        row["eager_attentions_s"] = t
        row["eager_attentions_extra_peak_mb"] = peak - forward_peak
    else:
        row["eager_attentions_extra_peak_mb"] = row["eager_attentions_analytic_mb"]
        row["eager_attentions_estimated"] = True
    return row


def exponent(lengths: list[int], values: list[float]) -> float:
    pairs = [(x, y) for x, y in zip(lengths, values) if y and y > 0]
    if len(pairs) < 2:
        return float("nan")
    xs, ys = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(xs, ys, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192")
    parser.add_argument("--model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16, float16")
    parser.add_argument("--data", default="../shared/data/hotpotqa/train.jsonl")
    parser.add_argument("--esm-max-length", type=int, default=2048, help="ESM-32 only up to this length")
    parser.add_argument("--eager-max-length", type=int, default=2048, help="eager attentions measured up to here")
    parser.add_argument("--repeats", type=int, default=3, help="best of n for generation, forward and AT2 runs")
    parser.add_argument("--json", default="runs/cost.json")
    args = parser.parse_args()
    attributor = AT2Attributor.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    lengths = [int(x) for x in args.lengths.split(",")]
    result = {"model": attributor.lm.model_id, "device": args.device,
              "dtype": str(next(attributor.lm.model.parameters()).dtype), "machine": platform.processor() or
              platform.machine(), "threads": torch.get_num_threads(), "date": date.today().isoformat(),
              "scorer": attributor.scorer.name, "lengths": {}}
    for length in lengths:
        row = run_length(attributor, length, Path(args.data), args.device, args.esm_max_length, args.eager_max_length,
                         args.repeats)
        result["lengths"][str(length)] = row
        print(json.dumps({str(length): row}))
    rows = [result["lengths"][str(n)] for n in lengths]
    result["exponents"] = {
        "at2_time": exponent(lengths, [r["at2_teacher_forced_s"] for r in rows]),
        "at2_memory": exponent(lengths, [r["at2_extra_analytic_mb"] for r in rows]),
        "at2_memory_measured": exponent(lengths, [r["at2_extra_peak_mb"] for r in rows]),
        "forward_time": exponent(lengths, [r["forward_s"] for r in rows]),
    }
    print(f"\n{result['model']} on {args.device} ({result['dtype']}, {result['threads']} threads)")
    print(f"{'L':>6} {'tokens':>6} {'gen s':>7} {'fwd s':>7} {'capture +%':>10} {'3 fam +%':>9} {'score ms':>9} "
          f"{'TF/fwd':>7} {'ESM32/fwd':>9} {'AT2 +MB':>8} {'eager +MB':>10} {'AT2/eager mem':>13}")
    for n, r in zip(lengths, rows):
        esm = f"{r['esm32_s'] / r['forward_s']:>9.1f}" if "esm32_s" in r else f"{'-':>9}"
        eager = r["eager_attentions_extra_peak_mb"]
        at2_mem = max(r["at2_extra_peak_mb"], r["at2_extra_analytic_mb"])
        print(f"{n:>6} {r['prompt_tokens']:>6} {r['generate_s']:>7.2f} {r['forward_s']:>7.2f} "
              f"{100 * r['at2_capture_overhead_s'] / r['generate_s']:>9.1f}% "
              f"{100 * r['all_families_capture_overhead_s'] / r['generate_s']:>8.1f}% "
              f"{1000 * r['all_families_score_s']:>9.3f} "
              f"{r['at2_teacher_forced_s'] / r['forward_s']:>7.2f} {esm} {at2_mem:>8.1f} "
              f"{eager:>9.0f}{'*' if r.get('eager_attentions_estimated') else ' '} {at2_mem / eager:>13.5f}")
    print("* eager memory computed (layers x heads x L^2 x 4 bytes), too large to run here")
    print("exponents:", json.dumps(result["exponents"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

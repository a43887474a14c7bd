"""Cost of attribution against generation and a plain forward pass, by context length and batch size.

Per length: our decoding (dynamic and static KV cache) beside transformers' ``generate``, the same decoding
with AT2 capture (overhead %, and the one reduction per layer after decoding, timed on its own), a plain
teacher-forced forward and teacher-forced AT2 (one pass + scoring), peak memory, tokens/s; batched
teacher-forced throughput (attributions/s at each ``--batch``) against a plain forward at the same batch;
optionally all three feature families, ESM-32 and eager ``output_attentions``.

``--random-config llama-3-8b|qwen2.5-7b|smollm2-135m`` times a real architecture with random weights (no
download; uniform θ, since scoring cost does not depend on its values). Every timed method runs once per
round, rounds interleaved, and the median of ``--repeats`` rounds is reported (noise on a shared host moves
whole rounds, not single methods). Peak memory: the process's RSS high-water mark (reset through
/proc/self/clear_refs) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

``--precisions float32,bfloat16,int8`` (issue 35) runs a different, shorter matrix: one attributor per number
format (``AT2Attributor.from_pretrained(precision=...)``), all loaded in one process, and per length and
``--batch``: ``cite`` of one fixed answer (float32's greedy 64 tokens, the same text for every mode) and a
plain teacher-forced forward over it, every mode once per round, rounds interleaved, medians. Also each mode's
load time, first ``cite`` after loading and weight bytes. Peak memory per mode comes from a separate process
that loads that mode only (``--memory-probe``) and cites once per length and batch, smallest first, the RSS
high-water mark reset before each: the peak RSS of a process serving that mode. (The timing process holds all
modes, so its own RSS, also recorded, counts every mode's weights.)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch

from at2_rag import AT2Attributor
from at2_rag.attention import FAMILIES, FeatureCapture
from at2_rag.coefficients import CoefficientMetadata, Coefficients
from at2_rag.eval.hotpotqa import load_hotpotqa
from at2_rag.eval.random_models import CONFIGS, random_model
from at2_rag.features import collect
from at2_rag.prompts import build_prompt
from at2_rag.scorers import AT2Scorer, ESMScorer
from at2_rag.passages import Passage

QUERY = "Which of these passages mention a film?"


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


def timed(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """(wall seconds, peak MB) of one call."""
    reset_peak(device)
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, peak_mb(device)


def timed_rss(fn: Callable[[], object]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, peak above the RSS before the call, MB) of one call (CPU)."""
    reset_peak("cpu")
    before = rss_mb()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    peak = peak_mb("cpu")
    return elapsed, peak, peak - before


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def interleaved(methods: dict[str, Callable[[], object]], device: str, repeats: int) -> dict[str, dict]:
    """Run every method once per round for ``repeats`` rounds; median wall time and median peak of each."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            runs[name].append(timed(fn, device))
    return {name: {"s": statistics.median(t for t, _ in values), "peak_mb": statistics.median(p for _, p in values),
                   "runs_s": [t for t, _ in values]} for name, values in runs.items()}


def synthetic_sources(lm, data: Path, n_tokens: int, n_sources: int = 10) -> list[Passage]:
    """About ``n_tokens`` of real HotpotQA passage text, cut into ``n_sources`` sources."""
    text = " ".join(s.text for ex in load_hotpotqa(data) for s in ex.passages)
    while len(text) < 6 * n_tokens:
        text = f"{text} {text}"
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    step = len(ids) // n_sources
    return [Passage(id=str(i), title=f"Passage {i + 1}", text=lm.tokenizer.decode(ids[i * step : (i + 1) * step]))
            for i in range(n_sources)]


def fitted_sources(lm, data: Path, length: int, new_tokens: int):
    """Sources and layout so that prompt + ``new_tokens`` fill ``length`` tokens (template and headers included)."""
    budget = n_tokens = length - new_tokens
    for _ in range(5):
        sources = synthetic_sources(lm, data, n_tokens)
        layout = build_prompt(lm.tokenizer, QUERY, sources)
        if len(layout) <= budget:
            break
        n_tokens -= len(layout) - budget
    return sources, layout


def uniform_scorer(lm, families=("attention-weight",)) -> AT2Scorer:
    """θ = 1 for every head: the cost of scoring without trained coefficients (random-weight models)."""
    width = len(families) * lm.num_layers * lm.num_heads
    return AT2Scorer(Coefficients(theta=torch.ones(width), metadata=CoefficientMetadata(
        model_id=lm.model_id, model_type=lm.fingerprint["model_type"], num_layers=lm.num_layers,
        num_heads=lm.num_heads, source_kind="passage", feature_family="+".join(families))))


def kv_bytes_per_token(lm, length: int) -> float:
    """Bytes one decoding step reads at ``length``: all weights plus the KV cache once."""
    config = lm.model.config
    kv_heads = getattr(config, "num_key_value_heads", None) or lm.num_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // lm.num_heads
    itemsize = next(lm.model.parameters()).element_size()
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    return weights + 2 * lm.num_layers * kv_heads * head_dim * length * itemsize


def run_length(lm, scorers, length: int, args) -> dict:
    sources, layout = fitted_sources(lm, Path(args.data), length, args.new_tokens)
    ids, n, device = layout.input_ids, args.new_tokens, args.device
    row: dict = {"prompt_tokens": len(ids), "new_tokens": n}
    lm.generate([ids[:64]], 2)  # warm-up
    response = lm.generate([ids], n, stop_at_eos=False)[0]
    text = lm.decode(response)
    forced_ids = lm.encode_response(text)  # what teacher-forced AT2 reads: the response as text, re-tokenized
    row["teacher_forced_tokens"] = len(forced_ids)
    row["static_tokens_equal"] = lm.generate([ids], n, stop_at_eos=False, cache="static")[0] == response
    reduce_s: dict[str, list[float]] = {"dynamic": [], "static": []}

    def capture(families=("attention-weight",)):
        return FeatureCapture.for_spans([layout.token_spans + layout.sentence_token_spans], [0], len(ids),
                                        len(layout.token_spans) + len(layout.sentence_token_spans), lm.num_layers,
                                        lm.num_heads, lm.device, families=families)

    def generate_with_capture(cache, families=("attention-weight",), record=True):
        def run():
            cap = capture(families)
            lm.generate([ids], n, capture=cap, stop_at_eos=False, cache=cache)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            cap.features()
            if device == "cuda":
                torch.cuda.synchronize()
            if record:
                reduce_s[cache].append(time.perf_counter() - start)
        return run

    prompt = torch.tensor([ids], device=lm.device)

    def hf_generate(cache_implementation=None):
        return lambda: lm.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                         min_new_tokens=n, do_sample=False, cache_implementation=cache_implementation)

    def teacher_forced(batch: int):
        def run():
            for job in collect(lm, [QUERY] * batch, [sources] * batch, responses=[text] * batch):
                scorers["passage"].score(job)
                scorers["sentence"].score(job.at_level("sentence"))
        return run

    methods = {
        "generate": lambda: lm.generate([ids], n, stop_at_eos=False),
        "generate_static": lambda: lm.generate([ids], n, stop_at_eos=False, cache="static"),
        "hf_generate": hf_generate(),
        "hf_generate_static": hf_generate("static"),
        "generate_capture": generate_with_capture("dynamic"),
        "generate_static_capture": generate_with_capture("static"),
        "forward": lambda: lm.response_logprobs([ids], [forced_ids]),
        "at2_teacher_forced": teacher_forced(1),
    }
    if args.families:
        methods["generate_capture_all_families"] = generate_with_capture("dynamic", FAMILIES, record=False)
    for batch in args.batch:
        if batch > 1 and batch * length <= args.batch_max_tokens:
            methods[f"forward_b{batch}"] = lambda b=batch: lm.response_logprobs([ids] * b, [forced_ids] * b)
            methods[f"at2_teacher_forced_b{batch}"] = teacher_forced(batch)
    for name, fn in methods.items():  # warm-up (and, for transformers' static cache, its compilation)
        if name.startswith("hf_generate") or name.endswith("_static"):
            fn()
    for cache in reduce_s:
        reduce_s[cache].clear()
    row["methods"] = interleaved(methods, device, args.repeats)
    m = {name: v["s"] for name, v in row["methods"].items()}
    row["capture_reduce_s"] = {cache: statistics.median(v) for cache, v in reduce_s.items()}
    row["ms_per_token"] = {name: 1000 * m[name] / n for name in
                           ("generate", "generate_static", "hf_generate", "hf_generate_static")}
    row["bandwidth_bytes_per_token"] = kv_bytes_per_token(lm, length)
    if args.bandwidth_gbs:
        row["bandwidth_bound_ms_per_token"] = 1000 * row["bandwidth_bytes_per_token"] / (args.bandwidth_gbs * 1e9)
    row["tokens_per_s"] = {name: n / m[name] for name in ("generate", "generate_static", "hf_generate")}
    row["capture_overhead"] = {"dynamic": m["generate_capture"] / m["generate"] - 1,
                               "static": m["generate_static_capture"] / m["generate_static"] - 1}
    if args.families:
        row["capture_overhead"]["all_families_dynamic"] = m["generate_capture_all_families"] / m["generate"] - 1
    peaks = {name: v["peak_mb"] for name, v in row["methods"].items()}
    row["capture_extra_peak_mb"] = peaks["generate_capture"] - peaks["generate"]
    row["at2_extra_peak_mb"] = peaks["at2_teacher_forced"] - peaks["forward"]
    row["batched"] = {"1": {"forward_per_s": 1 / m["forward"], "at2_per_s": 1 / m["at2_teacher_forced"]}}
    for batch in args.batch:
        if f"forward_b{batch}" in m:
            row["batched"][str(batch)] = {"forward_per_s": batch / m[f"forward_b{batch}"],
                                          "at2_per_s": batch / m[f"at2_teacher_forced_b{batch}"]}
    for values in row["batched"].values():
        values["at2_over_forward_throughput"] = values["at2_per_s"] / values["forward_per_s"]
    row["at2_teacher_forced_over_forward"] = m["at2_teacher_forced"] / m["forward"]

    if length <= args.esm_max_length:
        job = collect(lm, [QUERY], [sources], responses=[text])[0]
        row["esm32_s"], _ = timed(lambda: ESMScorer(n_ablations=32).score(job), device)
    row["eager_attentions_analytic_mb"] = lm.num_layers * lm.num_heads * (len(ids) + len(forced_ids)) ** 2 * 4 / 2**20
    if length <= args.eager_max_length:
        full = torch.tensor([ids + forced_ids[:-1]], device=lm.device)

        def eager():
            lm.model.set_attn_implementation("eager")
            try:
                with torch.inference_mode():
                    return len(lm.model(full, output_attentions=True, logits_to_keep=1).attentions)
            finally:
                lm.model.set_attn_implementation("at2")

        t, peak = timed(eager, device)
        row["eager_attentions_s"], row["eager_attentions_extra_peak_mb"] = t, peak - peaks["forward"]
    return row


def exponent(lengths: list[int], values: list[float]) -> float:
    pairs = [(x, y) for x, y in zip(lengths, values) if y and y > 0]
    if len(pairs) < 2:
        return float("nan")
    return float(np.polyfit(np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs]), 1)[0])


def load(args):
    """(language model, passage scorer, sentence scorer) for the named model or random config."""
    if not args.random_config:
        attributor = AT2Attributor.from_pretrained(args.model, device=args.device, dtype=args.dtype)
        return attributor.lm, {"passage": attributor.scorer, "sentence": attributor.sentence_scorer}
    from transformers import AutoTokenizer

    from at2_rag.lm import _resolve_dtype, default_model_path

    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        path = default_model_path()
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    lm = random_model(args.random_config, tokenizer, args.device, _resolve_dtype(args.dtype, args.device))
    scorer = uniform_scorer(lm)
    return lm, {"passage": scorer, "sentence": scorer}


def weight_mb(model) -> float:
    """Bytes of the model's weights (quantised linear layers counted at their packed int8 size)."""
    total = 0
    for value in model.state_dict().values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, tuple):  # a dynamic quantised layer's (weight, bias)
            total += sum(t.numel() * t.element_size() for t in value if isinstance(t, torch.Tensor))
    return total / 2**20


def run_precisions(args, lengths: list[int]) -> dict:
    """The issue-35 matrix: cite and forward per number format, length and batch, interleaved rounds."""
    if args.random_config or args.dtype:
        raise SystemExit("--precisions loads the named model once per precision; drop --random-config and --dtype")
    precisions = [p for p in args.precisions.split(",") if p]
    attributors, out = {}, {}
    for precision in precisions:
        start = time.perf_counter()
        attributors[precision] = AT2Attributor.from_pretrained(args.model, device=args.device, precision=precision)
        lm = attributors[precision].lm
        out[precision] = {"load_s": time.perf_counter() - start, "loaded_as": lm.precision,
                          "weights_mb": weight_mb(lm.model), "lengths": {}}
        print(f"{precision}: loaded as {lm.precision} in {out[precision]['load_s']:.1f} s", flush=True)
    reference = attributors[precisions[0]].lm
    for n_length, length in enumerate(lengths):
        sources, layout = fitted_sources(reference, Path(args.data), length, args.new_tokens)
        ids = layout.input_ids
        text = reference.decode(reference.generate([ids], args.new_tokens, stop_at_eos=False)[0])
        forced = reference.encode_response(text)
        methods = {}
        for batch in args.batch:
            if batch > 1 and batch * length > args.batch_max_tokens:
                continue
            for precision, attributor in attributors.items():
                lm = attributor.lm
                methods[(precision, batch, "forward")] = (
                    lambda lm=lm, b=batch: lm.response_logprobs([ids] * b, [forced] * b))
                methods[(precision, batch, "cite")] = (
                    (lambda a=attributor: a.cite(QUERY, sources, text)) if batch == 1 else
                    (lambda a=attributor, b=batch: a.cite_batch([QUERY] * b, [sources] * b, [text] * b)))
        if n_length == 0:  # the first call after loading: oneDNN kernels, allocator
            for precision, attributor in attributors.items():
                out[precision]["first_call_s"], _, _ = timed_rss(lambda a=attributor: a.cite(QUERY, sources, text))
                out[precision]["first_call_length"] = length
        else:
            for attributor in attributors.values():
                attributor.cite(QUERY, sources, text)
        runs: dict = {key: [] for key in methods}
        for _ in range(args.repeats):
            for kind in ("forward", "cite"):  # one round: each kind, every mode back to back
                for key, fn in methods.items():
                    if key[2] == kind:
                        runs[key].append(timed_rss(fn))
        for (precision, batch, kind), values in runs.items():
            row = out[precision]["lengths"].setdefault(str(length), {"prompt_tokens": len(ids),
                                                                     "response_tokens": len(forced)})
            cell = row.setdefault(f"b{batch}", {})
            cell[f"{kind}_s"] = statistics.median(v[0] for v in values)
            cell[f"{kind}_runs_s"] = [v[0] for v in values]
            cell[f"{kind}_peak_mb"] = statistics.median(v[1] for v in values)
            cell[f"{kind}_extra_peak_mb"] = statistics.median(v[2] for v in values)
        for precision in precisions:
            for batch_key, cell in out[precision]["lengths"][str(length)].items():
                if not batch_key.startswith("b"):
                    continue
                base = out[precisions[0]]["lengths"][str(length)][batch_key]
                cell["cite_over_forward"] = cell["cite_s"] / cell["forward_s"]
                cell["cite_vs_first"] = cell["cite_s"] / base["cite_s"]
                cell["forward_vs_first"] = cell["forward_s"] / base["forward_s"]
                cell["cites_per_s"] = int(batch_key[1:]) / cell["cite_s"]
        print(json.dumps({str(length): {p: out[p]["lengths"][str(length)] for p in precisions}}), flush=True)
    if args.memory:
        gc.collect()
        for precision in precisions:
            out[precision]["memory"] = probe = probe_memory(args, precision, lengths)
            print(f"{precision} memory: {json.dumps(probe)}", flush=True)
            for length in lengths:
                for batch_key, cell in out[precision]["lengths"].get(str(length), {}).items():
                    if batch_key.startswith("b") and f"{length}/{batch_key}" in probe.get("cite", {}):
                        cell["cite_process_peak_mb"] = probe["cite"][f"{length}/{batch_key}"]
    return out


def memory_probe(args, lengths: list[int]) -> dict:
    """In a process holding one precision's model: peak RSS (MB) of one ``cite`` per (length, batch), in
    ascending order of tokens, so memory a smaller call left in the heap never inflates a larger one's peak."""
    attributor = AT2Attributor.from_pretrained(args.model, device="cpu", precision=args.memory_probe)
    lm = attributor.lm
    out = {"loaded_mb": rss_mb(), "cite": {}}
    configs = sorted(((length, batch) for length in lengths for batch in args.batch
                      if batch == 1 or batch * length <= args.batch_max_tokens), key=lambda c: (c[0] * c[1], c[1]))
    for length, batch in configs:
        sources, _ = fitted_sources(lm, Path(args.data), length, args.new_tokens)
        ids = lm.tokenizer(sources[0].text, add_special_tokens=False)["input_ids"][: args.new_tokens]
        text = lm.decode(ids)  # a stand-in answer of new_tokens tokens: memory does not depend on its words
        reset_peak("cpu")
        attributor.cite_batch([QUERY] * batch, [sources] * batch, [text] * batch)
        out["cite"][f"{length}/b{batch}"] = peak_mb("cpu")
    return out


def probe_memory(args, precision: str, lengths: list[int]) -> dict:
    command = [sys.executable, __file__, "--memory-probe", precision, "--lengths", ",".join(map(str, lengths)),
               "--batch", ",".join(map(str, args.batch)), "--batch-max-tokens", str(args.batch_max_tokens),
               "--data", args.data, "--new-tokens", str(args.new_tokens)]
    command += ["--model", args.model] if args.model else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_precision_table(result: dict, lengths: list[int]) -> None:
    table = result["precisions"]
    first = next(iter(table))
    print(f"\n{result['model']} on {result['device']} ({result['device_name']}, {result['threads']} threads), "
          f"median of {result['repeats']} interleaved rounds; ratios against {first}")
    print(f"{'precision':>9} {'load s':>7} {'first cite s':>12} {'weights MB':>10} {'RSS loaded MB':>13}")
    for precision, r in table.items():
        first_call = r.get("first_call_s", float("nan"))
        loaded = r.get("memory", {}).get("loaded_mb", float("nan"))
        print(f"{precision:>9} {r['load_s']:>7.1f} {first_call:>12.2f} {r['weights_mb']:>10.0f} {loaded:>13.0f}")
    print(f"\n{'L':>6} {'batch':>5} {'precision':>9} {'cite s':>8} {'forward s':>9} {'cite/fwd':>8} "
          f"{'cite vs ' + first:>16} {'fwd vs ' + first:>15} {'cites/s':>8} {'peak RSS MB':>11}")
    for length in lengths:
        for batch_key in table[first]["lengths"].get(str(length), {}):
            if not batch_key.startswith("b"):
                continue
            for precision, r in table.items():
                c = r["lengths"][str(length)][batch_key]
                print(f"{length:>6} {batch_key[1:]:>5} {precision:>9} {c['cite_s']:>8.2f} {c['forward_s']:>9.2f} "
                      f"{c['cite_over_forward']:>8.2f} {c['cite_vs_first']:>16.2f} {c['forward_vs_first']:>15.2f} "
                      f"{c['cites_per_s']:>8.3f} {c.get('cite_process_peak_mb', float('nan')):>11.0f}")
    print("peak RSS: a process holding that precision only, one cite (--memory-probe)")


def print_tables(result: dict, lengths: list[int]) -> None:
    rows = [result["lengths"][str(n)] for n in lengths]
    print(f"\n{result['model']} on {result['device']} ({result['dtype']}, {result['threads']} threads), "
          f"median of {result['repeats']} interleaved rounds")
    print(f"{'L':>6} {'prompt':>6} {'ms/tok dyn':>10} {'static':>7} {'HF':>7} {'HF st':>7} {'bound':>7} "
          f"{'capture +% dyn':>14} {'static':>7} {'reduce ms/tok':>13} {'TF AT2/fwd':>10} {'peak MB':>8} "
          f"{'AT2 +MB':>8} {'ESM32/fwd':>9} {'eager +MB':>10}")
    for n, r in zip(lengths, rows):
        ms, over = r["ms_per_token"], r["capture_overhead"]
        bound = f"{r['bandwidth_bound_ms_per_token']:>7.2f}" if "bandwidth_bound_ms_per_token" in r else f"{'-':>7}"
        esm = f"{r['esm32_s'] / r['methods']['forward']['s']:>9.1f}" if "esm32_s" in r else f"{'-':>9}"
        eager = r.get("eager_attentions_extra_peak_mb", r["eager_attentions_analytic_mb"])
        print(f"{n:>6} {r['prompt_tokens']:>6} {ms['generate']:>10.2f} {ms['generate_static']:>7.2f} "
              f"{ms['hf_generate']:>7.2f} {ms['hf_generate_static']:>7.2f} {bound} {100 * over['dynamic']:>13.1f}% "
              f"{100 * over['static']:>6.1f}% {1000 * r['capture_reduce_s']['dynamic'] / r['new_tokens']:>13.3f} "
              f"{r['at2_teacher_forced_over_forward']:>10.3f} {r['methods']['forward']['peak_mb']:>8.0f} "
              f"{r['at2_extra_peak_mb']:>8.1f} {esm} {eager:>9.0f}{' ' if 'eager_attentions_s' in r else '*'}")
    print("* eager memory computed (layers x heads x L^2 x 4 bytes), not run")
    print(f"\n{'L':>6} {'batch':>5} {'forward /s':>10} {'AT2 /s':>8} {'AT2/forward throughput':>22}")
    for n, r in zip(lengths, rows):
        for batch, b in r["batched"].items():
            print(f"{n:>6} {batch:>5} {b['forward_per_s']:>10.3f} {b['at2_per_s']:>8.3f} "
                  f"{b['at2_over_forward_throughput']:>22.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192")
    parser.add_argument("--model", help="hub id, local directory or .gguf (default: the bundled model)")
    parser.add_argument("--random-config", choices=sorted(CONFIGS), help="a real architecture with random weights")
    parser.add_argument("--tokenizer", help="tokenizer directory for --random-config (default: the bundled one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 (CUDA default), float16")
    parser.add_argument("--data", default="../shared/data/hotpotqa/train.jsonl")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", default="1,8,32", help="batch sizes for teacher-forced throughput")
    parser.add_argument("--batch-max-tokens", type=int, default=2**18, help="skip a batch when batch x L exceeds it")
    parser.add_argument("--families", action="store_true", help="also time the capture of all three families")
    parser.add_argument("--esm-max-length", type=int, default=0, help="ESM-32 only up to this length")
    parser.add_argument("--eager-max-length", type=int, default=0, help="eager attentions measured up to here")
    parser.add_argument("--bandwidth-gbs", type=float, help="memory bandwidth (GB/s) for the per-token bound")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--json", default="runs/cost.json")
    parser.add_argument("--precisions", help="number formats side by side (float32,bfloat16,int8): cite and "
                        "forward per length and batch, load and first-call time, peak RSS (the first is the "
                        "reference of the ratios); replaces the default matrix")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="with --precisions: skip the per-precision memory processes")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one precision's peak RSS per call
    args = parser.parse_args()
    args.batch = [int(b) for b in args.batch.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.memory_probe:
        print(json.dumps(memory_probe(args, lengths)))
        return
    if args.precisions:
        result = {"model": args.model or "default", "device": args.device, "device_name": platform.processor()
                  or platform.machine(), "threads": torch.get_num_threads(), "date": date.today().isoformat(),
                  "torch": torch.__version__, "repeats": args.repeats, "new_tokens": args.new_tokens,
                  "batch": args.batch, "precisions": run_precisions(args, lengths)}
        print_precision_table(result, lengths)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        return
    lm, scorers = load(args)
    result = {"model": lm.model_id, "device": args.device, "dtype": str(next(lm.model.parameters()).dtype),
              "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
              or platform.machine(), "threads": torch.get_num_threads(), "date": date.today().isoformat(),
              "torch": torch.__version__, "repeats": args.repeats, "scorer": scorers["passage"].name, "lengths": {}}
    for length in lengths:
        row = run_length(lm, scorers, length, args)
        result["lengths"][str(length)] = row
        print(json.dumps({str(length): {k: v for k, v in row.items() if k != "methods"}}), flush=True)
    rows = [result["lengths"][str(n)] for n in lengths]
    result["exponents"] = {
        "at2_time": exponent(lengths, [r["methods"]["at2_teacher_forced"]["s"] for r in rows]),
        "forward_time": exponent(lengths, [r["methods"]["forward"]["s"] for r in rows]),
    }
    print_tables(result, lengths)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

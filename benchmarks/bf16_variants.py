"""Two ideas for the bfloat16 misses of issue 35, measured (neither ships).

1. **bfloat16 matmuls with a float32 residual stream** ("mixed"): the decoder's linear layers in bfloat16, while
   embeddings, norms, the residual adds and the head stay float32 (the output of ``o_proj`` and ``down_proj`` is
   cast back before it is added). If the per-row Spearman misses of pure bfloat16 came from rounding the
   residual stream, this would remove them. Compared with float32 on the rows and criteria of
   ``precision_check.py``.
2. **Where the capture's float32 time goes** at 2k tokens, per layer, with the shapes of the default model
   (9 query heads, 3 key/value heads, 64 answer rows, 10 sources): the float32 score rows, the causal mask of
   the answer's own columns, the softmax, the per-source sums. Beside them are two alternatives: the score rows
   as a bfloat16 product, and one fused SDPA call whose values are the source indicator columns (it returns
   the per-source attention directly, without the score matrix in memory).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bf16_variants.py --rows 40 --json docs/results/bf16_variants.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from precision_check import _get, compare, record, stand_in, summarise

from at2_rag import AT2Attributor
from at2_rag.eval.hotpotqa import load_hotpotqa


def mixed_bfloat16(model) -> None:
    """In place: the decoder's linear layers in bfloat16, the residual stream float32 (module hooks)."""
    def to_bf16(module, args):
        return (args[0].to(torch.bfloat16), *args[1:])

    def to_f32(module, args, out):
        return out.float()

    for layer in model.model.layers:
        for name, module in layer.named_modules():
            if isinstance(module, torch.nn.Linear):
                module.to(torch.bfloat16)
                module.register_forward_pre_hook(to_bf16)
                if name.endswith(("o_proj", "down_proj")):
                    module.register_forward_hook(to_f32)
    # rotary cos/sin follow the float32 embeddings; q and k are bfloat16
    model.model.rotary_emb.register_forward_hook(lambda m, a, out: tuple(o.to(torch.bfloat16) for o in out))


def equality(rows: int, data: str) -> dict:
    examples = load_hotpotqa(data)[:rows]
    attributor = AT2Attributor.from_pretrained(precision="float32")

    def run() -> tuple[list[dict], list[float]]:
        first = examples[0]
        attributor.cite(first.question, _get(first, "passages", "sources"), stand_in(first, "gold+fact"))
        out, seconds = [], []
        for ex in examples:
            start = time.perf_counter()
            cited = attributor.cite(ex.question, _get(ex, "passages", "sources"), stand_in(ex, "gold+fact"))
            seconds.append(time.perf_counter() - start)
            out.append(record(cited))
        return out, seconds

    reference, ref_seconds = run()
    mixed_bfloat16(attributor.lm.model)
    mixed, seconds = run()
    rows_cmp = [compare(r, m) for r, m in zip(reference, mixed)]
    return {"float32_cite_s_median": statistics.median(ref_seconds), **summarise(rows_cmp, seconds, 0.0)}


def _median_ms(fn, repeats: int = 200) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def capture_parts(length: int = 2048, rows: int = 64, heads: int = 9, kv_heads: int = 3, dim: int = 64,
                  sources: int = 10) -> dict:
    torch.manual_seed(0)
    q = torch.randn(1, heads, rows, dim).bfloat16()
    k = torch.randn(1, kv_heads, length, dim).bfloat16()
    prompt = length - rows + 1
    matrix = torch.zeros(1, prompt, sources)
    step = (prompt - 100) // sources
    for s in range(sources):
        matrix[0, 100 + s * step: 100 + (s + 1) * step, s] = 1
    positions = torch.arange(length - rows, length)
    group = heads // kv_heads
    kf = k.float()
    qf = q.float() * dim**-0.5

    def scores():
        return torch.matmul(qf.reshape(1, kv_heads, group * rows, dim), kf.transpose(-1, -2)).reshape(
            1, heads, rows, length)

    def scores_bf16():
        return torch.matmul((q * dim**-0.5).reshape(1, kv_heads, group * rows, dim), k.transpose(-1, -2)).float()

    s = scores()
    first = int(positions.min()) + 1

    def mask():
        future = torch.arange(first, length)[None, :] > positions[:, None]
        s[..., first:] = s[..., first:].masked_fill(future, float("-inf"))

    mask()
    w = torch.softmax(s, -1)
    values = torch.zeros(1, length, sources + 1)
    values[:, :prompt, :sources] = matrix
    values[:, prompt:, sources] = 1
    values = values[:, None].expand(1, kv_heads, length, sources + 1).contiguous()
    allowed = ~(torch.arange(length)[None, :] > positions[:, None])

    def fused():
        return F.scaled_dot_product_attention(qf, kf, values, attn_mask=allowed, scale=1.0, enable_gqa=True)

    reference = torch.cat([w[..., :prompt] @ matrix[:, None], w[..., prompt:].sum(-1, keepdim=True)], -1)
    parts = {"key to float32": lambda: k.float(), "score rows (float32 product)": scores, "causal mask": mask,
             "softmax": lambda: torch.softmax(s, -1), "per-source sums": lambda: w[..., :prompt] @ matrix[:, None],
             "score rows (bfloat16 product)": scores_bf16, "fused SDPA, source columns as values": fused}
    out = {name: _median_ms(fn) for name, fn in parts.items()}
    out["fused SDPA max abs difference"] = float((fused() - reference).abs().max())
    out["current path total"] = sum(out[n] for n in ("key to float32", "score rows (float32 product)",
                                                      "causal mask", "softmax", "per-source sums"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--data", default="../shared/data/hotpotqa/validation.jsonl")
    parser.add_argument("--json", default="docs/results/bf16_variants.json")
    args = parser.parse_args()
    parts = capture_parts()
    print("capture, ms per layer at 2k tokens:")
    for name, ms in parts.items():
        print(f"  {name:40s} {ms:.3g}")
    mixed = equality(args.rows, args.data)
    p, s = mixed["passage_spearman"], mixed["sentence_spearman"]
    print(f"mixed vs float32, {mixed['rows']} rows: passage rho mean {p['mean']:.4f}, rows >= 0.99 "
          f"{p['rows_at_least_0.99']}; sentence rho rows >= 0.99 {s['rows_at_least_0.99']}; cited same "
          f"{mixed['cited_same']:.3f}; supported same {mixed['supported_same']:.3f}; cite {mixed['cite_s_median']:.2f} s "
          f"(float32 {mixed['float32_cite_s_median']:.2f} s)")
    report = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "capture_ms_per_layer_2k": parts, "mixed_vs_float32": mixed}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

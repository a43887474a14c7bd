"""Does a faster number format cite the same as float32? (issue 35)

Per HotpotQA validation row, the stand-in answer of the demo (the gold answer as a sentence plus the first
supporting-fact sentence; ``--response gold``: the answer sentence alone) is cited by an attributor loaded with
each ``--precisions`` mode and by the float32 one (``AT2Attributor.from_pretrained(precision=...)``), and
compared with float32:

- Spearman of the AT2 passage scores and of the passage-sentence scores (response level), per row; also the
  sentence scores of each answer sentence (what citations read);
- per answer sentence: the cited passage sentences identical (same passages, same sentences inside them);
- per answer sentence: ``supported`` identical.

Criteria (issue 35): Spearman >= 0.99 on every row, cited sentences identical on >= 95% of answer sentences,
``supported`` identical on >= 98%. With ``--drafts``, also each mode's own greedy draft (``generate``) against
float32's: identical text, and the length of the common token prefix. LDS is not computed (it needs 32+
ablated passes per row). Seconds per ``cite`` are recorded too, but the rows are short (about 1.2k tokens)
and the modes run one after another on one row: ``benchmarks/cost.py --precisions`` is the timing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/precision_check.py --precisions bfloat16,int8 --rows 40 \\
        --json docs/results/precision_check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from at2_rag import AT2Attributor
from at2_rag.eval.hotpotqa import load_hotpotqa
from at2_rag.lm import cpu_has_native_bf16

SPEARMAN_MIN = 0.99
CITED_MIN = 0.95
SUPPORTED_MIN = 0.98


def _get(obj, *names):
    """The first of ``names`` that ``obj`` has (the passage/source naming differs between versions)."""
    for name in names:
        if name in getattr(type(obj), "model_fields", {}) or hasattr(type(obj), name) or name in vars(obj):
            return getattr(obj, name)
    raise AttributeError(f"{type(obj).__name__} has none of {names}")


def stand_in(ex, kind: str) -> str:
    """The demo's stand-in answer: the gold answer as a sentence, plus the first supporting fact."""
    if kind == "gold":
        return ex.answer_sentence
    i, j = ex.supporting[0]
    passage = _get(ex, "passages", "sources")[i]
    a, b = passage.sentence_spans()[j]
    return f"{ex.answer_sentence} {passage.text[a:b].strip()}"


def attributor(precision: str) -> AT2Attributor:
    return AT2Attributor.from_pretrained(precision=precision)


def record(cited) -> dict:
    attribution = cited.attribution
    return {
        "scores": list(attribution.scores),
        "sentence_scores": list(attribution.sentence_scores),
        "target_sentence_scores": [list(t.sentence_scores) for t in attribution.targets],
        "supported": [bool(c.supported) for c in cited.citations],
        "cited": [[[p.index, [s.index for s in p.sentences]] for p in _get(c, "passages", "sources")]
                  for c in cited.citations],
    }


def rho(a, b) -> float:
    value = spearmanr(a, b)[0]
    return float(value) if np.isfinite(value) else (1.0 if np.allclose(a, b) else 0.0)


def compare(ref: dict, other: dict) -> dict:
    targets = [rho(a, b) for a, b in zip(ref["target_sentence_scores"], other["target_sentence_scores"])]
    return {
        "passage_spearman": rho(ref["scores"], other["scores"]),
        "sentence_spearman": rho(ref["sentence_scores"], other["sentence_scores"]),
        "target_sentence_spearman": float(np.mean(targets)),
        "passage_top1_same": int(np.argmax(ref["scores"]) == np.argmax(other["scores"])),
        "cited_same": [int(a == b) for a, b in zip(ref["cited"], other["cited"])],
        "cited_passages_same": [int([p for p, _ in a] == [p for p, _ in b])
                                for a, b in zip(ref["cited"], other["cited"])],
        "supported_same": [int(a == b) for a, b in zip(ref["supported"], other["supported"])],
    }


def draft_agreement(lm, reference: str, other: str) -> dict:
    a, b = lm.encode_response(reference) if reference else [], lm.encode_response(other) if other else []
    prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {"draft_same": int(reference == other), "draft_common_prefix": prefix / max(1, len(a))}


def summarise(rows: list[dict], seconds: list[float], load_s: float) -> dict:
    def frac(key):
        values = [v for r in rows for v in r[key]]
        return sum(values) / len(values)

    out = {"rows": len(rows), "answer_sentences": sum(len(r["cited_same"]) for r in rows), "load_s": load_s,
           "cite_s_median": statistics.median(seconds)}
    for key in ("passage_spearman", "sentence_spearman", "target_sentence_spearman"):
        values = [r[key] for r in rows]
        out[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)),
                    "rows_at_least_0.99": sum(v >= SPEARMAN_MIN for v in values)}
    out["passage_top1_same"] = sum(r["passage_top1_same"] for r in rows) / len(rows)
    out["cited_same"] = frac("cited_same")
    out["cited_passages_same"] = frac("cited_passages_same")
    out["supported_same"] = frac("supported_same")
    if "draft_same" in rows[0]:
        out["draft_same"] = sum(r["draft_same"] for r in rows) / len(rows)
        out["draft_common_prefix"] = float(np.mean([r["draft_common_prefix"] for r in rows]))
    out["pass"] = {
        "spearman_every_row": all(r["passage_spearman"] >= SPEARMAN_MIN and r["sentence_spearman"] >= SPEARMAN_MIN
                                  for r in rows),
        "spearman_mean": bool(out["passage_spearman"]["mean"] >= SPEARMAN_MIN
                              and out["sentence_spearman"]["mean"] >= SPEARMAN_MIN),
        "cited": out["cited_same"] >= CITED_MIN,
        "supported": out["supported_same"] >= SUPPORTED_MIN,
    }
    out["pass"]["all"] = all(out["pass"][k] for k in ("spearman_every_row", "cited", "supported"))
    return out


def print_table(result: dict) -> None:
    print(f"\n{result['rows']} HotpotQA validation rows, {result['answer_sentences']} answer sentences, against "
          f"float32 ({result['device_name']}, {result['threads']} threads)")
    print(f"{'mode':>9} {'cite s':>7} {'load s':>7} {'passage rho mean/min':>21} {'sentence rho mean/min':>22} "
          f"{'rows>=.99':>10} {'cited same':>10} {'supported':>9} {'pass':>5}")
    for mode, s in result["modes"].items():
        p, q = s["passage_spearman"], s["sentence_spearman"]
        rows_ok = min(p["rows_at_least_0.99"], q["rows_at_least_0.99"])
        print(f"{mode:>9} {s['cite_s_median']:>7.2f} {s['load_s']:>7.1f} {p['mean']:>12.4f}/{p['min']:.4f} "
              f"{q['mean']:>13.4f}/{q['min']:.4f} {rows_ok:>6}/{s['rows']:<3} {100 * s['cited_same']:>9.1f}% "
              f"{100 * s['supported_same']:>8.1f}% {'yes' if s['pass']['all'] else 'no':>5}"
              + (f"  drafts identical {100 * s['draft_same']:.0f}%, common prefix {100 * s['draft_common_prefix']:.0f}%"
                 if "draft_same" in s else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default="bfloat16,int8", help="modes compared with float32")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--data", default="../shared/data/hotpotqa/validation.jsonl")
    parser.add_argument("--response", choices=("gold+fact", "gold"), default="gold+fact")
    parser.add_argument("--drafts", action="store_true", help="also compare the attributor's own greedy drafts")
    parser.add_argument("--json", default="docs/results/precision_check.json")
    args = parser.parse_args()
    modes = [m for m in args.precisions.split(",") if m and m != "float32"]
    examples = load_hotpotqa(args.data)[: args.rows]
    attributors, load_s = {}, {}
    for mode in ["float32", *modes]:
        start = time.perf_counter()
        attributors[mode] = attributor(mode)
        load_s[mode] = time.perf_counter() - start
        print(f"{mode}: loaded as {attributors[mode].lm.precision} in {load_s[mode]:.1f} s", file=sys.stderr)
    for a in attributors.values():  # first call (allocator, oneDNN kernels) outside the timings
        ex = examples[0]
        a.cite(ex.question, _get(ex, "passages", "sources"), stand_in(ex, args.response))
    per_mode = {m: [] for m in modes}
    seconds = {m: [] for m in attributors}
    records = []
    for n, ex in enumerate(examples):
        passages, response = _get(ex, "passages", "sources"), stand_in(ex, args.response)
        recs = {}
        for mode, a in attributors.items():
            start = time.perf_counter()
            cited = a.cite(ex.question, passages, response)
            seconds[mode].append(time.perf_counter() - start)
            recs[mode] = record(cited)
        row = {"id": ex.id, "float32": recs["float32"]}
        if args.drafts:
            drafts = {mode: a.generate(ex.question, passages) for mode, a in attributors.items()}
            row["float32"]["draft"] = drafts["float32"]
        for mode in modes:
            cmp = compare(recs["float32"], recs[mode])
            if args.drafts:
                cmp.update(draft_agreement(attributors["float32"].lm, drafts["float32"], drafts[mode]))
                recs[mode]["draft"] = drafts[mode]
            per_mode[mode].append(cmp)
            row[mode] = {**recs[mode], **cmp}
        records.append(row)
        print(f"row {n + 1}/{len(examples)} " + " ".join(
            f"{m}: rho {c[-1]['passage_spearman']:.3f}/{c[-1]['sentence_spearman']:.3f}"
            for m, c in per_mode.items()), file=sys.stderr)
    lm = attributors["float32"].lm
    result = {
        "date": date.today().isoformat(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device_name": platform.processor() or platform.machine(), "cpu_native_bf16": cpu_has_native_bf16(),
        "model": lm.model_id, "data": args.data, "rows": len(examples), "response": args.response,
        "answer_sentences": sum(len(r["float32"]["supported"]) for r in records),
        "criteria": {"spearman_min": SPEARMAN_MIN, "cited_same_min": CITED_MIN, "supported_same_min": SUPPORTED_MIN},
        "float32": {"load_s": load_s["float32"], "cite_s_median": statistics.median(seconds["float32"])},
        "modes": {m: summarise(per_mode[m], seconds[m], load_s[m]) for m in modes},
        "per_row": records,
    }
    print_table(result)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(dumps(result))


def dumps(result: dict) -> str:
    """The summary indented, one line per row; scores to 5 significant digits (per-target scores left out)."""
    def slim(value):
        if isinstance(value, float):
            return float(f"{value:.5g}")
        if isinstance(value, dict):
            return {k: slim(v) for k, v in value.items() if k != "target_sentence_scores"}
        if isinstance(value, list):
            return [slim(v) for v in value]
        return value

    rows = ",\n  ".join(json.dumps(slim(row), separators=(",", ":")) for row in result["per_row"])
    head = json.dumps({k: v for k, v in result.items() if k != "per_row"}, indent=1)
    return f'{head[:-2]},\n "per_row": [\n  {rows}\n ]\n}}\n'


if __name__ == "__main__":
    main()

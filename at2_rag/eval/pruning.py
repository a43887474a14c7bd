"""HotpotQA context pruning (the paper's Figure 5): answer, score passages, keep top-k, answer again.

Every method uses the same prompt and greedy decoding; generations are cached on disk by
(row id, kept passages), so a run resumes and identical subsets are generated once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..attributor import AT2Attributor
from ..scorers import AverageAttentionScorer, ESMScorer
from ..embeddings import minilm_embedder, question_similarity
from .hotpotqa import HotpotExample, load_hotpotqa
from .metrics import bootstrap_ci, contains_answer, exact_match, mean_gold_rank, token_f1

KS = (1, 2, 3, 4, 5)


class GenerationCache:
    """JSON-lines cache of answers keyed by row id and kept passage indices."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                self.entries[entry["key"]] = entry

    def get_or_generate(self, attributor: AT2Attributor, ex: HotpotExample, keep: list[int]) -> dict:
        key = f"{ex.id}:{','.join(map(str, keep))}"
        if key not in self.entries:
            start = time.perf_counter()
            answer = attributor.generate(ex.question, [ex.passages[i] for i in keep])
            entry = {"key": key, "answer": answer, "seconds": time.perf_counter() - start}
            self.entries[key] = entry
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        return self.entries[key]


def _embedding_scores(examples: list[HotpotExample]) -> list[np.ndarray]:
    """Cosine similarity of question and passage under all-MiniLM-L6-v2 (the usual RAG reranker)."""
    embed = minilm_embedder()
    return [question_similarity(embed, ex.question, [f"{s.title}: {s.text}" if s.title else s.text
                                                     for s in ex.passages]) for ex in examples]


def _answer_metrics(answer: str, gold: str) -> dict[str, float]:
    return {"f1": token_f1(answer, gold), "em": exact_match(answer, gold), "contains": contains_answer(answer, gold)}


def _summarise(per_row: list[dict[str, float]]) -> dict:
    out = {key: float(np.mean([r[key] for r in per_row])) for key in per_row[0]}
    out["f1_ci95"] = bootstrap_ci([r["f1"] for r in per_row])
    return out


def run(attributor: AT2Attributor, examples: list[HotpotExample], cache_dir: Path, esm_ablations: int = 32,
        progress: bool = True) -> dict:
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = GenerationCache(cache_dir / "generations.jsonl")
    scorers = {"at2": attributor.scorer, "average-attention": AverageAttentionScorer()}
    if esm_ablations:
        scorers[f"esm-{esm_ablations}"] = ESMScorer(n_ablations=esm_ablations)
    if attributor.scorer.name != "at2":
        scorers.pop("at2")
    embedding = _embedding_scores(examples)
    fusion = attributor.calibration.fusion if attributor.calibration is not None else {}
    extra = ["embedding", *(["fused"] if "attributor" in fusion else []), "at2 (gold-answer draft)",
             *(["fused (gold-answer draft)"] if "llm" in fusion else [])]
    rows: dict[str, list] = {"baseline": [], "oracle": []}
    per_k: dict[str, dict[int, list]] = {m: {k: [] for k in KS} for m in [*scorers, *extra]}
    timing: dict[str, list[float]] = {m: [] for m in scorers}
    gold_rank: dict[str, list[float]] = {m: [] for m in per_k}
    generation_seconds = []
    for i, ex in enumerate(tqdm(examples, desc="hotpotqa pruning", disable=not progress)):
        job = attributor.pipeline.jobs([ex.question], [ex.passages])[0]
        generation_seconds.append(job.timings["generate_s"])
        rows["baseline"].append(_answer_metrics(job.response, ex.answer))
        rows["oracle"].append(_answer_metrics(cache.get_or_generate(attributor, ex, ex.gold)["answer"], ex.answer))
        method_scores = {"embedding": embedding[i]}
        for name, scorer in scorers.items():
            start = time.perf_counter()
            method_scores[name] = np.asarray(scorer.score(job)).mean(0)
            timing[name].append(time.perf_counter() - start)
        gold_draft = attributor.attribute(ex.question, ex.passages, ex.answer_sentence).scores
        method_scores["at2 (gold-answer draft)"] = np.asarray(gold_draft)
        if "attributor" in fusion:
            method_scores["fused"] = fusion["attributor"].fuse(method_scores["at2"], embedding[i])
        if "llm" in fusion:
            method_scores["fused (gold-answer draft)"] = fusion["llm"].fuse(gold_draft, embedding[i])
        for name, scores in method_scores.items():
            order = np.argsort(-scores, kind="stable")
            gold_rank[name].append(mean_gold_rank(scores, ex.gold))
            for k in KS:
                keep = sorted(order[:k].tolist())
                answer = cache.get_or_generate(attributor, ex, keep)["answer"]
                metrics = _answer_metrics(answer, ex.answer)
                metrics["gold_recall"] = len(set(keep) & set(ex.gold)) / max(1, len(ex.gold))
                per_k[name][k].append(metrics)
    mean_generation = float(np.mean(generation_seconds))
    methods: dict = {"baseline": _summarise(rows["baseline"]), "oracle": _summarise(rows["oracle"])}
    for name, by_k in per_k.items():
        methods[name] = {str(k): _summarise(v) for k, v in by_k.items()}
        methods[name]["mean_gold_rank"] = float(np.mean(gold_rank[name]))
        if name in timing:
            methods[name]["attribution_s"] = float(np.mean(timing[name]))
            methods[name]["attribution_over_generation"] = float(np.mean(timing[name])) / mean_generation
    random_rank = (len(examples[0].passages) + 1) / 2 if examples else None
    return {"model": attributor.lm.model_id, "scorer_for_at2": attributor.scorer.name, "n_examples": len(examples),
            "generation_s": mean_generation, "random_gold_rank": random_rank, "methods": methods}


def print_table(result: dict) -> None:
    methods = result["methods"]
    print(f"\n{result['model']} on {result['n_examples']} HotpotQA rows (F1 [95% CI] / EM / contains / gold recall)")
    for name in ("baseline", "oracle"):
        m = methods[name]
        print(f"{name:<18} F1 {m['f1']:.3f} [{m['f1_ci95'][0]:.3f},{m['f1_ci95'][1]:.3f}]  "
              f"EM {m['em']:.3f}  contains {m['contains']:.3f}")
    header = "".join(f"{'k=' + str(k):>26}" for k in KS)
    print(f"{'method':<18}{header}")
    for name, by_k in methods.items():
        if name in ("baseline", "oracle"):
            continue
        cells = "".join(f"{by_k[str(k)]['f1']:>9.3f}/{by_k[str(k)]['contains']:.2f}/{by_k[str(k)]['gold_recall']:.2f}"
                        f"{'':>5}" for k in KS)
        extra = f"  gold rank {by_k['mean_gold_rank']:.2f}"
        if "attribution_s" in by_k:
            extra += f", attribution {by_k['attribution_over_generation']:.3g}x generation"
        print(f"{name:<18}{cells}{extra}")
    print(f"(cells: F1 / contains / gold recall; mean gold-passage rank, random = {result['random_gold_rank']})")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result["methods"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, by_k in methods.items():
        if name in ("baseline", "oracle"):
            continue
        ax.plot(KS, [by_k[str(k)]["f1"] for k in KS], marker="o", label=name)
    ax.axhline(methods["baseline"]["f1"], color="gray", linestyle="--", label="no pruning")
    ax.axhline(methods["oracle"]["f1"], color="black", linestyle=":", label="oracle (gold only)")
    ax.set_xticks(KS)
    ax.set_xlabel("passages kept (k)")
    ax.set_ylabel("token F1")
    ax.set_title(f"HotpotQA pruning, {result['model'].split('/')[-1]}, n={result['n_examples']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data/hotpotqa/validation.jsonl")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--model")
    parser.add_argument("--coefficients")
    parser.add_argument("--esm-ablations", type=int, default=32, help="0 to skip the ESM baseline")
    parser.add_argument("--cache-dir", default="runs/hotpotqa_pruning")
    parser.add_argument("--json", default="runs/hotpotqa_pruning.json")
    parser.add_argument("--plot", default=None, help="PNG path (default: next to --json)")
    args = parser.parse_args(argv)
    attributor = AT2Attributor.from_pretrained(args.model, args.coefficients, max_new_tokens=32)
    examples = load_hotpotqa(args.data, args.limit)
    result = run(attributor, examples, Path(args.cache_dir), args.esm_ablations)
    print_table(result)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, Path(args.plot) if args.plot else out.with_suffix(".png"))
    print(f"wrote {out} and {Path(args.plot) if args.plot else out.with_suffix('.png')}")
    return result

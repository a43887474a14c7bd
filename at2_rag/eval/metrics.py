"""Attribution metrics (top-k drop, LDS) and HotpotQA answer metrics (EM, token F1, containment)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr

from ..ablation import DEFAULT_OBJECTIVE, ablation_outputs
from ..features import AttributionJob


def top_k_masks(scores: np.ndarray, ks=(1, 2, 3)) -> np.ndarray:
    """``[1 + len(ks), passages]`` keep-masks: everything, then without the k highest-scored passages (response mean)."""
    n = scores.shape[-1]
    order = np.argsort(-scores.mean(0), kind="stable")
    masks = np.ones((1 + len(ks), n), dtype=bool)
    for row, k in enumerate(ks, start=1):
        masks[row, order[: min(k, n)]] = False
    return masks


def top_k_drop(job: AttributionJob, scores: np.ndarray, ks=(1, 2, 3), batch_size: int | None = None,
               ablate: Callable[[np.ndarray], np.ndarray] | None = None,
               objective: str = DEFAULT_OBJECTIVE) -> dict[int, float]:
    """Drop in the response's output (``target``, mean over targets) when the k highest-scored passages are
    removed. ``ablate`` maps masks to ``[masks, targets]`` outputs (e.g. a cache shared by several scorers)."""
    ablate = ablate or (lambda masks: ablation_outputs(job, masks, batch_size, objective))
    outputs = ablate(top_k_masks(scores, ks)).mean(1)
    return {k: float(outputs[0] - outputs[row]) for row, k in enumerate(ks, start=1)}


def lds(job: AttributionJob, scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray | None = None,
        batch_size: int | None = None, objective: str = DEFAULT_OBJECTIVE) -> float:
    """Linear datamodeling score: Spearman correlation, over random ablation masks, between the predicted
    output (sum of kept passages' scores) and the actual output (``target``), averaged over targets."""
    if outputs is None:
        outputs = ablation_outputs(job, masks, batch_size, objective)
    correlations = []
    for t in range(len(job.targets)):
        predicted = masks.astype(float) @ scores[t]
        if np.ptp(predicted) == 0 or np.ptp(outputs[:, t]) == 0:
            correlations.append(0.0)
            continue
        correlations.append(float(spearmanr(predicted, outputs[:, t]).statistic))
    return float(np.mean(correlations))


def mean_gold_rank(source_scores: np.ndarray, gold) -> float:
    """Mean 1-based rank of the gold passages when ``source_scores`` (one per source) are sorted descending."""
    order = np.argsort(-np.asarray(source_scores), kind="stable")
    return float(np.mean([int(np.flatnonzero(order == g)[0]) + 1 for g in gold]))


def ranking_metrics(scores: np.ndarray, relevant, ks=(2, 4)) -> dict[str, float]:
    """Top-1 hit, recall@k (share of the relevant items in the top k) and reciprocal rank of the first hit."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    relevant = set(int(r) for r in relevant)
    if not relevant:
        raise ValueError("ranking metrics need at least one relevant item")
    first = next(rank for rank, i in enumerate(order, start=1) if int(i) in relevant)
    out = {"top1": float(int(order[0]) in relevant)}
    out.update({f"recall@{k}": len(relevant & set(order[:k].tolist())) / len(relevant) for k in ks})
    out["mrr"] = 1.0 / first
    return out


def bootstrap_ci(values, n: int = 2000, seed: int = 0, statistic=None) -> list[float]:
    """95% percentile bootstrap interval over examples: of their mean (numbers), or of ``statistic`` (a function
    of a resampled list of items, e.g. an F1 over answers)."""
    if statistic is not None:
        items = list(values)
        if not items:
            return [float("nan")] * 2
        rng = np.random.default_rng(seed)
        stats = [statistic([items[i] for i in rng.integers(0, len(items), len(items))]) for _ in range(n)]
        return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return [float(values.mean()), float(values.mean())] if len(values) else [float("nan")] * 2
    means = values[np.random.default_rng(seed).integers(0, len(values), (n, len(values)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def normalize_answer(text: str) -> str:
    """SQuAD/HotpotQA normalisation: lower-case, drop punctuation, articles and extra whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, gold: str) -> float:
    gold_norm = normalize_answer(gold)
    return float(bool(gold_norm) and f" {gold_norm} " in f" {normalize_answer(prediction)} ")

"""Pruning policy: which sources to keep given their scores."""

from __future__ import annotations

from collections.abc import Sequence

from .validation import check_prune


def select(
    scores: Sequence[float],
    top_k: int | None = None,
    threshold: float | None = None,
    max_tokens: int | None = None,
    token_counts: Sequence[int] | None = None,
) -> list[int]:
    """Indices to keep, in original order. Criteria combine (all must hold); the best source is always kept.

    ``top_k``: at most k sources; ``threshold``: score at least this; ``max_tokens``: greedily add the
    best sources while their token total stays within the budget. Bad values raise ``InvalidInputError``.
    """
    check_prune(top_k, threshold, max_tokens)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list[int] = []
    used = 0
    for rank, i in enumerate(order):
        if top_k is not None and len(kept) >= top_k:
            break
        if threshold is not None and scores[i] < threshold and rank > 0:
            break
        if max_tokens is not None and token_counts is not None and rank > 0 and used + token_counts[i] > max_tokens:
            continue
        kept.append(i)
        used += token_counts[i] if token_counts is not None else 0
    return sorted(kept)

"""Pruning policy: which passages to keep given their ranking scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .validation import check_prune


def select(
    ranking: Sequence[float],
    top_n: int | None = None,
    threshold: float | None = None,
    max_tokens: int | None = None,
    token_counts: Sequence[int] | None = None,
    keep: Sequence[float] | None = None,
) -> list[int]:
    """Indices to keep, in original order. Criteria combine (all must hold); the best passage is always kept.

    ``top_n``: at most n passages; ``threshold``: ranking score at least this; ``max_tokens``: greedily add the
    best passages while their token total stays within the budget; ``keep``: per passage, whether the adaptive
    rule keeps it (1/0, or its keep probability >= 0.5). Bad values raise ``InvalidInputError``.
    """
    check_prune(top_n, threshold, max_tokens)
    order = sorted(range(len(ranking)), key=lambda i: -ranking[i])
    wanted = None if keep is None else np.asarray(keep, dtype=float) >= 0.5
    kept: list[int] = []
    used = 0
    for rank, i in enumerate(order):
        if top_n is not None and len(kept) >= top_n:
            break
        if threshold is not None and ranking[i] < threshold and rank > 0:
            break
        if wanted is not None and not wanted[i] and rank > 0:
            continue
        if max_tokens is not None and token_counts is not None and rank > 0 and used + token_counts[i] > max_tokens:
            continue
        kept.append(i)
        used += token_counts[i] if token_counts is not None else 0
    return sorted(kept)

"""Side-by-side evaluation of scorers on the same examples, the same responses and the same ablation masks."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from .ablation import ablation_outputs, random_masks
from .attributor import AT2Attributor
from .hotpotqa import HotpotExample
from .metrics import lds, top_k_drop
from .scorers import Scorer


def evaluate_scorers(
    attributor: AT2Attributor,
    examples: Sequence[HotpotExample],
    scorers: Sequence[Scorer],
    n_lds_masks: int = 32,
    ks: Sequence[int] = (1, 2, 3),
    progress: bool = True,
) -> dict:
    """LDS, top-k drop, seconds per example and gold-passage rank for each scorer (DESIGN.md section 5)."""
    rows: dict[str, dict[str, list]] = {s.name: {"lds": [], "drop": [], "seconds": [], "gold_rank": []} for s in scorers}
    for i, ex in enumerate(tqdm(examples, desc="evaluate", disable=not progress)):
        job = attributor.jobs([ex.question], [ex.sources])[0]
        masks = random_masks(len(ex.sources), n_lds_masks, 0.5, seed=10_000 + i)
        outputs = ablation_outputs(job, masks)
        for scorer in scorers:
            start = time.perf_counter()
            scores = np.asarray(scorer.score(job), dtype=float)
            elapsed = time.perf_counter() - start
            r = rows[scorer.name]
            r["lds"].append(lds(job, scores, masks, outputs))
            r["drop"].append(top_k_drop(job, scores, ks))
            r["seconds"].append(elapsed)
            order = np.argsort(-scores.mean(0), kind="stable")
            r["gold_rank"].append(float(np.mean([int(np.where(order == g)[0][0]) + 1 for g in ex.gold])))
    summary = {}
    for name, r in rows.items():
        summary[name] = {
            "lds": float(np.mean(r["lds"])),
            "top_k_drop": {str(k): float(np.mean([d[k] for d in r["drop"]])) for k in ks},
            "seconds_per_example": float(np.mean(r["seconds"])),
            "mean_gold_rank": float(np.mean(r["gold_rank"])),
        }
    return {"model": attributor.lm.model_id, "n_examples": len(examples), "n_lds_masks": n_lds_masks,
            "random_gold_rank": (len(examples[0].sources) + 1) / 2 if examples else None, "scorers": summary}

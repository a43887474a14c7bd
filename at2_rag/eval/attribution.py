"""Side-by-side evaluation of scorers on the same examples, the same responses and the same ablation masks.

With a work directory every example keeps its ablation outputs (keyed by mask) and one record per scorer,
so a long run resumes after interruption, splits into shards, and re-scoring with new coefficients only
pays for the ablations that scorer's new top-k passages need.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..ablation import (DEFAULT_METHOD, DEFAULT_OBJECTIVE, METHODS, OBJECTIVES, ablation_logprobs, check_choice,
                        random_masks, span_outputs, target_spans)
from ..attributor import AT2Attributor
from ..features import AttributionJob
from ..scorers import ESMScorer, Scorer
from .hotpotqa import HotpotExample
from .metrics import bootstrap_ci, lds, mean_gold_rank, top_k_drop


class AblationCache:
    """Per-example memo of ablated log-probs (every response token) keyed by keep-mask, optionally persisted
    as ``.npz``; it answers with the outputs of ``target``, so one set of passes serves every target.

    Stored log-probs are only reused for the same response text and ablation method: a different model or
    prompt invalidates them.
    """

    def __init__(self, job: AttributionJob, path: Path | None = None, objective: str = DEFAULT_OBJECTIVE,
                 method: str = DEFAULT_METHOD):
        self.job = job
        self.path = path
        self.objective = check_choice(objective, OBJECTIVES, "objective")
        self.method = check_choice(method, METHODS, "ablation method")
        self._logprobs: dict[bytes, np.ndarray] = {}
        self.passes, self.seconds = 0, 0.0
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                if "logprobs" in data and str(data["response"]) == job.response and str(data["method"]) == method:
                    self._logprobs = {m.tobytes(): o for m, o in zip(data["masks"], data["logprobs"])}

    def logprobs(self, masks: np.ndarray) -> np.ndarray:
        """``[n_masks, response tokens]``; only masks not seen before run the model."""
        masks = np.asarray(masks, dtype=bool)
        missing = list({m.tobytes(): m for m in masks if m.tobytes() not in self._logprobs}.values())
        if missing:
            start = time.perf_counter()
            fresh = ablation_logprobs(self.job, np.stack(missing), method=self.method).numpy()
            self.passes, self.seconds = self.passes + len(missing), self.seconds + time.perf_counter() - start
            self._logprobs.update({m.tobytes(): o for m, o in zip(missing, fresh)})
            self._save()
        return np.stack([self._logprobs[m.tobytes()] for m in masks])

    def __call__(self, masks: np.ndarray, objective: str | None = None) -> np.ndarray:
        """``[n_masks, targets]`` outputs of ``target`` (default: this cache's)."""
        logprobs = torch.from_numpy(self.logprobs(masks))
        return span_outputs(logprobs, target_spans(self.job), objective or self.objective).numpy()

    def _save(self) -> None:
        if self.path is None:
            return
        n = self.job.num_units
        masks = np.stack([np.frombuffer(k, dtype=bool, count=n) for k in self._logprobs])
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, masks=masks, logprobs=np.stack(list(self._logprobs.values())),
                 response=np.array(self.job.response), method=np.array(self.method))
        tmp.rename(self.path)


def scorer_key(scorer: Scorer) -> str:
    """Name of a scorer's cached record: its name, plus a digest of θ for learned scorers."""
    coefficients = getattr(scorer, "coefficients", None)
    if coefficients is None:
        return scorer.name
    return f"{scorer.name}-{coefficients.digest}"


def _check_manifest(work_dir: Path, manifest: dict) -> None:
    path = work_dir / "manifest.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != manifest:
            raise ValueError(f"{work_dir} holds an evaluation with other settings ({stored}, now {manifest}); "
                             "use another --work-dir")
    else:
        work_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2))


def _gold_units(job: AttributionJob, example: HotpotExample) -> list[int]:
    """Gold passages, or at sentence level the supporting sentences' indices among all sentences."""
    if job.level == "passage":
        return list(example.gold)
    first: dict[int, int] = {}
    for unit, (source, _, _) in enumerate(job.sentences):
        first.setdefault(source, unit)
    return [first[p] + s for p, s in example.supporting if p in first]


def evaluate_example(
    attributor: AT2Attributor,
    example: HotpotExample,
    index: int,
    scorers: Sequence[Scorer],
    n_lds_masks: int = 32,
    ks: Sequence[int] = (1, 2, 3),
    example_dir: Path | None = None,
    level: str = "passage",
    responses: str = "generated",
    objective: str = DEFAULT_OBJECTIVE,
    method: str = DEFAULT_METHOD,
) -> dict[str, dict]:
    """One record per scorer: LDS, top-k drop, scoring seconds, mean gold rank (cached under ``example_dir``).

    ``level``: attribute to passages or to the sentences inside them; ``responses``: the model's own answer
    ('generated') or the gold answer as a sentence ('gold', teacher-forced); ``target`` and ``method``: what
    the ground truth measures and how it ablates (``ablation.OBJECTIVES``, ``ablation.METHODS``); ESM fits the
    same. The LDS of every target is recorded too (``lds_by_objective``, the same passes). ESM scorers share the
    example's ablation cache (ESM-32's masks are the first of ESM-128's); their seconds are their passes
    times the measured seconds per ablated pass."""
    records: dict[str, dict] = {}
    todo = []
    suffix = "" if (objective, method) == (DEFAULT_OBJECTIVE, DEFAULT_METHOD) else f".{objective}.{method}"
    for scorer in scorers:
        path = example_dir / f"{scorer_key(scorer)}{suffix}.json" if example_dir else None
        stored = json.loads(path.read_text()) if path is not None and path.is_file() else None
        if stored is not None and (stored.get("objective", stored.get("target")), stored.get("method")) == (objective, method):
            records[scorer.name] = stored
        else:  # none yet, or written before records said their target (those measured token-log-odds)
            todo.append((scorer, path))
    if not todo:
        return records
    if example_dir is not None:
        example_dir.mkdir(parents=True, exist_ok=True)
    families = sorted({f for scorer, _ in todo for f in getattr(scorer, "families", ())} | {"attention-weight"},
                      key=("attention-weight", "value-norm", "output-norm").index)
    response = example.answer_sentence if responses == "gold" else None
    job = attributor.pipeline.jobs([example.question], [example.passages], [response], families=families)[0].at_level(level)
    cache_name = "ablations.npz" if method == DEFAULT_METHOD else f"ablations.{method}.npz"
    ablate = AblationCache(job, example_dir / cache_name if example_dir else None, objective, method)
    masks = random_masks(job.num_units, n_lds_masks, 0.5, seed=10_000 + index)
    outputs = ablate(masks)
    for scorer, path in todo:
        start = time.perf_counter()
        if isinstance(scorer, ESMScorer):
            scores = np.asarray(scorer.score(job, ablate=ablate), dtype=float)
            elapsed = time.perf_counter() - start + scorer.n_ablations * ablate.seconds / max(ablate.passes, 1)
        else:
            scores = np.asarray(scorer.score(job), dtype=float)
            elapsed = time.perf_counter() - start
        record = {
            "example_id": example.id,
            "scorer": scorer.name,
            "key": scorer_key(scorer),
            "response": job.response,
            "objective": objective,
            "method": method,
            "lds": lds(job, scores, masks, outputs),
            "lds_by_objective": {t: lds(job, scores, masks, ablate(masks, t)) for t in OBJECTIVES},
            "top_k_drop": {str(k): v for k, v in top_k_drop(job, scores, ks, ablate=ablate).items()},
            "seconds": elapsed,
            "gold_rank": mean_gold_rank(scores.mean(0), _gold_units(job, example)),
            "n_units": job.num_units,
            "scores": scores.tolist(),
        }
        if path is not None:
            path.write_text(json.dumps(record))
        records[scorer.name] = record
    return records


def evaluate_scorers(
    attributor: AT2Attributor,
    examples: Sequence[HotpotExample],
    scorers: Sequence[Scorer],
    n_lds_masks: int = 32,
    ks: Sequence[int] = (1, 2, 3),
    progress: bool = True,
    work_dir: str | Path | None = None,
    shard: int = 0,
    num_shards: int = 1,
    level: str = "passage",
    responses: str = "generated",
    objective: str = DEFAULT_OBJECTIVE,
    method: str = DEFAULT_METHOD,
) -> dict:
    """LDS, top-k drop, seconds per example and gold-passage rank for each scorer,
    averaged over this shard's examples, with 95% bootstrap intervals over examples."""
    work = Path(work_dir) if work_dir is not None else None
    if work is not None:
        manifest = {"model": attributor.lm.model_id, "n_lds_masks": n_lds_masks, "ks": list(ks)}
        if (level, responses) != ("passage", "generated"):
            manifest.update(level=level, responses=responses)
        if attributor.lm.precision != "float32":  # ablations and scores of another number format are not reused
            manifest.update(precision=attributor.lm.precision)
        _check_manifest(work, manifest)
    mine = [(i, ex) for i, ex in enumerate(examples) if i % num_shards == shard]
    per_example = []
    for i, ex in tqdm(mine, desc=f"evaluate shard {shard}/{num_shards}", disable=not progress):
        example_dir = work / f"{i:05d}-{ex.id}" if work is not None else None
        per_example.append(evaluate_example(attributor, ex, i, scorers, n_lds_masks, ks, example_dir, level,
                                            responses, objective, method))
    summary = {}
    for scorer in scorers:
        rows = [records[scorer.name] for records in per_example]
        lds_values = [r["lds"] for r in rows]
        summary[scorer.name] = {
            "lds": float(np.mean(lds_values)),
            "lds_ci95": bootstrap_ci(lds_values),
            "lds_by_objective": {t: float(np.mean([r["lds_by_objective"][t] for r in rows])) for t in OBJECTIVES},
            "top_k_drop": {str(k): float(np.mean([r["top_k_drop"][str(k)] for r in rows])) for k in ks},
            "top_k_drop_ci95": {str(k): bootstrap_ci([r["top_k_drop"][str(k)] for r in rows]) for k in ks},
            "seconds_per_example": float(np.mean([r["seconds"] for r in rows])),
            "mean_gold_rank": float(np.mean([r["gold_rank"] for r in rows])),
        }
    mean_units = float(np.mean([next(iter(r.values())).get("n_units", 0) for r in per_example])) if per_example \
        else 0.0
    return {
        "model": attributor.lm.model_id,
        "n_examples": len(mine),
        "n_lds_masks": n_lds_masks,
        "level": level,
        "responses": responses,
        "objective": objective,
        "method": method,
        "mean_units": mean_units,
        "shard": shard,
        "num_shards": num_shards,
        "random_gold_rank": (mean_units + 1) / 2 if per_example else None,  # the mean of (units + 1) / 2
        "scorers": summary,
        "records": [{name: {k: v for k, v in r.items() if k != "scores"} for name, r in records.items()}
                    for records in per_example],
    }

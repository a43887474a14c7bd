"""Learn AT2 coefficients: collect ablations per example (the costly part, kept as a small portable record),
capture features of every family in one cheap pass, then fit θ by maximising the Pearson correlation
between predicted and actual ablation outputs (the AT2 objective)."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..ablation import (DEFAULT_METHOD, DEFAULT_OBJECTIVE, METHODS, OBJECTIVES, ablation_logprobs, ablation_logprobs_shared,
                       check_choice, random_masks, span_outputs, target_spans)
from ..attention import FAMILIES, family_name, parse_families
from ..coefficients import CoefficientMetadata, Coefficients
from ..errors import InvalidInputError
from ..features import collect
from ..lm import LanguageModel
from ..prompts import PromptTemplate
from ..passages import Passage

ABLATION_KEYS = ("masks", "outputs", "token_logprobs", "response", "method")
"""A collected file's ablations: keep-masks, the outputs of the target it was collected with (training
recomputes any target from the token log-probs and the ``target_spans`` its feature pass records), the
response and how passages were ablated (``ablation.METHODS``)."""
CONTEXT_KEYS = ("context", "base_row", "recipe", "response_kind")
"""What a recombined example's file adds: its context's id (the cross-fitting group), base row and recipe
(to rebuild the context from the rows) and which response it reads."""


class TrainingExample(Protocol):
    """What training needs of an example: an id, a question and its passages (any dataset fits)."""

    id: str
    question: str
    passages: list[Passage]


def _features(lm: LanguageModel, ex: TrainingExample, response: str, level: str, families: Sequence[str],
              template: PromptTemplate | None, n_tokens: int | None = None) -> dict[str, np.ndarray]:
    """One teacher-forced pass: target-averaged and per-token features of every family (float16)."""
    job = collect(lm, [ex.question], [ex.passages], [response], template=template, families=families)[0].at_level(level)
    if n_tokens is not None and len(job.response_ids) != n_tokens:
        raise InvalidInputError(f"example {ex.id}: the stored response re-tokenizes to {len(job.response_ids)} "
                                f"tokens, not the {n_tokens} its ablations scored; collect it again")
    return _job_arrays(job, level)


def _job_arrays(job, level: str) -> dict[str, np.ndarray]:
    """What a file keeps of a collected job: features (float16), families, level and target token spans."""
    return {"features": job.features.numpy().astype(np.float16),
            "token_features": job.token_features.numpy().astype(np.float16),
            "families": np.array(family_name(job.families)), "level": np.array(level),
            "target_spans": np.array(target_spans(job), dtype=np.int64).reshape(-1, 2)}


def _captured(item: dict[str, np.ndarray]) -> tuple[str, ...]:
    """Families whose features a collected file holds (files from before families held attention weights)."""
    if "features" not in item:
        return ()
    return parse_families(str(item["families"])) if "families" in item else ("attention-weight",)


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.rename(path)


def _shard(out_dir: str | Path, families: Sequence[str], items: Sequence, shard: int,
           num_shards: int) -> tuple[Path, tuple[str, ...], list[tuple[int, object]]]:
    """The output folder (created), the parsed families and this shard's (index, item) pairs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, parse_families(families), [(i, it) for i, it in enumerate(items) if i % num_shards == shard]


def collect_examples(
    lm: LanguageModel,
    examples: Sequence[TrainingExample],
    out_dir: str | Path,
    level: str = "passage",
    n_masks: int = 32,
    keep_prob: float = 0.5,
    shard: int = 0,
    num_shards: int = 1,
    max_new_tokens: int = 32,
    template: PromptTemplate | None = None,
    progress: bool = True,
    responses: Sequence[str | None] | None = None,
    families: Sequence[str] = FAMILIES,
    method: str = DEFAULT_METHOD,
) -> list[Path]:
    """Write one ``.npz`` per example of this shard; resumable (finished examples are skipped). ``method``:
    how passages are ablated (``ablation.METHODS``).

    ``level='sentence'`` ablates the sentences inside the passages. ``responses`` (one per example)
    teacher-forces given answers; None generates the model's own. An example whose ablations exist (collected
    earlier or imported with ``import_ablations``) but lack a requested feature family costs one more pass only.
    """
    check_choice(method, METHODS, "ablation method")
    out_dir, families, mine = _shard(out_dir, families, examples, shard, num_shards)
    written = []
    for i, ex in tqdm(mine, desc=f"collect shard {shard}/{num_shards}", disable=not progress):
        path = out_dir / f"{i:05d}-{ex.id}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as stored:
                item = dict(stored)
            if _method_of(item) != method:
                raise InvalidInputError(f"{path} was ablated by {_method_of(item)!r}, not {method!r}; use another "
                                        "work directory")
            if not set(families) <= set(_captured(item)) or "target_spans" not in item:
                item.update(_features(lm, ex, str(item["response"]), level, families, template,
                                      item["token_logprobs"].shape[1]))
                _write(path, item)
        else:
            response = responses[i] if responses is not None else None
            job = collect(lm, [ex.question], [ex.passages], [response], template=template,
                          max_new_tokens=max_new_tokens, families=families)[0].at_level(level)
            masks = random_masks(job.num_units, n_masks, keep_prob, seed=i)
            logprobs = ablation_logprobs(job, masks, method=method)
            _write(path, {"masks": masks, "outputs": span_outputs(logprobs, target_spans(job)).numpy(),
                          "token_logprobs": logprobs.numpy(), "response": np.array(job.response),
                          "method": np.array(method), **_job_arrays(job, level)})
        written.append(path)
    return written


def _drafts(lm: LanguageModel, ex, template: PromptTemplate | None, kinds: Sequence[str], max_new_tokens: int,
            seed: int) -> dict[str, str]:
    """The model's own greedy and/or sampled (temperature 1, seeded) drafts of a context, blank-line stopped."""
    from ..prompts import build_prompt

    prompt = build_prompt(lm.tokenizer, ex.question, ex.passages, template=template or PromptTemplate()).input_ids
    drafts = {}
    for kind in kinds:
        sample = torch.Generator().manual_seed(seed) if kind == "sampled" else None
        ids = lm.generate([prompt], max_new_tokens, stop_at_blank_line=True, sample=sample)[0]
        drafts[kind] = lm.decode(ids).strip()
    return drafts


def collect_contexts(
    lm: LanguageModel,
    contexts: Sequence,
    out_dir: str | Path,
    level: str = "passage",
    kinds: Sequence[str] = ("gold", "support", "greedy", "sampled"),
    n_masks: int = 32,
    keep_prob: float = 0.5,
    shard: int = 0,
    num_shards: int = 1,
    max_new_tokens: int = 32,
    template: PromptTemplate | None = None,
    families: Sequence[str] = ("attention-weight",),
    progress: bool = True,
) -> list[Path]:
    """Several responses per recombined context (``eval.recombine``), one ``.npz`` each; resumable per context.

    All responses of a context share its keep-masks, and each ablated prompt is read once for all of them, so a
    context of R responses costs about as much as one example. Files carry ``CONTEXT_KEYS``: cross-fitting
    groups by context, never splitting the responses of one context across folds. Empty or repeated responses
    (a draft equal to the gold sentence) are dropped.
    """
    from .recombine import context_seed

    out_dir, families, mine = _shard(out_dir, families, contexts, shard, num_shards)
    written = []
    for i, ex in tqdm(mine, desc=f"collect contexts {shard}/{num_shards}", disable=not progress):
        done = out_dir / f"{i:05d}-{ex.id}.done"
        if done.exists():
            written += [out_dir / name for name in done.read_text().split()]
            continue
        seed = context_seed(ex.id)
        texts = {k: ex.responses[k] for k in kinds if k in ex.responses}
        texts.update(_drafts(lm, ex, template, [k for k in kinds if k not in ex.responses], max_new_tokens, seed))
        unique: dict[str, str] = {}
        for kind, text in texts.items():
            if text and text not in unique.values():
                unique[kind] = text
        if not unique:  # only drafts were asked for and the model wrote nothing: no example here
            done.write_text("")
            continue
        jobs = [collect(lm, [ex.question], [ex.passages], [text], template=template, families=families)[0]
                .at_level(level) for text in unique.values()]
        masks = random_masks(jobs[0].num_units, n_masks, keep_prob, seed=seed)
        names = []
        for kind, job, logprobs in zip(unique, jobs, ablation_logprobs_shared(jobs, masks)):
            path = out_dir / f"{i:05d}-{ex.id}-{kind}.npz"
            _write(path, {"masks": masks, "outputs": span_outputs(logprobs, target_spans(job)).numpy(),
                          "token_logprobs": logprobs.numpy(), "response": np.array(job.response),
                          "method": np.array(DEFAULT_METHOD), **_job_arrays(job, level),
                          "context": np.array(ex.id), "base_row": np.array(ex.base_row),
                          "recipe": np.array(ex.recipe, dtype=np.int64), "response_kind": np.array(kind)})
            names.append(path.name)
        done.write_text("\n".join(names))
        written += [out_dir / name for name in names]
    return written


def refresh_context_features(lm: LanguageModel, paths: Sequence[Path], rows: Sequence, level: str,
                             families: Sequence[str], template: PromptTemplate | None = None,
                             progress: bool = True) -> None:
    """Give imported recombined examples (ablations only) the features of ``families``: the context is rebuilt
    from ``rows`` by its recipe, then one teacher-forced pass per response."""
    from .recombine import rebuild

    families = parse_families(families)
    for path in tqdm(list(paths), desc="features", disable=not progress):
        with np.load(path, allow_pickle=False) as stored:
            item = dict(stored)
        if set(families) <= set(_captured(item)) and "target_spans" in item:
            continue
        ex = rebuild(rows, str(item["context"]), int(item["base_row"]), item["recipe"].tolist())
        item.update(_features(lm, ex, str(item["response"]), level, families, template,
                              item["token_logprobs"].shape[1]))
        _write(path, item)


def export_ablations(paths: Iterable[str | Path], out: str | Path) -> Path:
    """Write the costly part of collected examples (masks, outputs, token log-probs, response) as gzipped JSON
    lines, a few KB per example: small enough to keep next to the coefficients they trained."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        for p in sorted(Path(p) for p in paths):
            with np.load(p, allow_pickle=False) as item:
                record = {"file": p.name, "response": str(item["response"]),
                          "masks": ["".join("1" if k else "0" for k in m) for m in item["masks"]],
                          "outputs": item["outputs"].tolist(), "token_logprobs": item["token_logprobs"].tolist(),
                          "method": _method_of(item)}
                if "context" in item:
                    record.update(context=str(item["context"]), base_row=int(item["base_row"]),
                                  recipe=item["recipe"].tolist(), response_kind=str(item["response_kind"]))
            f.write(json.dumps(record) + "\n")
    return out


def import_ablations(path: str | Path, out_dir: str | Path) -> list[Path]:
    """Recreate per-example files (without features) from ``export_ablations``' output; existing files stay."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            target = out_dir / record["file"]
            if not target.exists():
                arrays = {"masks": np.array([[c == "1" for c in m] for m in record["masks"]]),
                          "outputs": np.array(record["outputs"], dtype=np.float32),
                          "token_logprobs": np.array(record["token_logprobs"], dtype=np.float32),
                          "response": np.array(record["response"]),
                          "method": np.array(record.get("method", DEFAULT_METHOD))}
                if "context" in record:
                    arrays.update(context=np.array(record["context"]), base_row=np.array(record["base_row"]),
                                  recipe=np.array(record["recipe"], dtype=np.int64),
                                  response_kind=np.array(record["response_kind"]))
                _write(target, arrays)
            written.append(target)
    return written


@dataclass
class Design:
    """Fitting data with the passages summed out: ``pred[n, m] = X[n, m] · θ`` with
    ``X[n, m] = Σ_s (2 mask[m, s] - 1) F[n, s]``, so examples with any number of passages share one array.

    ``x`` ``[targets, masks, features]`` is float16 (memory-mapped when built with ``path``); ``y`` the
    ablation outputs; ``groups`` the example each target came from, or its context when several responses
    share one (for cross-fitting by context).
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray

    @classmethod
    def from_items(cls, items: Sequence[dict[str, np.ndarray]], path: str | Path | None = None) -> Design:
        n = sum(it["features"].shape[0] for it in items)
        n_masks = items[0]["masks"].shape[0]
        n_features = items[0]["features"].shape[-1]
        shape = (n, n_masks, n_features)
        x = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float16, shape=shape) if path else \
            np.zeros(shape, dtype=np.float16)
        y = np.zeros((n, n_masks), dtype=np.float32)
        groups = np.zeros(n, dtype=np.int64)
        group_of: dict[str, int] = {}
        row = 0
        for i, it in enumerate(items):
            g = group_of.setdefault(str(it["context"]) if "context" in it else f"item {i}", len(group_of))
            if it["masks"].shape[0] != n_masks or it["features"].shape[-1] != n_features:
                raise InvalidInputError("collected examples differ in mask count or feature width; collect again")
            signs = 2.0 * it["masks"].astype(np.float32) - 1.0
            for t in range(it["features"].shape[0]):
                x[row] = signs @ it["features"][t].astype(np.float32)
                y[row] = it["outputs"][:, t]
                groups[row] = g
                row += 1
        return cls(x, y, groups)

    @classmethod
    def load(cls, paths: Iterable[str | Path], families: Sequence[str] = ("attention-weight",),
             chunk_tokens: int | None = None, path: str | Path | None = None,
             objective: str = DEFAULT_OBJECTIVE) -> Design:
        """Design of these collected examples for ``families`` (columns picked from what was captured), with
        ablation outputs of ``target`` (``ablation.OBJECTIVES``) computed from the stored token log-probs."""
        check_choice(objective, OBJECTIVES, "objective")
        return cls.from_items([_item(p, parse_families(families), chunk_tokens, objective) for p in paths], path)

    def subset(self, keep: np.ndarray) -> Design:
        return Design(self.x[keep], self.y[keep], self.groups[keep])

    def usable(self) -> np.ndarray:
        """Targets whose ablation outputs vary (a constant target carries no signal and has no correlation)."""
        return self.y.std(-1) > 0


def _item(path: str | Path, families: tuple[str, ...], chunk_tokens: int | None,
          objective: str = DEFAULT_OBJECTIVE) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        item = dict(stored)
    captured = _captured(item)
    if not set(families) <= set(captured) or "target_spans" not in item:
        raise InvalidInputError(f"{path} has no {family_name(families)} features or target spans (captured: "
                                f"{captured or 'none'}); run collect_examples (or train) on it again: only the "
                                "feature pass runs")
    width = item["features"].shape[-1] // len(captured)

    def pick(array: np.ndarray) -> np.ndarray:
        return np.concatenate([array[..., captured.index(f) * width : (captured.index(f) + 1) * width]
                               for f in families], axis=-1)

    item["features"] = pick(item["features"])
    spans = [tuple(span) for span in item["target_spans"].tolist()]
    if chunk_tokens:
        tokens = pick(item["token_features"]).astype(np.float32)
        spans = [(a, min(a + chunk_tokens, len(tokens))) for a in range(0, len(tokens), chunk_tokens)]
        item["features"] = np.stack([tokens[a:b].mean(0) for a, b in spans])
    item["outputs"] = span_outputs(torch.from_numpy(item["token_logprobs"]), spans, objective).numpy()
    return item


def _method_of(item) -> str:
    """How a collected file's passages were ablated (files from before the option: removal)."""
    return str(item["method"]) if "method" in item else DEFAULT_METHOD


def ablation_method(path: str | Path) -> str:
    with np.load(path, allow_pickle=False) as item:
        return _method_of(item)


def _pearson(pred: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    pred = pred - pred.mean(-1, keepdim=True)
    actual = actual - actual.mean(-1, keepdim=True)
    return (pred * actual).sum(-1) / (pred.norm(dim=-1) * actual.norm(dim=-1) + 1e-8)


def correlation(theta: torch.Tensor, design: Design) -> float:
    """Mean Pearson correlation over targets between predicted and actual ablation outputs."""
    keep = design.usable()
    x = torch.from_numpy(np.asarray(design.x[keep], dtype=np.float32))
    return float(_pearson(x @ theta.float(), torch.from_numpy(design.y[keep])).mean())


def fit_theta(design: Design, steps: int = 1000, lr: float = 1e-3, batch_size: int = 512, seed: int = 0,
              l2: float = 0.0, standardize: bool = False, progress: bool = True, l1: float = 0.0,
              shrink: float = 0.0) -> torch.Tensor:
    """Adam on -Pearson (+ ``l2`` · |θ|² in standardised units), cosine decay, grad-norm clip 1, θ from uniform;
    Pearson ignores θ's scale, so the two regularisers that matter here ignore it too: ``shrink`` pulls the
    L1-normalised θ toward uniform (average attention; early stopping does this implicitly, since θ starts
    there) and ``l1`` penalises |θ|₁ / (√F |θ|₂), which is smallest for sparse θ (few heads);
    returned L1-normalised. ``standardize`` divides each feature by its RMS first (families whose scales
    differ across heads, e.g. value norms) and folds that scale back into θ."""
    keep = np.flatnonzero(design.usable())
    n_features = design.x.shape[-1]
    scale = torch.ones(n_features)
    if standardize:
        sq = np.zeros(n_features)
        for start in range(0, len(keep), 1024):
            sq += (np.asarray(design.x[keep[start : start + 1024]], dtype=np.float64) ** 2).sum((0, 1))
        scale = torch.from_numpy(np.sqrt(sq / max(1, len(keep) * design.x.shape[1]))).float().clamp(min=1e-12)
    theta = torch.full((n_features,), 1.0 / n_features, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(design.y)
    for _ in tqdm(range(steps), desc="fit θ", disable=not progress):
        idx = np.sort(keep[torch.randperm(len(keep), generator=generator)[:batch_size].numpy()])
        x = torch.from_numpy(np.asarray(design.x[idx], dtype=np.float32)) / scale
        loss = -_pearson(x @ theta, y_all[idx]).mean() + l2 * (theta * n_features).pow(2).mean()
        if shrink:
            loss = loss + shrink * (n_features * theta / theta.abs().sum() - 1).pow(2).mean()
        if l1:
            loss = loss + l1 * theta.abs().sum() / (theta.norm() * n_features ** 0.5)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([theta], 1.0)
        optimizer.step()
        schedule.step()
    theta = theta.detach() / scale
    return theta / theta.abs().sum()


def crossfit_correlations(design: Design, folds: int = 5, scored: Design | None = None,
                          **fit_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Held-out correlation of every usable target of ``scored`` (by default ``design``) and its group: θ is fit
    on every group outside one fold (``groups % folds``) and scores that fold's targets."""
    scored = scored if scored is not None else design
    n_groups = len(np.unique(design.groups))
    if n_groups < folds:
        raise InvalidInputError(f"cross-fitting {folds} folds needs at least {folds} examples, not {n_groups}")
    values, groups = [], []
    for k in range(folds):
        theta = fit_theta(design.subset(design.groups % folds != k), progress=False, **fit_kwargs)
        held = scored.subset(scored.groups % folds == k)
        keep = held.usable()
        if keep.any():
            x = torch.from_numpy(np.asarray(held.x[keep], dtype=np.float32))
            values.append(_pearson(x @ theta.float(), torch.from_numpy(held.y[keep])).numpy())
            groups.append(held.groups[keep])
    if not values:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(values), np.concatenate(groups)


def cross_fit(design: Design, folds: int = 5, scored: Design | None = None, **fit_kwargs) -> float:
    """Held-out correlation: fit on every example outside one fold, score that fold's examples (in ``scored``,
    e.g. sentence targets when fitting on token chunks; by default ``design`` itself), averaged over targets."""
    values, _ = crossfit_correlations(design, folds, scored, **fit_kwargs)
    return float(values.mean()) if len(values) else 0.0


def train(
    lm: LanguageModel,
    collected: Sequence[Path],
    level: str,
    training_data: str,
    families: Sequence[str] = ("attention-weight",),
    steps: int = 1000,
    l2: float = 0.0,
    folds: int = 5,
    chunk_tokens: int | None = None,
    command: str = "",
    progress: bool = True,
    objective: str = DEFAULT_OBJECTIVE,
) -> Coefficients:
    """Fit θ for ``families`` on every collected example to predict ``target`` (``ablation.OBJECTIVES``); report
    the in-sample correlation (the ceiling of a linear surrogate on these features) and, with enough examples,
    the ``folds``-fold cross-fitted one. Correlations are measured on sentence targets, whatever
    ``chunk_tokens`` fit on. The file records the target and the ablation method of the collected files."""
    families = parse_families(families)
    paths = sorted(collected)
    methods = {ablation_method(p) for p in paths}
    if len(methods) > 1:
        raise InvalidInputError(f"the collected files mix ablation methods {sorted(methods)}; train on one")
    fit_design = Design.load(paths, families, chunk_tokens, objective=objective)
    sentence_design = Design.load(paths, families, objective=objective) if chunk_tokens else fit_design
    kwargs = {"steps": steps, "l2": l2, "standardize": families != ("attention-weight",)}
    theta = fit_theta(fit_design, progress=progress, **kwargs)
    uniform = torch.full_like(theta, 1.0 / theta.numel())
    metrics = {"train_correlation": correlation(theta, sentence_design),
               "train_correlation_uniform": correlation(uniform, sentence_design)}
    if len(paths) >= 2 * folds:
        metrics["crossfit_correlation"] = cross_fit(fit_design, folds, sentence_design, **kwargs)
    fp = lm.fingerprint
    metadata = CoefficientMetadata(
        model_id=fp["model_id"], model_type=fp["model_type"], revision=lm.revision, num_layers=fp["num_layers"],
        num_heads=fp["num_heads"], level=level, feature_family=family_name(families),
        training_data=training_data, n_examples=len(paths), n_targets=int(fit_design.x.shape[0]),
        n_ablations=int(fit_design.x.shape[1]), metrics=metrics, objective=objective,
        ablation=methods.pop() if methods else DEFAULT_METHOD,
        notes="targets: "
              + (f"chunks of {chunk_tokens} response tokens, " if chunk_tokens else "")
              + f"response sentences; Pearson objective, Adam lr 1e-3 cosine, {steps} steps"
              + (f", L2 {l2}" if l2 else "") + (", features standardised" if kwargs["standardize"] else "")
              + f", L1-normalised; crossfit = {folds}-fold by example; command: {command}",
    )
    return Coefficients(theta=theta, metadata=metadata)


def write_summary(coefficients: Coefficients, path: str | Path) -> None:
    Path(path).write_text(json.dumps(coefficients.metadata.model_dump(), indent=2))

"""Learn AT2 coefficients: collect (features, ablation masks, outputs) per example, then fit θ by
maximising the Pearson correlation between predicted and actual ablation outputs (the AT2 objective)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .ablation import ablation_logprobs, random_masks, target_logit_means
from .coefficients import CoefficientMetadata, Coefficients
from .features import collect
from .lm import LanguageModel
from .prompts import PromptTemplate
from .sources import Source


class TrainingExample(Protocol):
    """What training needs of an example: an id, a question and its sources (any dataset fits)."""

    id: str
    question: str
    sources: list[Source]


def collect_examples(
    lm: LanguageModel,
    examples: Sequence[TrainingExample],
    out_dir: str | Path,
    source_kind: str = "passage",
    n_masks: int = 32,
    keep_prob: float = 0.5,
    shard: int = 0,
    num_shards: int = 1,
    max_new_tokens: int = 32,
    template: PromptTemplate | None = None,
    progress: bool = True,
    responses: Sequence[str | None] | None = None,
) -> list[Path]:
    """Write one ``.npz`` per example of this shard (skipping those already written, so runs resume).

    ``source_kind='sentence'`` ablates the sentences inside the passages. ``responses`` (one per example)
    teacher-forces given answers; None generates the model's own.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    mine = [(i, ex) for i, ex in enumerate(examples) if i % num_shards == shard]
    for i, ex in tqdm(mine, desc=f"collect shard {shard}/{num_shards}", disable=not progress):
        path = out_dir / f"{i:05d}-{ex.id}.npz"
        if not path.exists():
            response = responses[i] if responses is not None else None
            job = collect(lm, [ex.question], [ex.sources], [response], template=template,
                          max_new_tokens=max_new_tokens)[0].at_level(source_kind)
            masks = random_masks(job.num_units, n_masks, keep_prob, seed=i)
            logprobs = ablation_logprobs(job, masks)
            outputs = torch.stack([target_logit_means(logprobs[:, t.token_start : t.token_end])
                                   for t in job.targets], 1)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, features=job.features.numpy(), masks=masks, outputs=outputs.numpy(),
                     token_features=job.token_features.numpy(), token_logprobs=logprobs.numpy(),
                     response=np.array(job.response))
            tmp.rename(path)
        written.append(path)
    return written


def load_collected(paths: Iterable[str | Path], chunk_tokens: int | None = None) -> list[dict[str, np.ndarray]]:
    """Read collected examples (plain arrays; no pickle).

    Targets are the response sentences; with ``chunk_tokens``, examples that kept token-level data are
    re-cut into consecutive chunks of that many response tokens (more sub-targets from the same ablations).
    """
    items = []
    for p in paths:
        item = dict(np.load(p, allow_pickle=False))
        if chunk_tokens and "token_features" in item:
            tokens = item["token_features"].shape[0]
            spans = [(a, min(a + chunk_tokens, tokens)) for a in range(0, tokens, chunk_tokens)]
            logprobs = torch.from_numpy(item["token_logprobs"])
            item["features"] = np.stack([item["token_features"][a:b].mean(0) for a, b in spans])
            item["outputs"] = torch.stack([target_logit_means(logprobs[:, a:b]) for a, b in spans], 1).numpy()
        items.append(item)
    return items


def _stack_targets(items: Sequence[dict[str, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten to per-target rows, zero-padding sources: features [N,S,F], signs [N,M,S], outputs [N,M]."""
    n_sources = max(it["features"].shape[1] for it in items)
    feats, signs, outs = [], [], []
    for it in items:
        f, m, y = it["features"], it["masks"], it["outputs"]
        pad = n_sources - f.shape[1]
        sign = np.pad(2.0 * m - 1.0, ((0, 0), (0, pad)))
        for t in range(f.shape[0]):
            feats.append(np.pad(f[t], ((0, pad), (0, 0))))
            signs.append(sign)
            outs.append(y[:, t])
    return (torch.tensor(np.stack(feats), dtype=torch.float32), torch.tensor(np.stack(signs), dtype=torch.float32),
            torch.tensor(np.stack(outs), dtype=torch.float32))


def _pearson(pred: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    pred = pred - pred.mean(-1, keepdim=True)
    actual = actual - actual.mean(-1, keepdim=True)
    return (pred * actual).sum(-1) / (pred.norm(dim=-1) * actual.norm(dim=-1) + 1e-8)


def correlation(theta: torch.Tensor, items: Sequence[dict[str, np.ndarray]]) -> float:
    """Mean Pearson correlation over targets between predicted and actual ablation outputs."""
    feats, signs, outs = _stack_targets(items)
    keep = outs.std(-1) > 0
    pred = torch.einsum("nms,nsf,f->nm", signs, feats, theta)
    return float(_pearson(pred[keep], outs[keep]).mean())


def fit_theta(items: Sequence[dict[str, np.ndarray]], steps: int = 1000, lr: float = 1e-3, batch_size: int = 512,
              seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Adam on -Pearson correlation, cosine decay, grad-norm clip 1, θ from 1/F; returned L1-normalised."""
    feats, signs, outs = _stack_targets(items)
    keep = outs.std(-1) > 0
    feats, signs, outs = feats[keep], signs[keep], outs[keep]
    n_features = feats.shape[-1]
    theta = torch.full((n_features,), 1.0 / n_features, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="fit θ", disable=not progress):
        idx = torch.randperm(len(feats), generator=generator)[:batch_size]
        pred = torch.einsum("nms,nsf,f->nm", signs[idx], feats[idx], theta)
        loss = -_pearson(pred, outs[idx]).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([theta], 1.0)
        optimizer.step()
        schedule.step()
    theta = theta.detach()
    return theta / theta.abs().sum()


def train(
    lm: LanguageModel,
    collected: Sequence[Path],
    source_kind: str,
    training_data: str,
    holdout_fraction: float = 0.2,
    steps: int = 1000,
    chunk_tokens: int | None = None,
    progress: bool = True,
) -> Coefficients:
    """Fit on collected examples; the last ``holdout_fraction`` of them reports generalisation, then θ is
    refit on all. Correlations are always measured on sentence targets, whatever ``chunk_tokens`` fit on."""
    paths = sorted(collected)
    fit_items, sentence_items = load_collected(paths, chunk_tokens), load_collected(paths)
    n_holdout = int(len(paths) * holdout_fraction) if len(paths) >= 5 else 0
    n_fit = len(paths) - n_holdout
    theta = fit_theta(fit_items[:n_fit], steps=steps, progress=progress)
    uniform = torch.full_like(theta, 1.0 / theta.numel())
    metrics = {"train_correlation": correlation(theta, sentence_items[:n_fit]),
               "train_correlation_average_attention": correlation(uniform, sentence_items[:n_fit])}
    if n_holdout:
        metrics["holdout_correlation"] = correlation(theta, sentence_items[n_fit:])
        metrics["holdout_correlation_average_attention"] = correlation(uniform, sentence_items[n_fit:])
        theta = fit_theta(fit_items, steps=steps, progress=progress)
    fp = lm.fingerprint
    metadata = CoefficientMetadata(
        model_id=fp["model_id"], model_type=fp["model_type"], revision=lm.revision, num_layers=fp["num_layers"],
        num_heads=fp["num_heads"], source_kind=source_kind, training_data=training_data, n_examples=len(paths),
        n_targets=sum(it["features"].shape[0] for it in fit_items), n_ablations=int(fit_items[0]["masks"].shape[0]),
        metrics=metrics,
        notes="targets: "
              + (f"chunks of {chunk_tokens} response tokens where token data was kept, else " if chunk_tokens else "")
              + f"response sentences; Pearson objective, Adam lr 1e-3 cosine, {steps} steps, L1-normalised; "
              f"holdout = last {n_holdout} examples (sentence targets), final θ refit on all",
    )
    return Coefficients(theta=theta, metadata=metadata)


def write_summary(coefficients: Coefficients, path: str | Path) -> None:
    Path(path).write_text(json.dumps(coefficients.metadata.model_dump(), indent=2))

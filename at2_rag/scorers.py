"""Scorers: turn an AttributionJob into scores[target, source]. AT2 and average attention read the
captured features; ESM (ContextCite) and gradients run the model again, so they are the costly baselines."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .coefficients import Coefficients
from .features import AttributionJob


@runtime_checkable
class Scorer(Protocol):
    """Anything with a ``name`` and ``score(job) -> ndarray[targets, sources]``."""

    name: str

    def score(self, job: AttributionJob) -> np.ndarray: ...


class AT2Scorer:
    """Learned linear surrogate over head-wise attention: ``score = F · θ``."""

    name = "at2"

    def __init__(self, coefficients: Coefficients):
        self.coefficients = coefficients

    @classmethod
    def from_file(cls, path) -> AT2Scorer:
        return cls(Coefficients.load(path))

    def score(self, job: AttributionJob) -> np.ndarray:
        theta = self.coefficients.theta.to(job.token_features.device)
        return (job.features @ theta).cpu().numpy()


class AverageAttentionScorer:
    """Attention averaged uniformly over every layer and head (θ = 1/F): the untrained baseline."""

    name = "average-attention"

    def score(self, job: AttributionJob) -> np.ndarray:
        return job.features.mean(-1).cpu().numpy()


class ESMScorer:
    """ContextCite: a LASSO surrogate fit on ``n_ablations`` random ablations of this very example."""

    def __init__(self, n_ablations: int = 32, keep_prob: float = 0.5, alpha: float = 0.01, seed: int = 0,
                 batch_size: int | None = None):
        self.n_ablations = n_ablations
        self.keep_prob = keep_prob
        self.alpha = alpha
        self.seed = seed
        self.batch_size = batch_size
        self.name = f"esm-{n_ablations}"

    def score(self, job: AttributionJob) -> np.ndarray:
        from sklearn.linear_model import Lasso

        from .ablation import ablation_outputs, random_masks

        masks = random_masks(job.num_units, self.n_ablations, self.keep_prob, self.seed)
        outputs = ablation_outputs(job, masks, batch_size=self.batch_size)
        scores = np.zeros((len(job.targets), job.num_units))
        for t in range(len(job.targets)):
            model = Lasso(alpha=self.alpha, fit_intercept=True).fit(masks.astype(np.float64), outputs[:, t])
            scores[t] = model.coef_
        return scores


class GradientScorer:
    """Gradient x input: d(response log-prob)/d(embedding) · embedding, summed over each source's tokens."""

    name = "gradient"

    def score(self, job: AttributionJob) -> np.ndarray:
        from .ablation import target_logit_means

        logprobs, embeds = job.lm.response_logprobs([job.layout.input_ids], [job.response_ids], grad_embeddings=True)
        scores = np.zeros((len(job.targets), job.num_units))
        indices, spans = job.layout.spans(job.level)
        for t, target in enumerate(job.targets):
            value = target_logit_means(logprobs[:, target.token_start : target.token_end]).sum()
            (grad,) = torch.autograd.grad(value, embeds, retain_graph=t + 1 < len(job.targets))
            saliency = (grad * embeds).sum(-1)[0].detach()
            for unit, (a, b) in zip(indices, spans):
                scores[t, unit] = float(saliency[a:b].sum())
        return scores


def make_scorer(name: str, coefficients: Coefficients | None = None) -> Scorer:
    """Build a scorer from its name: ``at2``, ``average-attention``, ``gradient`` or ``esm-N``."""
    if name == "at2":
        if coefficients is None:
            raise ValueError("the at2 scorer needs coefficients")
        return AT2Scorer(coefficients)
    if name == "average-attention":
        return AverageAttentionScorer()
    if name == "gradient":
        return GradientScorer()
    if name.startswith("esm-") and name[4:].isdigit():
        return ESMScorer(n_ablations=int(name[4:]))
    raise ValueError(f"unknown scorer {name!r}; choose at2, average-attention, gradient or esm-N")

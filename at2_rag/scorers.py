"""Scorers: turn an AttributionJob into scores[target, source]. AT2 and average attention read the
captured features; ESM (ContextCite) and gradients run the model again, so they are the costly baselines."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .ablation import DEFAULT_METHOD, DEFAULT_OBJECTIVE, METHODS, OBJECTIVES, check_choice, target_values
from .attention import parse_families
from .coefficients import Coefficients
from .errors import CoefficientMismatchError
from .features import AttributionJob


@runtime_checkable
class Scorer(Protocol):
    """Anything with a ``name`` and ``score(job) -> ndarray[targets, passages]``."""

    name: str

    def score(self, job: AttributionJob) -> np.ndarray: ...


class AT2Scorer:
    """Learned linear surrogate over head-wise features: ``score = F · θ``.

    ``families`` (optional) is what the caller expects the file to weigh; a file of another feature family
    raises ``CoefficientMismatchError`` instead of silently scoring the wrong features.
    """

    name = "at2"

    def __init__(self, coefficients: Coefficients, families: str | tuple[str, ...] | None = None):
        coefficients.validate_values()
        if families is not None and parse_families(families) != coefficients.families:
            raise CoefficientMismatchError(
                f"these coefficients weigh {coefficients.metadata.feature_family!r} features, not "
                f"{'+'.join(parse_families(families))!r}"
            )
        self.coefficients = coefficients
        self.families = coefficients.families
        self.name = "at2" if self.families == ("attention-weight",) else f"at2:{coefficients.metadata.feature_family}"

    @classmethod
    def from_file(cls, path, families: str | tuple[str, ...] | None = None) -> AT2Scorer:
        return cls(Coefficients.load(path), families)

    def score(self, job: AttributionJob) -> np.ndarray:
        theta = self.coefficients.theta.to(job.token_features.device)
        return (job.family_features(self.families) @ theta).cpu().numpy()


class AverageAttentionScorer:
    """Attention averaged uniformly over every layer and head (θ = 1/F): the untrained baseline."""

    name = "average-attention"
    families = ("attention-weight",)

    def score(self, job: AttributionJob) -> np.ndarray:
        return job.family_features(self.families).mean(-1).cpu().numpy()


def lasso_surrogate(masks: np.ndarray, outputs: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """ContextCite's solver: standardise the 0/1 keep-masks, fit a LASSO per target, map the weights back to
    mask units (``coef / scale``). ``outputs`` ``[n_masks, targets]`` are one value per target (with the
    paper's target, its log-odds divided by its token count, as the reference does before fitting). Returns
    ``[targets, units]``."""
    from sklearn.linear_model import Lasso
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(masks.astype(np.float64))
    standardised = scaler.transform(masks.astype(np.float64))
    scores = np.zeros((outputs.shape[1], masks.shape[1]))
    for t in range(outputs.shape[1]):
        model = Lasso(alpha=alpha, random_state=0, fit_intercept=True).fit(standardised, outputs[:, t])
        scores[t] = model.coef_ / scaler.scale_
    return scores


class ESMScorer:
    """ContextCite: a LASSO surrogate fit on ``n_ablations`` random ablations of this very example.

    Masks come from one seeded stream, so ESM-32's masks are the first 32 of ESM-128's: with a shared
    ``ablate`` cache (see ``eval.attribution.AblationCache``) the larger budgets reuse the smaller ones' passes.
    ``mask_stream='contextcite'`` draws ContextCite's own masks for the seed; with ``objective`` the paper's and
    ``method='mask'`` it is ContextCite's estimator (its scores are these times the target's token count).
    """

    families: tuple[str, ...] = ()

    def __init__(self, n_ablations: int = 32, keep_prob: float = 0.5, alpha: float = 0.01, seed: int = 0,
                 batch_size: int | None = None, objective: str = DEFAULT_OBJECTIVE, method: str = DEFAULT_METHOD,
                 mask_stream: str = "at2-rag"):
        self.n_ablations = n_ablations
        self.keep_prob = keep_prob
        self.alpha = alpha
        self.seed = seed
        self.batch_size = batch_size
        self.objective = check_choice(objective, OBJECTIVES, "objective")
        self.method = check_choice(method, METHODS, "ablation method")
        self.mask_stream = mask_stream
        self.name = f"esm-{n_ablations}"

    def score(self, job: AttributionJob, ablate=None) -> np.ndarray:
        """LASSO weights per target; ``ablate`` (masks -> outputs, e.g. a shared cache) decides the target and
        method itself when given."""
        from .ablation import ablation_outputs, random_masks

        masks = random_masks(job.num_units, self.n_ablations, self.keep_prob, self.seed, self.mask_stream)
        outputs = ablate(masks) if ablate is not None else ablation_outputs(
            job, masks, batch_size=self.batch_size, objective=self.objective, method=self.method)
        return lasso_surrogate(masks, outputs, self.alpha)


class GradientScorer:
    """Gradient x input: d(response log-prob)/d(embedding) · embedding, summed over each source's tokens."""

    name = "gradient"
    families: tuple[str, ...] = ()

    def __init__(self, objective: str = DEFAULT_OBJECTIVE):
        self.objective = check_choice(objective, OBJECTIVES, "objective")

    def score(self, job: AttributionJob) -> np.ndarray:
        logprobs, embeds = job.lm.response_logprobs([job.layout.input_ids], [job.response_ids], grad_embeddings=True)
        scores = np.zeros((len(job.targets), job.num_units))
        indices, spans = job.layout.spans(job.level)
        for t, target in enumerate(job.targets):
            value = target_values(logprobs[:, target.token_start : target.token_end], self.objective).sum()
            (grad,) = torch.autograd.grad(value, embeds, retain_graph=t + 1 < len(job.targets))
            saliency = (grad * embeds).sum(-1)[0].detach()
            for unit, (a, b) in zip(indices, spans):
                scores[t, unit] = float(saliency[a:b].sum())
        return scores


def make_scorer(name: str, coefficients: Coefficients | None = None, objective: str = DEFAULT_OBJECTIVE) -> Scorer:
    """Build a scorer from its name: ``at2`` (with ``coefficients``), ``average-attention``, ``gradient`` or
    ``esm-N`` (the last two fit or differentiate ``target``)."""
    if name == "at2":
        if coefficients is None:
            raise ValueError("the at2 scorer needs coefficients")
        return AT2Scorer(coefficients)
    if name == "average-attention":
        return AverageAttentionScorer()
    if name == "gradient":
        return GradientScorer(objective)
    if name.startswith("esm-") and name[4:].isdigit():
        return ESMScorer(n_ablations=int(name[4:]), objective=objective)
    raise ValueError(f"unknown scorer {name!r}; choose at2, average-attention, gradient or esm-N")

"""The one fitter of ``LogisticModel``: L2 logistic regression on standardised inputs, classes optionally
weighted equally, with the sign of chosen weights fixed; and Platt calibration written as knots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..logistic import LogisticModel


def fit_logistic(x: np.ndarray, y: np.ndarray, inputs: Sequence[str], c: float = 1.0,
                 signs: Mapping[str, int] | None = None, balanced: bool = False) -> LogisticModel:
    """Fit on ``x`` ``[rows, inputs]`` and 0/1 labels. ``signs``: input -> +1 (weight >= 0) or -1 (<= 0), for
    inputs whose direction is known (unconstrained, correlated inputs can take opposite signs and extrapolate
    badly). ``balanced``: weight the two classes equally. ``c``: inverse L2 strength (sklearn's convention)."""
    from scipy.optimize import minimize

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    mean, std = x.mean(0), x.std(0)
    scale = np.where(std > 0, std, 1.0)
    z = (x - mean) / scale
    if balanced:
        weight = np.where(y == 1, len(y) / (2 * max(1, y.sum())), len(y) / (2 * max(1, len(y) - y.sum())))
    else:
        weight = np.ones(len(y))
    sign = np.array([(signs or {}).get(name, 0) for name in inputs])

    def loss(theta):
        w, b = theta[:-1], theta[-1]
        logits = z @ w + b
        p = 1.0 / (1.0 + np.exp(-logits))
        value = np.sum(weight * (np.logaddexp(0.0, logits) - y * logits)) + 0.5 / c * w @ w
        grad = weight * (p - y)
        return value, np.append(z.T @ grad + w / c, grad.sum())

    bounds = [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in sign] + [(None, None)]
    theta = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": 5000}).x
    return LogisticModel(inputs=list(inputs), mean=mean.tolist(), scale=scale.tolist(), weights=theta[:-1].tolist(),
                         bias=float(theta[-1]))


def platt_knots(raw: np.ndarray, y: np.ndarray, knots: int = 200) -> tuple[list[float], list[float]]:
    """Platt scaling (a logistic map of the raw score's logit) fit on held-out rows, written as knots for linear
    interpolation at quantiles of the held-out raw scores plus the ends. Unlike isotonic steps it keeps every
    distinction of the raw ranking, so thresholds can move in small steps."""
    raw = np.clip(np.asarray(raw, dtype=float), 1e-6, 1 - 1e-6)
    logit = np.log(raw / (1 - raw))
    model = fit_logistic(logit.reshape(-1, 1), y, ["logit"], c=1e4)
    xs = np.unique(np.concatenate([[0.0, 1.0], np.quantile(raw, np.linspace(0, 1, knots + 1))]))
    clipped = np.clip(xs, 1e-6, 1 - 1e-6)
    return xs.tolist(), model.raw({"logit": np.log(clipped / (1 - clipped))}).tolist()

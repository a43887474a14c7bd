"""The one model shape behind every small learned decision: standardise -> weights -> calibrate.

Evidence ranking (``evidence.EvidenceModel``) and the support verdict (``support.SupportDetector``) are both a
logistic model over named inputs, optionally followed by a monotone calibration map (knots, linearly
interpolated). They are fit by one fitter (``at2_rag.fit.logistic``) and saved as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class LogisticModel(BaseModel):
    """``sigmoid(((x - mean) / scale) @ weights + bias)``, then the calibration map when it has knots."""

    model_config = ConfigDict(populate_by_name=True)

    inputs: list[str] = Field(validation_alias=AliasChoices("inputs", "components", "features"),
                              description="Input names, in weight order (files before 2026-12-06 call them "
                                          "'components' or 'features').")
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    calibration_x: list[float] = Field(default_factory=list, description="Calibration knots: raw probability ...")
    calibration_y: list[float] = Field(default_factory=list, description="... and the calibrated probability.")

    def check_shape(self) -> str | None:
        """A reason the parameters are unusable, or None."""
        n = len(self.inputs)
        if not (len(self.weights) == len(self.mean) == len(self.scale) == n):
            return "weights, mean and scale must have one entry per input"
        if not np.all(np.isfinite(self.weights)) or len(self.calibration_x) != len(self.calibration_y):
            return "non-finite weights or a broken calibration table"
        return None

    def matrix(self, values: Mapping[str, np.ndarray] | Sequence[Mapping[str, float]] | np.ndarray) -> np.ndarray:
        """Inputs stacked on a last axis: from named arrays of one shape, rows of named numbers, or a matrix whose
        last axis already follows ``inputs``."""
        if isinstance(values, np.ndarray):
            return values.astype(float)
        if isinstance(values, Mapping):
            return np.stack([np.asarray(values[name], dtype=float) for name in self.inputs], -1)
        return np.array([[row[name] for name in self.inputs] for row in values], dtype=float).reshape(
            len(values), len(self.inputs))

    def raw(self, values) -> np.ndarray:
        """Uncalibrated probability, one per row (or per element of the named arrays)."""
        z = (self.matrix(values) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.weights) + self.bias)))

    def predict(self, values) -> np.ndarray:
        """Calibrated probability (the raw one when the model has no calibration map)."""
        raw = self.raw(values)
        return np.interp(raw, self.calibration_x, self.calibration_y) if self.calibration_x else raw

"""AT2 coefficient files: one weight per attention head, safetensors with JSON metadata (never pickle)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CoefficientMismatchError

METADATA_KEY = "at2"


class CoefficientMetadata(BaseModel):
    """What a coefficient file was trained for and on; checked against the model it is loaded with."""

    model_id: str
    model_type: str
    revision: str | None = None
    num_layers: int
    num_heads: int
    source_kind: str = Field(description="'passage' or 'sentence': the sources used to train.")
    training_data: str = ""
    n_examples: int = 0
    n_targets: int = 0
    n_ablations: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""


class Coefficients(BaseModel):
    """θ of shape ``[num_layers * num_heads]`` plus its metadata."""

    model_config = {"arbitrary_types_allowed": True}

    theta: torch.Tensor
    metadata: CoefficientMetadata

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        theta = self.theta.detach().float().reshape(self.metadata.num_layers, self.metadata.num_heads).contiguous()
        save_file({"theta": theta}, str(path), metadata={METADATA_KEY: self.metadata.model_dump_json()})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Coefficients:
        path = Path(path)
        if not path.is_file():
            raise CoefficientMismatchError(f"coefficient file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(METADATA_KEY)
                theta = f.get_tensor("theta")
        except Exception as exc:
            raise CoefficientMismatchError(f"{path} is not an at2-rag coefficient file: {exc}") from exc
        if raw is None:
            raise CoefficientMismatchError(f"{path} has no '{METADATA_KEY}' metadata: not an at2-rag coefficient file")
        metadata = CoefficientMetadata.model_validate(json.loads(raw))
        if tuple(theta.shape) != (metadata.num_layers, metadata.num_heads):
            raise CoefficientMismatchError(
                f"{path}: theta has shape {tuple(theta.shape)} but metadata says "
                f"{metadata.num_layers} layers x {metadata.num_heads} heads"
            )
        return cls(theta=theta.flatten().float(), metadata=metadata)

    def check(self, fingerprint: dict, allow_other_model: bool = False) -> None:
        """Raise unless these coefficients fit a model with this fingerprint (see ``LanguageModel.fingerprint``)."""
        m = self.metadata
        if (m.num_layers, m.num_heads) != (fingerprint["num_layers"], fingerprint["num_heads"]):
            raise CoefficientMismatchError(
                f"coefficients are for {m.num_layers} layers x {m.num_heads} heads ({m.model_id}) but the model "
                f"{fingerprint['model_id']} has {fingerprint['num_layers']} x {fingerprint['num_heads']}"
            )
        if not allow_other_model and m.model_id != fingerprint["model_id"]:
            raise CoefficientMismatchError(
                f"coefficients were trained for {m.model_id!r}, not {fingerprint['model_id']!r}; "
                "pass allow_other_model=True to use them anyway (e.g. for a fine-tune of that model)"
            )


def shipped_path(model_id: str, source_kind: str = "passage") -> Path | None:
    """Path of the coefficient file shipped in the package for a model id, if any."""
    name = model_id.replace("/", "__") + f".{source_kind}.safetensors"
    path = Path(str(resources.files("at2_rag") / "coefficients" / name))
    return path if path.is_file() else None

"""AT2 coefficient files: one weight per attention head and feature family, safetensors with JSON metadata
(never pickle)."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from safetensors import safe_open
from safetensors.torch import save_file

from .attention import parse_families
from .errors import CoefficientMismatchError, InvalidInputError

METADATA_KEY = "at2"
LEVELS = ("passage", "sentence")
JSON_FILES = ("calibration", "detector", "keep-rule")  # shipped beside θ, one per model


class CoefficientMetadata(BaseModel):
    """What a coefficient file was trained for and on; checked against the model it is loaded with (files from
    before 2026-12-06 name ``level`` 'source_kind' and ``objective`` 'target')."""

    model_config = ConfigDict(populate_by_name=True)

    model_id: str
    model_type: str
    revision: str | None = None
    num_layers: int
    num_heads: int
    level: str = Field(validation_alias=AliasChoices("level", "source_kind"), description="'passage' or 'sentence': the passages used to train.")
    feature_family: str = Field(default="attention-weight", description="What each feature is: 'attention-weight' "
                                "(the paper's), 'value-norm', 'output-norm', or several joined by '+' "
                                "(θ then holds one block of layers x heads per family, in that order).")
    objective: str = Field(default="token-log-odds", validation_alias=AliasChoices("objective", "target"),
                           description="What θ predicts (``ablation.OBJECTIVES``): the "
                        "paper's 'response-log-odds', or 'token-log-odds' (files from before the option).")
    ablation: str = Field(default="remove", description="How training ablated passages (``ablation.METHODS``).")
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

    @property
    def families(self) -> tuple[str, ...]:
        """The feature families θ weighs (raises ``CoefficientMismatchError`` for an unknown name)."""
        try:
            return parse_families(self.metadata.feature_family)
        except ValueError as exc:
            raise CoefficientMismatchError(f"coefficients: {exc}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.validate_values(str(path))
        m = self.metadata
        theta = self.theta.detach().float().reshape(len(self.families), m.num_layers, m.num_heads).squeeze(0)
        theta = theta.contiguous()
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
        try:
            metadata = CoefficientMetadata.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise CoefficientMismatchError(f"{path}: its '{METADATA_KEY}' metadata is not valid: {exc}") from exc
        # clone: safetensors maps the file, and θ must not change if the file is overwritten while in use
        coefficients = cls(theta=theta.flatten().float().clone(), metadata=metadata)
        coefficients.validate_values(str(path))
        return coefficients

    def validate_values(self, where: str = "coefficients") -> None:
        """Raise unless θ is finite and has one entry per head of the metadata's shape."""
        from .ablation import METHODS, OBJECTIVES

        m = self.metadata
        if m.level not in LEVELS:
            raise CoefficientMismatchError(f"{where}: level {m.level!r} is not one of {LEVELS}")
        if m.objective not in OBJECTIVES or m.ablation not in METHODS:
            raise CoefficientMismatchError(f"{where}: objective {m.objective!r} / ablation {m.ablation!r} is not one of "
                                           f"{OBJECTIVES} / {METHODS}")
        families = self.families
        if self.theta.numel() != len(families) * m.num_layers * m.num_heads:
            raise CoefficientMismatchError(
                f"{where}: theta has {self.theta.numel()} entries but metadata says {len(families)} feature "
                f"famil{'y' if len(families) == 1 else 'ies'} ({m.feature_family}) x {m.num_layers} layers x "
                f"{m.num_heads} heads"
            )
        if not bool(torch.isfinite(self.theta).all()):
            raise CoefficientMismatchError(f"{where}: theta has NaN or infinite values")

    @property
    def digest(self) -> str:
        """Short content hash of θ (names cached results and ties calibrations to these coefficients)."""
        return hashlib.sha256(self.theta.detach().cpu().float().numpy().tobytes()).hexdigest()[:12]

    def check(self, fingerprint: dict, allow_other_model: bool = False) -> None:
        """Raise unless these coefficients fit a model with this fingerprint (see ``LanguageModel.fingerprint``)."""
        self.validate_values()
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


def _shipped_dir() -> Path:
    return Path(str(resources.files("at2_rag") / "coefficients"))


def held_out_correlation(metadata: CoefficientMetadata) -> float:
    """How well a file predicts ablations of examples it was not fit on (cross-fit, else holdout)."""
    m = metadata.metrics
    return float(m.get("crossfit_correlation", m.get("holdout_correlation", float("-inf"))))


def shipped_files(model_id: str, kind: str = "passage") -> list[Path]:
    """Every coefficient file shipped for a model id and source kind (one per feature family)."""
    prefix = model_id.replace("/", "__") + f".{kind}"
    return sorted(p for p in _shipped_dir().glob(f"{prefix}*.safetensors")
                  if p.name == f"{prefix}.safetensors" or p.name.startswith(f"{prefix}."))


def shipped_path(model_id: str, kind: str = "passage") -> Path | None:
    """Path of a file shipped in the package for a model id: the ``calibration``, the support ``detector`` or
    the compression ``keep-rule`` (.json), or for ``passage``/``sentence`` the coefficient file the shipped calibration was fit with (so the
    defaults stay calibrated when a better θ ships before its recalibration), else the one with the best
    held-out correlation on its training data."""
    if kind not in (*LEVELS, *JSON_FILES):
        raise InvalidInputError(f"kind must be one of {LEVELS + JSON_FILES}, not {kind!r}")
    if kind in JSON_FILES:
        path = _shipped_dir() / (model_id.replace("/", "__") + f".{kind}.json")
        return path if path.is_file() else None
    files = shipped_files(model_id, kind)
    if not files:
        return None
    loaded = {p: Coefficients.load(p) for p in files}
    calibration = shipped_path(model_id, "calibration")
    if calibration is not None:
        recorded = json.loads(calibration.read_text()).get(f"{kind}_coefficients")
        calibrated = [p for p, c in loaded.items() if c.digest == recorded]
        if calibrated:
            return calibrated[0]
    return max(files, key=lambda p: held_out_correlation(loaded[p].metadata))


def from_at2_checkpoint(path: str | Path, fingerprint: dict, source: str | None = None) -> Coefficients:
    """Convert a score estimator published with the AT2 paper (``score_estimator.pt``) to ``Coefficients``.

    Read with ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles.
    Their features are ordered layer-major like ours, so ``linear.weight`` maps to θ directly. The file's
    feature extractor (layers, heads, model type) must match the model; a non-zero bias is refused, since the
    reference adds it once per source token and dropping it would change the ranking; the source kind is the
    one the file records (``extras["level"]``, written by ``to_at2_checkpoint``), else 'sentence', the
    reference trainer's default.
    """
    try:
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
        weight = saved["state_dict"]["linear.weight"]
    except Exception as exc:
        raise CoefficientMismatchError(f"{path} is not an AT2 score estimator checkpoint: {exc}") from exc
    if saved.get("class", "LinearScoreEstimator") != "LinearScoreEstimator":
        raise CoefficientMismatchError(f"{path} holds a {saved['class']}, not a LinearScoreEstimator")
    bias = saved["state_dict"].get("linear.bias")
    if bias is not None and bool(torch.any(bias != 0)):
        raise CoefficientMismatchError(
            f"{path} has a bias ({float(bias.flatten()[0]):.3g}): the reference adds it once per source token, "
            "which at2-rag's source scores do not do; refusing it rather than silently changing the ranking")
    expected = fingerprint["num_layers"] * fingerprint["num_heads"]
    if weight.numel() != expected:
        raise CoefficientMismatchError(
            f"{path} has {weight.numel()} coefficients but {fingerprint['model_id']} has "
            f"{fingerprint['num_layers']} x {fingerprint['num_heads']} = {expected} heads"
        )
    extractor = (saved.get("feature_extractor") or {}).get("kwargs") or {}
    shape = (extractor.get("num_layers", fingerprint["num_layers"]), extractor.get("num_heads", fingerprint["num_heads"]))
    if shape != (fingerprint["num_layers"], fingerprint["num_heads"]):
        raise CoefficientMismatchError(f"{path} was trained for {shape[0]} layers x {shape[1]} heads, not "
                                       f"{fingerprint['num_layers']} x {fingerprint['num_heads']}")
    if extractor.get("model_type") not in (None, fingerprint["model_type"]):
        raise CoefficientMismatchError(f"{path} was trained for a {extractor['model_type']} model, not "
                                       f"{fingerprint['model_type']}")
    extras = saved.get("extras") or {}
    level = extras.get("level", extras.get("source_kind", "sentence"))
    if level not in LEVELS:
        raise CoefficientMismatchError(f"{path}: level {level!r} is not one of {LEVELS}")
    metadata = CoefficientMetadata(
        model_id=fingerprint["model_id"], model_type=fingerprint["model_type"], num_layers=fingerprint["num_layers"],
        num_heads=fingerprint["num_heads"], level=level, training_data=source or str(path),
        objective=extras.get("objective", extras.get("target", "response-log-odds")), ablation=extras.get("ablation", "mask"),
        notes="converted from a published AT2 score estimator (MadryLab/AT2 format; target and ablation: the "
              "file's, else the reference trainer's)",
    )
    return Coefficients(theta=weight.detach().float().flatten(), metadata=metadata)


def to_at2_checkpoint(coefficients: Coefficients, path: str | Path) -> None:
    """Write θ as a file the reference's ``LinearScoreEstimator.load`` reads: ``linear.weight`` [1, L·H] in the
    same layer-major order, unchanged (so its scores equal ours), no bias, the constructor flags its trainer
    writes (``normalize=True`` only acts after training) and the model type explicit. Only the paper's
    attention-weight family has a reference counterpart."""
    meta = coefficients.metadata
    if coefficients.families != ("attention-weight",):
        raise CoefficientMismatchError(f"only attention-weight coefficients have an AT2 reference format, not "
                                       f"{meta.feature_family!r}")
    theta = coefficients.theta.detach().float().reshape(1, -1).clone()
    torch.save({"class": "LinearScoreEstimator", "state_dict": {"linear.weight": theta},
                "feature_extractor": {"class": "AttentionFeatureExtractor",
                                      "kwargs": {"num_layers": meta.num_layers, "num_heads": meta.num_heads,
                                                 "model_type": meta.model_type}},
                "kwargs": {"normalize": True, "non_negative": False, "bias": False},
                "extras": {"level": meta.level, "model_id": meta.model_id, "objective": meta.objective,
                           "ablation": meta.ablation, "exported_by": "at2-rag lab export-coefficients"}}, str(path))


def from_hub(repo_id: str, fingerprint: dict, filename: str = "score_estimator.pt",
             revision: str | None = None) -> Coefficients:
    """Download a published AT2 estimator (e.g. ``madrylab/at2-phi-4-mini-instruct``) and convert it."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id=repo_id, filename=filename, revision=revision)
    except Exception as exc:
        raise CoefficientMismatchError(f"could not download {filename} from {repo_id}: {exc}") from exc
    return from_at2_checkpoint(path, fingerprint, source=f"hub:{repo_id}")


def resolve(spec: str | Path, fingerprint: dict) -> Coefficients:
    """A coefficient file (.safetensors), a published AT2 checkpoint (.pt), or a hub repo id of one."""
    path = Path(spec)
    if path.suffix == ".pt" and path.is_file():
        return from_at2_checkpoint(path, fingerprint)
    looks_local = str(spec).startswith((".", "/", "~")) or "\\" in str(spec) or path.suffix in (".safetensors", ".pt")
    if path.exists() or looks_local or str(spec).count("/") != 1:
        return Coefficients.load(path)
    if not path.parent.exists():
        return from_hub(str(spec), fingerprint)
    raise CoefficientMismatchError(f"coefficient file not found: {path} (a local folder {path.parent} exists, "
                                   "so this is not taken as a hub repo id)")

"""at2-rag: attribute, prune, compress and cite RAG context with AT2 (learned attention-head attribution)."""

import warnings
from importlib.metadata import PackageNotFoundError, version

from .attributor import AT2Attributor
from .coefficients import CoefficientMetadata, Coefficients
from .compress import KeepRule
from .errors import (
    AT2Error,
    CoefficientMismatchError,
    ConfigurationError,
    ContextTooLongError,
    EmptyInputError,
    InvalidInputError,
    ModelLoadError,
    UnsupportedModelError,
)
from .evidence import Calibration, EvidenceModel, FusionModel
from .lm import LanguageModel, load_model
from .logistic import LogisticModel
from .passages import Passage, sentence_spans, to_passages
from .prompts import PromptTemplate
from .results import (
    Attribution,
    Citation,
    CitedPassage,
    CitedResponse,
    CitedSentence,
    CompressedContext,
    KeptSentence,
    PassageSentence,
    PruneResult,
    ScoredPassage,
    TargetScores,
)
from .scorers import AT2Scorer, AverageAttentionScorer, ESMScorer, GradientScorer, Scorer, make_scorer
from .support import SupportDetector

__all__ = [
    "AT2Attributor", "AT2Error", "AT2Scorer", "Attribution", "AverageAttentionScorer", "Calibration", "Citation",
    "CitedPassage", "CitedResponse", "CitedSentence", "CoefficientMetadata", "CoefficientMismatchError",
    "CompressedContext", "ConfigurationError", "Coefficients", "ContextTooLongError", "ESMScorer", "EmptyInputError",
    "EvidenceModel", "FusionModel", "GradientScorer", "InvalidInputError", "KeepRule", "KeptSentence",
    "LanguageModel", "LogisticModel", "ModelLoadError", "Passage", "PassageSentence", "PromptTemplate",
    "PruneResult", "ScoredPassage", "Scorer", "SupportDetector", "TargetScores", "UnsupportedModelError",
    "load_model", "make_scorer", "sentence_spans", "to_passages",
]

_RENAMED = {"Source": "Passage", "to_sources": "to_passages", "CitedSource": "CitedPassage",
            "ScoredSource": "ScoredPassage", "SourceSentence": "PassageSentence"}


def __getattr__(name: str):
    """Names renamed on 2026-12-06 keep working for one release, with a DeprecationWarning."""
    if name in _RENAMED:
        warnings.warn(f"at2_rag.{name} is deprecated; use at2_rag.{_RENAMED[name]}", DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module 'at2_rag' has no attribute {name!r}")


try:
    __version__ = version("at2-rag")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

"""at2-rag: attribute, prune and cite RAG context with AT2 (learned attention-head attribution)."""

from importlib.metadata import PackageNotFoundError, version

from .attributor import AT2Attributor
from .coefficients import CoefficientMetadata, Coefficients
from .detector import SupportDetector
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
from .prompts import PromptTemplate
from .results import (
    Attribution,
    Citation,
    CitedResponse,
    CitedSentence,
    CitedSource,
    PruneResult,
    ScoredSource,
    SourceSentence,
    TargetScores,
)
from .scorers import AT2Scorer, AverageAttentionScorer, ESMScorer, GradientScorer, Scorer, make_scorer
from .sources import Source, sentence_spans, to_sources

__all__ = [
    "AT2Attributor", "AT2Error", "AT2Scorer", "Attribution", "AverageAttentionScorer", "Calibration", "Citation",
    "CitedResponse", "CitedSentence", "CitedSource", "CoefficientMetadata", "CoefficientMismatchError",
    "ConfigurationError", "Coefficients", "ContextTooLongError", "ESMScorer", "EmptyInputError", "EvidenceModel", "FusionModel",
    "GradientScorer", "InvalidInputError", "LanguageModel", "ModelLoadError", "PromptTemplate", "PruneResult",
    "ScoredSource", "Scorer", "Source", "SupportDetector", "SourceSentence", "TargetScores", "UnsupportedModelError", "load_model",
    "make_scorer", "sentence_spans", "to_sources",
]
try:
    __version__ = version("at2-rag")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

"""at2-rag: attribute, prune and cite RAG context with AT2 (learned attention-head attribution)."""

from .attributor import AT2Attributor
from .coefficients import CoefficientMetadata, Coefficients
from .errors import (
    AT2Error,
    CoefficientMismatchError,
    ContextTooLongError,
    EmptyInputError,
    ModelLoadError,
    UnsupportedModelError,
)
from .lm import LanguageModel, load_model
from .prompts import PromptTemplate
from .results import Attribution, Citation, CitedResponse, CitedSource, PruneResult, ScoredSource, TargetScores
from .scorers import AT2Scorer, AverageAttentionScorer, ESMScorer, GradientScorer, Scorer, make_scorer
from .sources import Source, split_sentences, to_sources

__all__ = [
    "AT2Attributor", "AT2Error", "AT2Scorer", "Attribution", "AverageAttentionScorer", "Citation", "CitedResponse",
    "CitedSource", "CoefficientMetadata", "CoefficientMismatchError", "Coefficients", "ContextTooLongError",
    "ESMScorer", "EmptyInputError", "GradientScorer", "LanguageModel", "ModelLoadError", "PromptTemplate",
    "PruneResult", "ScoredSource", "Scorer", "Source", "TargetScores", "UnsupportedModelError", "load_model",
    "make_scorer", "split_sentences", "to_sources",
]
__version__ = "0.1.0"

"""AT2Attributor: the one object users hold. Loads a model and its shipped files; attributes, prunes, compresses
and cites an answer from one pass. The per-item steps live in ``pipeline.py``."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from .coefficients import Coefficients, resolve, shipped_path
from .compress import KeepRule
from .deprecation import renamed
from .errors import InvalidInputError
from .evidence import Calibration, Embedder
from .lm import LanguageModel, load_model
from .passages import PassageLike
from .pipeline import DRAFTERS, Pipeline
from .prompts import PromptTemplate
from .results import Attribution, CitedResponse, CompressedContext, PruneResult
from .scorers import AT2Scorer, AverageAttentionScorer, Scorer
from .support import SupportDetector
from .validation import check_cite, check_int, check_prune
from .verifier import Verifier

logger = logging.getLogger(__name__)

_OPTIONS = {"max_new_tokens", "truncate", "evidence_model", "embed", "template", "strictness"}
_shared: dict[tuple, AT2Attributor] = {}
_shared_lock = threading.Lock()


def _load_coefficients(lm: LanguageModel, spec, level: str, allow_other_model: bool) -> Scorer:
    """AT2 scorer from ``spec`` (or the shipped file for ``level``); average attention when none ships."""
    if spec is None:
        spec = shipped_path(lm.model_id, level)
        if spec is None:
            logger.warning("no %s-level AT2 coefficients ship for %s; scoring with average attention", level,
                           lm.model_id)
            return AverageAttentionScorer()
    coefficients = spec if isinstance(spec, Coefficients) else resolve(spec, lm.fingerprint)
    coefficients.check(lm.fingerprint, allow_other_model=allow_other_model)
    return AT2Scorer(coefficients)


def _digest(scorer: Scorer) -> str | None:
    coefficients = getattr(scorer, "coefficients", None)
    return coefficients.digest if coefficients is not None else None


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Hide transformers' progress bars (GGUF de-quantisation, weight loading) unless ``verbose``."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    gguf_utils = original = None
    if not verbose:
        hf_logging.disable_progress_bar()
        try:  # GGUF de-quantisation calls tqdm directly, not through transformers' logging
            import transformers.modeling_gguf_pytorch_utils as gguf_utils

            original = gguf_utils.tqdm
            gguf_utils.tqdm = functools.partial(original, disable=True)
        except (ImportError, AttributeError):
            gguf_utils = None
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        if gguf_utils is not None:
            gguf_utils.tqdm = original


class AT2Attributor:
    """Attribute an answer to its context passages with a model's own attention (AT2), from one pass."""

    @renamed(evidence="evidence_model")
    def __init__(self, lm: LanguageModel, scorer: Scorer, sentence_scorer: Scorer | None = None,
                 template: PromptTemplate | None = None, max_new_tokens: int = 64, truncate: bool = False,
                 calibration: Calibration | None = None, evidence_model: str | None = None,
                 embed: Embedder | None = None, detector: SupportDetector | None = None,
                 strictness: str | None = None, keep_rule: KeepRule | None = None, verifier: Verifier | None = None):
        check_int(max_new_tokens, "max_new_tokens", allow_none=False)
        if not isinstance(truncate, bool):
            raise InvalidInputError(f"truncate must be a bool, not {truncate!r}")
        self.pipeline = Pipeline(lm, scorer, sentence_scorer, template, max_new_tokens, truncate, calibration,
                                 evidence_model, embed, detector, strictness, keep_rule, verifier)

    @classmethod
    @renamed(evidence="evidence_model")
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        coefficients: str | os.PathLike | Coefficients | None = None,
        sentence_coefficients: str | os.PathLike | Coefficients | None = None,
        device: str | None = None,
        dtype: str | None = None,
        allow_other_model: bool = False,
        calibration: str | os.PathLike | Calibration | None = None,
        detector: str | os.PathLike | SupportDetector | bool | None = None,
        keep_rule: str | os.PathLike | KeepRule | bool | None = None,
        verifier: str | os.PathLike | Verifier | None = None,
        precision: str | None = None,
        verbose: bool = False,
        **kwargs,
    ) -> AT2Attributor:
        """Load ``model`` (None: the bundled SmolLM2-135M-Instruct), its AT2 coefficients and shipped files.

        ``coefficients`` (passage level) and ``sentence_coefficients``: a coefficient file (.safetensors), a
        published AT2 estimator (.pt, or its hub repo id such as ``madrylab/at2-phi-4-mini-instruct``) or a
        ``Coefficients`` object; by default the files shipped for this model, and average attention (with a
        warning) when there are none. ``calibration``: evidence models and fusion weights (``at2-rag lab
        calibrate``); by default the shipped file when it was fit with these coefficients. ``detector``: the
        support detector that decides ``supported``; ``keep_rule``: what ``budget="auto"`` and
        ``threshold="auto"`` read; for both, by default the shipped file, ``False`` for none. ``verifier``: a
        MiniLM entailment verifier file or ``Verifier``, for a detector that reads one (none ships). ``precision``: the
        pass's number format on CPU ('auto', 'float32', 'bfloat16', 'int8'). ``verbose``: show loading
        progress. Other keyword arguments go to the constructor (``max_new_tokens``, ``truncate``,
        ``evidence_model``, ``embed``, ``template``, ``strictness``).
        Raises ``ModelLoadError``, ``CoefficientMismatchError`` or ``InvalidInputError`` on bad input.
        """
        unknown = set(kwargs) - _OPTIONS
        if unknown:
            raise InvalidInputError(f"unknown argument(s) {sorted(unknown)} for AT2Attributor.from_pretrained")
        if not isinstance(verbose, bool):
            raise InvalidInputError(f"verbose must be a bool, not {verbose!r}")
        with _quiet(verbose):
            lm = load_model(model, device, dtype, **({} if precision is None else {"precision": precision}))
        scorer = _load_coefficients(lm, coefficients, "passage", allow_other_model)
        sentence_scorer = _load_coefficients(lm, sentence_coefficients, "sentence", allow_other_model)
        if calibration is None:
            shipped = shipped_path(lm.model_id, "calibration")
            calibration = Calibration.model_validate(json.loads(shipped.read_text())) if shipped else None
            if calibration is not None and (calibration.sentence_coefficients, calibration.passage_coefficients) != (
                    _digest(sentence_scorer), _digest(scorer)):
                logger.warning("the shipped calibration was fit with other coefficients; citing with raw AT2 scores")
                calibration = None
        elif not isinstance(calibration, Calibration):
            calibration = Calibration.model_validate(json.loads(Path(calibration).read_text()))
        detector = _shipped_or_given(detector, lm, "detector", SupportDetector.load)
        keep_rule = _shipped_or_given(keep_rule, lm, "keep-rule", KeepRule.load)
        if verifier is not None and not isinstance(verifier, Verifier):
            verifier = Verifier.load(verifier)
        if detector is not None and detector.needs_embedding and kwargs.get("embed") is None:
            from .embeddings import minilm_embedder

            kwargs["embed"] = minilm_embedder()
        return cls(lm, scorer, sentence_scorer, calibration=calibration, detector=detector, keep_rule=keep_rule,
                   verifier=verifier, **kwargs)

    @classmethod
    def shared(cls, **kwargs) -> AT2Attributor:
        """One attributor per (model, coefficients, device, dtype, precision) in this process, built on first use
        with ``from_pretrained(**kwargs)``: what framework components use unless given ``attributor=``, so a
        pipeline loads the model once. Safe across threads (model calls are serialised per attributor)."""
        key = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
        with _shared_lock:
            if key not in _shared:
                _shared[key] = cls.from_pretrained(**kwargs)
            return _shared[key]

    # ---- what the attributor is made of (read-only views of its pipeline) -----------------------------------

    @property
    def lm(self) -> LanguageModel:
        return self.pipeline.lm

    @property
    def scorer(self) -> Scorer:
        return self.pipeline.scorer

    @property
    def sentence_scorer(self) -> Scorer:
        return self.pipeline.sentence_scorer

    @property
    def calibration(self) -> Calibration | None:
        return self.pipeline.calibration

    @property
    def detector(self) -> SupportDetector | None:
        return self.pipeline.detector

    @property
    def keep_rule(self) -> KeepRule | None:
        return self.pipeline.keep_rule

    @property
    def evidence_model(self) -> str:
        return self.pipeline.evidence_model

    def __repr__(self) -> str:
        return (f"AT2Attributor(model={self.lm.model_id!r}, scorer={self.scorer.name!r}, "
                f"evidence_model={self.evidence_model!r}, detector={self.detector is not None})")

    # ---- what users call -----------------------------------------------------------------------------------

    @renamed(sources="passages", target="span")
    def attribute(self, query: str, passages: Sequence[PassageLike], response: str | None = None,
                  span: tuple[int, int] | None = None) -> Attribution:
        """Score each passage, and each sentence inside it, for ``response`` (any LLM's text, teacher-forced in
        one pass; generated by this model when None): per response sentence, or, with ``span=(start, end)``, for
        that character range of the response alone (a phrase, a claim)."""
        return self.pipeline.attribute_batch([query], [passages], [response], None if span is None else [span])[0]

    @renamed(sources="passages", targets="spans")
    def attribute_batch(self, queries: Sequence[str], passages: Sequence[Sequence[PassageLike]],
                        responses: Sequence[str | None] | None = None,
                        spans: Sequence[tuple[int, int] | None] | None = None) -> list[Attribution]:
        """``attribute`` for several items in one padded batch; ``spans`` gives each item's range (None: its
        sentences)."""
        return self.pipeline.attribute_batch(queries, passages, responses, spans)

    @renamed(sources="passages", top_k="top_n")
    def prune(self, query: str, passages: Sequence[PassageLike], response: str | None = None,
              top_n: int | None = None, threshold: float | str | None = None, max_tokens: int | None = None,
              retriever_scores: Sequence[float] | None = None) -> PruneResult:
        """Keep the passages the answer relies on, in original order (at least one is always kept).

        With no ``top_n``, ``threshold`` or ``max_tokens``, as many as the calibrated keep rule says the answer
        needs (``threshold="auto"``); ``top_n=2`` keeps exactly the best two. Pass the answer your LLM
        drafted as ``response`` (otherwise this model drafts one), and the retriever's scores to fuse AT2's
        ranking with the retriever's."""
        if threshold is None and top_n is None and max_tokens is None:
            threshold = "auto"
        check_prune(top_n, None if threshold == "auto" else threshold, max_tokens)
        if threshold == "auto" and self.keep_rule is None:
            from .errors import ConfigurationError

            raise ConfigurationError("threshold='auto' needs a keep rule; none is loaded for this model (give top_n "
                                     "or a threshold, or fit one with `at2-rag lab fit-keep-rule`)")
        attribution = self.attribute(query, passages, response)
        drafter = "llm" if response is not None else "attributor"
        return self.pipeline.prune(attribution, top_n, threshold, max_tokens, retriever_scores, drafter)

    def compress(self, query: str, passages: Sequence[PassageLike], response: str | None = None,
                 budget: float | int | str = "auto", retriever_scores: Sequence[float] | None = None,
                 keep_order: bool = True, joiner: str = " … ", min_sentences_per_passage: int = 0
                 ) -> CompressedContext:
        """Keep, inside the passages, the sentences the answer relies on, from the same single pass.

        ``budget``: ``"auto"`` (the calibrated keep rule: what is needed, then stop), a share of the context's
        tokens (``0.3``) or a token count (``400``), never exceeded. ``keep_order``: each passage's kept
        sentences in text order (else best first); ``joiner`` goes between them; ``min_sentences_per_passage``: a
        passage that keeps any sentence keeps at least this many."""
        from .compress import check_options

        check_options(budget, keep_order, joiner, min_sentences_per_passage)
        if budget == "auto" and self.keep_rule is None:
            from .errors import ConfigurationError

            raise ConfigurationError("budget='auto' needs a keep rule; none is loaded for this model (give a share "
                                     "of tokens or a token count, or fit one with `at2-rag lab fit-keep-rule`)")
        attribution = self.attribute(query, passages, response)
        drafter = "llm" if response is not None else "attributor"
        return self.pipeline.compress(attribution, budget, retriever_scores, drafter, keep_order, joiner,
                                      min_sentences_per_passage)

    @renamed(sources="passages", target="span", max_sources="max_passages", evidence="evidence_model")
    def cite(self, query: str, passages: Sequence[PassageLike], response: str | None = None,
             max_passages: int = 3, relative_threshold: float = 0.5, evidence_model: str | None = None,
             strictness: str | None = None, span: tuple[int, int] | None = None) -> CitedResponse:
        """Per-sentence citations of ``response`` (or of this model's own answer when None): the cited passages,
        the sentences inside them, and ``supported=False`` where the context does not support the sentence.
        With ``span=(start, end)``, citations for that phrase of the response alone."""
        check_cite(max_passages, relative_threshold)
        return self.pipeline.cite(self.attribute(query, passages, response, span), max_passages,
                                  relative_threshold, evidence_model, strictness)

    @renamed(sources="passages", max_sources="max_passages", evidence="evidence_model")
    def cite_batch(self, queries: Sequence[str], passages: Sequence[Sequence[PassageLike]],
                   responses: Sequence[str | None], max_passages: int = 3, relative_threshold: float = 0.5,
                   evidence_model: str | None = None, strictness: str | None = None) -> list[CitedResponse]:
        """``cite`` for several items in one padded batch."""
        check_cite(max_passages, relative_threshold)
        return [self.pipeline.cite(a, max_passages, relative_threshold, evidence_model, strictness)
                for a in self.pipeline.attribute_batch(queries, passages, responses)]

    @renamed(sources="passages")
    def generate(self, query: str, passages: Sequence[PassageLike]) -> str:
        """Answer with this model from these passages, without attributing (for prune-then-answer loops)."""
        return self.pipeline.generate(query, passages)


def _shipped_or_given(spec, lm: LanguageModel, kind: str, load):
    """The shipped file of ``kind`` for ``lm`` (None: default; True: the same), none (False), or the given one."""
    if spec is None or spec is True:
        shipped = shipped_path(lm.model_id, kind)
        if shipped is None:
            logger.info("no %s ships for %s", kind, lm.model_id)
            return None
        return load(shipped)
    if spec is False:
        return None
    return spec if not isinstance(spec, (str, os.PathLike)) else load(spec)


__all__ = ["AT2Attributor", "DRAFTERS"]

"""AT2Attributor: the one object users hold. Loads a model and its scorers; attributes, prunes and cites."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import cite as cite_policy
from . import prune as prune_policy
from .attention import FAMILIES
from .coefficients import Coefficients, resolve, shipped_path
from .detector import ContextVocabulary, SupportDetector, feature_row
from .errors import InvalidInputError
from .evidence import Calibration, Embedder, components
from .features import AttributionJob, collect
from .lm import LanguageModel, load_model
from .prompts import PromptTemplate, build_prompt
from .results import Attribution, CitedResponse, PruneResult, SourceSentence, TargetScores
from .scorers import AT2Scorer, AverageAttentionScorer, Scorer
from .signals import no_context_logprobs, sentence_signals
from .sources import SourceLike, to_sources
from .targets import span_target
from .validation import check_batch, check_cite, check_float, check_int, check_list, check_prune, check_text

logger = logging.getLogger(__name__)

DRAFTERS = ("llm", "attributor")


def _load_coefficients(lm: LanguageModel, spec, kind: str, allow_other_model: bool) -> Scorer:
    """AT2 scorer from ``spec`` (or the shipped file for ``kind``); average attention when none ships."""
    if spec is None:
        spec = shipped_path(lm.model_id, kind)
        if spec is None:
            logger.warning("no %s-level AT2 coefficients ship for %s; scoring with average attention",
                           kind, lm.model_id)
            return AverageAttentionScorer()
    coefficients = spec if isinstance(spec, Coefficients) else resolve(spec, lm.fingerprint)
    coefficients.check(lm.fingerprint, allow_other_model=allow_other_model)
    return AT2Scorer(coefficients)


def _digest(scorer: Scorer) -> str | None:
    coefficients = getattr(scorer, "coefficients", None)
    return coefficients.digest if coefficients is not None else None


class AT2Attributor:
    """Attribute a response to its context sources with a model's own attention (AT2)."""

    def __init__(self, lm: LanguageModel, scorer: Scorer, sentence_scorer: Scorer | None = None,
                 template: PromptTemplate | None = None, max_new_tokens: int = 64, truncate: bool = False,
                 calibration: Calibration | None = None, evidence: str | None = None, embed: Embedder | None = None,
                 detector: SupportDetector | None = None, strictness: str | None = None):
        check_int(max_new_tokens, "max_new_tokens", allow_none=False)
        if not isinstance(truncate, bool):
            raise InvalidInputError(f"truncate must be a bool, not {truncate!r}")
        self.lm = lm
        self.scorer = scorer
        self.sentence_scorer = sentence_scorer or AverageAttentionScorer()
        self.template = template or PromptTemplate()
        self.max_new_tokens = max_new_tokens
        self.truncate = truncate
        self.calibration = calibration
        self.embed = embed
        self.evidence = self._choose_evidence(evidence)
        if detector is not None:
            detector.check(lm.fingerprint)
            detector.threshold(strictness)
        elif strictness is not None:
            raise InvalidInputError("strictness needs a support detector; none is loaded for this model")
        self.detector = detector
        self.strictness = strictness
        self._lock = threading.Lock()

    @classmethod
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
        **kwargs,
    ) -> AT2Attributor:
        """Load ``model`` (None: the bundled SmolLM2-135M-Instruct), its AT2 coefficients and calibration.

        ``coefficients`` (passage level) and ``sentence_coefficients``: a coefficient file (.safetensors), a
        published AT2 estimator (.pt, or its hub repo id such as ``madrylab/at2-phi-4-mini-instruct``) or a
        ``Coefficients`` object; by default the files shipped for this model, and average attention (with a
        warning) when there are none. ``calibration``: evidence models and fusion weights (``at2-rag
        calibrate``); by default the shipped file when it was fit with these coefficients. ``detector``: the
        support detector (``at2-rag fit-detector``) that decides ``supported``; by default the shipped file for
        this model, ``False`` for none. Other keyword arguments go to the constructor (``max_new_tokens``,
        ``truncate``, ``evidence``, ``embed``, ``template``, ``strictness``).
        Raises ``ModelLoadError``, ``CoefficientMismatchError`` or ``InvalidInputError`` on bad input.
        """
        unknown = set(kwargs) - {"max_new_tokens", "truncate", "evidence", "embed", "template", "strictness"}
        if unknown:
            raise InvalidInputError(f"unknown argument(s) {sorted(unknown)} for AT2Attributor.from_pretrained")
        lm = load_model(model, device, dtype)
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
        if detector is None or detector is True:
            shipped = shipped_path(lm.model_id, "detector")
            detector = SupportDetector.load(shipped) if shipped else None
            if detector is None:
                logger.warning("no support detector ships for %s; 'supported' uses the evidence threshold", lm.model_id)
        elif detector is False:
            detector = None
        elif not isinstance(detector, SupportDetector):
            detector = SupportDetector.load(detector)
        return cls(lm, scorer, sentence_scorer, calibration=calibration, detector=detector, **kwargs)

    def _choose_evidence(self, evidence: str | None) -> str:
        """The evidence model behind citations: the calibration's default unless named; 'raw' without one."""
        if self.calibration is None:
            if evidence not in (None, "raw"):
                raise InvalidInputError(f"evidence {evidence!r} needs a calibration; none is loaded (use 'raw')")
            return "raw"
        name = evidence or self.calibration.default_evidence
        if name == "raw":
            return name
        if name not in self.calibration.evidence:
            raise InvalidInputError(
                f"evidence must be 'raw' or one of {sorted(self.calibration.evidence)}, not {name!r}")
        if self.calibration.evidence[name].needs_embedding and self.embed is None:
            if evidence is not None:
                raise InvalidInputError(f"evidence {name!r} needs an embedder: pass embed=...")
            name = "hybrid"
        return name

    def _evidence_name(self, evidence: str | None) -> str:
        return self._choose_evidence(evidence) if evidence is not None else self.evidence

    @property
    def families(self) -> tuple[str, ...]:
        """Feature families the passage and sentence scorers read (captured together in one pass)."""
        needed = set(getattr(self.scorer, "families", ())) | set(getattr(self.sentence_scorer, "families", ()))
        return tuple(f for f in FAMILIES if f in needed or f == "attention-weight")

    def jobs(self, queries: Sequence[str], sources: Sequence[Sequence[SourceLike]],
             responses: Sequence[str | None] | None = None,
             families: Sequence[str] | None = None) -> list[AttributionJob]:
        """Generate or teacher-force and capture features for a batch (the shared first step of every method).

        ``families``: feature families to capture (default: those this attributor's scorers read)."""
        queries, sources, responses = check_batch(queries, sources, responses)
        queries = [check_text(q, "query") for q in queries]
        responses = [check_text(r, "response", allow_none=True) for r in responses]
        sources = [to_sources(s) for s in sources]
        with self._lock:
            return collect(self.lm, queries, sources, responses, self.template, self.max_new_tokens,
                           truncate=self.truncate, families=families or self.families)

    def score_job(self, job: AttributionJob, scorer: Scorer | None = None, support: bool | None = None) -> Attribution:
        """Score a collected job: sources with this attributor's (or another) scorer, sentences with its
        sentence scorer, both from the same captured pass; with ``support`` (default: when a detector is
        loaded and reads them), also the signals of the short pass without the context."""
        scorer = scorer or self.scorer
        support = self.detector is not None and self.detector.needs_no_context if support is None else support
        signals = [None] * len(job.targets)
        if job.token_logprobs is not None:
            start = time.perf_counter()
            no_context = None
            if support:
                with self._lock:
                    no_context = no_context_logprobs(self.lm, [job.query], [job.response_ids], job.template)[0]
            signals = sentence_signals(job, no_context)
            job.timings["support_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(scorer.score(job.at_level("passage")), dtype=float)
        sentence_scores = np.asarray(self.sentence_scorer.score(job.at_level("sentence")), dtype=float)
        timings = {**job.timings, "score_s": time.perf_counter() - start}
        sentences = [SourceSentence(source_index=i, start=a, end=b, text=job.sources[i].text[a:b])
                     for i, a, b in job.sentences]
        return Attribution(
            query=job.query,
            response=job.response,
            sources=job.sources,
            scores=scores.mean(0).tolist(),
            targets=[TargetScores(text=t.text, start=t.start, end=t.end, scores=row.tolist(),
                                  sentence_scores=srow.tolist(), signals=sig)
                     for t, row, srow, sig in zip(job.targets, scores, sentence_scores, signals)],
            sentences=sentences,
            sentence_scores=sentence_scores.mean(0).tolist(),
            scorer=scorer.name,
            sentence_scorer=self.sentence_scorer.name,
            model=self.lm.model_id,
            truncated=job.truncated,
            timings=timings,
        )

    def attribute(self, query: str, sources: Sequence[SourceLike], response: str | None = None,
                  target: tuple[int, int] | None = None) -> Attribution:
        """Score each source, and each sentence inside it, for ``response`` (generated by this model when
        None; any LLM's text otherwise, teacher-forced in one pass): per response sentence, or, with
        ``target=(start, end)``, for that character range of the response alone (a phrase, a claim)."""
        return self.attribute_batch([query], [sources], [response], None if target is None else [target])[0]

    def attribute_batch(self, queries: Sequence[str], sources: Sequence[Sequence[SourceLike]],
                        responses: Sequence[str | None] | None = None,
                        targets: Sequence[tuple[int, int] | None] | None = None) -> list[Attribution]:
        """Attribute several (query, sources[, response]) items in one padded batch; ``targets`` gives each
        item's character range (None: its sentences)."""
        queries, sources, responses = check_batch(queries, sources, responses)
        targets = self._check_targets(targets, responses)
        jobs = self.jobs(queries, sources, responses)
        return [self.score_job(job if span is None else job.for_span(span))
                for job, span in zip(jobs, targets or [None] * len(jobs))]

    @staticmethod
    def _check_targets(targets, responses: list) -> list | None:
        """Check character ranges against the given responses before any model work (a generated response is
        checked once it exists)."""
        if targets is None:
            return None
        targets = check_list(targets, "targets")
        if len(targets) != len(responses):
            raise InvalidInputError(f"{len(targets)} targets for {len(responses)} queries; give one (or None) each")
        for span, response in zip(targets, responses):
            if span is not None and isinstance(response, str):
                span_target(response, [len(response)], span)
        return targets

    def prune(self, query: str, sources: Sequence[SourceLike], top_k: int | None = None,
              threshold: float | None = None, max_tokens: int | None = None, response: str | None = None,
              retriever_scores: Sequence[float] | None = None) -> PruneResult:
        """Keep the sources that matter for an answer, in original order (at least one is always kept).

        Pass the answer your own LLM drafted as ``response`` (otherwise this model drafts one), and the
        retriever's scores to fuse AT2's ranking with the retriever's (weights from the calibration).
        """
        check_prune(top_k, threshold, max_tokens)
        attribution = self.attribute(query, sources, response)
        drafter = "llm" if response is not None else "attributor"
        return self.prune_attribution(attribution, top_k, threshold, max_tokens, retriever_scores, drafter)

    def ranking_scores(self, attribution: Attribution, retriever_scores: Sequence[float] | None = None,
                       drafter: str = "llm") -> list[float]:
        """Scores pruning ranks by: AT2's, or AT2 fused with the retriever's when its scores are given."""
        if retriever_scores is None:
            return list(attribution.scores)
        retriever_scores = [check_float(s, "retriever score", allow_none=False)
                            for s in check_list(retriever_scores, "retriever_scores")]
        if len(retriever_scores) != len(attribution.scores):
            raise InvalidInputError(f"{len(retriever_scores)} retriever scores for {len(attribution.scores)} sources")
        if drafter not in DRAFTERS:
            raise InvalidInputError(f"drafter must be one of {DRAFTERS}, not {drafter!r}")
        if self.calibration is None or drafter not in self.calibration.fusion:
            logger.warning("no fusion weights are calibrated for %s; ranking by AT2 alone", self.lm.model_id)
            return list(attribution.scores)
        return self.calibration.fusion[drafter].fuse(attribution.scores, retriever_scores).tolist()

    def prune_attribution(self, attribution: Attribution, top_k: int | None = None, threshold: float | None = None,
                          max_tokens: int | None = None, retriever_scores: Sequence[float] | None = None,
                          drafter: str = "llm") -> PruneResult:
        """Prune with an attribution already computed (``threshold`` applies to the ranking scores)."""
        scores = self.ranking_scores(attribution, retriever_scores, drafter)
        counts = [len(self.lm.encode_response(s.text)) for s in attribution.sources] if max_tokens else None
        keep = prune_policy.select(scores, top_k, threshold, max_tokens, counts)
        return PruneResult(sources=[attribution.sources[i] for i in keep], indices=keep, scores=scores,
                           attribution=attribution)

    def evidence_scores(self, attribution: Attribution,
                        evidence: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``[response sentences, source sentences]`` evidence, and per response sentence whether the evidence
        model's threshold calls it supported (None without a calibration: raw AT2 sentence scores)."""
        probabilities, supported, _ = self._evidence(attribution, evidence)
        return probabilities, supported

    def _evidence(self, attribution: Attribution, evidence: str | None = None):
        name = self._evidence_name(evidence)
        at2 = np.array([t.sentence_scores for t in attribution.targets])
        if name == "raw":
            return at2, None, None
        model = self.calibration.evidence[name]
        titled = [f"{attribution.sources[s.source_index].title}: {s.text}" if attribution.sources[s.source_index].title
                  else s.text for s in attribution.sentences]
        values = components(attribution.query, [t.text for t in attribution.targets], titled, at2,
                            self.embed if model.needs_embedding else None)
        probabilities = model.predict(values)
        return probabilities, model.supported(probabilities, values), values

    def support_inputs(self, attribution: Attribution, evidence: str | None = None) -> list[dict[str, float]]:
        """The support detector's inputs for each response sentence (needs signals: ``score_job(support=True)``;
        ``evidence`` defaults to the hybrid model the detector is fit with)."""
        if evidence is None:
            evidence = "hybrid" if self.calibration is not None and "hybrid" in self.calibration.evidence else "raw"
        probabilities, _, values = self._evidence(attribution, evidence)
        if any(t.signals is None for t in attribution.targets):
            raise InvalidInputError("this attribution carries no support signals (score it with support=True)")
        vocabulary = ContextVocabulary([attribution.query, *(s.title or "" for s in attribution.sources),
                                        *(s.text for s in attribution.sources)])
        n = len(attribution.targets)
        rows = []
        for t, target in enumerate(attribution.targets):
            evidence_values = {"evidence_top": float(probabilities[t].max()),
                               "lexical_top": float(values["lex_a"][t].max()) if values is not None else 0.0}
            rows.append(feature_row(target.signals, vocabulary.facts(target.text, t, n), evidence_values))
        return rows

    def support(self, attribution: Attribution, strictness: str | None = None):
        """Per response sentence: (calibrated support probability, supported at ``strictness``, unsupported
        char spans in the response). Needs the support detector."""
        if self.detector is None:
            raise InvalidInputError("no support detector is loaded")
        threshold = self.detector.threshold(strictness or self.strictness)
        if any(t.signals is None or self.detector.needs_no_context and t.signals.pmi_mean is None
               for t in attribution.targets):
            raise InvalidInputError("this attribution was scored without support signals; attribute it with this "
                                    "attributor (its detector asks for them)")
        probability = self.detector.support(self.support_inputs(attribution))
        vocabulary = ContextVocabulary([attribution.query, *(s.title or "" for s in attribution.sources),
                                        *(s.text for s in attribution.sources)])
        spans = [vocabulary.unsupported_spans(t.text, t.start, mode=self.detector.span_mode) for t in attribution.targets]
        return probability, probability >= threshold, spans

    def cite_attribution(self, attribution: Attribution, max_sources: int = 3, relative_threshold: float = 0.5,
                         evidence: str | None = None, strictness: str | None = None) -> CitedResponse:
        """Citations from an attribution already computed: the evidence model picks what to cite, the support
        detector (when loaded) decides whether each sentence is supported at all."""
        check_cite(max_sources, relative_threshold)
        scores, supported = self.evidence_scores(attribution, evidence)
        support = spans = None
        if self.detector is not None and self._evidence_name(evidence) != "raw":
            support, supported, spans = self.support(attribution, strictness)
        return cite_policy.cite(attribution, scores, supported, self._evidence_name(evidence), max_sources,
                                relative_threshold, support=support, spans=spans)

    def cite(self, query: str, sources: Sequence[SourceLike], response: str | None = None,
             max_sources: int = 3, relative_threshold: float = 0.5, evidence: str | None = None,
             strictness: str | None = None, target: tuple[int, int] | None = None) -> CitedResponse:
        """Per-sentence citations of ``response`` (or of this model's own answer when None): the cited sources,
        the sentences inside them, and ``supported=False`` where the context does not support the sentence.
        With ``target=(start, end)``, citations for that selected phrase of the response alone."""
        check_cite(max_sources, relative_threshold)
        return self.cite_attribution(self.attribute(query, sources, response, target), max_sources,
                                     relative_threshold, evidence, strictness)

    def cite_batch(self, queries: Sequence[str], sources: Sequence[Sequence[SourceLike]],
                   responses: Sequence[str | None], max_sources: int = 3, relative_threshold: float = 0.5,
                   evidence: str | None = None, strictness: str | None = None) -> list[CitedResponse]:
        """``cite`` for several items in one padded batch."""
        check_cite(max_sources, relative_threshold)
        return [self.cite_attribution(a, max_sources, relative_threshold, evidence, strictness)
                for a in self.attribute_batch(queries, sources, responses)]

    def generate(self, query: str, sources: Sequence[SourceLike]) -> str:
        """Answer with this model from these sources, without attributing (for prune-then-answer loops)."""
        check_text(query, "query")
        layout = build_prompt(self.lm.tokenizer, query, to_sources(sources), template=self.template)
        with self._lock:
            ids = self.lm.generate([layout.input_ids], self.max_new_tokens, stop_at_blank_line=True)[0]
        return self.lm.decode(ids)

"""The per-item pipeline behind ``AT2Attributor``: one pass -> scores -> evidence -> verdict -> prune / compress /
cite. Internal: users hold the attributor; benchmarks and fitting code call these steps directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import cite as cite_policy
from . import compress as compress_policy
from . import prune as prune_policy
from .attention import FAMILIES
from .evidence import Calibration, Embedder, components
from .features import AttributionJob, collect
from .lm import LanguageModel
from .passages import PassageLike, to_passages
from .prompts import PromptTemplate, build_prompt
from .results import Attribution, CitedResponse, CompressedContext, PassageSentence, PruneResult, TargetScores
from .scorers import AverageAttentionScorer, Scorer
from .support import VERIFIER, ContextVocabulary, SupportDetector, embedding_facts, feature_row
from .targets import span_target
from .validation import check_batch, check_float, check_list, check_text
from .errors import ConfigurationError, InvalidInputError

logger = logging.getLogger(__name__)

DRAFTERS = ("llm", "attributor")


@dataclass
class Evidence:
    """Evidence of one attribution: ``[targets, passage sentences]`` scores (probabilities from an evidence model,
    raw AT2 scores without one), per target whether the evidence model calls it supported, and the components."""

    model: str
    scores: np.ndarray
    supported: np.ndarray | None
    values: dict[str, np.ndarray] | None


@dataclass
class Verdict:
    """The support verdict per target: calibrated probability, decision at a strictness, unsupported spans."""

    support: np.ndarray
    supported: np.ndarray
    spans: list[list[tuple[int, int]]]


class Pipeline:
    """Model, scorers and calibrated models of one attributor, and the steps that use them."""

    def __init__(self, lm: LanguageModel, scorer: Scorer, sentence_scorer: Scorer | None,
                 template: PromptTemplate | None, max_new_tokens: int, truncate: bool,
                 calibration: Calibration | None, evidence_model: str | None, embed: Embedder | None,
                 detector: SupportDetector | None, strictness: str | None,
                 keep_rule: compress_policy.KeepRule | None = None, verifier=None):
        self.lm = lm
        self.scorer = scorer
        self.sentence_scorer = sentence_scorer or AverageAttentionScorer()
        self.template = template or PromptTemplate()
        self.max_new_tokens = max_new_tokens
        self.truncate = truncate
        self.calibration = calibration
        self.embed = embed
        self.evidence_model = self.choose_evidence_model(evidence_model)
        if detector is not None:
            detector.check(lm.fingerprint)
            detector.threshold(strictness)
        elif strictness is not None:
            raise InvalidInputError("strictness needs a support detector; none is loaded for this model")
        if detector is not None and detector.needs_embedding and embed is None:
            raise ConfigurationError("this support detector reads MiniLM similarities; pass embed= "
                                     "(at2_rag.embeddings.minilm_embedder()) or load with from_pretrained()")
        if detector is not None and detector.needs_verifier and verifier is None:
            raise ConfigurationError("this support detector reads the verifier's entailment probability; pass "
                                     "verifier= (a file of python -m at2_rag.fit.verifier, or at2_rag.verifier.Verifier)")
        self.detector = detector
        self.strictness = strictness
        self.verifier = verifier
        self.keep_rule = keep_rule
        self.lock = threading.Lock()

    # ---- the pass and the scores ---------------------------------------------------------------------------

    @property
    def families(self) -> tuple[str, ...]:
        """Feature families the passage and sentence scorers read (captured together in one pass)."""
        needed = set(getattr(self.scorer, "families", ())) | set(getattr(self.sentence_scorer, "families", ()))
        return tuple(f for f in FAMILIES if f in needed or f == "attention-weight")

    @property
    def needs_signals(self) -> bool:
        """Whether the loaded detector reads model signals of the pass (only then are they computed)."""
        return self.detector is not None and self.detector.needs_signals

    def jobs(self, queries: Sequence[str], passages: Sequence[Sequence[PassageLike]],
             responses: Sequence[str | None] | None = None,
             families: Sequence[str] | None = None) -> list[AttributionJob]:
        """Generate or teacher-force and capture features for a batch (the first step of every method)."""
        queries, passages, responses = check_batch(queries, passages, responses)
        queries = [check_text(q, "query") for q in queries]
        responses = [check_text(r, "response", allow_none=True) for r in responses]
        passages = [to_passages(p) for p in passages]
        with self.lock:
            return collect(self.lm, queries, passages, responses, self.template, self.max_new_tokens,
                           truncate=self.truncate, families=families or self.families)

    def score(self, job: AttributionJob, scorer: Scorer | None = None, signals: bool | None = None) -> Attribution:
        """Score a collected job: passages with this pipeline's (or another) scorer, sentences with its sentence
        scorer, both from the same pass; with ``signals`` (default: when the detector reads them), also the
        model signals of each target (and the short pass without the context when the detector reads PMI)."""
        from .signals import no_context_logprobs, sentence_signals

        scorer = scorer or self.scorer
        signals = self.needs_signals if signals is None else signals
        per_target = [None] * len(job.targets)
        if signals and job.token_logprobs is not None:
            start = time.perf_counter()
            no_context = None
            if self.detector is None or self.detector.needs_no_context:
                with self.lock:
                    no_context = no_context_logprobs(self.lm, [job.query], [job.response_ids], job.template)[0]
            per_target = sentence_signals(job, no_context)
            job.timings["signals_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(scorer.score(job.at_level("passage")), dtype=float)
        sentence_scores = np.asarray(self.sentence_scorer.score(job.at_level("sentence")), dtype=float)
        timings = {**job.timings, "score_s": time.perf_counter() - start}
        sentences = [PassageSentence(passage_index=i, start=a, end=b, text=job.passages[i].text[a:b])
                     for i, a, b in job.sentences]
        return Attribution(
            query=job.query, response=job.response, passages=job.passages, scores=scores.mean(0).tolist(),
            targets=[TargetScores(text=t.text, start=t.start, end=t.end, scores=row.tolist(),
                                  sentence_scores=srow.tolist(), signals=sig)
                     for t, row, srow, sig in zip(job.targets, scores, sentence_scores, per_target)],
            sentences=sentences, sentence_scores=sentence_scores.mean(0).tolist(), scorer=scorer.name,
            sentence_scorer=self.sentence_scorer.name, model=self.lm.model_id, truncated=job.truncated,
            timings=timings,
        )

    def attribute_batch(self, queries, passages, responses=None, spans=None) -> list[Attribution]:
        """Attribute several items in one padded batch; ``spans`` gives each item's character range (None: its
        sentences), checked before any model work."""
        queries, passages, responses = check_batch(queries, passages, responses)
        spans = check_spans(spans, responses)
        jobs = self.jobs(queries, passages, responses)
        return [self.score(job if span is None else job.for_span(span))
                for job, span in zip(jobs, spans or [None] * len(jobs))]

    # ---- ranking and pruning ------------------------------------------------------------------------------

    def ranking(self, attribution: Attribution, retriever_scores: Sequence[float] | None = None,
                drafter: str = "llm") -> list[float]:
        """Passage ranking: AT2's scores, or AT2 fused with the retriever's when its scores are given."""
        if retriever_scores is None:
            return list(attribution.scores)
        retriever_scores = [check_float(s, "retriever score", allow_none=False)
                            for s in check_list(retriever_scores, "retriever_scores")]
        if len(retriever_scores) != len(attribution.scores):
            raise InvalidInputError(f"{len(retriever_scores)} retriever scores for {len(attribution.scores)} passages")
        if drafter not in DRAFTERS:
            raise InvalidInputError(f"drafter must be one of {DRAFTERS}, not {drafter!r}")
        if self.calibration is None or drafter not in self.calibration.fusion:
            logger.warning("no fusion weights are calibrated for %s; ranking by AT2 alone", self.lm.model_id)
            return list(attribution.scores)
        return self.calibration.fusion[drafter].fuse(attribution.scores, retriever_scores).tolist()

    def prune(self, attribution: Attribution, top_n: int | None = None, threshold: float | str | None = None,
              max_tokens: int | None = None, retriever_scores: Sequence[float] | None = None,
              drafter: str = "llm") -> PruneResult:
        """Keep passages by the ranking: a fixed ``top_n``, a ``threshold`` on the ranking scores, a token budget,
        or ``threshold='auto'``: the calibrated keep rule (as many passages as the answer needs)."""
        ranking = self.ranking(attribution, retriever_scores, drafter)
        counts = [len(self.lm.encode_response(p.text)) for p in attribution.passages] if max_tokens else None
        probability = None
        if threshold == "auto":
            evidence = self.keep_evidence(attribution)
            probability = compress_policy.passage_probability(self.keep_rule, attribution, ranking, evidence.scores,
                                                              evidence.values, drafter)
            keep = prune_policy.select(ranking, top_n, None, max_tokens, counts, keep=probability)
        else:
            keep = prune_policy.select(ranking, top_n, threshold, max_tokens, counts)
        return PruneResult(passages=[attribution.passages[i] for i in keep], indices=keep, ranking=ranking,
                           keep_probability=None if probability is None else probability.tolist(),
                           attribution=attribution)

    def compress(self, attribution: Attribution, budget: float | int | str = "auto",
                 retriever_scores: Sequence[float] | None = None, drafter: str = "llm", keep_order: bool = True,
                 joiner: str = " … ", min_sentences_per_passage: int = 0) -> CompressedContext:
        """Keep the passage sentences the answer relies on, under ``budget``, from the same pass."""
        ranking = self.ranking(attribution, retriever_scores, drafter)
        evidence = self.keep_evidence(attribution)
        counts = [len(self.lm.encode_response(s.text)) for s in attribution.sentences]
        return compress_policy.compress(attribution, evidence.scores, ranking, counts, budget=budget,
                                        rule=self.keep_rule, keep_order=keep_order, joiner=joiner,
                                        min_sentences_per_passage=min_sentences_per_passage,
                                        values=evidence.values, drafter=drafter)

    def keep_evidence(self, attribution: Attribution) -> Evidence:
        """The evidence the keep rule was fit with (the default evidence model without a rule, or when this
        attributor has no calibration holding the rule's model)."""
        rule = self.keep_rule
        if rule is not None and self.calibration is not None and rule.evidence_model in self.calibration.evidence:
            return self.evidence(attribution, rule.evidence_model)
        return self.evidence(attribution)

    # ---- evidence, verdict, citations ---------------------------------------------------------------------

    def choose_evidence_model(self, name: str | None) -> str:
        """The evidence model behind citations: the calibration's default unless named; 'raw' without one."""
        if self.calibration is None:
            if name not in (None, "raw"):
                raise InvalidInputError(f"evidence_model {name!r} needs a calibration; none is loaded (use 'raw')")
            return "raw"
        chosen = name or self.calibration.default_evidence
        if chosen == "raw":
            return chosen
        if chosen not in self.calibration.evidence:
            raise InvalidInputError(
                f"evidence_model must be 'raw' or one of {sorted(self.calibration.evidence)}, not {chosen!r}")
        if self.calibration.evidence[chosen].needs_embedding and self.embed is None:
            if name is not None:
                raise InvalidInputError(f"evidence_model {chosen!r} needs an embedder: pass embed=...")
            chosen = "hybrid"
        return chosen

    def evidence(self, attribution: Attribution, evidence_model: str | None = None) -> Evidence:
        """Evidence for every (target, passage sentence), computed once per call."""
        name = self.choose_evidence_model(evidence_model) if evidence_model is not None else self.evidence_model
        at2 = np.array([t.sentence_scores for t in attribution.targets])
        if name == "raw":
            return Evidence(name, at2, None, None)
        model = self.calibration.evidence[name]
        titled = [f"{attribution.passages[s.passage_index].title}: {s.text}"
                  if attribution.passages[s.passage_index].title else s.text for s in attribution.sentences]
        values = components(attribution.query, [t.text for t in attribution.targets], titled, at2,
                            self.embed if model.needs_embedding else None)
        probabilities = model.predict(values)
        return Evidence(name, probabilities, model.supported(probabilities, values), values)

    def detector_inputs(self, attribution: Attribution, evidence: Evidence,
                        vocabulary: ContextVocabulary) -> list[dict[str, float]]:
        """The support detector's inputs for each target: lexical facts, evidence, and (when it reads them)
        model signals."""
        n = len(attribution.targets)
        needs = self.detector is not None
        entailed = self.entailment(attribution) if needs and self.detector.needs_verifier else None
        similar = embedding_facts(self.embed, [t.text for t in attribution.targets], self.passage_sentences(attribution)) \
            if needs and self.detector.needs_embedding else None
        rows = []
        for t, target in enumerate(attribution.targets):
            evidence_values = {"evidence_top": float(evidence.scores[t].max()),
                               "lexical_top": float(evidence.values["lex_a"][t].max()) if evidence.values else 0.0}
            if entailed is not None:
                evidence_values[VERIFIER] = float(entailed[t])
            if similar is not None:
                evidence_values.update(similar[t])
            rows.append(feature_row(target.signals, vocabulary.facts(target.text, t, n), evidence_values))
        return rows

    @staticmethod
    def passage_sentences(attribution: Attribution) -> list[list[str]]:
        """Each passage's sentences as the pass split them."""
        sentences: list[list[str]] = [[] for _ in attribution.passages]
        for s in attribution.sentences:
            sentences[s.passage_index].append(s.text)
        return sentences

    def entailment(self, attribution: Attribution) -> np.ndarray:
        """The verifier's P(entailed) of each target given its evidence in the passages (the passages as the pass
        split them into sentences; the evidence chosen as in the verifier's training)."""
        return self.verifier.verify([t.text for t in attribution.targets], self.passage_sentences(attribution),
                                    attribution.query)

    def detector_rows(self, attribution: Attribution) -> list[dict[str, float]]:
        """Every detector input of each target, for fitting and benchmarks: lexical facts, the hybrid evidence
        (raw AT2 without a calibration), and model signals when the attribution carries them."""
        name = "hybrid" if self.calibration is not None and "hybrid" in self.calibration.evidence else "raw"
        return self.detector_inputs(attribution, self.evidence(attribution, name), context_vocabulary(attribution))

    def verdict(self, attribution: Attribution, evidence: Evidence, strictness: str | None = None) -> Verdict:
        """Whether anything in the context supports each target (needs the support detector)."""
        if self.detector is None:
            raise InvalidInputError("no support detector is loaded")
        threshold = self.detector.threshold(strictness or self.strictness)
        if self.detector.needs_signals and any(
                t.signals is None or self.detector.needs_no_context and t.signals.pmi_mean is None
                for t in attribution.targets):
            raise InvalidInputError("this attribution carries no model signals; attribute it with this attributor "
                                    "(its detector reads them)")
        vocabulary = context_vocabulary(attribution)
        support = self.detector.predict(self.detector_inputs(attribution, evidence, vocabulary))
        spans = [vocabulary.unsupported_spans(t.text, t.start, mode=self.detector.span_mode)
                 for t in attribution.targets]
        return Verdict(support, support >= threshold, spans)

    def cite(self, attribution: Attribution, max_passages: int = 3, relative_threshold: float = 0.5,
             evidence_model: str | None = None, strictness: str | None = None) -> CitedResponse:
        """Citations: the evidence model picks what to cite; the support verdict (when a detector is loaded)
        decides whether each target is supported at all."""
        evidence = self.evidence(attribution, evidence_model)
        supported, support, spans = evidence.supported, None, None
        if evidence.supported is not None:
            support = evidence.scores.max(-1)
        if self.detector is not None and evidence.model != "raw":
            verdict = self.verdict(attribution, evidence, strictness)
            support, supported, spans = verdict.support, verdict.supported, verdict.spans
        return cite_policy.cite(attribution, evidence.scores, supported, evidence.model, max_passages,
                                relative_threshold, support=support, spans=spans)

    def generate(self, query: str, passages: Sequence[PassageLike]) -> str:
        """Answer with this model from these passages, without attributing."""
        check_text(query, "query")
        layout = build_prompt(self.lm.tokenizer, query, to_passages(passages), template=self.template)
        with self.lock:
            ids = self.lm.generate([layout.input_ids], self.max_new_tokens, stop_at_blank_line=True)[0]
        return self.lm.decode(ids)


def context_vocabulary(attribution: Attribution) -> ContextVocabulary:
    """Stems of the question, the titles and the passages: what lexical support facts are checked against."""
    return ContextVocabulary([attribution.query, *(p.title or "" for p in attribution.passages),
                              *(p.text for p in attribution.passages)])


def check_spans(spans, responses: list) -> list | None:
    """Check character ranges against the given responses before any model work (a generated response is
    checked once it exists)."""
    if spans is None:
        return None
    spans = check_list(spans, "spans")
    if len(spans) != len(responses):
        raise InvalidInputError(f"{len(spans)} spans for {len(responses)} queries; give one (or None) each")
    for span, response in zip(spans, responses):
        if span is not None and isinstance(response, str):
            span_target(response, [len(response)], span)
    return spans

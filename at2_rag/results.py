"""Result models returned to users: plain, serialisable pydantic data with documented fields and a compact repr.

Nothing here imports torch; ``to_html`` renders through ``view.py``, the one renderer.
"""

from __future__ import annotations

import warnings

from pydantic import BaseModel, Field

from .errors import InvalidInputError
from .passages import Passage


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


class SentenceSignals(BaseModel):
    """Model-derived signals of one answer sentence (means over its tokens), computed only when the loaded
    support detector reads them."""

    lookback: list[float] = Field(description="Lookback ratio per head, index ``layer * heads + head``.")
    source_attention: float = Field(description="Mean attention mass on the passages, over heads and tokens.")
    logprob_mean: float = Field(description="Mean log p(token | context, answer so far).")
    logprob_min: float
    entropy_mean: float = Field(description="Mean entropy (nats) of the next-token distribution.")
    no_context_logprob_mean: float | None = Field(
        default=None, description="Mean log p(token | question, answer so far), without the passages.")
    pmi_mean: float | None = Field(default=None, description="Mean of log p with context - log p without.")
    pmi_min: float | None = None

    def __repr__(self) -> str:
        return f"SentenceSignals(heads={len(self.lookback)}, logprob_mean={self.logprob_mean:.3f})"


class ScoredPassage(BaseModel):
    """A passage with its attribution score and its index in the caller's list."""

    index: int
    score: float
    passage: Passage

    def __repr__(self) -> str:
        return f"ScoredPassage(index={self.index}, score={self.score:.4g}, id={self.passage.id!r})"


class TargetScores(BaseModel):
    """One target of the attribution (an answer sentence, or the ``span`` asked for): the score of every passage
    and of every sentence inside the passages."""

    text: str
    start: int = Field(description="Char offset of the target in the response.")
    end: int
    scores: list[float] = Field(description="AT2 score per passage.")
    sentence_scores: list[float] = Field(default_factory=list, description="One per ``Attribution.sentences``.")
    signals: SentenceSignals | None = Field(default=None, description="Model signals from the same pass, when the "
                                            "support detector reads them (None otherwise).")

    def __repr__(self) -> str:
        return f"TargetScores({self.start}:{self.end} {_short(self.text)})"


class PassageSentence(BaseModel):
    """A sentence inside a passage: where it is in that passage's text."""

    passage_index: int
    start: int = Field(description="Char offset in the passage's text.")
    end: int
    text: str


class Attribution(BaseModel):
    """How much each passage, and each sentence inside it, contributed to the response, from one pass."""

    query: str
    response: str
    passages: list[Passage]
    scores: list[float] = Field(description="AT2 score per passage, response level (mean over targets).")
    targets: list[TargetScores] = Field(description="Per target (answer sentence): passage and sentence scores.")
    sentences: list[PassageSentence] = Field(default_factory=list, description="The sentences inside the passages.")
    sentence_scores: list[float] = Field(default_factory=list,
                                         description="AT2 score per passage sentence, response level (same pass).")
    scorer: str = Field(description="Which scorer produced the scores (at2, average-attention, esm-32, ...).")
    sentence_scorer: str | None = Field(default=None, description="Which scorer produced the sentence scores.")
    model: str
    truncated: bool = Field(default=False, description="True when passages were trimmed to fit the window "
                            "(``passages`` then holds the text the model actually read).")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage for this item.")

    @property
    def sources(self) -> list[Passage]:
        """Deprecated name of ``passages``."""
        _deprecated("Attribution.sources", "Attribution.passages")
        return self.passages

    def top_n(self, n: int) -> list[ScoredPassage]:
        """The n highest-scored passages, best first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"n must be a non-negative int, not {n!r}")
        order = sorted(range(len(self.scores)), key=lambda i: -self.scores[i])
        return [ScoredPassage(index=i, score=self.scores[i], passage=self.passages[i]) for i in order[:n]]

    def top_k(self, k: int) -> list[ScoredPassage]:
        """Deprecated name of ``top_n``."""
        _deprecated("Attribution.top_k", "Attribution.top_n")
        return self.top_n(k)

    def ranked(self) -> list[ScoredPassage]:
        return self.top_n(len(self.scores))

    def to_dataframe(self):
        """One row per passage with its score and rank (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from exc
        ranks = {item.index: r + 1 for r, item in enumerate(self.ranked())}
        return pd.DataFrame([{"id": p.id, "title": p.title, "text": p.text, "score": self.scores[i], "rank": ranks[i]}
                             for i, p in enumerate(self.passages)])

    def to_html(self) -> str:
        """A self-contained HTML fragment: the response, and the passages with their sentences shaded by score."""
        from .view import attribution_html

        return attribution_html(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        top = ", ".join(f"[{s.index + 1}] {s.score:.3g}" for s in self.top_n(min(3, len(self.scores))))
        return (f"Attribution(passages={len(self.passages)}, sentences={len(self.sentences)}, "
                f"targets={len(self.targets)}, top=({top}), scorer={self.scorer!r})")


class CitedSentence(BaseModel):
    """A sentence of a cited passage: the evidence itself."""

    index: int = Field(description="Index into ``Attribution.sentences``.")
    start: int = Field(description="Char offset in the passage's text.")
    end: int
    text: str
    score: float = Field(description="Evidence score: how strongly this sentence supports the answer sentence.")


class CitedPassage(BaseModel):
    """One passage cited for a response sentence, with the sentences inside it that support it."""

    index: int = Field(description="Index of the passage in the caller's list (from 0).")
    number: int = Field(description="The marker shown in the answer, ``[number]``: index + 1.")
    id: str
    score: float = Field(description="Evidence score of the passage: its best sentence's.")
    quote: str = Field(description="The passage sentence with the highest evidence score.")
    sentences: list[CitedSentence] = Field(default_factory=list)

    def __repr__(self) -> str:
        return f"CitedPassage([{self.number}] id={self.id!r}, quote={_short(self.quote)})"


class Citation(BaseModel):
    """The evidence for one sentence of the response, or the lack of it."""

    sentence: str
    start: int
    end: int
    supported: bool = Field(description="The support verdict at the chosen strictness (without a detector: the "
                            "best evidence reaches the calibrated threshold); unsupported sentences get no marker.")
    support: float | None = Field(description="Calibrated probability that the context supports this sentence (the "
                                  "support detector's; without one, the evidence model's top probability; None "
                                  "with raw AT2 scores, which are not probabilities).")
    evidence: float = Field(default=0.0, description="Evidence score of the best passage sentence (the ranking "
                            "that picks what to cite).")
    unsupported_spans: list[tuple[int, int]] = Field(
        default_factory=list, description="Char spans in the response of the words the context does not support "
        "(inside unsupported sentences only).")
    passages: list[CitedPassage] = Field(description="Cited passages, best first (empty when unsupported).")

    def __repr__(self) -> str:
        verdict = "".join(f"[{p.number}]" for p in self.passages) if self.supported else "UNSUPPORTED"
        support = "-" if self.support is None else f"{self.support:.2f}"
        return f"Citation({_short(self.sentence)} {verdict} support={support})"


class CitedResponse(BaseModel):
    """A response with per-sentence citations and a rendering with ``[n]`` markers (n = passage index + 1)."""

    response: str
    citations: list[Citation]
    formatted: str
    unsupported: list[str] = Field(default_factory=list, description="Response sentences without enough evidence.")
    evidence_model: str = Field(default="at2", description="The evidence model behind the citations ('hybrid', "
                                "'at2', 'hybrid-embedding' or 'raw').")
    attribution: Attribution

    @property
    def evidence(self) -> str:
        """Deprecated name of ``evidence_model``."""
        _deprecated("CitedResponse.evidence", "CitedResponse.evidence_model")
        return self.evidence_model

    def to_html(self, kept: list[int] | None = None, ranking: list[float] | None = None,
                retriever_scores: list[float] | None = None, title: str | None = None,
                compressed: CompressedContext | None = None) -> str:
        """A self-contained HTML fragment: the answer with [n] markers and unsupported marks, and the passages
        with what is cited marked (``kept``/``ranking``/``retriever_scores``: from pruning; ``compressed``: the
        kept and dropped sentences of a compression)."""
        from .view import cited_html

        return cited_html(self, kept=kept, ranking=ranking, retriever_scores=retriever_scores, title=title,
                          compressed=compressed)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        lines = [f"CitedResponse(evidence_model={self.evidence_model!r}, {len(self.unsupported)} unsupported)",
                 *(f"  {c!r}" for c in self.citations)]
        return "\n".join(lines)


class PruneResult(BaseModel):
    """Passages kept by pruning, in their original order, with the attribution that chose them."""

    passages: list[Passage]
    indices: list[int]
    ranking: list[float] = Field(default_factory=list, description="The ranking score of every passage "
                                 "(AT2, or AT2 fused with the retriever's score).")
    keep_probability: list[float] | None = Field(default=None, description="With the adaptive cut: the calibrated "
                                                 "probability, per passage, that it holds what the answer needs.")
    attribution: Attribution

    @property
    def scores(self) -> list[float]:
        """Deprecated name of ``ranking``."""
        _deprecated("PruneResult.scores", "PruneResult.ranking")
        return self.ranking

    @property
    def sources(self) -> list[Passage]:
        """Deprecated name of ``passages``."""
        _deprecated("PruneResult.sources", "PruneResult.passages")
        return self.passages

    def __repr__(self) -> str:
        return f"PruneResult(kept={[i + 1 for i in self.indices]} of {len(self.ranking)} passages)"


class KeptSentence(BaseModel):
    """A sentence kept by compression: where it is in its passage."""

    passage_index: int
    start: int
    end: int
    score: float = Field(description="The compression ranking score of the sentence.")


class CompressedContext(BaseModel):
    """The sentences of the passages an answer relies on, from the same pass as ``attribute``."""

    texts: list[str] = Field(description="The compressed text of each input passage, in input order ('' when the "
                             "passage was dropped).")
    kept: list[KeptSentence] = Field(description="Kept sentences, in passage order then text order.")
    ranking: list[float] = Field(description="The ranking score of every passage sentence (``attribution.sentences``).")
    keep_probability: list[float] | None = Field(default=None, description="With budget='auto': the calibrated "
                                                 "probability that each passage sentence holds a needed fact.")
    budget: str = Field(description="The budget as asked: 'auto', a share of tokens, or a token count.")
    tokens_before: int
    tokens_after: int
    joiner: str
    attribution: Attribution

    @property
    def passages_kept(self) -> list[int]:
        """Indices of the passages with at least one kept sentence."""
        return sorted({k.passage_index for k in self.kept})

    @property
    def ratio(self) -> float:
        """Tokens after / tokens before."""
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0

    def to_html(self, title: str | None = None) -> str:
        """The passages with kept sentences marked and dropped ones struck through."""
        from .view import compressed_html

        return compressed_html(self, title=title)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return (f"CompressedContext({len(self.kept)} of {len(self.ranking)} sentences from passages "
                f"{[i + 1 for i in self.passages_kept]}, tokens {self.tokens_before} -> {self.tokens_after}, "
                f"budget={self.budget!r})")

"""Result models returned to users: serialisable pydantic objects with documented fields."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .errors import InvalidInputError
from .signals import SentenceSignals
from .sources import Source


class ScoredSource(BaseModel):
    """A source with its attribution score and its index in the caller's list."""

    index: int
    score: float
    source: Source


class TargetScores(BaseModel):
    """Scores of every source, and of every sentence inside the sources, for one response sentence."""

    text: str
    start: int = Field(description="Char offset of the sentence in the response.")
    end: int
    scores: list[float]
    sentence_scores: list[float] = Field(default_factory=list, description="One per ``Attribution.sentences``.")
    signals: SentenceSignals | None = Field(default=None, description="Inputs of the support detector from the "
                                            "same pass (lookback ratios, log-probabilities with and without context).")


class SourceSentence(BaseModel):
    """A sentence inside a source: where it is in that source's text."""

    source_index: int
    start: int = Field(description="Char offset in the source's text.")
    end: int
    text: str


class Attribution(BaseModel):
    """How much each source contributed to the response, by one scorer."""

    query: str
    response: str
    sources: list[Source]
    scores: list[float] = Field(description="Response-level score per source (mean over response sentences).")
    targets: list[TargetScores] = Field(description="Per response sentence: source and source-sentence scores.")
    sentences: list[SourceSentence] = Field(default_factory=list, description="The sentences inside the sources.")
    sentence_scores: list[float] = Field(default_factory=list,
                                         description="Response-level score per source sentence (same pass).")
    scorer: str = Field(description="Which scorer produced the scores (at2, average-attention, esm-32, ...).")
    sentence_scorer: str | None = Field(default=None, description="Which scorer produced the sentence scores.")
    model: str
    truncated: bool = Field(default=False, description="True when sources were trimmed to fit the window "
                            "(``sources`` then holds the text the model actually read).")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage for this item.")

    def top_k(self, k: int) -> list[ScoredSource]:
        """The k highest-scored sources, best first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidInputError(f"k must be a non-negative int, not {k!r}")
        order = sorted(range(len(self.scores)), key=lambda i: -self.scores[i])
        return [ScoredSource(index=i, score=self.scores[i], source=self.sources[i]) for i in order[:k]]

    def ranked(self) -> list[ScoredSource]:
        return self.top_k(len(self.scores))

    def to_dataframe(self):
        """One row per source with its score and rank (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from exc
        ranks = {item.index: r + 1 for r, item in enumerate(self.ranked())}
        return pd.DataFrame(
            [
                {"id": s.id, "title": s.title, "text": s.text, "score": self.scores[i], "rank": ranks[i]}
                for i, s in enumerate(self.sources)
            ]
        )

    def to_html(self) -> str:
        """A standalone HTML view: the question, the response, and the sources shaded by score."""
        from .report import attribution_html

        return attribution_html(self)


class CitedSentence(BaseModel):
    """A sentence of a cited source: the evidence itself."""

    index: int = Field(description="Index into ``Attribution.sentences``.")
    start: int = Field(description="Char offset in the source's text.")
    end: int
    text: str
    score: float = Field(description="Evidence score (see ``Citation.support``).")


class CitedSource(BaseModel):
    """One source cited for a response sentence, with the sentences inside it that support it."""

    index: int = Field(description="Index of the source in the caller's list; its marker is [index + 1].")
    id: str
    score: float = Field(description="Evidence score of the source: its best sentence's.")
    quote: str = Field(description="The source sentence with the highest evidence score.")
    sentences: list[CitedSentence] = Field(default_factory=list)


class Citation(BaseModel):
    """The evidence for one sentence of the response, or the lack of it."""

    sentence: str
    start: int
    end: int
    supported: bool = Field(description="The support detector's decision at the chosen strictness (without a "
                            "detector: the best evidence reaches the calibrated threshold); unsupported sentences "
                            "get no [n] marker.")
    support: float = Field(description="With the shipped detector: the calibrated probability that the context "
                           "supports this sentence. Without one: the evidence score of the best source sentence.")
    evidence: float = Field(default=0.0, description="Evidence score of the best source sentence (the ranking "
                            "that picks what to cite).")
    unsupported_spans: list[tuple[int, int]] = Field(
        default_factory=list, description="Char spans in the response of the words the context does not support "
        "(inside unsupported sentences only).")
    sources: list[CitedSource] = Field(description="Cited sources, best first (empty when unsupported).")


class CitedResponse(BaseModel):
    """A response with per-sentence citations and a rendering with ``[n]`` markers (n = source index + 1)."""

    response: str
    citations: list[Citation]
    formatted: str
    unsupported: list[str] = Field(default_factory=list, description="Response sentences without enough evidence.")
    evidence: str = Field(default="at2", description="The evidence scorer behind the citations.")
    attribution: Attribution

    def to_html(self, kept: list[int] | None = None, ranking: list[float] | None = None,
                retriever_scores: list[float] | None = None, title: str | None = None) -> str:
        """A self-contained HTML fragment: the answer with [n] markers and unsupported marks, and the passages
        with their sentences shaded by AT2 (``kept``/``ranking``/``retriever_scores``: from pruning)."""
        from .view import cited_html

        return cited_html(self, kept=kept, ranking=ranking, retriever_scores=retriever_scores, title=title)

    def _repr_html_(self) -> str:
        return self.to_html()


class PruneResult(BaseModel):
    """Sources kept by pruning, in their original order, with the attribution that chose them."""

    sources: list[Source]
    indices: list[int]
    scores: list[float] = Field(default_factory=list, description="The ranking score of every source "
                                "(AT2, or AT2 fused with the retriever's score).")
    attribution: Attribution

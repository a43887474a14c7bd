"""Result models returned to users: serialisable pydantic objects with documented fields."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .sources import Source


class ScoredSource(BaseModel):
    """A source with its attribution score and its index in the caller's list."""

    index: int
    score: float
    source: Source


class TargetScores(BaseModel):
    """Scores of every source for one response sentence."""

    text: str
    start: int = Field(description="Char offset of the sentence in the response.")
    end: int
    scores: list[float]


class Attribution(BaseModel):
    """How much each source contributed to the response, by one scorer."""

    query: str
    response: str
    sources: list[Source]
    scores: list[float] = Field(description="Response-level score per source (mean over sentences).")
    targets: list[TargetScores] = Field(description="Per-sentence scores.")
    scorer: str = Field(description="Which scorer produced the scores (at2, average-attention, esm-32, ...).")
    model: str
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage for this item.")

    def top_k(self, k: int) -> list[ScoredSource]:
        """The k highest-scored sources, best first."""
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


class CitedSource(BaseModel):
    """One source cited for a sentence."""

    index: int
    id: str
    score: float
    quote: str = Field(description="The sentence of the source that the answer sentence relies on most.")


class Citation(BaseModel):
    """The sources that support one sentence of the response."""

    sentence: str
    start: int
    end: int
    sources: list[CitedSource]


class CitedResponse(BaseModel):
    """A response with per-sentence citations and a rendering with ``[n]`` markers (n = source index + 1)."""

    response: str
    citations: list[Citation]
    formatted: str
    attribution: Attribution


class PruneResult(BaseModel):
    """Sources kept by pruning, in their original order, with the attribution that chose them."""

    sources: list[Source]
    indices: list[int]
    attribution: Attribution

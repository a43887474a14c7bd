"""Prune and cite a framework's retrieved items by their positions: the logic both integrations share.

Items are (text, title) pairs in the framework's order; items without text (images, empty nodes) are not
scored and always kept. Scores, kept positions and citation numbers all refer to the caller's positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from .attributor import AT2Attributor
from .cite import render
from .errors import EmptyInputError
from .results import Attribution, CitedResponse
from .passages import Passage

DRAFT_PROMPT = (
    "Context information is below.\n---------------------\n{context}\n---------------------\n"
    "Given the context information and not prior knowledge, answer the query.\nQuery: {question}\nAnswer: "
)


class ContextItem(BaseModel):
    """One retrieved item as the integrations see it."""

    id: str
    text: str | None = None
    title: Any = None
    retriever_score: float | None = None


class RankedContext(BaseModel):
    """Result of ranking retrieved items for one query (per call: nothing is kept on the component)."""

    kept: list[int] = Field(description="Positions kept, in the caller's order (unscored items included).")
    scores: dict[int, float] = Field(description="Ranking score per scored position (AT2, or fused).")
    at2_scores: dict[int, float] = Field(description="AT2 score per scored position.")
    unscored: list[int] = Field(description="Positions without text: kept, not scored.")
    fused: bool = Field(description="Whether the retriever's scores were fused into ``scores``.")
    draft: str = Field(description="The answer that was attributed.")
    attribution: Attribution


def _sources(items: Sequence[ContextItem]) -> tuple[list[int], list[Passage]]:
    positions, passages = [], []
    for i, item in enumerate(items):
        if isinstance(item.text, str) and item.text.strip():
            title = None if item.title is None else str(item.title).strip() or None
            positions.append(i)
            passages.append(Passage(id=item.id, text=item.text, title=title))
    if not passages:
        raise EmptyInputError("no retrieved item has text to attribute")
    return positions, passages


def draft_context(items: Sequence[ContextItem]) -> str:
    """The retrieved texts as one context block for a drafting prompt (titles first, as the attributor reads them)."""
    return "\n\n".join(f"{item.title}\n{item.text}" if item.title else item.text
                       for item in items if isinstance(item.text, str) and item.text.strip())


def rank_context(attributor: AT2Attributor, query: str, items: Sequence[ContextItem], draft: str | None,
                 top_n: int | None = None, threshold: float | str | None = None, max_tokens: int | None = None,
                 fuse: bool = True) -> RankedContext:
    """Attribute ``draft`` (None: the attributor drafts) over the items with text, rank (fused with the
    retriever's scores when ``fuse`` and every scored item has one), and choose the items to keep."""
    positions, passages = _sources(items)
    attribution = attributor.attribute(query, passages, draft)
    retriever = [items[i].retriever_score for i in positions]
    use_retriever = fuse and all(s is not None for s in retriever)
    drafter = "llm" if draft is not None else "attributor"
    pruned = attributor.pipeline.prune(attribution, top_n, threshold, max_tokens,
                                       retriever if use_retriever else None, drafter)
    scored = set(positions)
    unscored = [i for i in range(len(items)) if i not in scored]
    return RankedContext(
        kept=sorted({positions[j] for j in pruned.indices} | set(unscored)),
        scores={positions[j]: s for j, s in enumerate(pruned.ranking)},
        at2_scores={positions[j]: s for j, s in enumerate(attribution.scores)},
        unscored=unscored, fused=use_retriever, draft=attribution.response, attribution=attribution,
    )


def cite_context(attributor: AT2Attributor, query: str, items: Sequence[ContextItem], answer: str,
                 max_passages: int = 3, relative_threshold: float = 0.5,
                 evidence_model: str | None = None) -> CitedResponse:
    """Citations of ``answer`` whose source indices and ``[n]`` markers are the items' positions (n = position + 1)."""
    return cite_context_batch(attributor, [query], [items], [answer], max_passages, relative_threshold,
                              evidence_model)[0]


def cite_context_batch(attributor: AT2Attributor, queries: Sequence[str], items: Sequence[Sequence[ContextItem]],
                       answers: Sequence[str], max_passages: int = 3, relative_threshold: float = 0.5,
                       evidence_model: str | None = None) -> list[CitedResponse]:
    """``cite_context`` for several answers in one padded attribution batch."""
    converted = [_sources(one) for one in items]
    cited = attributor.cite_batch(queries, [s for _, s in converted], answers, max_passages, relative_threshold,
                                  evidence_model)
    for response, (positions, _) in zip(cited, converted):
        for citation in response.citations:
            for source in citation.passages:
                source.index = positions[source.index]
                source.number = source.index + 1
        response.formatted = render(response.response, response.citations)
    return cited

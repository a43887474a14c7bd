"""Documents <-> at2_rag context items."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.documents import Document

from at2_rag.context import ContextItem


def document_items(documents: Sequence[Document], score_key: str | None = None,
                   scores: Sequence[float] | None = None) -> list[ContextItem]:
    """Documents as context items; the retriever's score is ``scores[i]`` or ``metadata[score_key]`` when present."""
    items = []
    for i, doc in enumerate(documents):
        text = getattr(doc, "page_content", None)
        metadata = doc.metadata if isinstance(doc.metadata, dict) else {}
        score = scores[i] if scores is not None else metadata.get(score_key) if score_key else None
        items.append(ContextItem(id=str(doc.id or i), text=text if isinstance(text, str) else None,
                                 title=metadata.get("title"),
                                 retriever_score=float(score) if isinstance(score, (int, float)) else None))
    return items

"""Documents <-> at2_rag Sources."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.documents import Document

from at2_rag import Source


def document_sources(documents: Sequence[Document]) -> tuple[list[int], list[Source]]:
    """Indices and Sources of documents with text; others are passed through untouched by callers."""
    indices, sources = [], []
    for i, doc in enumerate(documents):
        text = getattr(doc, "page_content", None)
        if isinstance(text, str) and text.strip():
            indices.append(i)
            sources.append(Source(id=str(doc.id or i), text=text, title=doc.metadata.get("title")))
    return indices, sources

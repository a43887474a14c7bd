"""AT2DocumentCompressor: for ContextualCompressionRetriever / DocumentCompressorPipeline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from at2_rag import AT2Attributor, Attribution
from langchain_at2._convert import document_sources

logger = logging.getLogger(__name__)


class AT2DocumentCompressor(BaseDocumentCompressor):
    """Drafts an answer over all documents with the attributor's model, keeps those AT2 says it used.

    Kept documents carry ``metadata["at2_score"]``. On failure the documents come back unchanged, with a
    warning (``raise_on_error=True`` to raise instead).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_k: int | None = Field(default=3)
    threshold: float | None = None
    max_tokens: int | None = None
    order: Literal["original", "score"] = "original"
    raise_on_error: bool = False
    model: str | None = None
    coefficients: str | None = None
    last_attribution: Attribution | None = Field(default=None, exclude=True)
    _attributor: AT2Attributor | None = PrivateAttr(default=None)

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attributor = attributor

    @property
    def attributor(self) -> AT2Attributor:
        if self._attributor is None:
            self._attributor = AT2Attributor.from_pretrained(self.model, self.coefficients)
        return self._attributor

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        documents = list(documents)
        if not documents:
            return []
        try:
            indices, sources = document_sources(documents)
            if not sources:
                raise ValueError("no document has text to attribute")
            attribution = self.attributor.attribute(query, sources)
            pruned = self.attributor.prune_attribution(attribution, self.top_k, self.threshold, self.max_tokens)
        except Exception as exc:
            if self.raise_on_error:
                raise
            logger.warning("AT2DocumentCompressor: attribution failed (%s); returning all %d documents",
                           exc, len(documents))
            return documents
        self.last_attribution = attribution
        scores = {indices[j]: attribution.scores[j] for j in range(len(indices))}
        keep = {indices[j] for j in pruned.indices} | (set(range(len(documents))) - set(indices))
        out = []
        for i in sorted(keep):
            doc = documents[i]
            if i in scores:
                doc = doc.model_copy(update={"metadata": {**doc.metadata, "at2_score": scores[i]}})
            out.append(doc)
        if self.order == "score":
            out.sort(key=lambda d: -d.metadata.get("at2_score", float("-inf")))
        return out

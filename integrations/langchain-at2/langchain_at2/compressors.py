"""AT2DocumentCompressor: for ContextualCompressionRetriever / DocumentCompressorPipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr

from at2_rag import AT2Attributor
from at2_rag.context import DRAFT_PROMPT, RankedContext, draft_context, rank_context
from at2_rag.faults import is_configuration_error, skip_reason
from langchain_at2._convert import document_items

logger = logging.getLogger(__name__)

DRAFT_TEMPLATE = ChatPromptTemplate.from_messages([("human", DRAFT_PROMPT)])
SKIPPED_KEY = "at2_skipped"


class AT2DocumentCompressor(BaseDocumentCompressor):
    """Keeps the documents an answer relies on, by AT2 attribution (fused with the retriever's relevance).

    The answer is drafted by ``llm`` (any chat model, LLM or runnable that takes a prompt) over all
    documents and teacher-forced through the attributor in one pass; without ``llm`` the attributor's own
    small model drafts (fully local, weaker). Relevance for fusion comes from ``metadata[score_key]`` when
    every document has it, else from ``embeddings`` (question-document cosine) when given. Kept documents are
    copies with ``metadata["at2_score"]``. A fault of one query (a context over the window, a rate limit, a
    timeout) fails open: every input document comes back, as a copy with ``metadata["at2_skipped"]`` (the
    reason), with a warning (``raise_on_error`` to raise). A configuration that can never work raises: at
    construction (unknown model, mismatched coefficients, bad values) or when the drafting model's package is
    missing, its key is rejected or its model does not exist.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", populate_by_name=True)

    top_n: int | None = Field(default=3, ge=1, validation_alias=AliasChoices("top_n", "top_k"))
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    order: Literal["original", "score"] = "original"
    llm: Runnable | None = Field(default=None, description="Drafting model (None: the attributor drafts).")
    score_key: str | None = Field(default="relevance_score", description="Metadata key of retriever scores.")
    embeddings: Embeddings | None = Field(default=None, description="Scores relevance when no score_key is set.")
    fuse_retriever_score: bool = True
    raise_on_error: bool = False
    model: str | None = None
    coefficients: str | None = None
    max_new_tokens: int = Field(default=64, ge=1)
    truncate: bool = False
    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        if attributor is not None:
            kwargs.setdefault("model", attributor.lm.source)
            kwargs.setdefault("max_new_tokens", attributor.pipeline.max_new_tokens)
            kwargs.setdefault("truncate", attributor.pipeline.truncate)
        super().__init__(**kwargs)
        self._attributor = attributor or AT2Attributor.from_pretrained(
            self.model, self.coefficients, max_new_tokens=self.max_new_tokens, truncate=self.truncate)

    @property
    def attributor(self) -> AT2Attributor:
        return self._attributor

    def _draft_chain(self) -> Runnable | None:
        return None if self.llm is None else DRAFT_TEMPLATE | self.llm | StrOutputParser()

    def _scores(self, documents: list[Document], query: str) -> list[float] | None:
        if self.embeddings is None or all(self.score_key in d.metadata for d in documents):
            return None
        vectors = np.asarray(self.embeddings.embed_documents([d.page_content or " " for d in documents]))
        q = np.asarray(self.embeddings.embed_query(query))
        norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(q)
        return (vectors @ q / np.where(norms > 0, norms, 1.0)).tolist()

    def compress_with_ranking(self, documents: Sequence[Document], query: str, draft: str | None
                              ) -> tuple[list[Document], RankedContext]:
        """Kept document copies and this call's ranking (draft, scores, attribution) for ``draft``."""
        documents = list(documents)
        items = document_items(documents, self.score_key, self._scores(documents, query))
        ranked = rank_context(self.attributor, query, items, draft, self.top_n, self.threshold, self.max_tokens,
                              self.fuse_retriever_score)
        out = [documents[i].model_copy(update={"metadata": {**documents[i].metadata,
                                                            "at2_score": ranked.at2_scores[i]}})
               if i in ranked.scores else documents[i] for i in ranked.kept]
        if self.order == "score":
            rank = {i: ranked.scores.get(i, float("-inf")) for i in ranked.kept}
            out = [doc for _, doc in sorted(zip(ranked.kept, out), key=lambda pair: -rank[pair[0]])]
        return out, ranked

    def _fail_open(self, documents: list[Document], query: str, exc: Exception) -> list[Document]:
        """Raise a configuration error (or anything, with ``raise_on_error``); otherwise every document, marked."""
        if self.raise_on_error or is_configuration_error(exc):
            raise exc
        logger.warning("AT2DocumentCompressor: attribution failed for query %r (%s: %s); returning all %d documents",
                       query, type(exc).__name__, exc, len(documents))
        reason = skip_reason(exc)
        return [d.model_copy(update={"metadata": {**d.metadata, SKIPPED_KEY: reason}}) for d in documents]

    def _draft_inputs(self, documents: list[Document], query: str) -> dict[str, str]:
        return {"context": draft_context(document_items(documents)), "question": query}

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        documents = list(documents)
        if not documents:
            return []
        try:
            chain = self._draft_chain()
            draft = chain and chain.invoke(self._draft_inputs(documents, query), {"callbacks": callbacks})
            return self.compress_with_ranking(documents, query, draft)[0]
        except Exception as exc:
            return self._fail_open(documents, query, exc)

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        documents = list(documents)
        if not documents:
            return []
        try:
            chain = self._draft_chain()
            draft = chain and await chain.ainvoke(self._draft_inputs(documents, query), {"callbacks": callbacks})
            return (await asyncio.to_thread(self.compress_with_ranking, documents, query, draft))[0]
        except Exception as exc:
            return self._fail_open(documents, query, exc)

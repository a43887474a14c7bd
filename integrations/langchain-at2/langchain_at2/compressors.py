"""Prune or compress retrieved documents by what an answer relies on: ``AT2DocumentCompressor`` (a
``BaseDocumentCompressor``, for langchain-classic's ``ContextualCompressionRetriever``: legacy) and
``AT2ContextRunnable`` (LCEL: ``{"question", "documents"[, "answer"]}`` in, the same dict with the kept
documents out). Both take the shared options of ``at2_rag.context.ContextOptions``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr

from at2_rag import AT2Attributor
from at2_rag.context import (
    DRAFT_PROMPT,
    SKIPPED_KEY,
    AttributorSettings,
    ContextOptions,
    RankedContext,
    attributor_settings,
    check_context_options,
    default_attributor,
    draft_context,
    fail_open,
    reduce_context,
)
from at2_rag.errors import ConfigurationError, InvalidInputError
from langchain_at2._convert import document_items, kept_documents, skipped_documents

DRAFT_TEMPLATE = ChatPromptTemplate.from_messages([("human", DRAFT_PROMPT)])
NO_LLM = ("{name}(drafter='llm') has no LLM to draft the answer it attributes: pass llm=... (the chat model that "
          "answers){extra}, or use drafter='attributor' for fully local use (the attributor's own small model "
          "drafts)")


def _answer_text(answer: Any) -> str | None:
    """A chain's answer as text: a str, or a message's text."""
    if answer is None or isinstance(answer, str):
        return answer
    text = getattr(answer, "text", None)
    return str(text) if text is not None else None


class _DocumentReducer:
    """What the compressor and the runnable share: drafting, relevance scores, keeping, failing open."""

    llm: Runnable | None
    score_key: str | None
    embeddings: Embeddings | None
    _attributor: AT2Attributor

    @property
    def attributor(self) -> AT2Attributor:
        return self._attributor

    def _draft_chain(self) -> Runnable | None:
        """The drafting chain (None: the attributor drafts)."""
        if self.drafter == "attributor":
            return None
        if self.llm is None:
            raise ConfigurationError(NO_LLM.format(name=type(self).__name__, extra=self._no_llm_hint))
        return DRAFT_TEMPLATE | self.llm | StrOutputParser()

    _no_llm_hint: ClassVar[str] = ""

    def _draft_inputs(self, documents: list[Document], query: str) -> dict[str, str]:
        return {"context": draft_context(document_items(documents)), "question": query}

    def _scores(self, documents: list[Document], query: str) -> list[float] | None:
        if self.embeddings is None or all(self.score_key in d.metadata for d in documents):
            return None
        vectors = np.asarray(self.embeddings.embed_documents([d.page_content or " " for d in documents]))
        q = np.asarray(self.embeddings.embed_query(query))
        norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(q)
        return (vectors @ q / np.where(norms > 0, norms, 1.0)).tolist()

    def compress_with_ranking(self, documents: Sequence[Document], query: str, draft: str | None
                              ) -> tuple[list[Document], RankedContext]:
        """Kept document copies and this call's result (draft, scores, kept spans, attribution) for ``draft``."""
        documents = list(documents)
        items = document_items(documents, self.score_key, self._scores(documents, query))
        ranked = reduce_context(self.attributor, query, items, draft, self)
        return kept_documents(documents, ranked), ranked

    def _fail_open(self, documents: list[Document], query: str, exc: Exception) -> list[Document]:
        """Raise a configuration error (or anything, with ``raise_on_error``); otherwise every document, marked."""
        reason = fail_open(exc, self.raise_on_error, type(self).__name__, query,
                           f"returning all {len(documents)} documents")
        return skipped_documents(documents, reason)

    def reduce(self, documents: Sequence[Document], query: str, answer: str | None = None,
               callbacks: Callbacks | None = None) -> list[Document]:
        """The kept documents for ``query``: ``answer`` is attributed when given, else a draft (``drafter``)."""
        documents = list(documents)
        if not documents:
            return []
        try:
            if answer is None:
                chain = self._draft_chain()
                answer = chain and chain.invoke(self._draft_inputs(documents, query), {"callbacks": callbacks})
            return self.compress_with_ranking(documents, query, answer)[0]
        except Exception as exc:
            return self._fail_open(documents, query, exc)

    async def areduce(self, documents: Sequence[Document], query: str, answer: str | None = None,
                      callbacks: Callbacks | None = None) -> list[Document]:
        """Async ``reduce``: the LLM drafts with ``ainvoke``; attribution runs in a worker thread."""
        documents = list(documents)
        if not documents:
            return []
        try:
            if answer is None:
                chain = self._draft_chain()
                answer = chain and await chain.ainvoke(self._draft_inputs(documents, query), {"callbacks": callbacks})
            return (await asyncio.to_thread(self.compress_with_ranking, documents, query, answer))[0]
        except Exception as exc:
            return self._fail_open(documents, query, exc)


class AT2DocumentCompressor(_DocumentReducer, BaseDocumentCompressor, ContextOptions, AttributorSettings):
    """Keeps the documents an answer relies on, by AT2 attribution (fused with the retriever's relevance); with
    ``granularity="sentence"``, keeps inside them only the sentences it relies on.

    For langchain-classic's ``ContextualCompressionRetriever`` / ``DocumentCompressorPipeline`` (legacy; in
    LCEL use ``AT2ContextRunnable``, in an agent ``AT2Middleware``). The answer is drafted by ``llm`` (any chat
    model, LLM or runnable that takes a prompt) over all documents and teacher-forced through the attributor in
    one pass; ``drafter="attributor"`` lets the attributor's own small model draft (fully local, weaker; no
    ``llm`` needed). Relevance for fusion comes from ``metadata[score_key]`` when every document has it, else
    from ``embeddings`` (question-document cosine) when given. Kept documents are copies with
    ``metadata["at2_score"]``; with ``granularity="sentence"`` their ``page_content`` is the compressed text and
    ``metadata["at2_kept_spans"]`` the [start, end) of each kept sentence in the original text (document
    metadata is not shown to the model by LangChain's document prompts). A fault of one query (a context over
    the window, a rate limit, a timeout) fails open: every input document comes back, as a copy with
    ``metadata["at2_skipped"]`` (the reason), with a warning (``raise_on_error`` to raise). A configuration
    that can never work raises: at construction (unknown model, mismatched coefficients, bad or conflicting
    values, ``drafter="llm"`` without ``llm``, ``budget="auto"`` without a keep rule) or when the drafting
    model's package is missing, its key is rejected or its model does not exist.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    llm: Runnable | None = Field(default=None, description="Drafting model (drafter='llm').")
    score_key: str | None = Field(default="relevance_score", description="Metadata key of retriever scores.")
    embeddings: Embeddings | None = Field(default=None, description="Scores relevance when no score_key is set.")
    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**attributor_settings(attributor, kwargs))
        self._draft_chain()
        self._attributor = attributor or default_attributor(self)
        check_context_options(self._attributor, self)

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        return self.reduce(documents, query, None, callbacks)

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        return await self.areduce(documents, query, None, callbacks)


class AT2ContextRunnable(_DocumentReducer, RunnableSerializable[dict, dict], ContextOptions, AttributorSettings):
    """LCEL: ``{"question", "documents"[, "answer"]}`` -> the same dict with ``documents`` replaced by the kept
    ones (copies, as ``AT2DocumentCompressor`` keeps them; every document marked ``at2_skipped`` when it fails
    open). Composes with ``|`` and ``RunnableParallel``; needs langchain-core only.

    The answer attributed is ``answer`` when the input has one (the paper's loop: answer with everything, keep
    what was used, answer again), else a draft by ``llm`` (``drafter="llm"``) or by the attributor
    (``drafter="attributor"``). ``drafter="llm"`` with neither an ``answer`` in the input nor ``llm`` raises
    ``ConfigurationError``. Key names: ``question_key``, ``documents_key``, ``answer_key``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    question_key: str = "question"
    documents_key: str = "documents"
    answer_key: str = "answer"
    llm: Runnable | None = Field(default=None, description="Drafting model when the input has no answer.")
    score_key: str | None = Field(default="relevance_score", description="Metadata key of retriever scores.")
    embeddings: Embeddings | None = Field(default=None, description="Scores relevance when no score_key is set.")
    _attributor: AT2Attributor = PrivateAttr()
    _no_llm_hint: ClassVar[str] = " or put the answer under the input's answer key"

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**attributor_settings(attributor, kwargs))
        self._attributor = attributor or default_attributor(self)
        check_context_options(self._attributor, self)

    def _unpack(self, input: dict) -> tuple[str, list[Document], str | None]:
        if not isinstance(input, dict):
            raise InvalidInputError(f"AT2ContextRunnable takes a dict, not {type(input).__name__}")
        missing = [k for k in (self.question_key, self.documents_key) if input.get(k) is None]
        if missing:
            raise InvalidInputError(f"AT2ContextRunnable: input has no {missing} (keys present: {sorted(input)}); "
                                    "set question_key / documents_key to your chain's names")
        documents = input[self.documents_key]
        documents = [Document(page_content=documents)] if isinstance(documents, str) else list(documents)
        answer = _answer_text(input.get(self.answer_key))
        if answer is not None and not answer.strip():
            answer = None
        if answer is None and self.drafter == "llm" and self.llm is None:
            self._draft_chain()  # raises the configuration error
        return input[self.question_key], documents, answer

    def _reduce_one(self, input: dict, config: RunnableConfig | None = None) -> dict:
        question, documents, answer = self._unpack(input)
        callbacks = (config or {}).get("callbacks")
        return {**input, self.documents_key: self.reduce(documents, question, answer, callbacks)}

    async def _areduce_one(self, input: dict, config: RunnableConfig | None = None) -> dict:
        question, documents, answer = self._unpack(input)
        callbacks = (config or {}).get("callbacks")
        return {**input, self.documents_key: await self.areduce(documents, question, answer, callbacks)}

    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return self._call_with_config(self._reduce_one, input, config, run_type="chain")

    async def ainvoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return await self._acall_with_config(self._areduce_one, input, config, run_type="chain")


__all__ = ["SKIPPED_KEY", "AT2ContextRunnable", "AT2DocumentCompressor"]

"""AT2CitationCallbackHandler: collects retrieved documents and the final LLM output, then cites it."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.outputs import LLMResult

from at2_rag import AT2Attributor
from langchain_at2.citations import cite_documents

logger = logging.getLogger(__name__)


class AT2CitationCallbackHandler(BaseCallbackHandler):
    """Pass in ``config={"callbacks": [handler]}``; after the run, ``handler.citations`` holds the last answer's
    citations and ``handler.records`` one entry per answered LLM call that followed a retrieval."""

    def __init__(self, attributor: AT2Attributor | None = None, question: str | None = None) -> None:
        self.attributor = attributor or AT2Attributor.from_pretrained()
        self.question = question
        self.documents: list[Document] = []
        self.records: list[dict[str, Any]] = []

    @property
    def citations(self):
        return self.records[-1]["citations"] if self.records else []

    def on_retriever_start(self, serialized: dict[str, Any], query: str, **kwargs: Any) -> None:
        self.question = query

    def on_retriever_end(self, documents, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self.documents = list(documents)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if not self.documents or not self.question or not response.generations or not response.generations[0]:
            return
        answer = response.generations[0][0].text
        if not answer.strip():
            return
        try:
            self.records.append(cite_documents(self.attributor, self.question, self.documents, answer))
        except Exception as exc:
            logger.warning("AT2CitationCallbackHandler: citations failed (%s)", exc)

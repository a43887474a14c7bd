"""AT2CitationCallbackHandler: cites each run's final LLM answer against the documents that run retrieved."""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from at2_rag import AT2Attributor
from at2_rag.context import (
    AttributorSettings,
    CitationOptions,
    check_citation_options,
    citation_record,
    cite_with,
    default_attributor,
    fail_open,
    skipped_record,
)
from langchain_at2._convert import document_items

logger = logging.getLogger(__name__)


class AT2CitationCallbackHandler(BaseCallbackHandler):
    """Pass in ``config={"callbacks": [handler]}``. Every top-level run keeps its own question and documents
    (state is keyed by the run tree, so ``chain.batch([q1, q2])`` cites each answer against its own
    documents); ``records`` gets one entry per answered LLM call that followed a retrieval in its run:
    ``question``, ``answer``, ``run_id`` and the citation record (``citations``, ``cited_answer``,
    ``unsupported``, ``at2_scores``; or ``at2_skipped``), the same shape as LlamaIndex's
    ``AT2CitationEventHandler.records``. Options: the citation options (``at2_rag.context.CitationOptions``);
    without ``attributor=``, the shared default attributor. A fault while citing fails open (a record with
    ``at2_skipped`` and a warning); a configuration error, or anything with ``raise_on_error``, raises
    through the run."""

    raise_error = True  # our own faults are caught; what still raises is a configuration error

    def __init__(self, attributor: AT2Attributor | None = None, **options) -> None:
        settings = {k: options.pop(k) for k in list(options) if k in AttributorSettings.model_fields}
        self.options = CitationOptions(**options)
        self.attributor = attributor or default_attributor(AttributorSettings(**settings))
        check_citation_options(self.attributor, self.options)
        self.records: list[dict[str, Any]] = []
        self._parents: dict[UUID, UUID | None] = {}
        self._runs: dict[UUID, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def citations(self) -> list[dict]:
        """Citations of the latest record (convenience for one query at a time)."""
        return self.records[-1]["citations"] if self.records else []

    def _root(self, run_id: UUID, parent_run_id: UUID | None) -> UUID:
        with self._lock:
            self._parents.setdefault(run_id, parent_run_id)
            return self._find_root(run_id)

    def _find_root(self, run_id: UUID) -> UUID:
        while self._parents.get(run_id) is not None:
            run_id = self._parents[run_id]
        return run_id

    def on_chain_start(self, serialized, inputs, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs):
        self._root(run_id, parent_run_id)

    def on_chain_end(self, outputs, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs) -> None:
        if parent_run_id is None:  # a top-level run ended: forget its state and its run tree
            with self._lock:
                self._runs.pop(run_id, None)
                self._parents = {k: v for k, v in self._parents.items() if self._find_root(k) != run_id}

    def on_retriever_start(self, serialized, query: str, *, run_id: UUID, parent_run_id: UUID | None = None,
                           **kwargs: Any) -> None:
        root = self._root(run_id, parent_run_id)
        with self._lock:
            self._runs.setdefault(root, {})["question"] = query

    def on_retriever_end(self, documents, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        root = self._root(run_id, parent_run_id)
        with self._lock:
            self._runs.setdefault(root, {})["documents"] = list(documents)

    def on_llm_start(self, serialized, prompts, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs):
        self._root(run_id, parent_run_id)

    def on_chat_model_start(self, serialized, messages, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs):
        self._root(run_id, parent_run_id)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs) -> None:
        root = self._root(run_id, parent_run_id)
        with self._lock:
            state = dict(self._runs.get(root, {}))
        question, documents = state.get("question"), state.get("documents")
        if not documents or not question or not response.generations or not response.generations[0]:
            return
        answer = response.generations[0][0].text
        if not answer.strip():
            return
        try:
            record = citation_record(cite_with(self.attributor, self.options, question,
                                               document_items(list(documents)), answer))
        except Exception as exc:
            record = skipped_record(answer, fail_open(exc, self.options.raise_on_error, "AT2CitationCallbackHandler",
                                                      question, "answer left without citations"))
        with self._lock:
            self.records.append({"question": question, "answer": answer, "run_id": str(root), **record})

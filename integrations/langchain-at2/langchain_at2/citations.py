"""AT2CitationRunnable: a retrieval chain's output -> the same dict plus per-sentence citations."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr

from at2_rag import AT2Attributor, CitedResponse, InvalidInputError
from at2_rag.context import cite_context, cite_context_batch
from langchain_at2._convert import document_items

logger = logging.getLogger(__name__)


def cite_documents(attributor: AT2Attributor, question: str, documents: list[Document], answer: str,
                   max_sources: int = 3, relative_threshold: float = 0.5) -> dict[str, Any]:
    """``citations`` (plain dicts; each cited source's ``index`` is its document's position), ``cited_answer``
    (``[n]`` = position + 1, supported sentences only) and ``unsupported`` sentences."""
    return _plain(cite_context(attributor, question, document_items(documents), answer, max_sources,
                               relative_threshold))


def _plain(cited: CitedResponse) -> dict[str, Any]:
    return {"citations": [c.model_dump() for c in cited.citations], "cited_answer": cited.formatted,
            "unsupported": list(cited.unsupported)}


class AT2CitationRunnable(RunnableSerializable[dict, dict]):
    """Adds ``citations``, ``cited_answer`` and ``unsupported`` to a retrieval chain's output dict.

    Key names default to ``create_retrieval_chain``'s output (``input``, ``context``, ``answer``); set
    ``question_key``/``documents_key``/``answer_key`` for other chains. A missing key raises
    ``InvalidInputError`` (never cites a text other than the answer); a fault while citing returns the input
    with empty citations and a warning (``raise_on_error=True`` to raise).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    question_key: str = "input"
    documents_key: str = "context"
    answer_key: str = "answer"
    max_sources: int = Field(default=3, ge=1)
    relative_threshold: float = Field(default=0.5, ge=0, le=1)
    raise_on_error: bool = False
    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attributor = attributor or AT2Attributor.from_pretrained()

    def _unpack(self, input: dict) -> tuple[str, list[Document], str]:
        if not isinstance(input, dict):
            raise InvalidInputError(f"AT2CitationRunnable takes a dict, not {type(input).__name__}")
        missing = [k for k in (self.question_key, self.documents_key, self.answer_key) if input.get(k) is None]
        if missing:
            raise InvalidInputError(f"AT2CitationRunnable: input has no {missing} (keys present: {sorted(input)}); "
                                    "set question_key / documents_key / answer_key to your chain's names")
        documents = input[self.documents_key]
        documents = [Document(page_content=documents)] if isinstance(documents, str) else list(documents)
        answer = input[self.answer_key]
        answer = getattr(answer, "content", answer)
        if not isinstance(answer, str):
            raise InvalidInputError(f"AT2CitationRunnable: {self.answer_key!r} is a {type(answer).__name__}, not text")
        return input[self.question_key], documents, answer

    def _cite_one(self, input: dict) -> dict:
        question, documents, answer = self._unpack(input)
        try:
            return {**input, **cite_documents(self._attributor, question, documents, answer, self.max_sources,
                                              self.relative_threshold)}
        except Exception as exc:
            if self.raise_on_error:
                raise
            logger.warning("AT2CitationRunnable: citations failed for %r (%s: %s)", question, type(exc).__name__, exc)
            return {**input, "citations": [], "cited_answer": answer, "unsupported": []}

    def _cite_many(self, inputs: list[dict]) -> list[dict]:
        """One padded attribution batch; falls back to one by one if the batch fails."""
        unpacked = [self._unpack(x) for x in inputs]
        try:
            cited = cite_context_batch(self._attributor, [q for q, _, _ in unpacked],
                                       [document_items(docs) for _, docs, _ in unpacked], [a for _, _, a in unpacked],
                                       self.max_sources, self.relative_threshold)
        except Exception:
            return [self._cite_one(x) for x in inputs]
        return [{**x, **_plain(c)} for x, c in zip(inputs, cited)]

    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return self._call_with_config(self._cite_one, input, config, run_type="chain")

    def batch(self, inputs: list[dict], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[dict]:
        """All inputs in one padded attribution batch, traced like any runnable's batch."""
        return self._batch_with_config(self._cite_many, inputs, config, return_exceptions=return_exceptions,
                                       run_type="chain")

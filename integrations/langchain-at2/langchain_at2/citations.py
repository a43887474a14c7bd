"""AT2CitationRunnable: {question, documents|context, answer} -> answer with per-sentence citations."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, PrivateAttr

from at2_rag import AT2Attributor
from langchain_at2._convert import document_sources

logger = logging.getLogger(__name__)


def _result(cited, indices: list[int], answer: str, documents: list[Document]) -> dict[str, Any]:
    """Map cited source positions back to document indices."""
    for citation in cited.citations:
        for source in citation.sources:
            source.index = indices[source.index]
    return {"answer": answer, "cited_answer": cited.formatted, "citations": cited.citations, "documents": documents}


def cite_documents(attributor: AT2Attributor, question: str, documents: list[Document], answer: str) -> dict[str, Any]:
    """Citations of ``answer`` over ``documents``: each cited source carries its document's index and id."""
    indices, sources = document_sources(documents)
    return _result(attributor.cite(question, sources, response=answer), indices, answer, documents)


def _unpack(input: dict) -> tuple[str, list[Document], str]:
    documents = input.get("documents", input.get("context"))
    if isinstance(documents, str):
        documents = [Document(page_content=documents)]
    answer = input.get("answer")
    if hasattr(answer, "content"):
        answer = answer.content
    return input["question"], list(documents or []), answer


class AT2CitationRunnable(RunnableSerializable[dict, dict]):
    """Input ``{"question", "documents" (or "context"), "answer"}``; output adds ``citations`` and ``cited_answer``.

    Compose after any chain that returns these keys, e.g. ``RunnablePassthrough.assign(answer=llm_chain) | cite``.
    On failure returns the input with ``citations=[]`` and a warning (``raise_on_error=True`` to raise).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    raise_on_error: bool = False
    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attributor = attributor or AT2Attributor.from_pretrained()

    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return self._call_with_config(self._cite, input, config, run_type="chain")

    def batch(self, inputs: list[dict], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[dict]:
        """All inputs in one padded attribution batch; falls back to one by one if the batch fails."""
        if not inputs:
            return []
        try:
            unpacked = [_unpack(x) for x in inputs]
            converted = [document_sources(docs) for _, docs, _ in unpacked]
            cited = self._attributor.cite_batch([q for q, _, _ in unpacked], [s for _, s in converted],
                                                [a for _, _, a in unpacked])
        except Exception:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        return [{**x, **_result(c, idx, a, docs)}
                for x, c, (idx, _), (_, docs, a) in zip(inputs, cited, converted, unpacked)]

    def _cite(self, input: dict) -> dict:
        question, documents, answer = _unpack(input)
        try:
            return {**input, **cite_documents(self._attributor, question, documents, answer)}
        except Exception as exc:
            if self.raise_on_error:
                raise
            logger.warning("AT2CitationRunnable: citations failed (%s)", exc)
            return {**input, "citations": [], "cited_answer": answer}

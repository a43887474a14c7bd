"""AT2CitationRunnable (LCEL): ``{"question", "documents", "answer"}`` -> the same dict plus per-sentence
citations, as plain records and as langchain-core's standard ``Citation`` blocks."""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, PrivateAttr

from at2_rag import AT2Attributor, InvalidInputError
from at2_rag.context import (
    AttributorSettings,
    CitationOptions,
    attributor_settings,
    check_citation_options,
    citation_record,
    cite_context_batch,
    cite_with,
    default_attributor,
    fail_open,
    skipped_record,
)
from langchain_at2._convert import citation_blocks, document_items, with_citations

LCEL_KEYS = ("question", "documents", "answer")
RETRIEVAL_CHAIN_KEYS = ("input", "context", "answer")  # langchain-classic's create_retrieval_chain output


def cite_documents(attributor: AT2Attributor, question: str, documents: list[Document], answer: str,
                   max_passages: int = 3, relative_threshold: float = 0.5, evidence_model: str | None = None,
                   strictness: str | None = None, **deprecated: Any) -> dict[str, Any]:
    """The citation record of ``answer`` over ``documents`` (``citations``, ``cited_answer``, ``unsupported``,
    ``at2_scores``; each cited passage's ``index`` is its document's position) plus ``citation_blocks``
    (standard ``Citation`` blocks). Raises on failure (the components fail open around it)."""
    options = CitationOptions(max_passages=max_passages, relative_threshold=relative_threshold,
                              evidence_model=evidence_model, strictness=strictness, **deprecated)
    record = citation_record(cite_with(attributor, options, question, document_items(documents), answer))
    return {**record, "citation_blocks": citation_blocks(record, documents)}


class AT2CitationRunnable(RunnableSerializable[dict, dict], CitationOptions, AttributorSettings):
    """LCEL: adds AT2 citations of the input's answer over its documents; composes with ``|`` and
    ``RunnableParallel`` and needs langchain-core only.

    Input: ``{"question", "documents", "answer"}`` (langchain-classic's ``create_retrieval_chain`` output,
    ``{"input", "context", "answer"}``, is read too); set ``question_key`` / ``documents_key`` / ``answer_key``
    for other names. The answer may be a string or a chat model's ``AIMessage``. Output: the input plus
    ``citations``, ``cited_answer``, ``unsupported``, ``at2_scores`` (the citation record both integrations
    attach) and ``citation_blocks`` (langchain-core ``Citation`` blocks whose ``start_index`` / ``end_index``
    index the answer text); an ``AIMessage`` answer comes back as a copy whose text block carries them as
    ``annotations`` and whose ``response_metadata["at2"]`` holds the record. A missing key raises
    ``InvalidInputError`` (never cites a text other than the answer); a fault while citing fails open: the
    input with empty citations and ``at2_skipped`` = the reason, and a warning (configuration errors, or
    anything with ``raise_on_error``, raise). ``batch()`` runs one padded attribution batch.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    question_key: str | None = None
    documents_key: str | None = None
    answer_key: str | None = None
    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**attributor_settings(attributor, kwargs))
        self._attributor = attributor or default_attributor(self)
        check_citation_options(self._attributor, self)

    @property
    def attributor(self) -> AT2Attributor:
        return self._attributor

    def _keys(self, input: dict) -> tuple[str, str, str]:
        defaults = LCEL_KEYS
        if not any(k in input for k in LCEL_KEYS[:2]) and all(k in input for k in RETRIEVAL_CHAIN_KEYS[:2]):
            defaults = RETRIEVAL_CHAIN_KEYS
        given = (self.question_key, self.documents_key, self.answer_key)
        return tuple(g or d for g, d in zip(given, defaults))  # type: ignore[return-value]

    def _unpack(self, input: dict) -> tuple[str, list[Document], str, str]:
        if not isinstance(input, dict):
            raise InvalidInputError(f"AT2CitationRunnable takes a dict, not {type(input).__name__}")
        keys = self._keys(input)
        missing = [k for k in keys if input.get(k) is None]
        if missing:
            raise InvalidInputError(f"AT2CitationRunnable: input has no {missing} (keys present: {sorted(input)}); "
                                    "set question_key / documents_key / answer_key to your chain's names")
        question_key, documents_key, answer_key = keys
        documents = input[documents_key]
        documents = [Document(page_content=documents)] if isinstance(documents, str) else list(documents)
        answer = input[answer_key]
        text = answer.text if isinstance(answer, AIMessage) else answer
        if not isinstance(text, str):
            raise InvalidInputError(f"AT2CitationRunnable: {answer_key!r} is a {type(answer).__name__}, not text")
        return input[question_key], documents, str(text), answer_key

    def _attach(self, input: dict, documents: list[Document], answer_key: str, record: dict) -> dict:
        blocks = citation_blocks(record, documents)
        out = {**input, **record, "citation_blocks": blocks}
        if isinstance(input[answer_key], AIMessage):
            out[answer_key] = with_citations(input[answer_key], blocks, record)
        return out

    def _cite_one(self, input: dict) -> dict:
        question, documents, answer, answer_key = self._unpack(input)
        try:
            record = citation_record(cite_with(self._attributor, self, question, document_items(documents), answer))
        except Exception as exc:
            record = skipped_record(answer, fail_open(exc, self.raise_on_error, "AT2CitationRunnable", question,
                                                      "answer left without citations"))
        return self._attach(input, documents, answer_key, record)

    def _cite_many(self, inputs: list[dict]) -> list[dict]:
        """One padded attribution batch; falls back to one by one if the batch fails."""
        unpacked = [self._unpack(x) for x in inputs]
        try:
            cited = cite_context_batch(self._attributor, [q for q, _, _, _ in unpacked],
                                       [document_items(docs) for _, docs, _, _ in unpacked],
                                       [a for _, _, a, _ in unpacked], self.max_passages, self.relative_threshold,
                                       self.evidence_model, self.strictness)
        except Exception:
            return [self._cite_one(x) for x in inputs]
        return [self._attach(x, docs, key, citation_record(c)) for x, (_, docs, _, key), c in
                zip(inputs, unpacked, cited)]

    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return self._call_with_config(self._cite_one, input, config, run_type="chain")

    def batch(self, inputs: list[dict], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[dict]:
        """All inputs in one padded attribution batch, traced like any runnable's batch."""
        if not inputs:
            return []
        return self._batch_with_config(self._cite_many, inputs, config, return_exceptions=return_exceptions,
                                       run_type="chain")

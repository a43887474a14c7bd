"""AT2Middleware: AT2 inside a LangChain 1.x agent (``langchain.agents.create_agent``): cite the agent's answer
against the documents its retrieval tools returned, and optionally prune or compress what the model reads.

Needs the ``agents`` extra (``pip install "langchain-at2[agents]"``: langchain>=1.0, which brings langgraph).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from pydantic import Field

from at2_rag import AT2Attributor
from at2_rag.context import (
    SKIPPED_KEY,
    AttributorSettings,
    CitationOptions,
    ContextOptions,
    check_citation_options,
    check_context_options,
    citation_record,
    cite_with,
    default_attributor,
    fail_open,
    reduce_context,
    skipped_record,
)
from langchain_at2._convert import (
    DOCUMENT_SEPARATOR,
    citation_blocks,
    document_items,
    format_documents,
    kept_documents,
    skipped_documents,
    with_citations,
)

CONTEXT_SKIPPED_KEY = "at2_context_skipped"
KEPT_KEY = "kept_documents"  # the paper's loop: ids of the documents the model answered from the second time


class AT2MiddlewareOptions(ContextOptions, CitationOptions, AttributorSettings):
    """``AT2Middleware``'s options: the shared context and citation options, plus where documents come from
    and whether to reduce what the model reads."""

    retrieval_tools: list[str] | None = Field(
        default=None, description="Names of the tools whose results are documents (None: every tool whose "
        "ToolMessage artifact is a list of Documents, as create_retriever_tool(response_format="
        "'content_and_artifact') returns). A named tool without such an artifact has its text split on blank lines.")
    reduce_context: bool = Field(
        default=False, description="Prune or compress what the model reads: drafter='llm' runs the paper's loop "
        "(the agent's model answers with everything, AT2 keeps what that answer used, the model answers again: "
        "one more model call per final answer); drafter='attributor' compresses each retrieval tool result "
        "before the model reads it (the attributor drafts locally: no extra model call).")


class AT2Middleware(AgentMiddleware):
    """Cites a ``create_agent`` agent's final answer against the documents this turn's retrieval tools
    returned (``ToolMessage`` artifacts, or text split on blank lines for the tools named in
    ``retrieval_tools``), and optionally prunes or compresses what the model reads (``reduce_context``).

    The final ``AIMessage`` comes back with langchain-core's standard ``Citation`` blocks as ``annotations`` on
    its text block (``start_index`` / ``end_index`` into the answer, ``cited_text`` = the quoted document
    sentence, ``title`` / ``url`` from the document's ``title`` / ``source`` metadata, ``extras.document_id``)
    and ``response_metadata["at2"]`` = the citation record (``citations`` with each sentence's ``supported``
    and ``support``, ``cited_answer``, ``unsupported``, ``at2_scores``). Its text is unchanged.

    Cost per final answer: citing is one attributor pass (teacher-forcing the answer; no model call).
    ``reduce_context=True, drafter="llm"`` (the paper's loop, inside ``wrap_model_call``) adds one call of the
    agent's model and one attributor pass; ``reduce_context=True, drafter="attributor"`` (inside
    ``wrap_tool_call``) adds no model call but one local draft (``max_new_tokens``) and one pass per retrieval
    tool result, and the model reads the reduced documents on every later call.

    Fails open as the other components do: when attribution fails the answer is left as it was, with
    ``response_metadata["at2"]["at2_skipped"]`` = the reason (a failed reduction leaves the context whole and
    says so in ``at2_context_skipped``; a failed tool-result reduction marks the documents ``at2_skipped``);
    configuration errors (and anything with ``raise_on_error``) raise. Without ``attributor=``, the shared
    default attributor (one per process and settings).
    """

    def __init__(self, attributor: AT2Attributor | None = None, **options: Any) -> None:
        super().__init__()
        self.options = AT2MiddlewareOptions(**options)
        self.attributor = attributor or default_attributor(self.options)
        if self.options.reduce_context:
            check_context_options(self.attributor, self.options)
        check_citation_options(self.attributor, self.options)

    # ---- where the documents are ------------------------------------------------------------------------------

    def _is_retrieval(self, message: Any) -> bool:
        if not isinstance(message, ToolMessage):
            return False
        if self.options.retrieval_tools is not None:
            return message.name in self.options.retrieval_tools
        artifact = message.artifact
        return isinstance(artifact, list) and bool(artifact) and all(isinstance(d, Document) for d in artifact)

    @staticmethod
    def _tool_documents(message: ToolMessage) -> list[Document]:
        artifact = message.artifact
        if isinstance(artifact, list) and artifact and all(isinstance(d, Document) for d in artifact):
            return list(artifact)
        text = message.text
        return [Document(page_content=part.strip(), metadata={"tool": message.name})
                for part in text.split(DOCUMENT_SEPARATOR) if part.strip()]

    @staticmethod
    def _question(messages: Sequence[AnyMessage]) -> tuple[str | None, int]:
        """The latest user message's text and its position (-1: none)."""
        for i in range(len(messages) - 1, -1, -1):
            if isinstance(messages[i], HumanMessage):
                return messages[i].text, i
        return None, -1

    def _sources(self, messages: Sequence[AnyMessage]) -> tuple[str | None, list[tuple[int, Document]]]:
        """This turn's question and its retrieved documents (first occurrence of each), with the position of
        the ToolMessage each came in."""
        question, start = self._question(messages)
        seen, sources = set(), []
        for i in range(start + 1, len(messages)):
            if self._is_retrieval(messages[i]):
                for doc in self._tool_documents(messages[i]):
                    key = doc.id or doc.page_content
                    if key not in seen:
                        seen.add(key)
                        sources.append((i, doc))
        return question, sources

    @staticmethod
    def _final(response: ModelResponse) -> AIMessage | None:
        last = response.result[-1] if response.result else None
        if isinstance(last, AIMessage) and not last.tool_calls and last.text.strip():
            return last
        return None

    # ---- the paper's loop: answer with everything, keep what was used, answer again ----------------------------

    def _reduced_request(self, request: ModelRequest, question: str, sources: list[tuple[int, Document]],
                         answer: str) -> tuple[ModelRequest, list[Document]]:
        documents = [d for _, d in sources]
        ranked = reduce_context(self.attributor, question, document_items(documents), answer, self.options)
        copies = dict(zip(ranked.kept, kept_documents(documents, ranked)))
        per_message: dict[int, list[Document]] = {}
        for position in ranked.kept:
            per_message.setdefault(sources[position][0], []).append(copies[position])
        messages = list(request.messages)
        for i in {i for i, _ in sources}:
            kept = per_message.get(i, [])
            messages[i] = messages[i].model_copy(update={"content": format_documents(kept) or "(nothing kept)",
                                                         "artifact": kept})
        return request.override(messages=messages), [copies[p] for p in ranked.kept]

    # ---- citing ---------------------------------------------------------------------------------------------------

    def _cite(self, question: str, documents: list[Document], final: AIMessage, notes: dict[str, Any]) -> AIMessage:
        try:
            record = citation_record(cite_with(self.attributor, self.options, question, document_items(documents),
                                               final.text))
        except Exception as exc:
            record = skipped_record(final.text, fail_open(exc, self.options.raise_on_error, "AT2Middleware",
                                                          question, "answer left without citations"))
        record.update(notes)
        blocks = citation_blocks(record, documents)
        if blocks:
            return with_citations(final, blocks, record)
        return final.model_copy(update={"response_metadata": {**final.response_metadata, "at2": record}})

    @staticmethod
    def _with(response: ModelResponse, message: AIMessage) -> ModelResponse:
        return ModelResponse(result=[*response.result[:-1], message], structured_response=response.structured_response)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        response = handler(request)
        final = self._final(response)
        question, sources = self._sources(request.messages)
        if final is None or not sources or not question:
            return response
        documents, notes = [d for _, d in sources], {}
        if self.options.reduce_context and self.options.drafter == "llm":
            try:
                reduced, kept = self._reduced_request(request, question, sources, final.text)
            except Exception as exc:
                notes[CONTEXT_SKIPPED_KEY] = fail_open(exc, self.options.raise_on_error, "AT2Middleware", question,
                                                       "the model's first answer stands")
            else:
                response = handler(reduced)
                final = self._final(response)
                if final is None:
                    return response  # the model chose to call a tool after all
                documents = kept
                notes[KEPT_KEY] = [d.id for d in kept]
        return self._with(response, self._cite(question, documents, final, notes))

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> ModelResponse:
        response = await handler(request)
        final = self._final(response)
        question, sources = self._sources(request.messages)
        if final is None or not sources or not question:
            return response
        documents, notes = [d for _, d in sources], {}
        if self.options.reduce_context and self.options.drafter == "llm":
            try:
                reduced, kept = await asyncio.to_thread(self._reduced_request, request, question, sources, final.text)
            except Exception as exc:
                notes[CONTEXT_SKIPPED_KEY] = fail_open(exc, self.options.raise_on_error, "AT2Middleware", question,
                                                       "the model's first answer stands")
            else:
                response = await handler(reduced)
                final = self._final(response)
                if final is None:
                    return response
                documents = kept
                notes[KEPT_KEY] = [d.id for d in kept]
        return self._with(response, await asyncio.to_thread(self._cite, question, documents, final, notes))

    # ---- compress tool results before the model reads them (the attributor drafts) -----------------------------

    def _reduces_tool_results(self) -> bool:
        return self.options.reduce_context and self.options.drafter == "attributor"

    def _reduce_tool_result(self, request: Any, result: Any) -> Any:
        if not isinstance(result, ToolMessage) or not self._is_retrieval(result):
            return result
        documents = self._tool_documents(result)
        if not documents:
            return result
        state = getattr(request, "state", None) or {}
        messages = state if isinstance(state, list) else \
            state.get("messages", []) if isinstance(state, dict) else getattr(state, "messages", [])
        question = self._question(messages)[0] or str((request.tool_call.get("args") or {}).get("query", ""))
        try:
            ranked = reduce_context(self.attributor, question, document_items(documents), None, self.options)
        except Exception as exc:
            reason = fail_open(exc, self.options.raise_on_error, "AT2Middleware", question,
                               f"the model reads all {len(documents)} documents")
            return result.model_copy(update={"artifact": skipped_documents(documents, reason)})
        kept = kept_documents(documents, ranked)
        return result.model_copy(update={"content": format_documents(kept), "artifact": kept})

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        result = handler(request)
        return self._reduce_tool_result(request, result) if self._reduces_tool_results() else result

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        result = await handler(request)
        if not self._reduces_tool_results():
            return result
        return await asyncio.to_thread(self._reduce_tool_result, request, result)


__all__ = ["CONTEXT_SKIPPED_KEY", "KEPT_KEY", "SKIPPED_KEY", "AT2Middleware", "AT2MiddlewareOptions"]

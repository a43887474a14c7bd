"""Citations for LlamaIndex answers: attribute each answer sentence to the response's source nodes, as plain
metadata and as LlamaIndex's standard ``CitationBlock``s."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.llms.types import ChatMessage, CitationBlock, TextBlock
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.query import QueryEndEvent
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.postprocessor.at2.base import node_items

from at2_rag import AT2Attributor
from at2_rag.context import (
    SKIPPED_KEY,
    SPANS_KEY,
    AttributorSettings,
    CitationOptions,
    attributor_settings,
    check_citation_options,
    citation_record,
    cite_with,
    default_attributor,
    fail_open,
    quote_span,
    skipped_record,
)

RECORD_KEYS = ("citations", "cited_answer", "unsupported", "at2_scores")
DEFAULT_QUERY = "Answer from the context."


def _options(kwargs: dict[str, Any]) -> CitationOptions:
    return CitationOptions(**kwargs)


def _cite_nodes(attributor: AT2Attributor, options: CitationOptions, query: str, nodes: Sequence[NodeWithScore],
                answer: str) -> dict[str, Any]:
    """The citation record of ``answer`` over ``nodes`` (fail-open: the skipped record)."""
    try:
        return citation_record(cite_with(attributor, options, query, node_items(list(nodes)), answer))
    except Exception as exc:
        reason = fail_open(exc, options.raise_on_error, "AT2 citations", query, "answer left without citations")
        return skipped_record(answer, reason)


def cite_response(attributor: AT2Attributor, query: str, response: RESPONSE_TYPE, raise_on_error: bool = False,
                  max_passages: int = 3, relative_threshold: float = 0.5, evidence_model: str | None = None,
                  strictness: str | None = None, **deprecated: Any) -> RESPONSE_TYPE:
    """Add citations to ``response.metadata`` as plain (JSON-serialisable) data.

    ``citations``: per answer sentence, ``supported``, ``support`` and the cited passages (``index`` = position
    in ``source_nodes``, ``number`` = the ``[n]`` marker, node ``id``, the quoted sentence and the cited
    sentences with char spans); ``cited_answer``: the answer with ``[n]`` markers after supported sentences
    only; ``unsupported``: sentences without enough evidence; ``at2_scores``: node id -> AT2 score.
    ``citation_blocks(response)`` turns them into ``CitationBlock``s. The answer (from any LLM) is
    teacher-forced through the attributor. A streaming response is cited once its stream has been consumed.
    A fault fails open: the response keeps its text, and ``metadata["at2_skipped"]`` says why (configuration
    errors, or anything with ``raise_on_error``, raise).
    """
    options = _options({"raise_on_error": raise_on_error, "max_passages": max_passages,
                        "relative_threshold": relative_threshold, "evidence_model": evidence_model,
                        "strictness": strictness, **deprecated})
    return _cite(attributor, options, query, response)


def _cite(attributor: AT2Attributor, options: CitationOptions, query: str, response: RESPONSE_TYPE) -> RESPONSE_TYPE:
    if isinstance(response, StreamingResponse):
        return _cite_when_consumed(attributor, options, query, response)
    text = getattr(response, "response", None)
    nodes = list(getattr(response, "source_nodes", None) or [])
    if not isinstance(text, str) or not text.strip() or not nodes:
        return response
    record = _cite_nodes(attributor, options, query, nodes, text)
    response.metadata = {**(response.metadata or {}), **record}
    return response


def _cite_when_consumed(attributor: AT2Attributor, options: CitationOptions, query: str,
                        response: StreamingResponse) -> StreamingResponse:
    """A streaming response that passes every token through, then cites the whole answer into its metadata."""
    cited = StreamingResponse(response_gen=None, source_nodes=response.source_nodes,
                              metadata=dict(response.metadata or {}))

    def tokens():
        parts = []
        for token in response.response_gen:
            parts.append(token)
            yield token
        final = _cite(attributor, options, query, Response("".join(parts), response.source_nodes, cited.metadata))
        cited.metadata = final.metadata

    cited.response_gen = tokens()
    return cited


def _title(node) -> str:
    metadata = node.metadata if isinstance(node.metadata, dict) else {}
    for key in ("title", "file_name", "source", "url"):
        if metadata.get(key) not in (None, ""):
            return str(metadata[key])
    return node.node_id


def _blocks(record: dict[str, Any], nodes: Sequence[NodeWithScore]) -> list[CitationBlock]:
    blocks = []
    for citation in record.get("citations") or []:
        if not citation["supported"]:
            continue
        for passage in citation["passages"]:
            node = nodes[passage["index"]].node
            location = {"start_char_index": citation["start"], "end_char_index": citation["end"],
                        "passage_number": passage["number"]}
            quote, (a, b) = passage["quote"], (0, len(passage["quote"]))
            if SPANS_KEY in (node.metadata or {}):  # a compressed copy: the sentence without the joiner's mark
                a, b = quote_span(quote)
            quoted = next((s for s in passage["sentences"] if s["text"] == quote), None)
            if quoted is not None:
                location.update(source_start_char_index=quoted["start"] + a, source_end_char_index=quoted["start"] + b)
            blocks.append(CitationBlock(cited_content=TextBlock(text=quote[a:b]), source=node.node_id,
                                        title=_title(node), additional_location_info=location))
    return blocks


def citation_blocks(response: RESPONSE_TYPE) -> list[CitationBlock]:
    """A cited response's citations as LlamaIndex ``CitationBlock``s, one per (supported answer sentence, cited
    node), in answer order: ``source`` = the node id, ``title`` = its ``title`` metadata (else file name,
    source, url or id), ``cited_content`` = the quoted sentence of the node, ``additional_location_info`` =
    ``start_char_index`` / ``end_char_index`` (the answer sentence's span in the answer), ``passage_number``
    (the ``[n]`` marker) and ``source_start_char_index`` / ``source_end_char_index`` (the quote's span in the
    node's text). Empty for a response that was not cited (or whose citation was skipped)."""
    return _blocks(getattr(response, "metadata", None) or {}, list(getattr(response, "source_nodes", None) or []))


def cite_message(message: ChatMessage, nodes: Sequence[NodeWithScore], query: str | None = None, *,
                 attributor: AT2Attributor | None = None, **options: Any) -> ChatMessage:
    """A copy of a chat or agent message with AT2 citations of its text over ``nodes``: ``CitationBlock``s
    appended to its blocks (as ``citation_blocks`` makes them), and the citation record (``citations``,
    ``cited_answer``, ``unsupported``, ``at2_scores``; or ``at2_skipped``) in ``additional_kwargs["at2"]``.

    ``query``: the user's question (None: a neutral instruction; the question attributes better).
    ``attributor``: None uses the shared default attributor. ``options``: the citation options
    (``max_passages``, ``relative_threshold``, ``evidence_model``, ``strictness``, ``raise_on_error``).
    A message without text, or no nodes, comes back unchanged.
    """
    settings = {k: options.pop(k) for k in list(options) if k in AttributorSettings.model_fields}
    parsed = _options(options)
    attributor = attributor or default_attributor(AttributorSettings(**settings))
    text = message.content
    nodes = list(nodes)
    if not isinstance(text, str) or not text.strip() or not nodes:
        return message
    record = _cite_nodes(attributor, parsed, query or DEFAULT_QUERY, nodes, text)
    blocks = [*message.blocks, *_blocks(record, nodes)]
    return message.model_copy(update={"blocks": blocks,
                                      "additional_kwargs": {**message.additional_kwargs, "at2": record}})


class AT2CitationQueryEngine(BaseQueryEngine):
    """Wraps any query engine: answers as it does, then adds AT2 citations to ``Response.metadata``
    (``citation_blocks(response)`` gives them as ``CitationBlock``s). Options: the citation options
    (``at2_rag.context.CitationOptions``); without ``attributor=``, the shared default attributor."""

    def __init__(self, query_engine: BaseQueryEngine, attributor: AT2Attributor | None = None,
                 callback_manager: CallbackManager | None = None, **options: Any) -> None:
        settings = {k: options.pop(k) for k in list(options) if k in AttributorSettings.model_fields}
        self.options = _options(options)
        self._engine = query_engine
        self._attributor = attributor or default_attributor(AttributorSettings(**settings))
        check_citation_options(self._attributor, self.options)
        super().__init__(callback_manager or query_engine.callback_manager)

    @property
    def attributor(self) -> AT2Attributor:
        return self._attributor

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._engine}

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        response = self._engine.query(query_bundle)
        return _cite(self._attributor, self.options, query_bundle.query_str, response)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        response = await self._engine.aquery(query_bundle)
        return await asyncio.to_thread(_cite, self._attributor, self.options, query_bundle.query_str, response)


class AT2CitationEventHandler(BaseEventHandler, CitationOptions, AttributorSettings):
    """Instrumentation handler: on every ``QueryEndEvent`` cites the response in place and records it.

    Register with ``llama_index.core.instrumentation.get_dispatcher().add_event_handler(handler)``. ``records``
    gets one entry per cited query: ``question``, ``answer``, ``run_id`` (the query's span id) and the citation
    record (``citations``, ``cited_answer``, ``unsupported``, ``at2_scores``; or ``at2_skipped``), the same
    shape as LangChain's ``AT2CitationCallbackHandler.records``.
    """

    records: list[dict[str, Any]] = Field(default_factory=list, description="One entry per cited query.")
    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**attributor_settings(attributor, kwargs))
        self._attributor = attributor or default_attributor(self)
        check_citation_options(self._attributor, self)

    @classmethod
    def class_name(cls) -> str:
        return "AT2CitationEventHandler"

    @property
    def attributor(self) -> AT2Attributor:
        return self._attributor

    @property
    def citations(self) -> list[dict]:
        """Citations of the latest record (convenience for one query at a time)."""
        return self.records[-1]["citations"] if self.records else []

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if not isinstance(event, QueryEndEvent) or not isinstance(event.response, Response):
            return
        query = event.query.query_str if isinstance(event.query, QueryBundle) else str(event.query)
        response = event.response
        if (response.metadata or {}).get("citations") is None and (response.metadata or {}).get(SKIPPED_KEY) is None:
            options = CitationOptions(**{k: getattr(self, k) for k in CitationOptions.model_fields})
            _cite(self._attributor, options, query, response)
        metadata = response.metadata or {}
        if metadata.get("citations") is None and metadata.get(SKIPPED_KEY) is None:
            return  # nothing to cite (no text or no source nodes)
        self.records.append({"question": query, "answer": response.response, "run_id": event.span_id,
                             **{k: metadata.get(k) for k in RECORD_KEYS},
                             **({SKIPPED_KEY: metadata[SKIPPED_KEY]} if SKIPPED_KEY in metadata else {})})


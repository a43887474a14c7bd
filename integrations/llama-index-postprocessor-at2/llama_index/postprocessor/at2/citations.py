"""Citations for LlamaIndex answers: attribute each answer sentence to the response's source nodes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.query import QueryEndEvent
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import QueryBundle
from llama_index.postprocessor.at2.base import node_items

from at2_rag import AT2Attributor
from at2_rag.context import cite_context

logger = logging.getLogger(__name__)


def cite_response(attributor: AT2Attributor, query: str, response: RESPONSE_TYPE, raise_on_error: bool = False,
                  max_sources: int = 3, relative_threshold: float = 0.5) -> RESPONSE_TYPE:
    """Add citations to ``response.metadata`` as plain (JSON-serialisable) data.

    ``citations``: per answer sentence, ``supported``, ``support`` and the cited passages (``index`` = position
    in ``source_nodes``, node ``id``, the cited sentences with char spans); ``cited_answer``: the answer with
    ``[n]`` markers (n = position + 1) after supported sentences only; ``unsupported``: sentences without
    enough evidence; ``at2_scores``: node id -> AT2 score. The answer (from any LLM) is teacher-forced through
    the attributor. A streaming response is cited once its stream has been consumed. On failure the response
    is returned unchanged with a warning, unless ``raise_on_error``.
    """
    if isinstance(response, StreamingResponse):
        return _cite_when_consumed(attributor, query, response, raise_on_error, max_sources, relative_threshold)
    text = getattr(response, "response", None)
    nodes = list(getattr(response, "source_nodes", None) or [])
    if not isinstance(text, str) or not text.strip() or not nodes:
        return response
    try:
        cited = cite_context(attributor, query, node_items(nodes), text, max_sources, relative_threshold)
    except Exception as exc:
        if raise_on_error:
            raise
        logger.warning("AT2 citations failed for query %r (%s: %s); response left without citations",
                       query, type(exc).__name__, exc)
        return response
    metadata = dict(response.metadata or {})
    metadata["citations"] = [c.model_dump() for c in cited.citations]
    metadata["cited_answer"] = cited.formatted
    metadata["unsupported"] = list(cited.unsupported)
    metadata["at2_scores"] = {s.id: score for s, score in zip(cited.attribution.passages, cited.attribution.scores)}
    response.metadata = metadata
    return response


def _cite_when_consumed(attributor: AT2Attributor, query: str, response: StreamingResponse, raise_on_error: bool,
                        max_sources: int, relative_threshold: float) -> StreamingResponse:
    """A streaming response that passes every token through, then cites the whole answer into its metadata."""
    cited = StreamingResponse(response_gen=None, source_nodes=response.source_nodes,
                              metadata=dict(response.metadata or {}))

    def tokens():
        parts = []
        for token in response.response_gen:
            parts.append(token)
            yield token
        final = cite_response(attributor, query, Response("".join(parts), response.source_nodes, cited.metadata),
                              raise_on_error, max_sources, relative_threshold)
        cited.metadata = final.metadata

    cited.response_gen = tokens()
    return cited


class AT2CitationQueryEngine(BaseQueryEngine):
    """Wraps any query engine: answers as it does, then adds AT2 citations to ``Response.metadata``."""

    def __init__(self, query_engine: BaseQueryEngine, attributor: AT2Attributor | None = None,
                 raise_on_error: bool = False, max_sources: int = 3, relative_threshold: float = 0.5,
                 callback_manager: CallbackManager | None = None) -> None:
        self._engine = query_engine
        self._attributor = attributor or AT2Attributor.from_pretrained()
        self._raise = raise_on_error
        self._options = {"max_sources": max_sources, "relative_threshold": relative_threshold}
        super().__init__(callback_manager or query_engine.callback_manager)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._engine}

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        response = self._engine.query(query_bundle)
        return cite_response(self._attributor, query_bundle.query_str, response, self._raise, **self._options)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        response = await self._engine.aquery(query_bundle)
        return await asyncio.to_thread(cite_response, self._attributor, query_bundle.query_str, response,
                                       self._raise, **self._options)


class AT2CitationEventHandler(BaseEventHandler):
    """Instrumentation handler: on every ``QueryEndEvent`` cites the response in place and records it.

    Register with ``llama_index.core.instrumentation.get_dispatcher().add_event_handler(handler)``.
    """

    records: list[dict[str, Any]] = Field(default_factory=list, description="(query, response, citations) per query")
    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attributor = attributor or AT2Attributor.from_pretrained()

    @classmethod
    def class_name(cls) -> str:
        return "AT2CitationEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if not isinstance(event, QueryEndEvent) or not isinstance(event.response, Response):
            return
        query = event.query.query_str if isinstance(event.query, QueryBundle) else str(event.query)
        if (event.response.metadata or {}).get("citations") is None:
            cite_response(self._attributor, query, event.response)
        self.records.append({"query": query, "response": event.response.response,
                             "citations": (event.response.metadata or {}).get("citations", [])})

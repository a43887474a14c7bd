"""Citations for LlamaIndex answers: attribute each answer sentence to the response's source nodes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.query import QueryEndEvent
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import QueryBundle
from llama_index.postprocessor.at2.base import node_sources

from at2_rag import AT2Attributor

logger = logging.getLogger(__name__)


def cite_response(attributor: AT2Attributor, query: str, response: RESPONSE_TYPE, raise_on_error: bool = False) -> RESPONSE_TYPE:
    """Attach ``metadata["citations"]`` (list of at2_rag ``Citation`` with node ids) and ``metadata["cited_answer"]``.

    The answer text (from any LLM) is teacher-forced through the attributor's model over the response's
    source nodes. On failure the response is returned unchanged (with a warning) unless ``raise_on_error``.
    """
    text = getattr(response, "response", None)
    nodes = list(getattr(response, "source_nodes", None) or [])
    if not isinstance(text, str) or not text.strip() or not nodes:
        return response
    try:
        indices, sources = node_sources(nodes)
        cited = attributor.cite(query, sources, response=text)
    except Exception as exc:
        if raise_on_error:
            raise
        logger.warning("AT2 citations failed (%s); response left without citations", exc)
        return response
    response.metadata = dict(response.metadata or {})
    response.metadata["citations"] = cited.citations
    response.metadata["cited_answer"] = cited.formatted
    response.metadata["at2_scores"] = {nodes[indices[j]].node.node_id: s for j, s in enumerate(cited.attribution.scores)}
    return response


class AT2CitationQueryEngine(BaseQueryEngine):
    """Wraps any query engine: answers as it does, then adds AT2 citations to ``Response.metadata``."""

    def __init__(self, query_engine: BaseQueryEngine, attributor: AT2Attributor | None = None,
                 raise_on_error: bool = False, callback_manager: CallbackManager | None = None) -> None:
        self._engine = query_engine
        self._attributor = attributor or AT2Attributor.from_pretrained()
        self._raise = raise_on_error
        super().__init__(callback_manager or query_engine.callback_manager)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._engine}

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        response = self._engine.query(query_bundle)
        return cite_response(self._attributor, query_bundle.query_str, response, self._raise)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        response = await self._engine.aquery(query_bundle)
        return await asyncio.to_thread(cite_response, self._attributor, query_bundle.query_str, response, self._raise)


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

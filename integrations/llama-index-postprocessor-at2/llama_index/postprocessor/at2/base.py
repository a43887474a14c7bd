"""AT2Postprocessor: keep the retrieved nodes, or the sentences inside them, that the answer relies on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SerializeAsAny
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import LLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts.default_prompt_selectors import DEFAULT_TEXT_QA_PROMPT_SEL
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.settings import Settings

from at2_rag import AT2Attributor
from at2_rag.context import (
    SCORE_KEY,
    SKIPPED_KEY,
    SPANS_KEY,
    AttributorSettings,
    ContextItem,
    ContextOptions,
    RankedContext,
    attributor_settings,
    check_context_options,
    default_attributor,
    fail_open,
    reduce_context,
)
from at2_rag.errors import ConfigurationError

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

AT2_SCORE_KEY = SCORE_KEY
RETRIEVAL_SCORE_KEY = "retrieval_score"
NO_LLM = ("AT2Postprocessor(drafter='llm') has no LLM to draft the answer it attributes: pass llm=... (the LLM that "
          "answers, e.g. the one given to as_query_engine(llm=...)), or set Settings.llm, or use "
          "drafter='attributor' for fully local use (the attributor's own small model drafts)")


def node_items(nodes: list[NodeWithScore]) -> list[ContextItem]:
    """Nodes as context items: text without metadata (nodes without text are kept unscored)."""
    items = []
    for nws in nodes:
        node = nws.node
        text = node.get_content(metadata_mode=MetadataMode.NONE) if hasattr(node, "get_content") else None
        metadata = node.metadata if isinstance(node.metadata, dict) else {}
        items.append(ContextItem(id=node.node_id, text=text if isinstance(text, str) else None,
                                 title=metadata.get("title"), retriever_score=nws.score))
    return items


def _llm_context(nodes: list[NodeWithScore]) -> str:
    """The nodes as the synthesizer shows them to the LLM (metadata per the nodes' LLM mode)."""
    return "\n\n".join(n.node.get_content(metadata_mode=MetadataMode.LLM) for n in nodes)


def _hidden_copy(nws: NodeWithScore, score: float | None, metadata: dict[str, Any],
                 text: str | None = None) -> NodeWithScore:
    """A copy of the node with extra metadata hidden from the LLM and the embedder (and, when given, ``text``
    as its text); the input is left as it was."""
    node = nws.node
    keys = list(metadata)
    copy = node.model_copy(update={
        "metadata": {**node.metadata, **metadata},
        "excluded_llm_metadata_keys": list(dict.fromkeys([*node.excluded_llm_metadata_keys, *keys])),
        "excluded_embed_metadata_keys": list(dict.fromkeys([*node.excluded_embed_metadata_keys, *keys])),
    })
    if text is not None:
        copy.set_content(text)
    return NodeWithScore(node=copy, score=score)


class AT2Postprocessor(BaseNodePostprocessor, ContextOptions, AttributorSettings):
    """Keeps the retrieved nodes that an answer relies on, by AT2 attribution (fused with the retriever's score);
    with ``granularity="sentence"``, keeps inside them only the sentences it relies on.

    The answer is drafted by your LLM (``llm``, else ``Settings.llm``) with LlamaIndex's standard QA prompt
    over all retrieved nodes, then teacher-forced through the attributor in one pass; ``drafter="attributor"``
    lets the attributor's own small model draft instead (fully local, weaker). Kept nodes are copies:
    ``NodeWithScore.score`` is the ranking score, and ``metadata["at2_score"]`` (with ``granularity="sentence"``
    also ``metadata["at2_kept_spans"]``: the [start, end) of each kept sentence in the original text, which the
    copy's text replaces; with ``keep_retrieval_score``, ``metadata["retrieval_score"]``) are hidden from the
    LLM and the embedder. A fault of one query (a context over the window, a rate limit, a timeout) fails open:
    it returns every input node, as a copy carrying ``metadata["at2_skipped"]`` (the reason, hidden from the
    LLM and the embedder), with a warning (``raise_on_error`` to raise). A configuration that can never work
    raises ``ConfigurationError`` or ``ModelLoadError``: at construction (unknown model, mismatched
    coefficients, bad or conflicting values, ``drafter="llm"`` with neither ``llm`` nor ``Settings.llm``,
    ``budget="auto"`` without a keep rule), or at the first query (an LLM whose package is missing, whose key
    is rejected or whose model does not exist). Options: ``at2_rag.context.ContextOptions``.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    llm: SerializeAsAny[LLM] | None = Field(default=None, description="Drafting LLM (default: Settings.llm).")
    keep_retrieval_score: bool = Field(default=False, description="Keep the retriever's score in metadata.")

    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**attributor_settings(attributor, kwargs))
        self._drafting_llm()
        self._attributor = attributor or default_attributor(self)
        check_context_options(self._attributor, self)

    @classmethod
    def class_name(cls) -> str:
        return "AT2Postprocessor"

    @property
    def attributor(self) -> AT2Attributor:
        return self._attributor

    def _drafting_llm(self) -> LLM | None:
        """The LLM that drafts (None: the attributor drafts). ``Settings.llm`` counts only once someone set it:
        resolving LlamaIndex's lazy OpenAI default would fail on every query in a pipeline that never set one."""
        if self.drafter == "attributor":
            return None
        if self.llm is not None:
            return self.llm
        if getattr(Settings, "_llm", None) is None:
            raise ConfigurationError(NO_LLM)
        return Settings.llm

    def draft(self, nodes: list[NodeWithScore], query: str) -> str | None:
        """The answer to attribute: the drafting LLM's over all nodes (None: the attributor drafts)."""
        llm = self._drafting_llm()
        if llm is None:
            return None
        return llm.predict(DEFAULT_TEXT_QA_PROMPT_SEL, context_str=_llm_context(nodes), query_str=query)

    async def adraft(self, nodes: list[NodeWithScore], query: str) -> str | None:
        llm = self._drafting_llm()
        if llm is None:
            return None
        return await llm.apredict(DEFAULT_TEXT_QA_PROMPT_SEL, context_str=_llm_context(nodes), query_str=query)

    def rank(self, nodes: list[NodeWithScore], query: str, draft: str | None) -> tuple[list[NodeWithScore],
                                                                                         RankedContext]:
        """Kept node copies and the per-call result (draft, scores, kept spans, attribution) for ``draft``."""
        ranked = reduce_context(self.attributor, query, node_items(nodes), draft, self)
        kept = []
        for i in ranked.kept:
            if i in ranked.scores:
                extra: dict[str, Any] = {AT2_SCORE_KEY: ranked.at2_scores[i]}
                if i in ranked.spans:
                    extra[SPANS_KEY] = [list(span) for span in ranked.spans[i]]
                if self.keep_retrieval_score:
                    extra[RETRIEVAL_SCORE_KEY] = nodes[i].score
                kept.append(_hidden_copy(nodes[i], ranked.scores[i], extra, ranked.texts.get(i)))
            else:
                kept.append(nodes[i])
        if ranked.unscored:
            logger.warning("AT2Postprocessor: %d node(s) without text kept unscored", len(ranked.unscored))
        return kept, ranked

    def _query(self, query_bundle: QueryBundle | None) -> str:
        if query_bundle is None or not query_bundle.query_str.strip():
            raise ValueError("AT2Postprocessor needs the query (query_bundle or query_str) to attribute")
        return query_bundle.query_str

    def _fail_open(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None, exc: Exception):
        """Raise a configuration error (or anything, with ``raise_on_error``); otherwise every node, marked."""
        reason = fail_open(exc, self.raise_on_error, "AT2Postprocessor",
                           query_bundle.query_str if query_bundle is not None else None,
                           f"returning all {len(nodes)} nodes unchanged")
        return [_hidden_copy(n, n.score, {SKIPPED_KEY: reason}) for n in nodes]

    @contextlib.contextmanager
    def _events(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> Iterator[list]:
        """The rerank events around one call, the same on the sync and async paths: ``ReRankStartEvent`` /
        ``ReRankEndEvent`` (instrumentation) and a ``RERANKING`` callback event. Yields a list to put the
        kept nodes in."""
        model_name = self.attributor.lm.model_id
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes),
                                          model_name=model_name))
        out: list[NodeWithScore] = []
        with self.callback_manager.event(CBEventType.RERANKING, payload={
            EventPayload.NODES: nodes, EventPayload.MODEL_NAME: model_name,
            EventPayload.QUERY_STR: query_bundle.query_str if query_bundle else None,
            EventPayload.TOP_K: self.top_n,
        }) as event:
            yield out
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if not nodes:
            return []
        with self._events(nodes, query_bundle) as out:
            try:
                query = self._query(query_bundle)
                kept, _ = self.rank(nodes, query, self.draft(nodes, query))
            except Exception as exc:
                kept = self._fail_open(nodes, query_bundle, exc)
            out.extend(kept)
        return kept

    async def _apostprocess_nodes(self, nodes: list[NodeWithScore],
                                  query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        """Async: the LLM drafts with ``apredict``; attribution runs in a worker thread; same events."""
        if not nodes:
            return []
        with self._events(nodes, query_bundle) as out:
            try:
                query = self._query(query_bundle)
                draft = await self.adraft(nodes, query)
                kept, _ = await asyncio.to_thread(self.rank, nodes, query, draft)
            except Exception as exc:
                kept = self._fail_open(nodes, query_bundle, exc)
            out.extend(kept)
        return kept

"""AT2Postprocessor: keep the retrieved nodes that the answer actually relies on."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SerializeAsAny
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import LLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts.default_prompt_selectors import DEFAULT_TEXT_QA_PROMPT_SEL
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.settings import Settings
from pydantic import AliasChoices

from at2_rag import AT2Attributor
from at2_rag.context import ContextItem, RankedContext, rank_context
from at2_rag.errors import ConfigurationError
from at2_rag.faults import is_configuration_error, skip_reason

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

AT2_SCORE_KEY = "at2_score"
RETRIEVAL_SCORE_KEY = "retrieval_score"
SKIPPED_KEY = "at2_skipped"
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


def _hidden_copy(nws: NodeWithScore, score: float | None, metadata: dict[str, Any]) -> NodeWithScore:
    """A copy of the node with extra metadata hidden from the LLM and the embedder; the input is left as it was."""
    node = nws.node
    keys = list(metadata)
    copy = node.model_copy(update={
        "metadata": {**node.metadata, **metadata},
        "excluded_llm_metadata_keys": list(dict.fromkeys([*node.excluded_llm_metadata_keys, *keys])),
        "excluded_embed_metadata_keys": list(dict.fromkeys([*node.excluded_embed_metadata_keys, *keys])),
    })
    return NodeWithScore(node=copy, score=score)


class AT2Postprocessor(BaseNodePostprocessor):
    """Keeps the retrieved nodes that an answer relies on, by AT2 attribution (fused with the retriever's score).

    The answer is drafted by your LLM (``llm``, else ``Settings.llm``) with LlamaIndex's standard QA prompt
    over all retrieved nodes, then teacher-forced through the attributor in one pass; ``drafter="attributor"``
    lets the attributor's own small model draft instead (fully local, weaker). Kept nodes are copies:
    ``NodeWithScore.score`` is the ranking score, and ``metadata["at2_score"]`` (and, with
    ``keep_retrieval_score``, ``metadata["retrieval_score"]``) are hidden from the LLM and the embedder.
    A fault of one query (a context over the window, a rate limit, a timeout) fails open: it returns every
    input node, as a copy carrying ``metadata["at2_skipped"]`` (the reason, hidden from the LLM and the
    embedder), with a warning (``raise_on_error`` to raise). A configuration that can never work raises: at
    construction (unknown model, mismatched coefficients, bad values, ``drafter="llm"`` with neither ``llm``
    nor ``Settings.llm`` set), or at the first query (an LLM whose package is missing, whose key is rejected
    or whose model does not exist).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    top_n: int | None = Field(default=3, ge=1, validation_alias=AliasChoices("top_n", "top_k"),
                              description="Keep at most this many nodes (``top_k`` is accepted too).")
    threshold: float | None = Field(default=None, allow_inf_nan=False, description="Keep nodes scoring at least this.")
    max_tokens: int | None = Field(default=None, ge=1, description="Keep the best nodes within this token budget.")
    order: Literal["original", "score"] = Field(default="original", description="Order of the kept nodes.")
    drafter: Literal["llm", "attributor"] = Field(default="llm", description="Who writes the answer to attribute.")
    llm: SerializeAsAny[LLM] | None = Field(default=None, description="Drafting LLM (default: Settings.llm).")
    fuse_retriever_score: bool = Field(default=True, description="Fuse AT2's ranking with NodeWithScore.score "
                                       "(weighted reciprocal-rank fusion calibrated on train rows).")
    keep_retrieval_score: bool = Field(default=False, description="Keep the retriever's score in metadata.")
    raise_on_error: bool = Field(default=False, description="Raise instead of failing open.")
    model: str | None = Field(default=None, description="Attributor model (default: bundled SmolLM2-135M).")
    coefficients: str | None = Field(default=None, description="AT2 passage coefficient file (default: shipped).")
    max_new_tokens: int = Field(default=64, ge=1, description="Length of the attributor's own draft.")
    truncate: bool = Field(default=False, description="Trim the longest nodes when the attributor's window is full.")

    _attributor: AT2Attributor = PrivateAttr()

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        if attributor is not None:
            kwargs.setdefault("model", attributor.lm.source)
            kwargs.setdefault("max_new_tokens", attributor.pipeline.max_new_tokens)
            kwargs.setdefault("truncate", attributor.pipeline.truncate)
        super().__init__(**kwargs)
        self._drafting_llm()
        self._attributor = attributor or AT2Attributor.from_pretrained(
            self.model, self.coefficients, max_new_tokens=self.max_new_tokens, truncate=self.truncate)

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
        """Kept node copies and the per-call ranking (draft, scores, attribution) for ``draft``."""
        ranked = rank_context(self.attributor, query, node_items(nodes), draft, self.top_n, self.threshold,
                              self.max_tokens, self.fuse_retriever_score)
        kept = []
        for i in ranked.kept:
            if i in ranked.scores:
                extra = {AT2_SCORE_KEY: ranked.at2_scores[i]}
                if self.keep_retrieval_score:
                    extra[RETRIEVAL_SCORE_KEY] = nodes[i].score
                kept.append(_hidden_copy(nodes[i], ranked.scores[i], extra))
            else:
                kept.append(nodes[i])
        if ranked.unscored:
            logger.warning("AT2Postprocessor: %d node(s) without text kept unscored", len(ranked.unscored))
        if self.order == "score":
            kept.sort(key=lambda n: -(n.score if n.score is not None else float("-inf")))
        return kept, ranked

    def _query(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> str:
        if query_bundle is None or not query_bundle.query_str.strip():
            raise ValueError("AT2Postprocessor needs the query (query_bundle or query_str) to attribute")
        return query_bundle.query_str

    def _fail_open(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None, exc: Exception):
        """Raise a configuration error (or anything, with ``raise_on_error``); otherwise every node, marked."""
        if self.raise_on_error or is_configuration_error(exc):
            raise exc
        query = query_bundle.query_str if query_bundle is not None else None
        logger.warning("AT2Postprocessor: attribution failed for query %r (%s: %s); returning all %d nodes unchanged",
                       query, type(exc).__name__, exc, len(nodes))
        reason = skip_reason(exc)
        return [_hidden_copy(n, n.score, {SKIPPED_KEY: reason}) for n in nodes]

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if not nodes:
            return []
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes),
                                          model_name=self.attributor.lm.model_id))
        with self.callback_manager.event(CBEventType.RERANKING, payload={
            EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.attributor.lm.model_id,
            EventPayload.QUERY_STR: query_bundle.query_str if query_bundle else None,
            EventPayload.TOP_K: self.top_n,
        }) as event:
            try:
                query = self._query(nodes, query_bundle)
                kept, _ = self.rank(nodes, query, self.draft(nodes, query))
            except Exception as exc:
                kept = self._fail_open(nodes, query_bundle, exc)
            event.on_end(payload={EventPayload.NODES: kept})
        dispatcher.event(ReRankEndEvent(nodes=kept))
        return kept

    async def apostprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None,
                                 query_str: str | None = None) -> list[NodeWithScore]:
        """Async: the LLM drafts with ``apredict``; attribution runs in a worker thread."""
        if query_str is not None and query_bundle is not None:
            raise ValueError("Cannot specify both query_str and query_bundle")
        query_bundle = QueryBundle(query_str) if query_str is not None else query_bundle
        if not nodes:
            return []
        try:
            query = self._query(nodes, query_bundle)
            draft = await self.adraft(nodes, query)
            kept, _ = await asyncio.to_thread(self.rank, nodes, query, draft)
        except Exception as exc:
            return self._fail_open(nodes, query_bundle, exc)
        return kept

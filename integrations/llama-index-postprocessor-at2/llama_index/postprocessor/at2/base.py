"""AT2Postprocessor: keep the retrieved nodes that a draft answer actually relies on."""

from __future__ import annotations

import logging
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from at2_rag import AT2Attributor, Attribution, Source

logger = logging.getLogger(__name__)


def node_sources(nodes: list[NodeWithScore]) -> tuple[list[int], list[Source]]:
    """Indices and Sources of the nodes that have text (other nodes pass through untouched)."""
    indices, sources = [], []
    for i, nws in enumerate(nodes):
        text = nws.node.get_content(metadata_mode=MetadataMode.NONE) if hasattr(nws.node, "get_content") else ""
        if isinstance(text, str) and text.strip():
            title = nws.node.metadata.get("title") if isinstance(nws.node.metadata, dict) else None
            indices.append(i)
            sources.append(Source(id=nws.node.node_id, text=text, title=title))
    return indices, sources


class AT2Postprocessor(BaseNodePostprocessor):
    """Drafts an answer with the attributor's model over all nodes, scores each node with AT2, keeps the best.

    Kept nodes get ``NodeWithScore.score`` = AT2 score and ``node.metadata["at2_score"]``. If attribution
    fails, the input nodes are returned unchanged with a warning (``raise_on_error=True`` to raise instead).
    """

    top_k: int | None = Field(default=3, description="Keep at most this many nodes.")
    threshold: float | None = Field(default=None, description="Keep nodes with AT2 score at least this.")
    max_tokens: int | None = Field(default=None, description="Keep the best nodes within this token budget.")
    order: Literal["original", "score"] = Field(default="original", description="Order of the kept nodes.")
    raise_on_error: bool = Field(default=False, description="Raise instead of failing open.")
    model: str | None = Field(default=None, description="Attributor model (default: bundled SmolLM2-135M).")
    coefficients: str | None = Field(default=None, description="AT2 coefficient file (default: shipped).")
    last_attribution: Attribution | None = Field(default=None, exclude=True, description="Latest draft + scores.")

    _attributor: AT2Attributor | None = PrivateAttr(default=None)

    def __init__(self, attributor: AT2Attributor | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._attributor = attributor

    @classmethod
    def class_name(cls) -> str:
        return "AT2Postprocessor"

    @property
    def attributor(self) -> AT2Attributor:
        if self._attributor is None:
            self._attributor = AT2Attributor.from_pretrained(self.model, self.coefficients)
        return self._attributor

    @property
    def draft_response(self) -> str | None:
        """The answer the attributor's model drafted for the latest call."""
        return self.last_attribution.response if self.last_attribution else None

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if not nodes:
            return []
        try:
            if query_bundle is None or not query_bundle.query_str.strip():
                raise ValueError("AT2Postprocessor needs the query (query_bundle) to attribute")
            indices, sources = node_sources(nodes)
            if not sources:
                raise ValueError("no node has text to attribute")
            attribution = self.attributor.attribute(query_bundle.query_str, sources)
            pruned = self.attributor.prune_attribution(attribution, self.top_k, self.threshold, self.max_tokens)
        except Exception as exc:
            if self.raise_on_error:
                raise
            logger.warning("AT2Postprocessor: attribution failed (%s); returning all %d nodes unchanged", exc, len(nodes))
            return nodes
        self.last_attribution = attribution
        kept_positions = {indices[j] for j in pruned.indices}
        passthrough = [i for i in range(len(nodes)) if i not in set(indices)]
        if passthrough:
            logger.warning("AT2Postprocessor: %d node(s) without text kept unscored", len(passthrough))
        scored = {indices[j]: attribution.scores[j] for j in range(len(indices))}
        result = []
        for i in sorted(kept_positions | set(passthrough)):
            nws = nodes[i]
            if i in scored:
                nws.node.metadata["at2_score"] = scored[i]
                nws = NodeWithScore(node=nws.node, score=scored[i])
            result.append(nws)
        if self.order == "score":
            result.sort(key=lambda n: -(n.score if n.score is not None else float("-inf")))
        return result

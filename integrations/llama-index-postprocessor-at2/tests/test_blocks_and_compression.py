"""LlamaIndex CitationBlocks, cite_message, sentence-level compression, the same events on the sync and async
paths, and the citation options passed through, on a tiny random attributor (seconds)."""

import asyncio

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    CitationBlock,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.base.response.schema import Response
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, TextNode
from llama_index.postprocessor.at2 import (
    AT2CitationQueryEngine,
    AT2Postprocessor,
    citation_blocks,
    cite_message,
    cite_response,
)

from at2_rag import ConfigurationError
from conftest import KB_ANSWER as ANSWER
from conftest import KB_QUESTION as QUESTION
from conftest import KB_TEXTS as TEXTS

pytestmark = pytest.mark.timeout(120)


class Answers(CustomLLM):
    """Answers every prompt with ANSWER, as a capable LLM would."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="answers")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
        return CompletionResponse(text=ANSWER)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        yield self.complete(prompt)


def _nodes():
    return [NodeWithScore(node=TextNode(text=t, id_=k, metadata={"title": k}), score=s)
            for (k, t), s in zip(TEXTS.items(), (0.9, 0.5, 0.1))]


def _check_blocks(blocks, answer, nodes):
    texts = {n.node.node_id: n.node.get_content() for n in nodes}
    assert blocks and all(isinstance(b, CitationBlock) for b in blocks)
    for block in blocks:
        where = block.additional_location_info
        assert answer[where["start_char_index"]:where["end_char_index"]].strip()
        quote = block.cited_content.text
        assert quote in texts[block.source] and block.title == block.source      # titles are the ids here
        assert texts[block.source][where["source_start_char_index"]:where["source_end_char_index"]] == quote


def test_citation_blocks_of_a_cited_response(tiny_attributor):
    nodes = _nodes()
    response = cite_response(tiny_attributor, QUESTION, Response(ANSWER, nodes), raise_on_error=True)
    blocks = citation_blocks(response)
    _check_blocks(blocks, ANSWER, nodes)
    expected = [(c["start"], p["index"]) for c in response.metadata["citations"] if c["supported"]
                for p in c["passages"]]
    assert [(b.additional_location_info["start_char_index"], [n.node.node_id for n in nodes].index(b.source))
            for b in blocks] == expected
    assert set(response.metadata) == {"citations", "cited_answer", "unsupported", "at2_scores"}  # metadata as before
    assert citation_blocks(Response(ANSWER, nodes)) == []       # not cited: no blocks


def test_a_query_whose_citations_come_back_as_citation_blocks(tiny_attributor):
    index = VectorStoreIndex.from_documents([Document(text=t, id_=k, metadata={"title": k}) for k, t in TEXTS.items()],
                                            embed_model=MockEmbedding(embed_dim=8))
    engine = AT2CitationQueryEngine(index.as_query_engine(llm=Answers(), similarity_top_k=3),
                                    attributor=tiny_attributor, raise_on_error=True)
    response = engine.query(QUESTION)
    assert response.response == ANSWER
    blocks = citation_blocks(response)
    assert blocks and len(blocks) == sum(len(c["passages"]) for c in response.metadata["citations"] if c["supported"])
    node_ids = {n.node.node_id: n.node.metadata["title"] for n in response.source_nodes}
    assert all(isinstance(b, CitationBlock) and node_ids[b.source] == b.title for b in blocks)


def test_cite_message_appends_blocks_to_a_chat_message(tiny_attributor):
    nodes = [NodeWithScore(node=ImageNode(image="aGk=", id_="img"), score=0.8), *_nodes()]
    message = ChatMessage(role=MessageRole.ASSISTANT, content=ANSWER)
    cited = cite_message(message, nodes, QUESTION, attributor=tiny_attributor, raise_on_error=True)
    assert cited.content == ANSWER and message.blocks == [TextBlock(text=ANSWER)]   # input untouched
    assert isinstance(cited.blocks[0], TextBlock)
    _check_blocks(cited.blocks[1:], ANSWER, nodes)
    assert all(b.source != "img" for b in cited.blocks[1:])
    assert cited.additional_kwargs["at2"]["citations"]
    assert cited.model_dump()["blocks"][1]["block_type"] == "citation"
    assert cite_message(ChatMessage(role=MessageRole.ASSISTANT, content=""), nodes, attributor=tiny_attributor).blocks \
        == [TextBlock(text="")]


def test_cite_message_fails_open(tiny_attributor, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("attributor down")

    monkeypatch.setattr(tiny_attributor, "cite_batch", boom)
    cited = cite_message(ChatMessage(role=MessageRole.ASSISTANT, content=ANSWER), _nodes(), QUESTION,
                         attributor=tiny_attributor)
    assert cited.blocks == [TextBlock(text=ANSWER)]
    assert cited.additional_kwargs["at2"]["at2_skipped"] == "RuntimeError: attributor down"


def test_sentence_granularity_keeps_compressed_copies_with_hidden_spans(tiny_attributor):
    nodes = [NodeWithScore(node=ImageNode(image="aGk=", id_="img"), score=0.8), *_nodes()]
    before = [n.node.model_dump() for n in nodes]
    pp = AT2Postprocessor(attributor=tiny_attributor, drafter="attributor", granularity="sentence", budget=0.3)
    kept = pp.postprocess_nodes(nodes, query_str=QUESTION)
    assert kept[0].node.node_id == "img"      # nodes without text are kept as they are
    texts = [n for n in kept[1:]]
    assert texts and sum(len(n.node.get_content()) for n in texts) < sum(len(t) for t in TEXTS.values())
    for nws in texts:
        original = TEXTS[nws.node.node_id]
        spans = nws.node.metadata["at2_kept_spans"]
        for start, end in spans:
            assert original[start:end].strip() in nws.node.get_content()
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            shown = nws.node.get_content(mode)
            assert "at2_kept_spans" not in shown and "at2_score" not in shown
    assert [n.node.model_dump() for n in nodes] == before
    cited = cite_response(tiny_attributor, QUESTION, Response(ANSWER, kept), raise_on_error=True)
    blocks = citation_blocks(cited)
    assert blocks
    shown = {n.node.node_id: n.node.get_content() for n in kept}
    for block in blocks:        # a sentence of the original node, located in the compressed copy's text
        where = block.additional_location_info
        assert block.cited_content.text in TEXTS[block.source] and not block.cited_content.text.startswith("…")
        assert shown[block.source][where["source_start_char_index"]:where["source_end_char_index"]] == \
            block.cited_content.text


def test_sentence_granularity_with_the_llm_drafting(tiny_attributor):
    llm = MockLLM(max_tokens=10)
    kept = AT2Postprocessor(attributor=tiny_attributor, llm=llm, granularity="sentence", budget=40).postprocess_nodes(
        _nodes(), query_str=QUESTION)
    assert kept and all("at2_kept_spans" in n.node.metadata for n in kept)


def test_the_same_events_on_the_sync_and_async_paths(tiny_attributor):
    seen = []

    class Collector(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
                seen.append((type(event).__name__, len(getattr(event, "nodes", []) or [])))

    handler = Collector()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    pp = AT2Postprocessor(attributor=tiny_attributor, drafter="attributor", top_n=1)
    try:
        pp.postprocess_nodes(_nodes(), query_str=QUESTION)
        sync, seen[:] = list(seen), []
        asyncio.run(pp.apostprocess_nodes(_nodes(), query_str=QUESTION))
    finally:
        dispatcher.event_handlers.remove(handler)
    assert sync == seen == [("ReRankStartEvent", 3), ("ReRankEndEvent", 1)]


def test_citation_options_pass_through(tiny_attributor):
    nodes = _nodes()
    raw = cite_response(tiny_attributor, QUESTION, Response(ANSWER, nodes), evidence_model="raw")
    hybrid = cite_response(tiny_attributor, QUESTION, Response(ANSWER, nodes))
    assert all(c["support"] is None for c in raw.metadata["citations"])
    assert all(isinstance(c["support"], float) for c in hybrid.metadata["citations"])
    one = cite_response(tiny_attributor, QUESTION, Response(ANSWER, nodes), max_passages=1, relative_threshold=0.0)
    assert all(len(c["passages"]) <= 1 for c in one.metadata["citations"])
    with pytest.raises(ConfigurationError):
        AT2CitationQueryEngine(VectorStoreIndex([], embed_model=MockEmbedding(embed_dim=8)).as_query_engine(
            llm=MockLLM()), attributor=tiny_attributor, strictness="strict")

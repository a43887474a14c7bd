"""AT2Postprocessor and citations in real LlamaIndex pipelines, on a tiny random attributor (seconds).

The contracts: drafting with the framework's LLM, copies not mutation, scores hidden from the LLM and the
embedder, per-call results, numbering with non-text nodes, fail-open with a warning, validation at
construction, tracing events, streaming citations, JSON-serialisable metadata.
"""

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.at2 import AT2CitationQueryEngine, AT2Postprocessor, cite_response
from conftest import KB_QUESTION as QUESTION
from conftest import KB_TEXTS as TEXTS

pytestmark = pytest.mark.timeout(120)


class AnswerBook(CustomLLM):
    """A deterministic LLM: answers a known question found in the prompt, records every prompt it saw."""

    answers: dict[str, str] = {}
    prompts: list[str] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="answer-book")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
        self.prompts.append(prompt)
        text = next((a for q, a in self.answers.items() if q in prompt), "I do not know.")
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        text = self.complete(prompt).text
        for i, word in enumerate(text.split(" ")):
            yield CompletionResponse(text=text, delta=(" " if i else "") + word)


ANSWER = "Champollion deciphered it in 1822. It is kept in the British Museum."


@pytest.fixture()
def llm():
    return AnswerBook(answers={QUESTION: ANSWER, "How high": "It rises 5,895 metres."}, prompts=[])


def _nodes(scores=(0.9, 0.5, 0.1)):
    return [NodeWithScore(node=TextNode(text=text, id_=title, metadata={"title": title}), score=score)
            for (title, text), score in zip(TEXTS.items(), scores)]


def test_is_a_node_postprocessor(tiny_attributor, llm):
    assert issubclass(AT2Postprocessor, BaseNodePostprocessor)
    pp = AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_n=2)
    assert pp.class_name() == "AT2Postprocessor" and pp.top_n == 2


def test_drafts_with_the_llm_and_keeps_copies(tiny_attributor, llm):
    nodes = _nodes()
    before = [n.node.model_dump() for n in nodes]
    pp = AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_n=2)
    kept = pp.postprocess_nodes(nodes, query_str=QUESTION)
    assert len(kept) == 2 and llm.prompts and all(t in llm.prompts[0] for t in TEXTS.values())
    assert [n.node.model_dump() for n in nodes] == before  # the input is untouched
    for nws in kept:
        assert "at2_score" in nws.node.metadata
        assert "at2_score" not in nws.node.get_content(MetadataMode.LLM)
        assert "at2_score" not in nws.node.get_content(MetadataMode.EMBED)
    _, ranked = pp.rank(nodes, QUESTION, ANSWER)
    assert ranked.draft == ANSWER and ranked.fused


def test_keep_retrieval_score_is_hidden(tiny_attributor, llm):
    pp = AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_n=3, keep_retrieval_score=True)
    kept = pp.postprocess_nodes(_nodes(), query_str=QUESTION)
    assert {n.node.metadata["retrieval_score"] for n in kept} == {0.9, 0.5, 0.1}
    assert all("retrieval_score" not in n.node.get_content(MetadataMode.LLM) for n in kept)


def test_settings_llm_is_the_default_drafter(tiny_attributor, llm, monkeypatch):
    from llama_index.core import Settings

    monkeypatch.setattr(Settings, "_llm", llm)
    AT2Postprocessor(attributor=tiny_attributor, top_n=1).postprocess_nodes(_nodes(), query_str=QUESTION)
    assert llm.prompts


def test_attributor_drafter_needs_no_llm(tiny_attributor):
    kept = AT2Postprocessor(attributor=tiny_attributor, drafter="attributor", top_n=1).postprocess_nodes(
        _nodes(), query_str=QUESTION)
    assert len(kept) == 1


@pytest.mark.filterwarnings("ignore:.*top_k:DeprecationWarning")
@pytest.mark.parametrize("kwargs", [{"top_n": 0}, {"top_k": 0}, {"max_tokens": 0}, {"threshold": float("nan")},
                                    {"bogus": 1}, {"order": "random"}, {"drafter": "gpt"}])
def test_bad_configuration_raises_at_construction(tiny_attributor, kwargs):
    with pytest.raises(ValueError):
        AT2Postprocessor(attributor=tiny_attributor, **kwargs)


def test_top_k_is_accepted_as_top_n(tiny_attributor, llm):
    with pytest.warns(DeprecationWarning, match="top_k"):
        assert AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_k=1).top_n == 1


def test_unknown_model_fails_at_construction():
    from at2_rag import ModelLoadError

    with pytest.raises(ModelLoadError):
        AT2Postprocessor(model="./no/such/model", drafter="attributor")


def test_fail_open_names_the_query(tiny_attributor, caplog):
    class Broken(AnswerBook):
        def complete(self, prompt, formatted=False, **kwargs):
            raise RuntimeError("LLM down")

    nodes = _nodes()
    with caplog.at_level(logging.WARNING):
        kept = AT2Postprocessor(attributor=tiny_attributor, llm=Broken(), top_n=1).postprocess_nodes(
            nodes, query_str=QUESTION)
    assert _unchanged_but_marked(kept, nodes, "LLM down") and QUESTION in caplog.text and "LLM down" in caplog.text
    with pytest.raises(RuntimeError):
        AT2Postprocessor(attributor=tiny_attributor, llm=Broken(), raise_on_error=True).postprocess_nodes(
            nodes, query_str=QUESTION)


def test_non_text_nodes_pass_through_and_titles_of_any_type(tiny_attributor, llm):
    nodes = [NodeWithScore(node=ImageNode(image="aGk=", id_="img"), score=0.8),
             NodeWithScore(node=TextNode(text=TEXTS["Sourdough"], metadata={"title": 2024}), score=0.7),
             *_nodes()[:1]]
    kept = AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_n=1).postprocess_nodes(nodes, query_str=QUESTION)
    assert kept[0].node.node_id == "img" and len(kept) == 2


def test_events_are_emitted(tiny_attributor, llm):
    seen = []

    class Collector(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
                seen.append(type(event).__name__)

    handler = Collector()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_n=1).postprocess_nodes(_nodes(), query_str=QUESTION)
    finally:
        dispatcher.event_handlers.remove(handler)
    assert seen == ["ReRankStartEvent", "ReRankEndEvent"]


def test_concurrent_queries_match_serial(tiny_attributor, llm):
    pp = AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_n=2)
    queries = [QUESTION, "How high is Kilimanjaro?"]
    serial = [[(n.node.node_id, n.score) for n in pp.postprocess_nodes(_nodes(), query_str=q)] for q in queries]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda q: [(n.node.node_id, n.score)
                                           for n in pp.postprocess_nodes(_nodes(), query_str=q)], queries))
    assert results == serial


def test_async_matches_sync(tiny_attributor, llm):
    pp = AT2Postprocessor(attributor=tiny_attributor, llm=llm, top_n=2)
    sync = [(n.node.node_id, n.score) for n in pp.postprocess_nodes(_nodes(), query_str=QUESTION)]
    got = asyncio.run(pp.apostprocess_nodes(_nodes(), query_str=QUESTION))
    assert [(n.node.node_id, n.score) for n in got] == sync


def test_serialises_the_attributor_model(tiny_attributor, llm):
    pp = AT2Postprocessor(attributor=tiny_attributor, llm=llm)
    assert pp.to_dict()["model"] == tiny_attributor.lm.source


def _index(llm):
    from llama_index.core import Settings

    Settings.llm = llm
    return VectorStoreIndex.from_documents(
        [Document(text=text, metadata={"title": title}, id_=title) for title, text in TEXTS.items()],
        embed_model=MockEmbedding(embed_dim=8))


def test_citations_number_by_node_position(tiny_attributor):
    nodes = [NodeWithScore(node=ImageNode(image="aGk=", id_="img"), score=0.8), *_nodes()]
    from llama_index.core.base.response.schema import Response

    response = cite_response(tiny_attributor, QUESTION, Response(ANSWER, nodes), raise_on_error=True)
    metadata = response.metadata
    json.dumps(metadata)  # plain data
    for citation in metadata["citations"]:
        for source in citation["passages"]:
            assert nodes[source["index"]].node.node_id == source["id"]
            assert f"[{source['index'] + 1}]" in metadata["cited_answer"]
    assert "[1]" not in metadata["cited_answer"]  # the image node is never cited


def test_query_engine_with_citations_and_streaming(tiny_attributor, llm):
    index = _index(llm)
    pp = AT2Postprocessor(attributor=tiny_attributor, top_n=2)
    engine = AT2CitationQueryEngine(index.as_query_engine(similarity_top_k=3, node_postprocessors=[pp]),
                                    attributor=tiny_attributor, raise_on_error=True)
    response = engine.query(QUESTION)
    assert response.response == ANSWER and len(response.source_nodes) == 2
    assert len(response.metadata["citations"]) == 2
    streaming = AT2CitationQueryEngine(
        index.as_query_engine(similarity_top_k=3, node_postprocessors=[pp], streaming=True),
        attributor=tiny_attributor, raise_on_error=True).query(QUESTION)
    assert "citations" not in (streaming.metadata or {})
    text = "".join(streaming.response_gen)
    assert text == ANSWER and len(streaming.metadata["citations"]) == 2
    assert streaming.get_response().metadata["cited_answer"].startswith("Champollion")


def test_query_bundle_is_required(tiny_attributor, llm, caplog):
    nodes = _nodes()
    with caplog.at_level(logging.WARNING):
        assert _unchanged_but_marked(AT2Postprocessor(attributor=tiny_attributor, llm=llm).postprocess_nodes(nodes),
                                     nodes, "needs the query")
    assert AT2Postprocessor(attributor=tiny_attributor, llm=llm).postprocess_nodes([], QueryBundle("q")) == []


def _unchanged_but_marked(kept, nodes, reason):
    """Fail-open output: every input node, same text and score, marked with why AT2 skipped (hidden from the LLM)."""
    assert [(n.node.node_id, n.node.get_content(), n.score) for n in kept] == [
        (n.node.node_id, n.node.get_content(), n.score) for n in nodes]
    assert all(reason in n.node.metadata["at2_skipped"] for n in kept)
    assert all("at2_skipped" not in n.node.get_content(MetadataMode.LLM) for n in kept)
    assert all("at2_skipped" not in n.node.metadata for n in nodes)  # inputs untouched
    return True


@pytest.fixture
def no_settings_llm(monkeypatch):
    from llama_index.core import Settings

    monkeypatch.setattr(Settings, "_llm", None)


def test_no_llm_configured_raises_with_the_fix(tiny_attributor, no_settings_llm):
    from at2_rag import ConfigurationError

    with pytest.raises(ConfigurationError, match="llm=.*Settings.llm.*drafter='attributor'"):
        AT2Postprocessor(attributor=tiny_attributor, top_n=2)


def test_llm_unset_after_construction_raises_at_query(tiny_attributor, llm, monkeypatch):
    from llama_index.core import Settings

    from at2_rag import ConfigurationError

    monkeypatch.setattr(Settings, "_llm", llm)
    pp = AT2Postprocessor(attributor=tiny_attributor, top_n=2)
    monkeypatch.setattr(Settings, "_llm", None)
    with pytest.raises(ConfigurationError):
        pp.postprocess_nodes(_nodes(), query_str=QUESTION)


def test_attributor_drafter_prunes_offline_without_any_llm(tiny_attributor, no_settings_llm):
    kept = AT2Postprocessor(attributor=tiny_attributor, drafter="attributor", top_n=2).postprocess_nodes(
        _nodes(), query_str=QUESTION)
    assert len(kept) == 2 and all("at2_skipped" not in n.node.metadata for n in kept)


class AuthenticationError(Exception):
    """Shaped like the OpenAI/Anthropic SDKs' error for a rejected key."""

    status_code = 401


class APITimeoutError(Exception):
    """Shaped like the SDKs' timeout error."""


def test_authentication_and_missing_package_raise_even_when_failing_open(tiny_attributor):
    for error in (AuthenticationError("Incorrect API key provided"),
                  ImportError("llama-index-llms-openai package not found")):
        class Rejected(AnswerBook):
            def complete(self, prompt, formatted=False, **kwargs):
                raise error

        with pytest.raises(type(error)):
            AT2Postprocessor(attributor=tiny_attributor, llm=Rejected(), top_n=1).postprocess_nodes(
                _nodes(), query_str=QUESTION)


def test_a_timeout_fails_open_with_at2_skipped(tiny_attributor, caplog):
    calls = []

    class Flaky(AnswerBook):
        def complete(self, prompt, formatted=False, **kwargs):
            calls.append(prompt)
            if len(calls) == 1:
                raise APITimeoutError("Request timed out.")
            return super().complete(prompt, formatted, **kwargs)

    pp = AT2Postprocessor(attributor=tiny_attributor, llm=Flaky(), top_n=1)
    nodes = _nodes()
    with caplog.at_level(logging.WARNING):
        first = pp.postprocess_nodes(nodes, query_str=QUESTION)
    assert _unchanged_but_marked(first, nodes, "APITimeoutError: Request timed out.")
    second = pp.postprocess_nodes(nodes, query_str=QUESTION)  # the next query prunes again
    assert len(second) == 1 and "at2_skipped" not in second[0].node.metadata

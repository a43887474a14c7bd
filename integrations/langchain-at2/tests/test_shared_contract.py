"""One contract for both integrations (at2_rag.context), on a tiny random attributor (seconds): the same option
names, defaults and checks; one shared attributor per process and settings (a pipeline loads the model once,
also from several threads); the same citation record and fail-open marks; the same handler records; the
options table printed once in each package README."""

import asyncio
import json
import threading
from pathlib import Path

import pytest
from langchain_at2 import (
    AT2CitationCallbackHandler,
    AT2CitationRunnable,
    AT2ContextRunnable,
    AT2DocumentCompressor,
    AT2Middleware,
)
from langchain_at2.agents import AT2MiddlewareOptions
from langchain_core.documents import Document
from llama_index.core import Document as LIDocument
from llama_index.core import VectorStoreIndex
from llama_index.core.base.response.schema import Response
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.at2 import (
    AT2CitationEventHandler,
    AT2CitationQueryEngine,
    AT2Postprocessor,
    cite_response,
)

import at2_rag.attributor as attributor_module
from at2_rag import AT2Attributor, ConfigurationError
from at2_rag.context import AttributorSettings, CitationOptions, ContextOptions, options_table
from conftest import KB_ANSWER as ANSWER
from conftest import KB_QUESTION as QUESTION
from conftest import KB_TEXTS as TEXTS

pytestmark = pytest.mark.timeout(120)

INTEGRATIONS = Path(__file__).resolve().parents[2]

CONTEXT_COMPONENTS = {
    "AT2Postprocessor": lambda a, **kw: AT2Postprocessor(attributor=a, **kw),
    "AT2DocumentCompressor": lambda a, **kw: AT2DocumentCompressor(attributor=a, **kw),
    "AT2ContextRunnable": lambda a, **kw: AT2ContextRunnable(attributor=a, **kw),
    "AT2Middleware": lambda a, **kw: AT2Middleware(attributor=a, reduce_context=True, **kw).options,
}


def _engine():
    index = VectorStoreIndex.from_documents([LIDocument(text=t, id_=k, metadata={"title": k}) for k, t in TEXTS.items()],
                                            embed_model=MockEmbedding(embed_dim=8))
    return index.as_query_engine(llm=MockLLM(), similarity_top_k=3)


CITATION_COMPONENTS = {
    "AT2CitationQueryEngine": lambda a, **kw: AT2CitationQueryEngine(_engine(), attributor=a, **kw).options,
    "AT2CitationEventHandler": lambda a, **kw: AT2CitationEventHandler(attributor=a, **kw),
    "AT2CitationRunnable": lambda a, **kw: AT2CitationRunnable(attributor=a, **kw),
    "AT2CitationCallbackHandler": lambda a, **kw: AT2CitationCallbackHandler(attributor=a, **kw).options,
    "AT2Middleware": lambda a, **kw: AT2Middleware(attributor=a, **kw).options,
}


def test_every_component_declares_the_shared_options():
    for component in (AT2Postprocessor, AT2DocumentCompressor, AT2ContextRunnable, AT2MiddlewareOptions):
        for name, field in ContextOptions.model_fields.items():
            assert component.model_fields[name].default == field.default, (component, name)
    for component in (AT2CitationEventHandler, AT2CitationRunnable, AT2MiddlewareOptions):
        for name, field in CitationOptions.model_fields.items():
            assert component.model_fields[name].default == field.default, (component, name)
    for component in (AT2Postprocessor, AT2DocumentCompressor, AT2ContextRunnable, AT2CitationRunnable,
                      AT2CitationEventHandler, AT2MiddlewareOptions):
        assert set(AttributorSettings.model_fields) <= set(component.model_fields), component


@pytest.mark.parametrize("name", sorted(CONTEXT_COMPONENTS))
@pytest.mark.parametrize("options", [
    {"drafter": "attributor", "top_n": 2, "fusion": False, "order": "score", "raise_on_error": True},
    {"drafter": "attributor", "granularity": "sentence", "budget": 0.3},
    {"drafter": "attributor", "threshold": 0.1, "max_tokens": 300},
])
def test_the_same_context_options_in_both_integrations(tiny_attributor, name, options):
    built = CONTEXT_COMPONENTS[name](tiny_attributor, **options)
    assert {k: getattr(built, k) for k in options} == options


@pytest.mark.parametrize("name", sorted(CITATION_COMPONENTS))
def test_the_same_citation_options_in_both_integrations(tiny_attributor, name):
    options = {"max_passages": 2, "relative_threshold": 0.3, "evidence_model": "raw", "raise_on_error": True}
    built = CITATION_COMPONENTS[name](tiny_attributor, **options)
    assert {k: getattr(built, k) for k in options} == options
    with pytest.raises(ConfigurationError, match="evidence_model"):
        CITATION_COMPONENTS[name](tiny_attributor, evidence_model="no-such-model")
    with pytest.raises(ConfigurationError, match="strictness"):
        CITATION_COMPONENTS[name](tiny_attributor, strictness="strict")   # the tiny attributor has no detector
    with pytest.raises(ValueError):
        CITATION_COMPONENTS[name](tiny_attributor, max_passages=0)


@pytest.mark.parametrize("name", sorted(CONTEXT_COMPONENTS))
def test_the_same_configuration_errors_in_both_integrations(tiny_attributor, name):
    build = CONTEXT_COMPONENTS[name]
    with pytest.raises(ConfigurationError, match="keep rule"):
        build(tiny_attributor, drafter="attributor", granularity="sentence")       # budget='auto', no keep rule
    with pytest.raises(ConfigurationError, match="granularity='passage'"):
        build(tiny_attributor, drafter="attributor", granularity="sentence", budget=0.3, top_n=2)
    with pytest.raises(ValueError):
        build(tiny_attributor, drafter="attributor", bogus=1)


@pytest.mark.parametrize("old, new, value", [("top_k", "top_n", 2), ("fuse_retriever_score", "fusion", False)])
@pytest.mark.parametrize("name", ["AT2Postprocessor", "AT2DocumentCompressor", "AT2ContextRunnable"])
def test_old_option_names_warn(tiny_attributor, name, old, new, value):
    with pytest.warns(DeprecationWarning, match=f"{old}=.*{new}="):
        built = CONTEXT_COMPONENTS[name](tiny_attributor, drafter="attributor", **{old: value})
    assert getattr(built, new) == value


def test_max_sources_warns_everywhere(tiny_attributor):
    for name, build in CITATION_COMPONENTS.items():
        with pytest.warns(DeprecationWarning, match="max_sources"):
            assert build(tiny_attributor, max_sources=2).max_passages == 2, name


@pytest.fixture
def counted_loads(tiny_attributor, monkeypatch):
    """AT2Attributor.from_pretrained counted (and answered by the tiny attributor), the shared cache empty."""
    loads = []

    def from_pretrained(cls, *args, **kwargs):
        loads.append(kwargs)
        return tiny_attributor

    monkeypatch.setattr(attributor_module, "_shared", {})
    monkeypatch.setattr(AT2Attributor, "from_pretrained", classmethod(from_pretrained))
    return loads


def test_a_pipeline_loads_the_model_once(counted_loads, tiny_attributor):
    postprocessor = AT2Postprocessor(drafter="attributor", top_n=2)
    engine = AT2CitationQueryEngine(_engine())
    handler = AT2CitationEventHandler()
    langchain_side = [AT2DocumentCompressor(drafter="attributor"), AT2ContextRunnable(), AT2CitationRunnable(),
                      AT2CitationCallbackHandler(), AT2Middleware()]
    assert len(counted_loads) == 1
    assert all(c.attributor is tiny_attributor for c in (postprocessor, engine, handler, *langchain_side))
    AT2CitationRunnable(max_new_tokens=24)           # other attributor settings: another (shared) instance
    AT2Postprocessor(drafter="attributor", max_new_tokens=24)
    assert counted_loads == [{}, {"max_new_tokens": 24}]
    given = AT2Postprocessor(attributor=tiny_attributor, drafter="attributor")   # attributor= still overrides
    assert given.attributor is tiny_attributor and len(counted_loads) == 2


def test_the_shared_attributor_is_built_once_across_threads(counted_loads):
    built, barrier = [], threading.Barrier(4)

    def build():
        barrier.wait()
        built.append(AT2CitationRunnable().attributor)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counted_loads) == 1 and len({id(a) for a in built}) == 1


def test_the_same_citation_record_in_both_integrations(tiny_attributor):
    nodes = [NodeWithScore(node=TextNode(text=t, id_=k, metadata={"title": k}), score=0.5) for k, t in TEXTS.items()]
    docs = [Document(page_content=t, id=k, metadata={"title": k}) for k, t in TEXTS.items()]
    llama = cite_response(tiny_attributor, QUESTION, Response(ANSWER, nodes), raise_on_error=True).metadata
    lang = AT2CitationRunnable(attributor=tiny_attributor, raise_on_error=True).invoke(
        {"question": QUESTION, "documents": docs, "answer": ANSWER})
    keys = ("citations", "cited_answer", "unsupported", "at2_scores")
    assert set(llama) == set(keys)
    assert json.loads(json.dumps({k: llama[k] for k in keys})) == json.loads(json.dumps({k: lang[k] for k in keys}))


def test_the_same_fail_open_mark_in_both_integrations(tiny_attributor, monkeypatch):
    def boom(*args, **kwargs):
        raise TimeoutError("attribution timed out")

    monkeypatch.setattr(tiny_attributor, "cite_batch", boom)
    monkeypatch.setattr(tiny_attributor, "attribute", boom)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=k), score=0.5) for k, t in TEXTS.items()]
    docs = [Document(page_content=t, id=k) for k, t in TEXTS.items()]
    reason = "TimeoutError: attribution timed out"
    assert cite_response(tiny_attributor, QUESTION, Response(ANSWER, nodes)).metadata["at2_skipped"] == reason
    assert AT2CitationRunnable(attributor=tiny_attributor).invoke(
        {"question": QUESTION, "documents": docs, "answer": ANSWER})["at2_skipped"] == reason
    kept_nodes = AT2Postprocessor(attributor=tiny_attributor, drafter="attributor").postprocess_nodes(
        nodes, query_str=QUESTION)
    kept_docs = AT2DocumentCompressor(attributor=tiny_attributor, drafter="attributor").compress_documents(
        docs, QUESTION)
    assert [n.node.metadata["at2_skipped"] for n in kept_nodes] == [d.metadata["at2_skipped"] for d in kept_docs] \
        == [reason] * 3


def test_the_same_handler_records_in_both_integrations(tiny_attributor):
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from llama_index.core.instrumentation import get_dispatcher

    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=t, id=k) for k, t in TEXTS.items()]

    handler = AT2CitationCallbackHandler(attributor=tiny_attributor)
    chain = ({"context": Fixed(), "question": lambda q: q}
             | ChatPromptTemplate.from_messages([("human", "{context} {question}")])
             | FakeListChatModel(responses=[ANSWER]))
    chain.invoke(QUESTION, {"callbacks": [handler]})

    events = AT2CitationEventHandler(attributor=tiny_attributor)
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(events)
    try:
        asyncio.run(_engine().aquery(QUESTION))
    finally:
        dispatcher.event_handlers.remove(events)
    assert handler.records and events.records
    assert set(handler.records[0]) == set(events.records[0]) == {
        "question", "answer", "run_id", "citations", "cited_answer", "unsupported", "at2_scores"}


@pytest.mark.parametrize("readme", ["langchain-at2/README.md", "llama-index-postprocessor-at2/README.md"])
def test_each_package_readme_prints_the_options_table_once(readme):
    text = (INTEGRATIONS / readme).read_text()
    assert text.count(options_table()) == 1

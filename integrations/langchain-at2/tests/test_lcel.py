"""LCEL without langchain-classic, on a tiny random attributor (seconds): AT2ContextRunnable prunes or compresses
{"question", "documents"[, "answer"]}, AT2CitationRunnable cites {"question", "documents", "answer"} with
langchain-core's standard Citation blocks; both compose with | and RunnableParallel. Sentence-level
compression (copies with the compressed text, original spans in metadata) for the runnable and the compressor."""

import asyncio
import subprocess
import sys
import textwrap

import pytest
from langchain_at2 import AT2CitationRunnable, AT2ContextRunnable, AT2DocumentCompressor, format_documents
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from at2_rag import ConfigurationError
from conftest import KB_ANSWER as ANSWER
from conftest import KB_QUESTION as QUESTION
from conftest import KB_TEXTS as TEXTS

pytestmark = pytest.mark.timeout(120)

PROMPT = ChatPromptTemplate.from_messages([("human", "{context}\n\nQuestion: {question}")])


def _docs():
    return [Document(page_content=t, metadata={"title": k, "source": f"kb/{k}.txt"}, id=k) for k, t in TEXTS.items()]


def _retriever():
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(_docs())
    return store.as_retriever(search_kwargs={"k": 3})


def _answer_chain(llm):
    return (RunnableLambda(lambda x: {"context": format_documents(x["documents"]), "question": x["question"]})
            | PROMPT | llm | StrOutputParser())


def _check_blocks(out, answer):
    """Standard Citation blocks: spans index the answer, cited_text is a sentence of the cited document."""
    by_id = {d.id: d for d in out["documents"]}
    assert out["citation_blocks"], out["cited_answer"]
    for block in out["citation_blocks"]:
        assert block["type"] == "citation" and block["id"].startswith("lc_")
        sentence = answer[block["start_index"]:block["end_index"]]
        assert sentence in [c["sentence"] for c in out["citations"]]
        doc = by_id[block["extras"]["document_id"]]
        assert block["cited_text"] in doc.page_content
        assert block["title"] == doc.metadata["title"] and block["url"] == doc.metadata["source"]


def _chain(attributor):
    return (RunnableParallel(question=RunnablePassthrough(), documents=_retriever())
            | AT2ContextRunnable(attributor=attributor, drafter="attributor", top_n=2)
            | RunnablePassthrough.assign(answer=_answer_chain(FakeListChatModel(responses=[ANSWER])))
            | AT2CitationRunnable(attributor=attributor))


def test_prune_answer_cite_chain_from_langchain_core_alone(tiny_attributor):
    out = _chain(tiny_attributor).invoke(QUESTION)
    assert out["answer"] == ANSWER and len(out["documents"]) == 2
    assert all("at2_score" in d.metadata for d in out["documents"])
    assert set(out) >= {"citations", "cited_answer", "unsupported", "at2_scores", "citation_blocks"}
    _check_blocks(out, ANSWER)
    again = asyncio.run(_chain(tiny_attributor).ainvoke(QUESTION))
    assert [d.id for d in again["documents"]] == [d.id for d in out["documents"]]
    assert again["cited_answer"] == out["cited_answer"]


def test_the_papers_loop_in_lcel(tiny_attributor):
    """Answer with everything, keep what the answer used, answer again, cite the second answer."""
    first = FakeListChatModel(responses=[ANSWER])
    second = FakeListChatModel(responses=["Champollion deciphered it in 1822."])
    chain = (RunnableParallel(question=RunnablePassthrough(), documents=_retriever())
             | RunnablePassthrough.assign(answer=_answer_chain(first))
             | AT2ContextRunnable(attributor=tiny_attributor, top_n=1)     # attributes the given answer: no LLM
             | RunnablePassthrough.assign(answer=_answer_chain(second))
             | AT2CitationRunnable(attributor=tiny_attributor))
    out = chain.invoke(QUESTION)
    assert len(out["documents"]) == 1 and out["answer"] == "Champollion deciphered it in 1822."
    assert len(out["citations"]) == 1


def test_parallel_branches_share_the_attributor(tiny_attributor):
    both = RunnableParallel(
        pruned=AT2ContextRunnable(attributor=tiny_attributor, drafter="attributor", top_n=1),
        cited=AT2CitationRunnable(attributor=tiny_attributor))
    out = both.invoke({"question": QUESTION, "documents": _docs(), "answer": ANSWER})
    assert len(out["pruned"]["documents"]) == 1 and out["cited"]["citations"]


def test_an_ai_message_answer_comes_back_with_annotations(tiny_attributor):
    message = AIMessage(content=ANSWER, id="m1")
    out = AT2CitationRunnable(attributor=tiny_attributor).invoke(
        {"question": QUESTION, "documents": _docs(), "answer": message})
    cited = out["answer"]
    assert isinstance(cited, AIMessage) and cited.id == "m1" and cited.text == ANSWER
    annotations = [a for block in cited.content_blocks for a in block.get("annotations", [])]
    assert annotations == out["citation_blocks"]
    assert cited.response_metadata["at2"]["citations"] == out["citations"]
    assert message.content == ANSWER  # the input message is untouched


def test_context_runnable_needs_an_answer_or_an_llm(tiny_attributor):
    runnable = AT2ContextRunnable(attributor=tiny_attributor)    # drafter='llm', no llm: fine at construction
    with pytest.raises(ConfigurationError, match="answer key"):
        runnable.invoke({"question": QUESTION, "documents": _docs()})
    drafted = AT2ContextRunnable(attributor=tiny_attributor, llm=FakeListChatModel(responses=[ANSWER]), top_n=1)
    assert len(drafted.invoke({"question": QUESTION, "documents": _docs()})["documents"]) == 1


def test_context_runnable_fails_open(tiny_attributor, monkeypatch):
    runnable = AT2ContextRunnable(attributor=tiny_attributor, top_n=1)

    def boom(*args, **kwargs):
        raise RuntimeError("attributor down")

    monkeypatch.setattr(tiny_attributor, "attribute", boom)
    out = runnable.invoke({"question": QUESTION, "documents": _docs(), "answer": ANSWER})
    assert [d.page_content for d in out["documents"]] == list(TEXTS.values())
    assert all("attributor down" in d.metadata["at2_skipped"] for d in out["documents"])


def test_citation_runnable_fails_open_marked_skipped(tiny_attributor, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("attributor down")

    monkeypatch.setattr(tiny_attributor, "cite_batch", boom)
    out = AT2CitationRunnable(attributor=tiny_attributor).invoke(
        {"question": QUESTION, "documents": _docs(), "answer": ANSWER})
    assert out["citations"] == [] and out["cited_answer"] == ANSWER and out["citation_blocks"] == []
    assert out["at2_skipped"].startswith("RuntimeError: attributor down")


@pytest.mark.parametrize("component", ["runnable", "compressor"])
def test_sentence_granularity_keeps_compressed_copies_with_original_spans(tiny_attributor, component):
    docs = _docs()
    if component == "runnable":
        runnable = AT2ContextRunnable(attributor=tiny_attributor, granularity="sentence", budget=0.3)
        kept = runnable.invoke({"question": QUESTION, "documents": docs, "answer": ANSWER})["documents"]
    else:
        compressor = AT2DocumentCompressor(attributor=tiny_attributor, granularity="sentence", budget=0.3,
                                           llm=FakeListChatModel(responses=[ANSWER]))
        kept = compressor.compress_documents(docs, QUESTION)
    assert kept and sum(len(d.page_content) for d in kept) < sum(len(t) for t in TEXTS.values())
    for doc in kept:
        original = TEXTS[doc.id]
        spans = doc.metadata["at2_kept_spans"]
        assert spans and "at2_score" in doc.metadata
        for start, end in spans:
            assert original[start:end].strip() in doc.page_content
    assert [d.page_content for d in docs] == list(TEXTS.values())  # inputs untouched


def test_no_langchain_classic_needed():
    """The LCEL runnables import and run with langchain-classic made unimportable."""
    probe = textwrap.dedent("""
        import sys
        sys.modules["langchain_classic"] = None
        from langchain_at2 import AT2CitationRunnable, AT2ContextRunnable, AT2Middleware
        import langchain_at2.agents, langchain_at2.compressors, langchain_at2.citations, langchain_at2.callbacks
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr

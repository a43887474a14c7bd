"""Documents <-> at2_rag context items, kept-document copies, and citation records -> standard Citation blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.messages.content import Citation, create_citation

from at2_rag.context import SCORE_KEY, SKIPPED_KEY, SPANS_KEY, ContextItem, RankedContext, quote_span

DOCUMENT_SEPARATOR = "\n\n"  # what create_retriever_tool joins documents with


def document_items(documents: Sequence[Document], score_key: str | None = None,
                   scores: Sequence[float] | None = None) -> list[ContextItem]:
    """Documents as context items; the retriever's score is ``scores[i]`` or ``metadata[score_key]`` when present."""
    items = []
    for i, doc in enumerate(documents):
        text = getattr(doc, "page_content", None)
        metadata = doc.metadata if isinstance(doc.metadata, dict) else {}
        score = scores[i] if scores is not None else metadata.get(score_key) if score_key else None
        items.append(ContextItem(id=str(doc.id or i), text=text if isinstance(text, str) else None,
                                 title=metadata.get("title"),
                                 retriever_score=float(score) if isinstance(score, (int, float)) else None))
    return items


def kept_documents(documents: Sequence[Document], ranked: RankedContext) -> list[Document]:
    """The kept documents, as copies with ``metadata["at2_score"]``; with granularity='sentence' the copy's
    ``page_content`` is the compressed text and ``metadata["at2_kept_spans"]`` holds the [start, end) of each
    kept sentence in the original ``page_content``. Documents without text come back as they were."""
    out = []
    for i in ranked.kept:
        doc = documents[i]
        if i not in ranked.scores:
            out.append(doc)
            continue
        metadata: dict[str, Any] = {**doc.metadata, SCORE_KEY: ranked.at2_scores[i]}
        update: dict[str, Any] = {"metadata": metadata}
        if i in ranked.texts:
            metadata[SPANS_KEY] = [list(span) for span in ranked.spans[i]]
            update["page_content"] = ranked.texts[i]
        out.append(doc.model_copy(update=update))
    return out


def skipped_documents(documents: Sequence[Document], reason: str) -> list[Document]:
    """Fail-open: every document, as a copy with ``metadata["at2_skipped"]`` = the reason."""
    return [d.model_copy(update={"metadata": {**d.metadata, SKIPPED_KEY: reason}}) for d in documents]


def format_documents(documents: Sequence[Document], separator: str = DOCUMENT_SEPARATOR) -> str:
    """Documents as one context string, as ``create_retriever_tool`` formats them (page contents, blank lines)."""
    return separator.join(d.page_content for d in documents)


def _title(doc: Document) -> str | None:
    metadata = doc.metadata if isinstance(doc.metadata, dict) else {}
    for key in ("title", "source", "url"):
        if metadata.get(key) not in (None, ""):
            return str(metadata[key])
    return None


def _url(doc: Document) -> str | None:
    metadata = doc.metadata if isinstance(doc.metadata, dict) else {}
    for key in ("source", "url"):
        if metadata.get(key) not in (None, ""):
            return str(metadata[key])
    return None


def citation_blocks(record: dict[str, Any], documents: Sequence[Document]) -> list[Citation]:
    """A citation record as langchain-core's standard ``Citation`` blocks, one per (supported answer sentence,
    cited document), in answer order: ``start_index`` / ``end_index`` = the sentence's span in the answer text,
    ``cited_text`` = the quoted sentence of the document (of the original, for a compressed copy), ``title`` = its ``title`` metadata (else source or
    url), ``url`` = its ``source`` (or ``url``) metadata; ``extras``: ``document_id``, ``passage_number`` (the
    ``[n]`` marker), ``support`` (the calibrated probability that the context supports the sentence) and
    ``evidence`` (the quote's evidence score)."""
    blocks = []
    for citation in record.get("citations") or []:
        if not citation["supported"]:
            continue
        for passage in citation["passages"]:
            doc = documents[passage["index"]]
            quote = passage["quote"]
            if SPANS_KEY in (doc.metadata or {}):  # a compressed copy: the sentence without the joiner's mark
                quote = quote[slice(*quote_span(quote))]
            blocks.append(create_citation(
                url=_url(doc), title=_title(doc), start_index=citation["start"], end_index=citation["end"],
                cited_text=quote, document_id=doc.id if doc.id is not None else passage["id"],
                passage_number=passage["number"], support=citation["support"], evidence=passage["score"]))
    return blocks


def with_citations(message: AIMessage, blocks: Sequence[Citation], record: dict[str, Any]) -> AIMessage:
    """A copy of ``message`` whose text blocks carry the citations as ``annotations`` (each on the text block
    its span starts in, indices relative to that block) and whose ``response_metadata["at2"]`` holds the
    citation record. The text is unchanged."""
    content = message.content
    parts: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else \
        [{"type": "text", "text": p} if isinstance(p, str) else dict(p) for p in content]
    offsets, at = [], 0
    for k, part in enumerate(parts):
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            offsets.append((k, at, at + len(part["text"])))
            at += len(part["text"])
    for block in blocks:
        start = block.get("start_index", 0)
        for k, lo, hi in offsets:
            if lo <= start < hi or (k, lo, hi) == offsets[-1]:
                shifted = {**block, "start_index": start - lo, "end_index": min(block.get("end_index", hi), hi) - lo}
                parts[k] = {**parts[k], "annotations": [*parts[k].get("annotations", []), shifted]}
                break
    metadata = {**message.response_metadata, "at2": record}
    return message.model_copy(update={"content": parts, "response_metadata": metadata})

"""Sources: the units of context a response is attributed to, and how raw inputs become them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Union

from pydantic import BaseModel, Field

from .errors import EmptyInputError


class Source(BaseModel):
    """One attributable piece of context (a passage, a sentence, ...)."""

    id: str = Field(description="Stable identifier (e.g. a node or document id).")
    text: str = Field(description="The text the model reads.")
    title: str | None = Field(default=None, description="Optional title shown before the text.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Caller data carried through untouched.")


SourceLike = Union[str, tuple[str, str], Source]

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"')\]]*\s+(?=\S)")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "u.s", "inc", "co", "mt"}


def _ends_in_abbreviation(text: str) -> bool:
    """True if ``text`` ends with an initial ("W.") or a common abbreviation ("Dr."), not a sentence."""
    words = text.rstrip("\"')]").split()
    if not words or not words[-1].endswith("."):
        return False
    word = words[-1][:-1].lstrip("(\"'")
    return (len(word) == 1 and word.isupper()) or word.lower() in _ABBREVIATIONS


def to_sources(items: Sequence[SourceLike] | Iterable[SourceLike]) -> list[Source]:
    """Normalise plain strings, ``(title, text)`` pairs or ``Source`` objects to validated ``Source`` objects."""
    sources: list[Source] = []
    for i, item in enumerate(items):
        if isinstance(item, Source):
            source = item
        elif isinstance(item, str):
            source = Source(id=str(i), text=item)
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
            source = Source(id=str(i), title=item[0], text=item[1])
        else:
            raise TypeError(f"source {i} is a {type(item).__name__}; expected str, (title, text) or Source")
        if not source.text.strip():
            raise EmptyInputError(f"source {i} ({source.id!r}) has no text")
        sources.append(source)
    if not sources:
        raise EmptyInputError("no sources given: attribution needs at least one source")
    return sources


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (rule-based, any Unicode; whitespace between is left out)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() + len(match.group(0).rstrip())
        if _ends_in_abbreviation(text[start:end]):
            continue
        if text[start:end].strip():
            spans.append(_strip_span(text, start, end))
        start = match.end()
    if text[start:].strip():
        spans.append(_strip_span(text, start, len(text)))
    return spans


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sentences(sources: Sequence[SourceLike]) -> list[Source]:
    """Split each source into sentence sources; each keeps its parent's title and id in metadata."""
    out: list[Source] = []
    for parent_index, parent in enumerate(to_sources(sources)):
        for j, (a, b) in enumerate(sentence_spans(parent.text)):
            out.append(
                Source(
                    id=f"{parent.id}:{j}",
                    text=parent.text[a:b],
                    title=parent.title,
                    metadata={**parent.metadata, "parent_id": parent.id, "parent_index": parent_index},
                )
            )
    return out

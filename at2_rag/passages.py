"""Sources: the units of context a response is attributed to, and how raw inputs become them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Union

from pydantic import BaseModel, Field, model_validator

from .errors import EmptyInputError, InvalidInputError
from .validation import check_list, check_text, check_unicode


class Passage(BaseModel):
    """One attributable piece of context (a passage, a sentence, ...)."""

    id: str = Field(description="Stable identifier (e.g. a node or document id).")
    text: str = Field(description="The text the model reads.")
    title: str | None = Field(default=None, description="Optional title shown before the text.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Caller data carried through untouched.")
    sentences: list[tuple[int, int]] | None = Field(
        default=None, description="Char spans of the sentences inside ``text`` when the caller has them "
        "(e.g. a dataset's own split); None splits by rule (``sentence_spans``).")

    @model_validator(mode="after")
    def _check_sentences(self) -> Passage:
        if self.sentences is not None:
            previous = 0
            for a, b in self.sentences:
                if not (previous <= a < b <= len(self.text)):
                    raise ValueError(f"sentence spans must be ordered, non-empty and inside the text: {(a, b)}")
                previous = b
            if not self.sentences:
                raise ValueError("sentences, when given, must hold at least one span")
        return self

    def sentence_spans(self) -> list[tuple[int, int]]:
        """Char spans of this source's sentences (the caller's, or split by rule; the whole text at least)."""
        return list(self.sentences) if self.sentences else (sentence_spans(self.text) or [(0, len(self.text))])


PassageLike = Union[str, tuple[str, str], Passage]

_SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=\S)"  # Latin full stop, then space
    r"|(?<=[。！？])[\"')\]」』]*\s*(?=\S)"  # CJK full stop: no space needed
    r"|(?<=[a-z0-9][.!?])(?=[A-Z][a-z])"  # "Paris.It was": a missing space after a lower-case word
)
# Words that end in a full stop without ending a sentence. Not "no": "The answer is no." ends one.
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "u.s", "inc", "co", "mt",
                  "ltd", "corp", "bros", "ave", "vol", "vols", "pp", "fig", "approx", "dept", "gen", "gov", "lt", "col",
                  "sgt", "capt", "rev",
                  "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
# "S.M", "U.S", "J.R.R"; not "a.m" / "p.m", which end sentences as often as not
_INITIALISM = re.compile(r"[A-Z](?:\.[A-Z])+")


def _ends_in_abbreviation(text: str) -> bool:
    """True if ``text`` ends with an initial ("W."), an initialism ("S.M.") or a common abbreviation ("Dr.",
    "Vol."), not a sentence."""
    words = text.rstrip("\"')]").split()
    if not words or not words[-1].endswith("."):
        return False
    word = words[-1][:-1].lstrip("(\"'")
    return ((len(word) == 1 and word.isupper()) or word.lower() in _ABBREVIATIONS
            or _INITIALISM.fullmatch(word) is not None)


def to_passages(items: Sequence[PassageLike]) -> list[Passage]:
    """Normalise plain strings, ``(title, text)`` pairs or ``Passage`` objects to validated ``Passage`` objects.

    A bare ``str``, ``bytes``, ``dict`` or ``None`` raises ``InvalidInputError`` (it is not a list of passages).
    """
    passages: list[Passage] = []
    for i, item in enumerate(check_list(items, "passages")):
        if isinstance(item, Passage):
            source = item
        elif isinstance(item, str):
            source = Passage(id=str(i), text=item)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            source = Passage(id=str(i), title=item[0], text=item[1])
        else:
            raise InvalidInputError(f"source {i} is a {type(item).__name__}; expected str, (title, text) or Passage")
        check_text(source.text, f"source {i} ({source.id!r}) text")
        if source.title:
            check_unicode(source.title, f"source {i} title")
        passages.append(source)
    if not passages:
        raise EmptyInputError("no passages given: attribution needs at least one source")
    return passages


_LIST_MARKER = re.compile(r"\s*(?:\(?(?:\d{1,3}|[A-Za-z]|[ivxlcIVXLC]{1,5})[.)]|[-*\u2022\u2023\u25e6\u2013\u2014])\s*")
_REFERENCE = re.compile(r"\s*(?:\((?:[^()]{0,40})\)|\[[^\[\]]{0,20}\])[.,;]?\s*")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (rule-based, any Unicode; whitespace between is left out).

    A line break ends a sentence; a list marker ("2.", "b)", "-", "•") stays with its item, and a trailing
    reference such as "(Passage 1)" or "[3]" stays with the sentence before it. Decimals ("3.5"), initials
    and common abbreviations do not end a sentence.
    """
    spans: list[tuple[int, int]] = []
    line_start = 0
    for line in text.splitlines(keepends=True):
        spans.extend(_line_spans(text, line_start, line_start + len(line.rstrip("\r\n"))))
        line_start += len(line)
    return spans


def _line_spans(text: str, start: int, stop: int) -> list[tuple[int, int]]:
    """Sentences of one line ``text[start:stop]``, list markers and trailing references attached."""
    pieces: list[tuple[int, int]] = []
    line = text[start:stop]
    cursor = 0
    for match in _SENTENCE_END.finditer(line):
        end = match.start() + len(match.group(0).rstrip())
        if _ends_in_abbreviation(line[cursor:end]):
            continue
        if line[cursor:end].strip():
            pieces.append((cursor, end))
        cursor = match.end()
    if line[cursor:].strip():
        pieces.append((cursor, len(line)))
    merged: list[tuple[int, int]] = []
    for a, b in pieces:
        if merged and (_LIST_MARKER.fullmatch(line[merged[-1][0] : merged[-1][1]]) or _REFERENCE.fullmatch(line[a:b])):
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return [_strip_span(text, start + a, start + b) for a, b in merged]


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end

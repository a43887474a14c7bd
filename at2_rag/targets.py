"""Targets: the response, split into sentences, each mapped to the token rows that predict it."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from .errors import InvalidInputError
from .passages import sentence_spans


class Target(BaseModel):
    """A response sentence and the response tokens it covers."""

    text: str
    start: int
    end: int
    token_start: int
    token_end: int


def token_char_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """Char offset where each response token ends in the decoded response (decoding prefixes: exact for any
    tokenizer)."""
    return [len(tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)) for i in range(len(ids))]


def split_targets(tokenizer, response_ids: Sequence[int], sentences: bool = True, text: str | None = None,
                  ends: Sequence[int] | None = None) -> tuple[str, list[Target]]:
    """Split the response into sentence targets (or one whole-response target).

    A generated response is decoded; a given one keeps the caller's exact ``text`` with each token's char
    end (``ends``, from the tokenizer's offsets), so text the tokenizer normalises away is not lost.
    """
    if text is None or ends is None:
        text = tokenizer.decode(list(response_ids), skip_special_tokens=True)
        ends = token_char_ends(tokenizer, response_ids)
    spans = sentence_spans(text) if sentences else [(0, len(text))]
    spans = spans or [(0, len(text))]
    targets = []
    for i, (a, b) in enumerate(spans):
        first = next((t for t, e in enumerate(ends) if e > a), len(ends) - 1)
        last = next((t for t, e in enumerate(ends) if e >= b), len(ends) - 1)
        if i + 1 == len(spans):
            last = len(ends) - 1
        targets.append(Target(text=text[a:b], start=a, end=b, token_start=first, token_end=max(last, first) + 1))
    return text, targets


def span_target(text: str, ends: Sequence[int], span: Sequence[int]) -> Target:
    """One target for chars ``[start, end)`` of the response: the tokens that overlap it (token ``t`` covers
    chars ``ends[t-1]..ends[t]``), so a phrase is attributed from the rows that predict it."""
    if (not isinstance(span, (tuple, list)) or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
        raise InvalidInputError(f"target must be a (start, end) pair of character offsets, not {span!r}")
    start, end = span
    if not 0 <= start < end <= len(text):
        raise InvalidInputError(f"target {tuple(span)} is not a non-empty range inside the response "
                                f"(0..{len(text)})")
    if not text[start:end].strip():
        raise InvalidInputError(f"target {tuple(span)} covers only whitespace: {text[start:end]!r}")
    first = next(t for t, e in enumerate(ends) if e > start)
    last = next((t for t, e in enumerate(ends) if e >= end), len(ends) - 1)
    return Target(text=text[start:end], start=start, end=end, token_start=first, token_end=max(last, first) + 1)

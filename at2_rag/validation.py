"""Checks at the public boundary: wrong types and values raise a documented error before any model work."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import EmptyInputError, InvalidInputError


def check_text(value: Any, what: str, allow_none: bool = False) -> str | None:
    """A non-empty ``str`` that can be encoded as UTF-8 (no lone surrogates)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a str, not {type(value).__name__}")
    check_unicode(value, what)
    if not value.strip():
        raise EmptyInputError(f"{what} is empty")
    return value


def check_unicode(value: str, what: str) -> None:
    """Text the tokenizer can read: encodable as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid Unicode text (lone surrogate at {exc.start})") from exc


def check_list(value: Any, what: str) -> list:
    """A list-like of items: a list or tuple (a str, bytes, dict, set or None is refused, not iterated)."""
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, (list, tuple)):
        raise InvalidInputError(f"{what} must be a list, not {type(value).__name__}")
    return list(value)


def check_int(value: Any, what: str, minimum: int = 1, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an int, not {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{what} must be at least {minimum}, not {value}")
    return value


def check_float(value: Any, what: str, low: float | None = None, high: float | None = None,
                allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidInputError(f"{what} must lie in [{low}, {high}], not {value}")
    return float(value)


def check_batch(queries: Any, passages: Any, responses: Any) -> tuple[list, list, list]:
    """Three parallel lists of one length (``responses`` may be None: generate every answer)."""
    queries, passages = check_list(queries, "queries"), check_list(passages, "passages (one list per query)")
    responses = [None] * len(queries) if responses is None else check_list(responses, "responses")
    if not (len(queries) == len(passages) == len(responses)):
        raise InvalidInputError(f"queries, passages and responses must have one length, not "
                                f"{len(queries)}, {len(passages)} and {len(responses)}")
    if not queries:
        raise EmptyInputError("no queries given")
    return queries, passages, responses


def check_prune(top_n: Any, threshold: Any, max_tokens: Any) -> None:
    check_int(top_n, "top_n")
    check_float(threshold, "threshold")
    check_int(max_tokens, "max_tokens")


def check_cite(max_passages: Any, relative_threshold: Any) -> None:
    check_int(max_passages, "max_passages", allow_none=False)
    check_float(relative_threshold, "relative_threshold", 0.0, 1.0, allow_none=False)

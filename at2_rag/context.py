"""What both framework integrations share: one set of options (names, defaults, checks), the attributor they
default to, pruning / compressing / citing a framework's retrieved items by their positions, the citation
record they attach, and the fail-open rule.

Items are (text, title) pairs in the framework's order; items without text (images, empty nodes) are not
scored and always kept. Scores, kept positions and citation numbers all refer to the caller's positions.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .attributor import AT2Attributor
from .cite import render
from .compress import check_budget
from .errors import ConfigurationError, EmptyInputError, InvalidInputError
from .faults import is_configuration_error, skip_reason
from .passages import Passage
from .results import Attribution, CitedResponse, CompressedContext

logger = logging.getLogger(__name__)

DRAFT_PROMPT = (
    "Context information is below.\n---------------------\n{context}\n---------------------\n"
    "Given the context information and not prior knowledge, answer the query.\nQuery: {question}\nAnswer: "
)

# Metadata keys every integration writes (on kept item copies, responses, messages and records).
SCORE_KEY = "at2_score"            # AT2 score of a kept item
SPANS_KEY = "at2_kept_spans"       # granularity="sentence": [start, end) of each kept sentence in the original text
SKIPPED_KEY = "at2_skipped"        # why AT2 left items or an answer as they were (fail-open)
JOINER = " … "                     # what joins the kept sentences of a compressed item

# Old option names that keep working for one release, with a DeprecationWarning.
RENAMED_OPTIONS = {"top_k": "top_n", "fuse_retriever_score": "fusion", "max_sources": "max_passages",
                   "evidence": "evidence_model"}
ATTRIBUTOR_DEFAULTS = {"model": None, "coefficients": None, "max_new_tokens": 64, "truncate": False}


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside pydantic, at2-rag and the integrations (the user's call)."""
    internal = {"pydantic", "at2_rag", "llama_index", "langchain_at2", "langchain_core"}
    frame, level = sys._getframe(1), 0
    while frame is not None:
        if level and frame.f_globals.get("__name__", "").split(".")[0] not in internal:
            return level + 1
        frame, level = frame.f_back, level + 1
    return 1


class _Options(BaseModel):
    """Accepts the old option names (with a DeprecationWarning) and rejects unknown ones."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for old, new in RENAMED_OPTIONS.items():
            if old in data and new in cls.model_fields:
                if new in data:
                    raise InvalidInputError(f"{cls.__name__}: give {new}=, not both {new}= and {old}=")
                warnings.warn(f"{cls.__name__}({old}=...) is deprecated; use {new}=...", DeprecationWarning,
                              stacklevel=_caller_level())
                data = {new if k == old else k: v for k, v in data.items()}
        return data


class AttributorSettings(_Options):
    """Which attributor a component builds when it is not given one (``attributor=`` overrides all four).
    Components with the same settings share one instance per process (``AT2Attributor.shared``)."""

    model: str | None = Field(default=None, description="Attributor model: hub id, local dir or .gguf (None: "
                              "the bundled SmolLM2-135M-Instruct).")
    coefficients: str | None = Field(default=None, description="AT2 passage coefficient file (None: shipped).")
    max_new_tokens: int = Field(default=64, ge=1, description="Length of the attributor's own draft.")
    truncate: bool = Field(default=False, description="Trim the longest items when the attributor's window is "
                           "full (else the query fails open).")


class ContextOptions(_Options):
    """What a pruning / compressing component keeps (LlamaIndex ``AT2Postprocessor``, LangChain
    ``AT2DocumentCompressor``, ``AT2ContextRunnable`` and ``AT2Middleware``)."""

    drafter: Literal["llm", "attributor"] = Field(
        default="llm", description="Who writes the answer AT2 attributes to choose what to keep: `llm` (your LLM "
        "over every retrieved item; a component without one raises `ConfigurationError`) or `attributor` (the "
        "attributor's own small model: local, no LLM call, weaker).")
    granularity: Literal["passage", "sentence"] = Field(
        default="passage", description="`passage`: keep whole items; `sentence`: keep, inside them, the sentences "
        "the answer relies on (kept items are copies holding the compressed text).")
    top_n: int | None = Field(default=3, ge=1, description="`passage`: keep at most this many items.")
    threshold: float | Literal["auto"] | None = Field(
        default=None, description="`passage`: keep items whose ranking score reaches this; `auto`: as many as the "
        "calibrated keep rule says the answer needs.")
    max_tokens: int | None = Field(default=None, ge=1, description="`passage`: keep the best items within this "
                                   "many tokens.")
    budget: float | int | Literal["auto"] = Field(
        default="auto", description="`sentence`: `auto` (the calibrated keep rule), a share of the items' tokens "
        "(`0.3`) or a token count (`400`).")
    fusion: bool = Field(default=True, description="Fuse AT2's ranking with the retriever's scores (weights "
                         "calibrated on HotpotQA train rows); AT2 alone when an item has no score.")
    order: Literal["original", "score"] = Field(default="original", description="Order of the kept items: "
                                                "`original` (the retriever's) or `score` (best first).")
    raise_on_error: bool = Field(default=False, description="Raise instead of failing open.")

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"threshold must be finite, not {value}")
        return value

    @field_validator("budget")
    @classmethod
    def _budget(cls, value):
        return check_budget(value)


class CitationOptions(_Options):
    """How a citing component cites (LlamaIndex ``AT2CitationQueryEngine``, ``AT2CitationEventHandler``,
    ``cite_response``, ``cite_message``; LangChain ``AT2CitationRunnable``, ``AT2CitationCallbackHandler``,
    ``AT2Middleware``)."""

    max_passages: int = Field(default=3, ge=1, description="Cite at most this many items per answer sentence.")
    relative_threshold: float = Field(default=0.5, ge=0, le=1, description="Cite items whose evidence reaches this "
                                      "share of the best item's.")
    evidence_model: str | None = Field(default=None, description="Evidence model that picks what to cite: "
                                       "`hybrid`, `at2`, `hybrid-embedding` or `raw` (None: the calibration's "
                                       "default).")
    strictness: str | None = Field(default=None, description="Operating point of the support verdict: "
                                   "`lenient`, `balanced` or `strict` (None: the detector's default).")
    raise_on_error: bool = Field(default=False, description="Raise instead of failing open.")


def attributor_settings(attributor: AT2Attributor | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments with the given attributor's settings filled in (so a component's settings describe
    the attributor it really uses, e.g. when it is serialised)."""
    if attributor is not None:
        kwargs = dict(kwargs)
        kwargs.setdefault("model", attributor.lm.source)
        kwargs.setdefault("max_new_tokens", attributor.pipeline.max_new_tokens)
        kwargs.setdefault("truncate", attributor.pipeline.truncate)
    return kwargs


def default_attributor(settings: AttributorSettings | None = None) -> AT2Attributor:
    """The process-wide shared attributor for these settings: every component built without ``attributor=``
    and with the same settings gets the same instance, so a pipeline loads the model once."""
    values = {} if settings is None else {k: getattr(settings, k) for k in ATTRIBUTOR_DEFAULTS}
    return AT2Attributor.shared(**{k: v for k, v in values.items() if v != ATTRIBUTOR_DEFAULTS[k]})


def check_context_options(attributor: AT2Attributor, options: ContextOptions) -> None:
    """Options that fit together (passage options with ``granularity='passage'``, ``budget`` with
    ``'sentence'``) and that the attributor can serve (a keep rule for ``budget='auto'`` and
    ``threshold='auto'``). Raises ``ConfigurationError``: components call it at construction."""
    given = options.model_fields_set
    passage_only = [k for k in ("top_n", "threshold", "max_tokens") if k in given and getattr(options, k) is not None]
    if options.granularity == "sentence" and passage_only:
        raise ConfigurationError(f"{passage_only} apply to granularity='passage'; with granularity='sentence' give "
                                 "budget= ('auto', a share of tokens such as 0.3, or a token count such as 400)")
    if options.granularity == "passage" and "budget" in given:
        raise ConfigurationError("budget applies to granularity='sentence'; with granularity='passage' give top_n, "
                                 "threshold or max_tokens")
    if options.granularity == "sentence" and options.budget == "auto" and attributor.keep_rule is None:
        raise ConfigurationError("budget='auto' needs a keep rule; none is loaded for this model (give a share of "
                                 "tokens such as budget=0.3 or a token count such as budget=400)")
    if options.granularity == "passage" and options.threshold == "auto" and attributor.keep_rule is None:
        raise ConfigurationError("threshold='auto' needs a keep rule; none is loaded for this model (give top_n or "
                                 "a numeric threshold)")


def check_citation_options(attributor: AT2Attributor, options: CitationOptions) -> None:
    """The evidence model and strictness must exist for this attributor. Raises ``ConfigurationError``."""
    try:
        if options.evidence_model is not None:
            attributor.pipeline.choose_evidence_model(options.evidence_model)
        if options.strictness is not None:
            if attributor.detector is None:
                raise ConfigurationError("strictness needs a support detector; none is loaded for this model")
            attributor.detector.threshold(options.strictness)
    except ConfigurationError:
        raise
    except InvalidInputError as exc:
        raise ConfigurationError(str(exc)) from exc


def fail_open(exc: BaseException, raise_on_error: bool, component: str, query: Any, what: str) -> str:
    """The fail-open rule every component follows: re-raise a configuration error (one that would recur on
    every query: a missing package, a rejected key, an unknown model, the attributor's own configuration) or
    anything with ``raise_on_error``; otherwise log a warning naming the query and return the reason for
    ``at2_skipped``."""
    if raise_on_error or is_configuration_error(exc):
        raise exc
    logger.warning("%s: attribution failed for query %r (%s: %s); %s", component, query, type(exc).__name__, exc,
                   what)
    return skip_reason(exc)


class ContextItem(BaseModel):
    """One retrieved item as the integrations see it."""

    id: str
    text: str | None = None
    title: Any = None
    retriever_score: float | None = None


class RankedContext(BaseModel):
    """Result of pruning or compressing retrieved items for one query (per call: nothing is kept on the
    component)."""

    kept: list[int] = Field(description="Positions kept, in the caller's order, or by score with order='score' "
                            "(unscored items included).")
    scores: dict[int, float] = Field(description="Ranking score per scored position (AT2, or fused).")
    at2_scores: dict[int, float] = Field(description="AT2 score per scored position.")
    unscored: list[int] = Field(description="Positions without text: kept, not scored.")
    fused: bool = Field(description="Whether the retriever's scores were fused into ``scores``.")
    draft: str = Field(description="The answer that was attributed.")
    granularity: Literal["passage", "sentence"] = "passage"
    texts: dict[int, str] = Field(default_factory=dict, description="granularity='sentence': the compressed text "
                                  "of each kept scored position.")
    spans: dict[int, list[tuple[int, int]]] = Field(default_factory=dict, description="granularity='sentence': "
                                                    "[start, end) of each kept sentence in the item's text.")
    compressed: CompressedContext | None = None
    attribution: Attribution


def _sources(items: Sequence[ContextItem]) -> tuple[list[int], list[Passage]]:
    positions, passages = [], []
    for i, item in enumerate(items):
        if isinstance(item.text, str) and item.text.strip():
            title = None if item.title is None else str(item.title).strip() or None
            positions.append(i)
            passages.append(Passage(id=item.id, text=item.text, title=title))
    if not passages:
        raise EmptyInputError("no retrieved item has text to attribute")
    return positions, passages


def draft_context(items: Sequence[ContextItem]) -> str:
    """The retrieved texts as one context block for a drafting prompt (titles first, as the attributor reads them)."""
    return "\n\n".join(f"{item.title}\n{item.text}" if item.title else item.text
                       for item in items if isinstance(item.text, str) and item.text.strip())


def rank_context(attributor: AT2Attributor, query: str, items: Sequence[ContextItem], draft: str | None,
                 top_n: int | None = None, threshold: float | str | None = None, max_tokens: int | None = None,
                 fuse: bool = True) -> RankedContext:
    """Attribute ``draft`` (None: the attributor drafts) over the items with text, rank (fused with the
    retriever's scores when ``fuse`` and every scored item has one), and choose the items to keep."""
    positions, passages = _sources(items)
    attribution = attributor.attribute(query, passages, draft)
    retriever = [items[i].retriever_score for i in positions]
    use_retriever = fuse and all(s is not None for s in retriever)
    drafter = "llm" if draft is not None else "attributor"
    pruned = attributor.pipeline.prune(attribution, top_n, threshold, max_tokens,
                                       retriever if use_retriever else None, drafter)
    scored = set(positions)
    unscored = [i for i in range(len(items)) if i not in scored]
    return RankedContext(
        kept=sorted({positions[j] for j in pruned.indices} | set(unscored)),
        scores={positions[j]: s for j, s in enumerate(pruned.ranking)},
        at2_scores={positions[j]: s for j, s in enumerate(attribution.scores)},
        unscored=unscored, fused=use_retriever, draft=attribution.response, attribution=attribution,
    )


def compress_context(attributor: AT2Attributor, query: str, items: Sequence[ContextItem], draft: str | None,
                     budget: float | int | str = "auto", fuse: bool = True) -> RankedContext:
    """Attribute ``draft`` (None: the attributor drafts) over the items with text and keep, inside them, the
    sentences it relies on within ``budget``; items left with no sentence are dropped, items without text kept."""
    positions, passages = _sources(items)
    attribution = attributor.attribute(query, passages, draft)
    retriever = [items[i].retriever_score for i in positions]
    use_retriever = fuse and all(s is not None for s in retriever)
    drafter = "llm" if draft is not None else "attributor"
    scores = retriever if use_retriever else None
    compressed = attributor.pipeline.compress(attribution, budget, scores, drafter, joiner=JOINER)
    ranking = attributor.pipeline.ranking(attribution, scores, drafter) if use_retriever else list(attribution.scores)
    scored = set(positions)
    unscored = [i for i in range(len(items)) if i not in scored]
    kept_passages = set(compressed.passages_kept)
    return RankedContext(
        kept=sorted({positions[j] for j in kept_passages} | set(unscored)),
        scores={positions[j]: s for j, s in enumerate(ranking)},
        at2_scores={positions[j]: s for j, s in enumerate(attribution.scores)},
        unscored=unscored, fused=use_retriever, draft=attribution.response, granularity="sentence",
        texts={positions[j]: compressed.texts[j] for j in kept_passages},
        spans={positions[j]: [(k.start, k.end) for k in compressed.kept if k.passage_index == j]
               for j in kept_passages},
        compressed=compressed, attribution=attribution,
    )


def reduce_context(attributor: AT2Attributor, query: str, items: Sequence[ContextItem], draft: str | None,
                   options: ContextOptions) -> RankedContext:
    """Prune (``granularity='passage'``) or compress (``'sentence'``) the items as ``options`` say; kept
    positions come in the caller's order, or best first with ``order='score'`` (unscored items last)."""
    if options.granularity == "sentence":
        ranked = compress_context(attributor, query, items, draft, options.budget, options.fusion)
    else:
        ranked = rank_context(attributor, query, items, draft, options.top_n, options.threshold, options.max_tokens,
                              options.fusion)
    if options.order == "score":
        ranked.kept = sorted(ranked.kept, key=lambda i: -ranked.scores.get(i, float("-inf")))
    return ranked


def cite_context(attributor: AT2Attributor, query: str, items: Sequence[ContextItem], answer: str,
                 max_passages: int = 3, relative_threshold: float = 0.5,
                 evidence_model: str | None = None, strictness: str | None = None) -> CitedResponse:
    """Citations of ``answer`` whose passage indices and ``[n]`` markers are the items' positions (n = position + 1)."""
    return cite_context_batch(attributor, [query], [items], [answer], max_passages, relative_threshold,
                              evidence_model, strictness)[0]


def cite_context_batch(attributor: AT2Attributor, queries: Sequence[str], items: Sequence[Sequence[ContextItem]],
                       answers: Sequence[str], max_passages: int = 3, relative_threshold: float = 0.5,
                       evidence_model: str | None = None, strictness: str | None = None) -> list[CitedResponse]:
    """``cite_context`` for several answers in one padded attribution batch."""
    converted = [_sources(one) for one in items]
    cited = attributor.cite_batch(queries, [s for _, s in converted], answers, max_passages, relative_threshold,
                                  evidence_model, strictness)
    for response, (positions, _) in zip(cited, converted):
        for citation in response.citations:
            for source in citation.passages:
                source.index = positions[source.index]
                source.number = source.index + 1
        response.formatted = render(response.response, response.citations)
    return cited


def cite_with(attributor: AT2Attributor, options: CitationOptions, query: str, items: Sequence[ContextItem],
              answer: str) -> CitedResponse:
    """``cite_context`` with a component's citation options."""
    return cite_context(attributor, query, items, answer, options.max_passages, options.relative_threshold,
                        options.evidence_model, options.strictness)


def quote_span(quote: str, joiner: str = JOINER) -> tuple[int, int]:
    """[start, end) of ``quote`` without the compression joiner's mark at its ends: a quote from a compressed
    item ("… Champollion deciphered it in 1822.") as the sentence of the original item it is."""
    mark = joiner.strip()
    start, end = 0, len(quote)
    while True:
        before = (start, end)
        while start < end and quote[start].isspace():
            start += 1
        while end > start and quote[end - 1].isspace():
            end -= 1
        if mark and quote.startswith(mark, start, end):
            start += len(mark)
        if mark and end - start >= len(mark) and quote.endswith(mark, start, end):
            end -= len(mark)
        if (start, end) == before:
            return start, end


def citation_record(cited: CitedResponse) -> dict[str, Any]:
    """The plain (JSON-serialisable) citation data every integration attaches, under the same keys:
    ``citations`` (per answer sentence: ``sentence``, ``start``/``end`` in the answer, ``supported``,
    ``support``, ``unsupported_spans`` and ``passages``, each with ``index`` = the item's position, ``number``
    = the ``[n]`` marker, ``id``, ``score``, ``quote`` and ``sentences``), ``cited_answer`` (the answer with
    ``[n]`` after supported sentences), ``unsupported`` (sentences without enough evidence) and ``at2_scores``
    (item id -> AT2 score)."""
    return {"citations": [c.model_dump(mode="json") for c in cited.citations], "cited_answer": cited.formatted,
            "unsupported": list(cited.unsupported),
            "at2_scores": {p.id: s for p, s in zip(cited.attribution.passages, cited.attribution.scores)}}


def skipped_record(answer: str, reason: str) -> dict[str, Any]:
    """The citation record of an answer AT2 could not cite (fail-open): no citations, the answer as it was,
    and ``at2_skipped`` = the reason."""
    return {"citations": [], "cited_answer": answer, "unsupported": [], "at2_scores": {}, SKIPPED_KEY: reason}


def options_table() -> str:
    """The options of both integrations as one markdown table (the package READMEs print it)."""
    rows = ["| option | default | applies to | meaning |", "|---|---|---|---|"]
    groups = (("prune / compress", ContextOptions), ("cite", CitationOptions), ("attributor", AttributorSettings))
    seen: dict[str, int] = {}
    for label, model in groups:
        for name, field in model.model_fields.items():
            if name in seen:
                cells = rows[seen[name]].split(" | ")
                cells[2] = f"{cells[2]}, {label}"
                rows[seen[name]] = " | ".join(cells)
                continue
            seen[name] = len(rows)
            default = f'`"{field.default}"`' if isinstance(field.default, str) else f"`{field.default}`"
            rows.append(f"| `{name}` | {default} | {label} | {field.description} |")
    return "\n".join(rows)

"""Run the model over (query, passages[, response]) and collect AT2 features per response sentence, for
passages and for the sentences inside them, from one capture."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .attention import DEFAULT_FAMILIES, FeatureCapture, parse_families
from .errors import ContextTooLongError, EmptyInputError
from .lm import LanguageModel
from .prompts import PromptLayout, PromptTemplate, build_prompt, encode_plain, passage_sentences
from .passages import Passage
from .targets import Target, span_target, split_targets, token_char_ends

LEVELS = ("passage", "sentence")


@dataclass
class AttributionJob:
    """Everything a scorer may need about one (query, passages, response).

    ``level`` says which units scorers see: the passages themselves ('passage') or the sentences inside
    them ('sentence'); ``at_level`` switches views of the same captured pass.
    """

    lm: LanguageModel
    query: str
    passages: list[Passage]
    layout: PromptLayout
    template: PromptTemplate
    response_ids: list[int]
    response: str
    targets: list[Target]
    passage_token_features: torch.Tensor  # [response tokens, passages, families * layers * heads], float32
    sentence_token_features: torch.Tensor  # [response tokens, sentences, families * layers * heads], float32
    response_attention: torch.Tensor | None = None  # [response tokens, layers * heads]: attention on the answer so far
    token_logprobs: torch.Tensor | None = None  # [response tokens]: log p(token | context, answer so far)
    token_entropy: torch.Tensor | None = None  # [response tokens]: entropy of the next-token distribution
    token_ends: list[int] = field(default_factory=list)  # char offset where each response token ends
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    level: str = "passage"
    families: tuple[str, ...] = DEFAULT_FAMILIES

    @property
    def sentences(self) -> list[tuple[int, int, int]]:
        """Every sentence of every source: (source index, char start, char end) in that source's text."""
        return passage_sentences(self.passages)

    @property
    def num_units(self) -> int:
        return len(self.passages) if self.level == "passage" else self.sentence_token_features.shape[1]

    @property
    def token_features(self) -> torch.Tensor:
        """``[response tokens, units, layers * heads]`` at this job's level."""
        return self.passage_token_features if self.level == "passage" else self.sentence_token_features

    @property
    def features(self) -> torch.Tensor:
        """``[targets, units, families * layers * heads]``: features averaged over each target's tokens."""
        return torch.stack([self.token_features[t.token_start : t.token_end].mean(0) for t in self.targets])

    def family_features(self, families: Sequence[str]) -> torch.Tensor:
        """``[targets, units, len(families) * layers * heads]``: the columns of these captured families."""
        families = parse_families(families)
        missing = [f for f in families if f not in self.families]
        if missing:
            raise ValueError(f"feature families {missing} were not captured (captured: {self.families})")
        features = self.features
        if families == self.families:
            return features
        width = features.shape[-1] // len(self.families)
        return torch.cat([features[..., self.families.index(f) * width : (self.families.index(f) + 1) * width]
                          for f in families], dim=-1)

    def for_span(self, span: Sequence[int]) -> AttributionJob:
        """The same pass with one target: chars ``[start, end)`` of the response (a phrase, any sub-range)."""
        return dataclasses.replace(self, targets=[span_target(self.response, self.token_ends, span)])

    def at_level(self, level: str) -> AttributionJob:
        """The same pass seen at another level ('passage' or 'sentence')."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        return dataclasses.replace(self, level=level)


def fit_layout(lm: LanguageModel, query: str, passages: list[Passage], template: PromptTemplate, reserve: int,
               truncate: bool) -> tuple[PromptLayout, list[Passage], bool]:
    """Build the prompt; if it overflows the window, raise, or (``truncate``) trim the longest passages to fit.

    Returns the layout, the passages as the model reads them, and whether any was trimmed. Every trimming
    step shortens a source, so this ends; when trimming cannot help, it raises ``ContextTooLongError``.
    """
    layout = build_prompt(lm.tokenizer, query, passages, template=template)
    limit = lm.max_context
    trimmed = False
    while len(layout) + reserve > limit:
        if not truncate:
            raise ContextTooLongError(len(layout) + reserve, limit)
        lengths = [b - a for a, b in layout.token_spans]
        index = max(range(len(passages)), key=lengths.__getitem__)
        text = passages[index].text
        _, offsets = encode_plain(lm.tokenizer, text)
        keep_tokens = max(1, len(offsets) - (len(layout) + reserve - limit) - 8)
        cut = text[: offsets[keep_tokens - 1][1]] if offsets else text
        if len(cut) >= len(text) or not cut.strip():
            raise ContextTooLongError(
                len(layout) + reserve, limit,
                "trimming passages cannot make it fit (the query and response alone are too long); "
                "shorten the query or the response",
            )
        passages = list(passages)
        passages[index] = passages[index].model_copy(update={"text": cut})
        trimmed = True
        layout = build_prompt(lm.tokenizer, query, passages, template=template)
    return layout, passages, trimmed


def collect(
    lm: LanguageModel,
    queries: Sequence[str],
    passages: Sequence[list[Passage]],
    responses: Sequence[str | None] | None = None,
    template: PromptTemplate | None = None,
    max_new_tokens: int = 64,
    sentence_targets: bool = True,
    truncate: bool = False,
    stop_at_blank_line: bool = True,
    families: Sequence[str] = DEFAULT_FAMILIES,
) -> list[AttributionJob]:
    """Generate (capturing attention while decoding) or teacher-force given responses, in one batched pass.

    Items with ``response=None`` are generated together; items with a response are teacher-forced together.
    Either way each item costs one pass over its prompt: there is no second forward pass for attribution,
    and passage and sentence features of every requested family come from the same capture.
    """
    families = parse_families(families)
    template = template or PromptTemplate()
    responses = list(responses) if responses is not None else [None] * len(queries)
    layouts, response_ids, fitted, trimmed, ends = [], [], [], [], []
    for query, srcs, response in zip(queries, passages, responses):
        if response is not None and not response.strip():
            raise EmptyInputError("the response to attribute is empty")
        ids, offsets = encode_plain(lm.tokenizer, response) if response is not None else (None, [])
        if ids is not None and not ids:
            raise EmptyInputError("the response has no tokens to attribute")
        ends.append([b for _, b in offsets] if response is not None else None)
        reserve = len(ids) if ids is not None else max_new_tokens
        layout, srcs, was_trimmed = fit_layout(lm, query, list(srcs), template, reserve, truncate)
        layouts.append(layout)
        fitted.append(srcs)
        trimmed.append(was_trimmed)
        response_ids.append(ids)
    features: list[tuple[torch.Tensor, ...] | None] = [None] * len(queries)
    timings: list[dict[str, float]] = [{} for _ in queries]
    for generated in (True, False):
        idx = [i for i, ids in enumerate(response_ids) if (ids is None) == generated]
        if not idx:
            continue
        batch_layouts = [layouts[i] for i in idx]
        width = max(len(lay) for lay in batch_layouts)
        capture = FeatureCapture.for_spans(
            [lay.token_spans + lay.sentence_token_spans for lay in batch_layouts],
            [width - len(lay) for lay in batch_layouts],
            width,
            max(len(lay.token_spans) + len(lay.sentence_token_spans) for lay in batch_layouts),
            lm.num_layers,
            lm.num_heads,
            lm.device,
            families,
        )
        start = time.perf_counter()
        if generated:
            outs = lm.generate([lay.input_ids for lay in batch_layouts], max_new_tokens, capture=capture,
                               stop_at_blank_line=stop_at_blank_line)
            for i, out in zip(idx, outs):
                response_ids[i] = out
            label = "generate_s"
        else:
            lm.response_logprobs([lay.input_ids for lay in batch_layouts], [response_ids[i] for i in idx], capture)
            label = "forward_s"
        elapsed = (time.perf_counter() - start) / len(idx)
        feats, on_response = capture.features(), capture.response_attention()
        logprobs, entropy = capture.token_stats()
        for b, i in enumerate(idx):
            n_passages, n_sentences = len(layouts[i].token_spans), len(layouts[i].sentence_token_spans)
            n = len(response_ids[i])
            rows = feats[b, :n]
            features[i] = (rows[:, :n_passages], rows[:, n_passages : n_passages + n_sentences],
                           on_response[b, :n], logprobs[b, :n], entropy[b, :n])
            timings[i][label] = elapsed
    jobs = []
    for i, query in enumerate(queries):
        if not response_ids[i]:
            raise EmptyInputError("the model generated an empty response; nothing to attribute")
        text, token_ends = responses[i], ends[i]
        if text is None:
            text = lm.tokenizer.decode(response_ids[i], skip_special_tokens=True)
            token_ends = token_char_ends(lm.tokenizer, response_ids[i])
        text, targets = split_targets(lm.tokenizer, response_ids[i], sentence_targets, text, token_ends)
        jobs.append(
            AttributionJob(
                lm, query, fitted[i], layouts[i], template, response_ids[i], text, targets, *features[i],
                token_ends=token_ends, timings=timings[i], truncated=trimmed[i], families=families,
            )
        )
    return jobs

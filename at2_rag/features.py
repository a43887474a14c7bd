"""Run the model over (query, sources[, response]) and collect AT2 features per response sentence."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .attention import FeatureCapture
from .errors import ContextTooLongError, EmptyInputError
from .lm import LanguageModel
from .prompts import PromptLayout, PromptTemplate, build_prompt
from .sources import Source
from .targets import Target, split_targets


@dataclass
class AttributionJob:
    """Everything a scorer may need about one (query, sources, response)."""

    lm: LanguageModel
    query: str
    sources: list[Source]
    layout: PromptLayout
    template: PromptTemplate
    response_ids: list[int]
    response: str
    targets: list[Target]
    token_features: torch.Tensor  # [response tokens, sources, layers * heads], float32
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def features(self) -> torch.Tensor:
        """``[targets, sources, layers * heads]``: attention averaged over each target's tokens."""
        return torch.stack([self.token_features[t.token_start : t.token_end].mean(0) for t in self.targets])


def _fit_layout(lm: LanguageModel, query, sources, template, reserve: int, truncate: bool) -> PromptLayout:
    """Build the prompt; if it overflows the window, raise, or (``truncate``) trim the longest sources to fit."""
    layout = build_prompt(lm.tokenizer, query, sources, template=template)
    limit = lm.max_context
    while len(layout) + reserve > limit:
        if not truncate:
            raise ContextTooLongError(len(layout) + reserve, limit)
        lengths = [b - a for a, b in layout.token_spans]
        longest = max(range(len(sources)), key=lengths.__getitem__)
        text = sources[longest].text
        offsets = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= 1:
            raise ContextTooLongError(len(layout) + reserve, limit)
        keep_tokens = max(1, len(offsets) - (len(layout) + reserve - limit) - 8)
        sources = list(sources)
        sources[longest] = sources[longest].model_copy(update={"text": text[: offsets[keep_tokens - 1][1]]})
        layout = build_prompt(lm.tokenizer, query, sources, template=template)
    return layout


def collect(
    lm: LanguageModel,
    queries: Sequence[str],
    sources: Sequence[list[Source]],
    responses: Sequence[str | None] | None = None,
    template: PromptTemplate | None = None,
    max_new_tokens: int = 64,
    sentence_targets: bool = True,
    truncate: bool = False,
) -> list[AttributionJob]:
    """Generate (capturing attention while decoding) or teacher-force given responses, in one batched pass.

    Items with ``response=None`` are generated together; items with a response are teacher-forced together.
    Either way each item costs one pass over its prompt: there is no second forward pass for attribution.
    """
    template = template or PromptTemplate()
    responses = list(responses) if responses is not None else [None] * len(queries)
    layouts, response_ids = [], []
    for query, srcs, response in zip(queries, sources, responses):
        if response is not None and not response.strip():
            raise EmptyInputError("the response to attribute is empty")
        ids = lm.encode_response(response) if response is not None else None
        reserve = len(ids) if ids is not None else max_new_tokens
        layouts.append(_fit_layout(lm, query, srcs, template, reserve, truncate))
        response_ids.append(ids)
    features: list[torch.Tensor | None] = [None] * len(queries)
    timings: list[dict[str, float]] = [{} for _ in queries]
    for generated in (True, False):
        idx = [i for i, ids in enumerate(response_ids) if (ids is None) == generated]
        if not idx:
            continue
        batch_layouts = [layouts[i] for i in idx]
        width = max(len(lay) for lay in batch_layouts)
        capture = FeatureCapture.for_spans(
            [lay.token_spans for lay in batch_layouts],
            [width - len(lay) for lay in batch_layouts],
            width,
            max(len(srcs) for srcs in (sources[i] for i in idx)),
            lm.num_layers,
            lm.num_heads,
            lm.device,
        )
        start = time.perf_counter()
        if generated:
            outs = lm.generate([lay.input_ids for lay in batch_layouts], max_new_tokens, capture=capture)
            for i, out in zip(idx, outs):
                response_ids[i] = out
            label = "generate_s"
        else:
            lm.response_logprobs([lay.input_ids for lay in batch_layouts], [response_ids[i] for i in idx], capture)
            label = "forward_s"
        elapsed = (time.perf_counter() - start) / len(idx)
        feats = capture.features()
        for b, i in enumerate(idx):
            features[i] = feats[b, : len(response_ids[i]), : len(sources[i])]
            timings[i][label] = elapsed
    jobs = []
    for i, query in enumerate(queries):
        if not response_ids[i]:
            raise EmptyInputError("the model generated an empty response; nothing to attribute")
        text, targets = split_targets(lm.tokenizer, response_ids[i], sentences=sentence_targets)
        jobs.append(
            AttributionJob(
                lm, query, list(sources[i]), layouts[i], template, response_ids[i], text, targets,
                features[i], timings[i],
            )
        )
    return jobs

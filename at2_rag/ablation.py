"""Ablations: the response's log-probability with some passages removed from the prompt text (batched)."""

from __future__ import annotations

import numpy as np
import torch

from .features import AttributionJob
from .prompts import build_prompt


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, not {value!r}")
    return value


MASK_STREAMS = ("at2-rag", "contextcite")


def random_masks(n_passages: int, n_masks: int, keep_prob: float = 0.5, seed: int = 0,
                 stream: str = "at2-rag") -> np.ndarray:
    """``[n_masks, n_passages]`` boolean keep-masks, deterministic given the seed. ``stream='contextcite'``
    draws exactly ContextCite's (and the AT2 trainer's) masks: mask ``i`` from ``RandomState(seed + i)``."""
    if check_choice(stream, MASK_STREAMS, "mask stream") == "contextcite":
        return np.stack([np.random.RandomState(seed + i).choice([False, True], size=n_passages,
                                                                 p=[1 - keep_prob, keep_prob])
                         for i in range(n_masks)]) if n_masks else np.zeros((0, n_passages), dtype=bool)
    rng = np.random.default_rng(seed)
    return rng.random((n_masks, n_passages)) < keep_prob


OBJECTIVES = ("response-log-odds", "token-log-odds")
"""What an ablation changes, per target (a response sentence): ``response-log-odds`` is the paper's and
ContextCite's, ``log(P / (1 - P))`` of the target's whole probability ``P`` (the product of its tokens'),
divided by its token count; ``token-log-odds`` the mean over its tokens of ``log(p / (1 - p))`` (what at2-rag
used before; ContextCite's ``total_token_logit_prob`` output). Scores fit to the two differ in scale and,
under the same LASSO penalty, in which passages they zero."""
DEFAULT_OBJECTIVE = "response-log-odds"
METHODS = ("remove", "mask")
"""How a source is ablated: ``remove`` cuts its text out of the prompt (later tokens shift left); ``mask``
keeps every token in place and hides the source's tokens from attention (the AT2 trainer's default)."""
DEFAULT_METHOD = "remove"


def target_values(logprobs: torch.Tensor, objective: str = DEFAULT_OBJECTIVE) -> torch.Tensor:
    """``[..., tokens]`` log-probs of one target's tokens -> ``[...]`` values of ``target`` (see ``OBJECTIVES``),
    computed stably from log p."""
    check_choice(objective, OBJECTIVES, "objective")
    if objective == "response-log-odds":
        total = logprobs.sum(-1).clamp(max=-1e-7)
        return (total - torch.log(-torch.expm1(total))) / logprobs.shape[-1]
    logprobs = logprobs.clamp(max=-1e-7)
    return (logprobs - torch.log(-torch.expm1(logprobs))).mean(-1)


def span_outputs(logprobs: torch.Tensor, spans, objective: str = DEFAULT_OBJECTIVE) -> torch.Tensor:
    """``[n_masks, tokens]`` -> ``[n_masks, len(spans)]``: ``target`` of each ``(token_start, token_end)``."""
    return torch.stack([target_values(logprobs[:, a:b], objective) for a, b in spans], dim=1)


def default_batch_size(device: torch.device) -> int:
    """Ablated prompts per forward pass: 8 on accelerators; 1 on CPU, where a padded batch (explicit mask,
    no causal fast path in SDPA) took 2.55 s per prompt against 1.38 s one at a time (1.6k tokens, 2 cores)."""
    return 1 if device.type == "cpu" else 8


def ablated_prompt(job: AttributionJob, mask: np.ndarray) -> list[int]:
    """Prompt ids with the units (passages or sentences, by ``job.level``) where ``mask`` is False removed."""
    kept = np.flatnonzero(mask).tolist()
    tokenizer = job.lm.tokenizer
    if job.level == "sentence":
        layout = build_prompt(tokenizer, job.query, job.passages, template=job.template, keep_sentences=set(kept))
        return layout.input_ids
    return build_prompt(tokenizer, job.query, job.passages, keep=kept, template=job.template).input_ids


def hidden_spans(job: AttributionJob, mask: np.ndarray) -> list[tuple[int, int]]:
    """Prompt token spans of the units (by ``job.level``) where ``mask`` is False: what ``mask`` ablation hides."""
    indices, spans = job.layout.spans(job.level)
    return [span for unit, span in zip(indices, spans) if not mask[unit]]


@torch.inference_mode()
def ablation_logprobs(job: AttributionJob, masks: np.ndarray, batch_size: int | None = None,
                      method: str = DEFAULT_METHOD) -> torch.Tensor:
    """``[n_masks, response tokens]``: log-prob of each response token with the masked-out units ablated by
    ``method`` (removed from the prompt text, or hidden from attention in place; see ``METHODS``)."""
    check_choice(method, METHODS, "ablation method")
    batch_size = batch_size or default_batch_size(job.lm.device)
    if method == "remove":
        prompts = [ablated_prompt(job, mask) for mask in masks]
        hidden = None
    else:
        prompts = [job.layout.input_ids] * len(masks)
        hidden = [hidden_spans(job, mask) for mask in masks]
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = torch.zeros(len(prompts), len(job.response_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logprobs = job.lm.response_logprobs([prompts[i] for i in chunk], [job.response_ids] * len(chunk),
                                            hide=None if hidden is None else [hidden[i] for i in chunk])
        out[torch.as_tensor(chunk)] = logprobs.cpu()
    return out


@torch.inference_mode()
def shared_prompt_logprobs(lm, prompt: list[int], responses: list[list[int]]) -> list[torch.Tensor]:
    """Log-prob of each token of several responses after one prompt: the prompt is read once into a KV cache
    and each response is teacher-forced on top of it (the cache cropped back after each), so R responses cost
    one prompt pass plus R short ones. Equal to ``lm.response_logprobs`` per response up to float error."""
    from transformers import DynamicCache

    device = lm.device
    cache = DynamicCache(config=lm.model.config)
    ids = torch.tensor([prompt], device=device)
    first = lm.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[0, -1]
    first = torch.log_softmax(first.float(), -1)
    out = []
    for response in responses:
        logprobs = [first[response[0]]]
        if len(response) > 1:
            rest = torch.tensor([response[:-1]], device=device)
            positions = torch.arange(len(prompt), len(prompt) + len(response) - 1, device=device)[None]
            logits = lm.model(input_ids=rest, position_ids=positions, cache=cache, use_cache=True).logits
            targets = torch.tensor(response[1:], device=device)
            logprobs += list(torch.log_softmax(logits[0].float(), -1).gather(-1, targets[:, None])[:, 0])
            cache.crop(-(len(response) - 1))  # back to the prompt alone
        out.append(torch.stack(logprobs).cpu())
    return out


def ablation_logprobs_shared(jobs: list[AttributionJob], masks: np.ndarray) -> list[torch.Tensor]:
    """``[n_masks, tokens]`` per job, for jobs that share one prompt (same query, passages, level) and differ
    only in the response: each ablated prompt is read once for all of them (``shared_prompt_logprobs``)."""
    first = jobs[0]
    for job in jobs[1:]:
        if job.query != first.query or job.level != first.level or job.num_units != first.num_units:
            raise ValueError("jobs sharing ablations must share query, passages and level")
    out = [torch.zeros(len(masks), len(job.response_ids)) for job in jobs]
    for m, mask in enumerate(masks):
        rows = shared_prompt_logprobs(first.lm, ablated_prompt(first, mask), [list(j.response_ids) for j in jobs])
        for o, row in zip(out, rows):
            o[m] = row
    return out


def target_spans(job: AttributionJob) -> list[tuple[int, int]]:
    return [(t.token_start, t.token_end) for t in job.targets]


def ablation_outputs(job: AttributionJob, masks: np.ndarray, batch_size: int | None = None,
                     objective: str = DEFAULT_OBJECTIVE, method: str = DEFAULT_METHOD) -> np.ndarray:
    """``[n_masks, targets]``: each target's ``target`` value under each ablation."""
    return span_outputs(ablation_logprobs(job, masks, batch_size, method), target_spans(job), objective).numpy()

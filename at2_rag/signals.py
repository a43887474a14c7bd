"""Support signals per answer sentence, from the pass that read the answer (plus one short pass without the
context): the inputs of the unsupported-sentence detector besides lexical facts.

- **Lookback ratio per head** (Chuang et al., 2024, "Lookback Lens"): a head's mean attention on a source token
  against its mean attention on an answer token written so far, ``c / (c + n)``, averaged over the sentence's
  tokens. The capture sums both while it reduces attention for AT2, so it costs nothing extra.
- **Log-probability and entropy** of the sentence's tokens with the context (from the same pass's logits).
- **Without the context**: the same tokens' log-probability after the question alone (one short pass); the
  difference is the pointwise mutual information of the sentence and the context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from .prompts import build_prompt
from .results import SentenceSignals


def lookback_ratios(job) -> np.ndarray:
    """``[response tokens, layers * heads]`` Lookback Lens ratio of every row of ``job``'s pass."""
    width = job.lm.num_layers * job.lm.num_heads
    on_sources = job.passage_token_features[..., :width].sum(1).cpu()  # attention-weight family, summed over passages
    source_tokens = max(1, sum(b - a for a, b in job.layout.token_spans))
    seen = torch.arange(on_sources.shape[0], dtype=torch.float32)[:, None].clamp(min=1)
    context = on_sources / source_tokens
    new = job.response_attention.cpu() / seen
    total = context + new
    return torch.where(total > 0, context / torch.where(total > 0, total, 1.0), torch.ones_like(total)).numpy()


def no_context_logprobs(lm, queries: Sequence[str], response_ids: Sequence[Sequence[int]], template) -> list[np.ndarray]:
    """Log-probability of each response token after the question alone (the same prompt, no documents)."""
    prompts = [build_prompt(lm.tokenizer, q, [], template=template).input_ids for q in queries]
    logprobs = lm.response_logprobs(prompts, response_ids)
    return [logprobs[i, : len(r)].cpu().numpy() for i, r in enumerate(response_ids)]


def sentence_signals(job, no_context: np.ndarray | None = None) -> list[SentenceSignals]:
    """Signals of every target sentence of ``job`` (``no_context``: per-token log-probs without the passages)."""
    ratios = lookback_ratios(job)
    width = job.lm.num_layers * job.lm.num_heads
    attention = job.passage_token_features[..., :width].sum(1).mean(-1).cpu().numpy()
    logprobs, entropy = job.token_logprobs.cpu().numpy(), job.token_entropy.cpu().numpy()
    out = []
    for target in job.targets:
        rows = slice(target.token_start, target.token_end)
        signals = dict(lookback=ratios[rows].mean(0).tolist(), source_attention=float(attention[rows].mean()),
                       logprob_mean=float(logprobs[rows].mean()), logprob_min=float(logprobs[rows].min()),
                       entropy_mean=float(entropy[rows].mean()))
        if no_context is not None:
            pmi = logprobs[rows] - no_context[rows]
            signals.update(no_context_logprob_mean=float(no_context[rows].mean()), pmi_mean=float(pmi.mean()),
                           pmi_min=float(pmi.min()))
        out.append(SentenceSignals(**signals))
    return out

"""Capture head-wise attention of response rows, reduced on the fly to per-source features.

The model keeps computing its layer outputs with SDPA. For the rows that predict response tokens only,
we recompute ``softmax(q K^T * scale + mask)`` in float32 and immediately sum the weights over each
source's tokens, so memory is O(heads x rows x L) per layer, never O(L^2), and what is kept is
``[rows, sources, layers x heads]``. Works for any architecture whose attention modules call
transformers' ``AttentionInterface`` (grouped-query heads are handled without copying keys).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from .errors import UnsupportedModelError

ATTN_IMPLEMENTATION = "at2"
ROW_CHUNK = 256  # target rows reduced at once: bounds memory to heads x 256 x L floats per layer
_ACTIVE: contextvars.ContextVar[FeatureCapture | None] = contextvars.ContextVar("at2_capture", default=None)


class FeatureCapture:
    """Accumulates per-source attention of target rows over one forward pass or one decoding loop.

    ``source_matrix`` is ``[batch, prompt_len, sources]`` (1 where a prompt token belongs to a source).
    Rows are the query positions ``>= row_start`` (the last prompt token onwards), in the order seen.
    """

    def __init__(self, source_matrix: torch.Tensor, row_start: int, num_layers: int, num_heads: int):
        self.source_matrix = source_matrix.float()
        self.row_start = row_start
        self.num_layers = num_layers
        self.num_heads = num_heads
        self._per_layer: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._calls = 0

    @classmethod
    def for_spans(
        cls,
        token_spans: Sequence[Sequence[tuple[int, int]]],
        pads: Sequence[int],
        prompt_width: int,
        num_sources: int,
        num_layers: int,
        num_heads: int,
        device: torch.device | str = "cpu",
    ) -> FeatureCapture:
        """Build the source matrix for a left-padded batch from each element's source token spans."""
        matrix = torch.zeros(len(token_spans), prompt_width, num_sources, device=device)
        for b, spans in enumerate(token_spans):
            for s, (start, end) in enumerate(spans):
                matrix[b, pads[b] + start : pads[b] + end, s] = 1.0
        return cls(matrix, prompt_width - 1, num_layers, num_heads)

    def observe(self, module, query, key, attention_mask, scaling) -> None:
        """Reduce the target rows of one attention call to ``[batch, heads, rows, sources]``."""
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer = self._calls % self.num_layers
        self._calls += 1
        q_len, k_len = query.shape[2], key.shape[2]
        first = max(0, self.row_start - (k_len - q_len))  # target rows are a suffix of the query positions
        if first >= q_len:
            return
        k = key.float()
        chunks = [
            self._reduce(query[:, :, a : min(a + ROW_CHUNK, q_len)], k, attention_mask, scaling, a, q_len)
            for a in range(first, q_len, ROW_CHUNK)
        ]
        per_source = torch.cat(chunks, dim=2)
        self._per_layer[layer].append(per_source)

    def _reduce(self, query, k, attention_mask, scaling, first: int, q_len: int) -> torch.Tensor:
        """Softmax rows ``first..first+rows`` of the query against all (float32) keys, summed per source."""
        q = query.float()
        batch, heads, n_rows, dim = q.shape
        k_len = k.shape[2]
        kv_heads = k.shape[1]
        groups = heads // kv_heads
        scores = torch.matmul(q.reshape(batch, kv_heads, groups * n_rows, dim), k.transpose(-1, -2))
        scores = scores.reshape(batch, heads, n_rows, k_len) * (scaling if scaling is not None else dim**-0.5)
        if attention_mask is not None:
            rows = slice(first, first + n_rows) if attention_mask.shape[-2] == q_len else slice(None)  # [.., 1, L]
            mask = attention_mask[..., rows, :k_len]
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask.float()
        elif q_len > 1:  # a single decoding row sees every key; several rows need the causal mask
            q_pos = torch.arange(k_len - q_len + first, k_len - q_len + first + n_rows, device=q.device)
            scores = scores.masked_fill(torch.arange(k_len, device=q.device)[None, :] > q_pos[:, None], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        prompt_len = self.source_matrix.shape[1]
        return torch.matmul(weights[..., :prompt_len], self.source_matrix[:, None].to(weights.device))

    def features(self) -> torch.Tensor:
        """``[batch, rows, sources, layers * heads]`` (float32), feature index ``layer * heads + head``."""
        missing = [i for i, chunks in enumerate(self._per_layer) if not chunks]
        if missing:
            raise UnsupportedModelError(
                f"no attention was captured for layers {missing[:5]}...: the model does not route attention through "
                "transformers' AttentionInterface (set attn_implementation to 'at2'), so AT2 cannot read it"
            )
        layers = torch.stack([torch.cat(chunks, dim=2) for chunks in self._per_layer])
        n_layers, batch, heads, rows, sources = layers.shape
        return layers.permute(1, 3, 4, 0, 2).reshape(batch, rows, sources, n_layers * heads)


@contextmanager
def capturing(capture: FeatureCapture | None):
    """Route attention rows of every forward run inside this block to ``capture`` (no-op for None)."""
    token = _ACTIVE.set(capture)
    try:
        yield capture
    finally:
        _ACTIVE.reset(token)


def at2_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA for the layer output; when a capture is active, also the reduced attention of its rows."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture = _ACTIVE.get()
    if capture is not None:
        if kwargs.get("softcap") is not None or getattr(module, "sinks", None) is not None:
            raise UnsupportedModelError("attention with logit soft-capping or sinks is not supported by AT2 capture")
        capture.observe(module, query, key, attention_mask, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def install_attention(model) -> None:
    """Register the ``at2`` attention function (and SDPA's mask builder for it) and switch the model to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, at2_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)

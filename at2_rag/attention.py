"""Capture head-wise attention of response rows, reduced on the fly to per-source features.

The model keeps computing its layer outputs with SDPA. For the rows that predict response tokens only,
we recompute ``softmax(q K^T * scale + mask)`` in float32 and immediately reduce it per source, so memory
is O(heads x rows x L) per layer, never O(L^2), and what is kept is ``[rows, sources, families x layers x
heads]``. Feature families (all from the same pass):

- ``attention-weight``: the paper's feature, ``sum_{j in s} a_ij``;
- ``value-norm``: ``|| sum_{j in s} a_ij v_j ||``, how far the source moves the head's output
  (Kobayashi et al., 2020);
- ``output-norm``: the same vector through the head's slice of the output projection, ``|| W_O^h (...) ||``.

Works for any architecture whose attention modules call transformers' ``AttentionInterface``
(grouped-query heads are handled without copying keys).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from .errors import UnsupportedModelError

ATTN_IMPLEMENTATION = "at2"
ROW_CHUNK = 256  # target rows reduced at once: bounds memory to heads x 256 x L floats per layer
SCORE_CHUNK_FLOATS = 2**27  # and to batch x heads x rows x L floats (512 MiB) for long or batched inputs
VALUE_CHUNK_FLOATS = 2**25  # bound on heads x rows x sources x head_dim for the value families (128 MiB)
FAMILIES = ("attention-weight", "value-norm", "output-norm")
DEFAULT_FAMILIES = ("attention-weight",)
_ACTIVE: contextvars.ContextVar[FeatureCapture | None] = contextvars.ContextVar("at2_capture", default=None)


def parse_families(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``'attention-weight+value-norm'`` (or a sequence of names) -> a tuple of known family names."""
    names = tuple(spec.split("+")) if isinstance(spec, str) else tuple(spec)
    unknown = [n for n in names if n not in FAMILIES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"feature families must be distinct names from {FAMILIES} joined by '+', not {spec!r}")
    return names


def family_name(families: Sequence[str]) -> str:
    return "+".join(families)


def output_projection(module) -> torch.Tensor:
    """The attention module's output projection weight ``[hidden, heads * head_dim]`` (dequantised when the
    layer is dynamically quantised to int8: ``load_model(precision='int8')``)."""
    for name in ("o_proj", "out_proj", "dense"):
        proj = getattr(module, name, None)
        if isinstance(proj, torch.nn.Linear):
            return proj.weight
        if proj is not None and callable(getattr(proj, "weight", None)):  # torch.ao dynamic quantised Linear
            return proj.weight().dequantize()
    raise UnsupportedModelError(
        f"{type(module).__name__} has no o_proj/out_proj/dense output projection: the output-norm family needs it"
    )


class FeatureCapture:
    """Accumulates per-source attention of target rows over one forward pass or one decoding loop.

    ``source_matrix`` is ``[batch, prompt_len, sources]`` (1 where a prompt token belongs to a source; each
    source is one contiguous span). Rows are the query positions ``>= row_start`` (the last prompt token
    onwards), in the order seen. ``families`` says which features to compute (see the module docstring).
    """

    def __init__(self, source_matrix: torch.Tensor, row_start: int, num_layers: int, num_heads: int,
                 families: Sequence[str] = DEFAULT_FAMILIES):
        self.source_matrix = source_matrix.float()
        self.row_start = row_start
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.families = parse_families(families)
        self._per_layer: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._on_response: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._token_logprobs: list[torch.Tensor] = []
        self._token_entropy: list[torch.Tensor] = []
        self._calls = 0
        self._seen = [0] * num_layers  # query positions each layer has been called with so far
        self._pending: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]  # decoding rows' queries
        self._last: list[tuple | None] = [None] * num_layers  # (module, key, value, mask, scaling): latest call
        self._grams: dict[int, torch.Tensor] = {}
        self._spans = [self._column_spans(m) for m in self.source_matrix] if self._needs_values else []

    @property
    def _needs_values(self) -> bool:
        return any(f != "attention-weight" for f in self.families)

    @staticmethod
    def _column_spans(matrix: torch.Tensor) -> list[tuple[int, int]]:
        """Each column's token span ``(start, end)`` (empty columns give ``(0, 0)``)."""
        spans = []
        for column in matrix.T:
            idx = torch.nonzero(column).flatten()
            if len(idx) and int(idx[-1]) - int(idx[0]) + 1 != len(idx):
                raise ValueError("value feature families need every source to be one contiguous token span")
            spans.append((int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0))
        return spans

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
        families: Sequence[str] = DEFAULT_FAMILIES,
    ) -> FeatureCapture:
        """Build the source matrix for a left-padded batch from each element's source token spans."""
        matrix = torch.zeros(len(token_spans), prompt_width, num_sources, device=device)
        for b, spans in enumerate(token_spans):
            for s, (start, end) in enumerate(spans):
                matrix[b, pads[b] + start : pads[b] + end, s] = 1.0
        return cls(matrix, prompt_width - 1, num_layers, num_heads, families)

    def observe(self, module, query, key, attention_mask, scaling, value=None) -> None:
        """Take the target rows of one attention call.

        A decoding step (one query row) only keeps its query: the rows are reduced together, once per layer,
        from the final key cache when features are read, so a step costs no kernel. Calls of several rows
        (prefill, teacher forcing) and sliding-window layers (whose cache drops old keys) are reduced now, to
        ``[batch, heads, rows, families x sources]``. Positions are counted per layer, so a static cache
        (keys padded to its full length) reads the same as a dynamic one.
        """
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer = self._calls % self.num_layers
        self._calls += 1
        q_len = query.shape[2]
        start = self._seen[layer]
        self._seen[layer] += q_len
        first = max(0, self.row_start - start)  # target rows are a suffix of the query positions
        if first >= q_len:
            return
        if self._needs_values and value is None:
            raise UnsupportedModelError("value feature families need the attention call's value states")
        valid = start + q_len
        if q_len == 1 and key.shape[2] >= valid and getattr(module, "sliding_window", None) is None:
            self._pending[layer].append(query)
            self._last[layer] = (module, key, value, attention_mask, scaling)
            return
        self._flush(layer)
        offset = max(0, valid - key.shape[2])  # keys a sliding-window cache has dropped
        if attention_mask is not None:
            rows = slice(first, q_len) if attention_mask.shape[-2] == q_len else slice(None)  # [.., 1, L]: all rows
            attention_mask = attention_mask[..., rows, : valid - offset]
        positions = torch.arange(start + first, valid, device=query.device)
        self._reduce_rows(layer, module, query[:, :, first:], key[:, :, : valid - offset], value, attention_mask,
                          scaling, positions, offset)

    def _flush(self, layer: int) -> None:
        """Reduce the decoding rows kept for ``layer`` against its latest (final) keys."""
        if not self._pending[layer]:
            return
        module, key, value, mask, scaling = self._last[layer]
        rows = torch.cat(self._pending[layer], dim=2)
        self._pending[layer] = []
        valid = self._seen[layer]
        if mask is not None:
            mask = mask[..., -1:, :valid]  # the last row's mask: padding (and a static cache's empty slots)
        positions = torch.arange(valid - rows.shape[2], valid, device=rows.device)
        self._reduce_rows(layer, module, rows, key[:, :, :valid], value, mask, scaling, positions)

    def _reduce_rows(self, layer: int, module, query, key, value, mask, scaling, positions: torch.Tensor,
                     offset: int = 0) -> None:
        """Reduce query rows (at absolute ``positions``) in chunks and append them to the layer's features; the
        keys start at position ``offset``."""
        k = key.float()
        batch, heads, n_rows, _ = query.shape
        rows = max(1, min(ROW_CHUNK, SCORE_CHUNK_FLOATS // (batch * heads * k.shape[2])))
        if self._needs_values:
            value = value.float()
            width = batch * heads * self.source_matrix.shape[-1] * value.shape[-1]
            rows = max(1, min(rows, VALUE_CHUNK_FLOATS // width))
        shared = mask is None or mask.shape[-2] == 1  # one mask row for all rows: causality is applied here
        chunks = []
        for a in range(0, n_rows, rows):
            b = min(a + rows, n_rows)
            chunk_mask = mask if shared else mask[..., a:b, :]
            chunks.append(self._reduce(module, query[:, :, a:b], k, value, chunk_mask, scaling,
                                       positions[a:b] if shared else None, offset))
        self._per_layer[layer].append(torch.cat([c[0] for c in chunks], dim=2))
        self._on_response[layer].append(torch.cat([c[1] for c in chunks], dim=2))

    def _gram(self, module, heads: int, head_dim: int, device) -> torch.Tensor:
        """``[heads, d, d]`` Gram matrices ``W_O^h^T W_O^h`` of the output projection (once per module)."""
        key = id(module)
        if key not in self._grams:
            weight = output_projection(module).detach().float().to(device)
            blocks = weight.reshape(weight.shape[0], heads, head_dim).permute(1, 0, 2)  # [heads, hidden, d]
            self._grams[key] = blocks.transpose(1, 2) @ blocks
        return self._grams[key]

    def _value_families(self, module, weights: torch.Tensor, value: torch.Tensor) -> list[torch.Tensor]:
        """``value-norm`` and/or ``output-norm`` ``[batch, heads, rows, sources]`` from the weights' rows."""
        batch, heads, n_rows, _ = weights.shape
        kv_heads, head_dim = value.shape[1], value.shape[-1]
        n_sources = self.source_matrix.shape[-1]
        per_head = value.repeat_interleave(heads // kv_heads, dim=1) if kv_heads != heads else value
        mixed = weights.new_zeros(batch, heads, n_rows, n_sources, head_dim)
        for b, spans in enumerate(self._spans):
            for s, (start, end) in enumerate(spans):
                if end > start:
                    mixed[b, :, :, s] = weights[b, :, :, start:end] @ per_head[b, :, start:end]
        out = []
        for family in self.families:
            if family == "value-norm":
                out.append(mixed.norm(dim=-1))
            elif family == "output-norm":
                gram = self._gram(module, heads, head_dim, weights.device)
                quad = torch.einsum("bhrsd,hde,bhrse->bhrs", mixed, gram, mixed)
                out.append(quad.clamp(min=0).sqrt())
        return out

    def _reduce(self, module, query, k, value, mask, scaling, positions: torch.Tensor | None,
                offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax of query rows against all (float32) keys, reduced per source; and each row's attention mass
        on the keys after the prompt (the response so far: Lookback Lens's "new" tokens), ``[batch, heads,
        rows]``. ``mask`` is the rows' own (causal) mask, or one row that holds for all (padding) with the rows'
        ``positions``, after which keys are masked here. Keys start at position ``offset`` (0 unless a
        sliding-window cache dropped the oldest)."""
        batch, heads, n_rows, dim = query.shape
        q = query.float() * (scaling if scaling is not None else dim**-0.5)  # scale the rows, not the scores
        k_len = k.shape[2]
        kv_heads = k.shape[1]
        groups = heads // kv_heads
        scores = torch.matmul(q.reshape(batch, kv_heads, groups * n_rows, dim), k.transpose(-1, -2))
        scores = scores.reshape(batch, heads, n_rows, k_len)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
        if positions is not None:  # only keys after the earliest row can be in a row's future
            first = max(0, int(positions.min()) + 1 - offset)
            if first < k_len:
                future = torch.arange(offset + first, offset + k_len, device=q.device)[None, :] > positions[:, None]
                scores[..., first:] = scores[..., first:].masked_fill(future, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        prompt_len = self.source_matrix.shape[1]
        if offset:  # as if the dropped keys were there, with no weight (outside the window)
            weights = torch.nn.functional.pad(weights, (offset, 0))
            value = torch.nn.functional.pad(value, (0, 0, offset, 0)) if value is not None else None
        out = []
        if "attention-weight" in self.families:
            out.append(torch.matmul(weights[..., :prompt_len], self.source_matrix[:, None].to(weights.device)))
        if self._needs_values:
            out.extend(self._value_families(module, weights[..., :prompt_len], value[:, :, :prompt_len]))
        return torch.cat(out, dim=-1), weights[..., prompt_len:].sum(-1)

    def record_tokens(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        """Keep each target row's log-probability of its token and the entropy of its next-token distribution
        (``logits`` ``[batch, rows, vocab]``, ``tokens`` ``[batch, rows]``), so signals of the answer's own
        probability come from the same pass."""
        logp = torch.log_softmax(logits.float(), -1)
        self._token_logprobs.append(logp.gather(-1, tokens[..., None])[..., 0])
        self._token_entropy.append(-(logp.exp() * logp).sum(-1))

    def token_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log-probabilities, entropies)``, each ``[batch, rows]``, of the rows recorded with ``record_tokens``."""
        if not self._token_logprobs:
            raise ValueError("no token log-probabilities were recorded in this capture")
        return torch.cat(self._token_logprobs, dim=1), torch.cat(self._token_entropy, dim=1)

    def response_attention(self) -> torch.Tensor:
        """``[batch, rows, layers * heads]``: each target row's attention mass on the response tokens before it
        (index ``layer * heads + head``)."""
        self._check_layers()
        layers = torch.stack([torch.cat(chunks, dim=2) for chunks in self._on_response])  # [L, batch, heads, rows]
        n_layers, batch, heads, rows = layers.shape
        return layers.permute(1, 3, 0, 2).reshape(batch, rows, n_layers * heads)

    def features(self) -> torch.Tensor:
        """``[batch, rows, sources, families * layers * heads]`` (float32), feature index
        ``family * layers * heads + layer * heads + head`` (families in ``self.families`` order)."""
        self._check_layers()
        layers = torch.stack([torch.cat(chunks, dim=2) for chunks in self._per_layer])
        n_layers, batch, heads, rows, columns = layers.shape
        n_families = len(self.families)
        layers = layers.reshape(n_layers, batch, heads, rows, n_families, columns // n_families)
        layers = layers.permute(1, 3, 5, 4, 0, 2)  # [batch, rows, sources, families, layers, heads]
        return layers.reshape(batch, rows, columns // n_families, n_families * n_layers * heads)

    def _check_layers(self) -> None:
        for layer in range(self.num_layers):
            self._flush(layer)
        missing = [i for i, chunks in enumerate(self._per_layer) if not chunks]
        if missing:
            raise UnsupportedModelError(
                f"no attention was captured for layers {missing[:5]}...: the model does not route attention through "
                "transformers' AttentionInterface (set attn_implementation to 'at2'), so AT2 cannot read it"
            )


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
        capture.observe(module, query, key, attention_mask, scaling, value)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def install_attention(model) -> None:
    """Register the ``at2`` attention function (and SDPA's mask builder for it) and switch the model to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, at2_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)

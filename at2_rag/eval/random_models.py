"""Real architectures' shapes with random weights: GPU timings and dtype tests need no downloaded weights.

Timing depends on the shape (layers, heads, KV heads, hidden and MLP sizes, vocabulary), not on the
values, so a random model of Llama-3-8B's config costs what Llama-3-8B costs. Token ids come from any
tokenizer whose vocabulary fits (the default model's, 49,152 tokens, fits all three).
"""

from __future__ import annotations

import torch

from ..lm import LanguageModel

CONFIGS: dict[str, tuple[str, dict]] = {
    "llama-3-8b": ("llama", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False)),
    "qwen2.5-7b": ("qwen2", dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False)),
    "smollm2-135m": ("llama", dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True)),
}


def random_model(name: str, tokenizer, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0) -> LanguageModel:
    """``name``'s architecture (see ``CONFIGS``) with seeded random weights, built directly on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if name not in CONFIGS:
        raise ValueError(f"unknown random config {name!r}; choose from {sorted(CONFIGS)}")
    model_type, values = CONFIGS[name]
    if len(tokenizer) > values["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than {name}'s {values['vocab_size']}")
    config = AutoConfig.for_model(model_type, **values, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return LanguageModel(model, tokenizer, model_id=f"random:{name}")

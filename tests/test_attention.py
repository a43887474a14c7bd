"""The captured per-source features equal eager ``output_attentions=True`` reduced the same way."""

import pytest
import torch

from at2_rag.attention import FeatureCapture
from at2_rag.features import collect
from at2_rag.lm import LanguageModel
from at2_rag.prompts import build_prompt
from at2_rag.sources import to_sources

pytestmark = pytest.mark.slow

SOURCES = [
    ("Kykuit", "Kykuit is a 40-room historic house museum in Pocantico Hills, New York, built for John D. Rockefeller."),
    ("Union Church", "Union Church of Pocantico Hills is a historic church below the Kykuit estate."),
    ("Stone Barns", "Stone Barns Center for Food & Agriculture is a non-profit farm in Pocantico Hills."),
]
QUERY = "How many rooms does the Rockefeller house above Pocantico Hills have?"
RESPONSE = "Kykuit has 40 rooms. It was built for John D. Rockefeller."


def eager_reference(lm: LanguageModel, layout, response_ids):
    """Features from the full eager attention matrices (the O(L^2) path we avoid)."""
    ids = torch.tensor([layout.input_ids + response_ids[:-1]])
    previous = lm.model.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            attentions = lm.model(ids, output_attentions=True).attentions
    finally:
        lm.model.set_attn_implementation(previous)
    prompt_len = len(layout.input_ids)
    per_layer = []
    for att in attentions:  # [1, heads, L, L]
        rows = att[0, :, prompt_len - 1 :, :].float()  # rows that predict the response tokens
        per_layer.append(torch.stack([rows[:, :, a:b].sum(-1) for a, b in layout.token_spans], dim=-1))
    stacked = torch.stack(per_layer)  # [layers, heads, rows, sources]
    n_layers, heads, rows, sources = stacked.shape
    return stacked.permute(2, 3, 0, 1).reshape(rows, sources, n_layers * heads)


def captured(lm, layout, response_ids):
    capture = FeatureCapture.for_spans([layout.token_spans], [0], len(layout), len(layout.token_spans),
                                       lm.num_layers, lm.num_heads)
    lm.response_logprobs([layout.input_ids], [response_ids], capture)
    return capture.features()[0]


def test_default_model_matches_eager(lm):
    layout = build_prompt(lm.tokenizer, QUERY, to_sources(SOURCES))
    response_ids = lm.encode_response(RESPONSE)
    ours, reference = captured(lm, layout, response_ids), eager_reference(lm, layout, response_ids)
    assert ours.shape == (len(response_ids), 3, 30 * 9)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)


def _tiny(config_cls, model_cls, lm, **extra):
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(lm.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                        num_attention_heads=4, max_position_embeddings=512, **extra)
    model = model_cls(config).float()
    model.config._attn_implementation = "sdpa"
    return LanguageModel(model, lm.tokenizer, model_id=config.model_type)


@pytest.mark.parametrize("arch", ["qwen2", "gpt_neox"])
def test_other_architectures_match_eager(lm, arch):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch == "qwen2":
        tiny = _tiny(Qwen2Config, Qwen2ForCausalLM, lm, num_key_value_heads=2)  # grouped-query attention
    else:
        tiny = _tiny(GPTNeoXConfig, GPTNeoXForCausalLM, lm)
    layout = build_prompt(tiny.tokenizer, QUERY, to_sources(SOURCES))
    response_ids = tiny.encode_response(RESPONSE)
    ours, reference = captured(tiny, layout, response_ids), eager_reference(tiny, layout, response_ids)
    assert ours.shape == (len(response_ids), 3, 3 * 4)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)


def test_generation_capture_equals_teacher_forcing(lm):
    """Features captured while decoding (KV cache, one row per step) equal the one-pass teacher-forced ones."""
    sources = to_sources(SOURCES)
    generated = collect(lm, [QUERY], [sources], max_new_tokens=16)[0]
    forced = collect(lm, [QUERY], [sources], responses=[generated.response])[0]
    assert generated.response_ids == forced.response_ids
    assert torch.allclose(generated.token_features, forced.token_features, atol=1e-5, rtol=0)


def test_batched_capture_equals_single(lm):
    """Left padding in a batch does not change any item's features."""
    short = to_sources(SOURCES[:2])
    long = to_sources(SOURCES)
    both = collect(lm, [QUERY, QUERY], [short, long], responses=[RESPONSE, "Forty."])
    alone = collect(lm, [QUERY], [short], responses=[RESPONSE])[0]
    assert torch.allclose(both[0].token_features, alone.token_features, atol=1e-5, rtol=0)
    assert both[1].token_features.shape[1] == 3

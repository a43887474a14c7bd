"""The captured per-source features equal eager ``output_attentions=True`` reduced the same way."""

import pytest
import torch

from at2_rag.attention import FeatureCapture
from at2_rag.features import collect
from at2_rag.lm import LanguageModel
from at2_rag.prompts import build_prompt

pytestmark = pytest.mark.slow


def eager_reference(lm: LanguageModel, layout, response_ids, eager_attentions):
    """Features from the full eager attention matrices (the O(L^2) path we avoid)."""
    attentions = eager_attentions(lm, torch.tensor([layout.input_ids + response_ids[:-1]]))
    prompt_len = len(layout.input_ids)
    per_layer = []
    for att in attentions:  # [1, heads, L, L]
        rows = att[0, :, prompt_len - 1 :, :].float().cpu()  # rows that predict the response tokens
        per_layer.append(torch.stack([rows[:, :, a:b].sum(-1) for a, b in layout.token_spans], dim=-1))
    stacked = torch.stack(per_layer)  # [layers, heads, rows, passages]
    n_layers, heads, rows, passages = stacked.shape
    return stacked.permute(2, 3, 0, 1).reshape(rows, passages, n_layers * heads)


def captured(lm, layout, response_ids):
    capture = FeatureCapture.for_spans([layout.token_spans], [0], len(layout), len(layout.token_spans),
                                       lm.num_layers, lm.num_heads, lm.device)
    lm.response_logprobs([layout.input_ids], [response_ids], capture)
    return capture.features()[0].cpu()


def test_default_model_matches_eager(lm, kykuit, eager_attentions):
    layout = build_prompt(lm.tokenizer, kykuit.query, kykuit.passages)
    response_ids = lm.encode_response(kykuit.response)
    ours, reference = captured(lm, layout, response_ids), eager_reference(lm, layout, response_ids, eager_attentions)
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
def test_other_architectures_match_eager(lm, arch, kykuit, eager_attentions):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch == "qwen2":
        tiny = _tiny(Qwen2Config, Qwen2ForCausalLM, lm, num_key_value_heads=2)  # grouped-query attention
    else:
        tiny = _tiny(GPTNeoXConfig, GPTNeoXForCausalLM, lm)
    layout = build_prompt(tiny.tokenizer, kykuit.query, kykuit.passages)
    response_ids = tiny.encode_response(kykuit.response)
    ours = captured(tiny, layout, response_ids)
    reference = eager_reference(tiny, layout, response_ids, eager_attentions)
    assert ours.shape == (len(response_ids), 3, 3 * 4)
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)


def test_generation_capture_equals_teacher_forcing(lm, kykuit):
    """Features captured while decoding (KV cache, one row per step) equal the one-pass teacher-forced ones."""
    passages = kykuit.passages
    generated = collect(lm, [kykuit.query], [passages], max_new_tokens=16)[0]
    forced = collect(lm, [kykuit.query], [passages], responses=[generated.response])[0]
    assert generated.response_ids == forced.response_ids
    assert torch.allclose(generated.token_features, forced.token_features, atol=1e-5, rtol=0)


def test_batched_capture_equals_single(lm, kykuit):
    """Left padding in a batch does not change any item's features."""
    short = kykuit.passages[:2]
    long = kykuit.passages
    both = collect(lm, [kykuit.query, kykuit.query], [short, long], responses=[kykuit.response, "Forty."])
    alone = collect(lm, [kykuit.query], [short], responses=[kykuit.response])[0]
    assert torch.allclose(both[0].token_features, alone.token_features, atol=1e-5, rtol=0)
    assert both[1].token_features.shape[1] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_capture_equals_eager_on_cuda(default_tokenizer, kykuit, eager_attentions):
    """Float32 on CUDA (the SmolLM2 shape, random weights): captured rows equal eager attention."""
    from at2_rag.eval.random_models import random_model

    model = random_model("smollm2-135m", default_tokenizer, "cuda", torch.float32)
    layout = build_prompt(model.tokenizer, kykuit.query, kykuit.passages)
    response_ids = model.encode_response(kykuit.response)
    ours = captured(model, layout, response_ids)
    assert torch.allclose(ours, eager_reference(model, layout, response_ids, eager_attentions), atol=1e-5, rtol=0)

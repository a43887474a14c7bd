"""Capture while decoding keeps each step's query and reduces once per layer from the final keys: the rows must
equal a teacher-forced pass over the same tokens, for a dynamic or static cache, in a padded batch, for every
feature family, and for sliding-window layers (reduced at each step, their cache drops old keys)."""

import pytest
import torch

from at2_rag.attention import FAMILIES, FeatureCapture
from at2_rag.lm import LanguageModel
from at2_rag.prompts import build_prompt


def _capture(lm, layouts, families=("attention-weight",)):
    width = max(len(lay) for lay in layouts)
    spans = [lay.token_spans + lay.sentence_token_spans for lay in layouts]
    return FeatureCapture.for_spans(spans, [width - len(lay) for lay in layouts], width, max(len(s) for s in spans),
                                    lm.num_layers, lm.num_heads, lm.device, families=families)


def generated_and_forced(lm, layouts, n=12, cache="dynamic", families=("attention-weight",)):
    """(tokens, generated features, teacher-forced features, generated response attention, forced one)."""
    capture = _capture(lm, layouts, families)
    tokens = lm.generate([lay.input_ids for lay in layouts], n, capture=capture, stop_at_eos=False, cache=cache)
    forced = _capture(lm, layouts, families)
    lm.response_logprobs([lay.input_ids for lay in layouts], tokens, forced)
    return tokens, capture.features(), forced.features(), capture.response_attention(), forced.response_attention()


def _tiny(config_cls, model_cls, tokenizer, **extra) -> LanguageModel:
    torch.manual_seed(3)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **extra)
    model = model_cls(config).float()
    model.config._attn_implementation = "sdpa"
    return LanguageModel(model, tokenizer, model_id=config.model_type)


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_default_model_decoding_equals_teacher_forcing(lm, kykuit, cache):
    layout = build_prompt(lm.tokenizer, kykuit.query, kykuit.passages)
    tokens, ours, forced, on_response, forced_on_response = generated_and_forced(lm, [layout], 16, cache)
    assert tokens == lm.generate([layout.input_ids], 16, stop_at_eos=False)  # same tokens as the dynamic cache
    assert ours.shape == (1, 16, 3 + len(layout.sentence_token_spans), 30 * 9)
    assert torch.allclose(ours, forced, atol=1e-5, rtol=0)
    assert torch.allclose(on_response, forced_on_response, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_every_family_while_decoding_a_padded_batch(default_tokenizer, kykuit, cache):
    """Left padding, grouped-query heads, all three families: decoding rows equal teacher forcing, and each
    item equals itself decoded alone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = _tiny(LlamaConfig, LlamaForCausalLM, default_tokenizer)
    layouts = [build_prompt(tiny.tokenizer, kykuit.query, kykuit.passages[:1]),
               build_prompt(tiny.tokenizer, kykuit.query, kykuit.passages)]
    assert len(layouts[0]) < len(layouts[1])
    tokens, ours, forced, on_response, forced_on_response = generated_and_forced(tiny, layouts, 10, cache, FAMILIES)
    assert torch.allclose(ours, forced, atol=1e-5, rtol=1e-4)
    assert torch.allclose(on_response, forced_on_response, atol=1e-5, rtol=1e-4)
    short_tokens, short, _, _, _ = generated_and_forced(tiny, layouts[:1], 10, cache, FAMILIES)
    assert short_tokens[0] == tokens[0]
    columns = short.shape[2]
    assert torch.allclose(ours[0, :, :columns], short[0], atol=1e-5, rtol=1e-4)


def test_sliding_window_layers_while_decoding(default_tokenizer, kykuit):
    """A window shorter than the prompt: the cache drops old keys, and the rows still equal teacher forcing."""
    from transformers import MistralConfig, MistralForCausalLM

    layout = build_prompt(default_tokenizer, kykuit.query, kykuit.passages)
    window = len(layout) - layout.token_spans[-1][1] + 12  # the end of the last passage is inside it
    assert window < len(layout) // 2
    tiny = _tiny(MistralConfig, MistralForCausalLM, default_tokenizer, sliding_window=window)
    _, ours, forced, on_response, forced_on_response = generated_and_forced(tiny, [layout], 10)
    assert torch.allclose(ours, forced, atol=1e-5, rtol=1e-4)
    assert torch.allclose(on_response, forced_on_response, atol=1e-5, rtol=1e-4)
    passages = ours[0, :, : len(layout.token_spans)].sum((0, 2))
    assert passages[-1] > 0 and passages[0] == 0  # the first passage is outside every response row's window
    with pytest.raises(ValueError, match="sliding-window"):
        tiny.generate([layout.input_ids], 2, cache="static")


def test_unknown_cache_kind_is_refused(tiny_lm):
    with pytest.raises(ValueError, match="'dynamic' or 'static'"):
        tiny_lm.generate([[1, 2, 3]], 2, cache="paged")


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_half_precision_on_cuda(default_tokenizer, kykuit, dtype, cache):
    """bfloat16 / float16 on CUDA (the SmolLM2 shape, random weights): a padded batch decoded with capture
    follows teacher forcing, and the half-precision rows follow a float32 capture of the same weights."""
    import copy

    from at2_rag.eval.random_models import random_model

    full = random_model("smollm2-135m", default_tokenizer, "cuda", torch.float32)
    half = LanguageModel(copy.deepcopy(full.model).to(dtype), default_tokenizer, f"{full.model_id}-{dtype}")
    layouts = [build_prompt(half.tokenizer, kykuit.query, kykuit.passages[:1]),
               build_prompt(half.tokenizer, kykuit.query, kykuit.passages)]
    tokens, ours, forced, on_response, forced_on_response = generated_and_forced(half, layouts, 12, cache)
    assert ours.dtype == torch.float32
    assert correlation(ours, forced) > 0.999 and correlation(on_response, forced_on_response) > 0.999
    assert (ours - forced).abs().max() < 0.02
    reference = _capture(full, layouts)
    full.response_logprobs([lay.input_ids for lay in layouts], tokens, reference)
    assert correlation(forced, reference.features()) > 0.999

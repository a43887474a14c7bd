"""Each feature family equals a direct computation from eager attention weights and value states."""

import pytest
import torch

from at2_rag.attention import FAMILIES, FeatureCapture, parse_families
from at2_rag.features import collect
from at2_rag.lm import LanguageModel
from at2_rag.prompts import build_prompt


def _tiny(arch: str, tokenizer) -> LanguageModel:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    torch.manual_seed(1)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    model = model_cls(config).float()
    model.config._attn_implementation = "sdpa"
    return LanguageModel(model, tokenizer, model_id=f"tiny-{arch}")


def reference(lm: LanguageModel, layout, response_ids, spans, eager_attentions) -> dict[str, torch.Tensor]:
    """Per family ``[rows, passages, layers * heads]`` from eager attention matrices and hooked value states."""
    values = []
    hooks = [layer.self_attn.v_proj.register_forward_hook(lambda m, i, o: values.append(o[0].detach().float()))
             for layer in lm.model.model.layers]
    try:
        attentions = eager_attentions(lm, torch.tensor([layout.input_ids + response_ids[:-1]]))
    finally:
        for hook in hooks:
            hook.remove()
    prompt_len = len(layout.input_ids)
    out = {family: [] for family in FAMILIES}
    for layer, (att, v) in enumerate(zip(attentions, values)):
        heads = att.shape[1]
        head_dim = lm.model.config.hidden_size // heads
        v = v.reshape(v.shape[0], -1, head_dim)  # [L, kv heads, d]
        groups = heads // v.shape[1]
        o_proj = lm.model.model.layers[layer].self_attn.o_proj.weight.float()
        rows = att[0, :, prompt_len - 1 :, :].float()  # [heads, rows, L]
        weight, value_norm, output_norm = [], [], []
        for a, b in spans:
            weight.append(rows[:, :, a:b].sum(-1))
            mixed = torch.stack([rows[h, :, a:b] @ v[a:b, h // groups] for h in range(heads)])  # [heads, rows, d]
            value_norm.append(mixed.norm(dim=-1))
            projected = torch.stack([mixed[h] @ o_proj[:, h * head_dim : (h + 1) * head_dim].T for h in range(heads)])
            output_norm.append(projected.norm(dim=-1))
        for family, columns in zip(FAMILIES, (weight, value_norm, output_norm)):
            out[family].append(torch.stack(columns, dim=-1))  # [heads, rows, passages]
    return {family: torch.stack(layers).permute(2, 3, 0, 1).flatten(2) for family, layers in out.items()}


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, default_tokenizer):
    return _tiny(request.param, default_tokenizer)


def test_each_family_matches_direct_computation(tiny, kykuit, eager_attentions):
    layout = build_prompt(tiny.tokenizer, kykuit.query, kykuit.passages)
    response_ids = tiny.encode_response(kykuit.response)
    spans = layout.token_spans + layout.sentence_token_spans
    expected = reference(tiny, layout, response_ids, spans, eager_attentions)
    capture = FeatureCapture.for_spans([spans], [0], len(layout), len(spans), tiny.num_layers, tiny.num_heads,
                                       families=FAMILIES)
    tiny.response_logprobs([layout.input_ids], [response_ids], capture)
    ours = capture.features()[0]
    width = tiny.num_layers * tiny.num_heads
    assert ours.shape == (len(response_ids), len(spans), 3 * width)
    for i, family in enumerate(FAMILIES):
        assert torch.allclose(ours[..., i * width : (i + 1) * width], expected[family], atol=1e-5, rtol=1e-4), family


def test_family_subsets_select_the_same_columns(tiny, kykuit):
    passages = kykuit.passages
    everything = collect(tiny, [kykuit.query], [passages], [kykuit.response], families=FAMILIES)[0]
    only_values = collect(tiny, [kykuit.query], [passages], [kykuit.response], families=("value-norm",))[0]
    assert torch.allclose(everything.family_features(["value-norm"]), only_values.features, atol=1e-6)
    assert torch.allclose(everything.at_level("sentence").family_features("output-norm+attention-weight"),
                          torch.cat([everything.at_level("sentence").family_features(["output-norm"]),
                                     everything.at_level("sentence").family_features(["attention-weight"])], -1))
    with pytest.raises(ValueError, match="not captured"):
        only_values.family_features(["output-norm"])


def test_value_families_while_decoding_equal_teacher_forcing(tiny, kykuit):
    """With a KV cache (one row per step) the value families equal the one-pass teacher-forced ones."""
    query, passages = kykuit.query, kykuit.passages
    generated = collect(tiny, [query], [passages], max_new_tokens=8, families=FAMILIES, stop_at_blank_line=False)[0]
    forced = collect(tiny, [query], [passages], responses=[generated.response], families=FAMILIES)[0]
    if generated.response_ids != forced.response_ids:
        pytest.skip("the random model's text does not round-trip through the tokenizer")
    assert torch.allclose(generated.token_features, forced.token_features, atol=1e-5, rtol=1e-4)


def test_batched_value_families_equal_single(tiny, kykuit):
    query, passages = kykuit.query, kykuit.passages
    both = collect(tiny, [query, query], [passages[:2], passages], [kykuit.response, "Forty."], families=FAMILIES)
    alone = collect(tiny, [query], [passages[:2]], [kykuit.response], families=FAMILIES)[0]
    assert torch.allclose(both[0].token_features, alone.token_features, atol=1e-5, rtol=1e-4)


def test_parse_families_rejects_unknown_and_repeated_names():
    assert parse_families("attention-weight+output-norm") == ("attention-weight", "output-norm")
    for bad in ("", "attention", "value-norm+value-norm"):
        with pytest.raises(ValueError):
            parse_families(bad)

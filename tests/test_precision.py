"""load_model(precision=...): each number format's features against float32's, the "auto" rule and its fallback,
and bad names. A tiny random Llama saved to disk goes through the real loading path (fast tier).

Tolerances: the largest absolute difference of an attention-weight feature (attention mass of a response token
on a passage or sentence, in [0, 1]) from float32's: bfloat16 0.005, int8 0.03. The tiny model is initialised
with std 0.1 so that its attention is far from uniform (features spread with std about 0.017); measured over
three seeds: bfloat16 at most 0.0013, int8 at most 0.014. The real-model equality checks (Spearman, citations,
``supported``) are benchmarks/precision_check.py.
"""

import pytest
import torch

from at2_rag import InvalidInputError, ModelLoadError, load_model, to_passages
from at2_rag import lm as lm_module
from at2_rag.features import collect
from at2_rag.lm import resolve_precision

TOLERANCE = {"bfloat16": 0.005, "int8": 0.03}
QUERY = "How many rooms does the house have?"
PASSAGES = [("Kykuit", "Kykuit is a 40-room historic house museum. It was built for John D. Rockefeller."),
            ("Union Church", "Union Church of Pocantico Hills is a historic church below the Kykuit estate."),
            ("Stone Barns", "Stone Barns Center is a non-profit farm in Pocantico Hills.")]
RESPONSE = "Kykuit has 40 rooms. It was built for John D. Rockefeller."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, default_tokenizer):
    """A 2-layer random Llama with the default tokenizer, saved as a local model directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(default_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=default_tokenizer.eos_token_id,
                         initializer_range=0.1)
    path = tmp_path_factory.mktemp("tiny-precision")
    LlamaForCausalLM(config).save_pretrained(path)
    default_tokenizer.save_pretrained(path)
    return str(path)


def _features(lm):
    job = collect(lm, [QUERY], [to_passages(PASSAGES)], [RESPONSE])[0]
    return job.passage_token_features, job.sentence_token_features, job.token_logprobs


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_features_match_float32(tiny_dir, precision):
    if precision == "int8" and not lm_module.int8_available():
        pytest.skip("no int8 quantised engine in this torch build")
    reference, lm = load_model(tiny_dir, precision="float32"), load_model(tiny_dir, precision=precision)
    assert (reference.precision, lm.precision) == ("float32", precision)
    assert lm.fingerprint["precision"] == precision
    assert {k: v for k, v in lm.fingerprint.items() if k != "precision"} == \
        {k: v for k, v in reference.fingerprint.items() if k != "precision"}
    if precision == "bfloat16":
        assert next(lm.model.parameters()).dtype == torch.bfloat16
    else:
        assert type(lm.model.model.layers[0].self_attn.q_proj).__module__.startswith("torch.ao.nn.quantized")
        assert isinstance(lm.model.get_output_embeddings(), torch.nn.Linear)  # the head stays float
    for ours, theirs in zip(_features(lm), _features(reference)):
        assert ours.dtype == torch.float32  # the capture upcasts: softmax rows in float32 in every mode
        assert ours.shape == theirs.shape
    ours, theirs = _features(lm)[:2], _features(reference)[:2]
    for a, b in zip(ours, theirs):
        assert b.std().item() > 2 * TOLERANCE["bfloat16"]  # attention is not uniform: the check can fail
        assert (a - b).abs().max().item() < TOLERANCE[precision]


def test_output_norm_family_reads_a_quantised_projection(tiny_dir):
    if not lm_module.int8_available():
        pytest.skip("no int8 quantised engine in this torch build")
    from at2_rag.attention import output_projection

    lm, reference = load_model(tiny_dir, precision="int8"), load_model(tiny_dir, precision="float32")
    ours = output_projection(lm.model.model.layers[0].self_attn)
    theirs = output_projection(reference.model.model.layers[0].self_attn)
    assert ours.shape == theirs.shape and ours.dtype == torch.float32
    assert (ours - theirs).abs().max().item() < 0.02 * theirs.abs().max().item()


def test_auto_picks_bfloat16_only_with_native_support(monkeypatch):
    monkeypatch.setattr(lm_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", None, "cpu") == ("bfloat16", torch.bfloat16)
    monkeypatch.setattr(lm_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", None, "cpu") == ("float32", torch.float32)
    assert resolve_precision(None, None, "cpu") == ("float32", torch.float32)  # no precision: as before
    assert resolve_precision("auto", "bfloat16", "cpu") == ("bfloat16", torch.bfloat16)  # a dtype wins over auto
    assert resolve_precision("auto", None, "cuda") == ("bfloat16", torch.bfloat16)  # CUDA: today's default


def test_native_bf16_is_read_from_cpu_flags(monkeypatch):
    monkeypatch.setattr(lm_module, "_cpu_flags", lambda: frozenset({"avx512f", "avx512bw"}))
    assert not lm_module.cpu_has_native_bf16()
    monkeypatch.setattr(lm_module, "_cpu_flags", lambda: frozenset())  # no /proc/cpuinfo (macOS, Windows)
    assert not lm_module.cpu_has_native_bf16()
    assert resolve_precision("auto", None, "cpu")[0] == "float32"


def test_auto_loads_float32_without_bf16(tiny_dir, monkeypatch):
    monkeypatch.setattr(lm_module, "cpu_has_native_bf16", lambda: False)
    lm = load_model(tiny_dir, precision="auto")
    assert lm.precision == "float32" and next(lm.model.parameters()).dtype == torch.float32
    assert lm is load_model(tiny_dir, precision="float32")  # one cached load per resolved precision
    monkeypatch.setattr(lm_module, "cpu_has_native_bf16", lambda: True)
    assert load_model(tiny_dir, precision="auto") is load_model(tiny_dir, precision="bfloat16")


def test_int8_unavailable(monkeypatch):
    monkeypatch.setattr(lm_module, "int8_available", lambda: False)
    with pytest.raises(ModelLoadError, match="int8"):
        load_model("./does-not-matter", precision="int8")


@pytest.mark.parametrize("precision", ["fp32", "BF16", "float16", "", 8, ["bfloat16"]])
def test_bad_precision_names_raise_before_loading(precision):
    with pytest.raises(InvalidInputError, match="precision"):
        load_model("./does-not-matter", precision=precision)


def test_precision_and_dtype_must_agree():
    with pytest.raises(InvalidInputError, match="disagree"):
        load_model("./does-not-matter", dtype="float32", precision="bfloat16")
    with pytest.raises(InvalidInputError, match="CPU only"):
        resolve_precision("int8", None, "cuda")


def test_a_language_model_built_directly_reports_its_precision(tiny_lm):
    assert tiny_lm.precision == "float32" and tiny_lm.fingerprint["precision"] == "float32"

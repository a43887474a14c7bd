"""Shared fixtures: the real default model (loaded once per session), a tiny random model with the real
default tokenizer (fast tier: contracts in seconds), and real HotpotQA rows."""

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1] / "shared" / "data"
DATA = SHARED / "hotpotqa"

# The three-document knowledge base the integration tests retrieve from, its question, and an answer one of
# whose sentences ("It is (kept) in the British Museum.") is supported by the first document.
KB_TEXTS = {
    "Rosetta Stone": "The Rosetta Stone was found in 1799. Champollion deciphered it in 1822. "
                     "It is in the British Museum.",
    "Sourdough": "Sourdough bread is leavened by wild yeast. The bacteria make it sour.",
    "Kilimanjaro": "Mount Kilimanjaro rises 5,895 metres. It is a dormant volcano in Tanzania.",
}
KB_QUESTION = "Who deciphered the Rosetta Stone?"
KB_ANSWER = "Champollion deciphered it in 1822. It is in the British Museum."
PINNED = Path(__file__).resolve().parent / "tests" / "data" / "pinned_shipped.json"


def pinned_outputs(attributor) -> list[tuple[dict, dict]]:
    """(pinned row, what the attributor gives now) for the rows of ``PINNED``: the kept top-2 passages, the AT2
    passage scores and every citation (span, verdict, support, cited passages and sentences)."""
    from at2_rag.demo import hotpot_items
    from at2_rag.eval.hotpotqa import load_hotpotqa

    items = {item.label: item for item in hotpot_items(load_hotpotqa(DATA / "validation.jsonl", limit=4))}
    out = []
    for row in json.loads(PINNED.read_text()):
        item = items[row["id"]]
        cited = attributor.cite(item.question, item.passages, response=item.answer)
        pruned = attributor.prune(item.question, item.passages, response=item.answer, top_n=2)
        now = {"kept": pruned.indices, "at2_scores": [round(s, 6) for s in pruned.attribution.scores],
               "citations": [{"start": c.start, "end": c.end, "supported": c.supported, "support": round(c.support, 6),
                              "cited": [[p.index, [s.index for s in p.sentences]] for p in c.passages]}
                             for c in cited.citations]}
        out.append((row, now))
    return out


@pytest.fixture(scope="session")
def lm():
    from at2_rag import load_model

    return load_model()


@pytest.fixture(scope="session")
def attributor(lm):
    from at2_rag import AT2Attributor

    return AT2Attributor.from_pretrained(max_new_tokens=24)


@pytest.fixture(scope="session")
def default_tokenizer():
    """The bundled model's tokenizer; ``AT2_RAG_TOKENIZER`` names a saved copy of it (GPU machines lack the GGUF)."""
    import os

    from transformers import AutoTokenizer

    from at2_rag.lm import default_model_path

    if os.environ.get("AT2_RAG_TOKENIZER"):
        return AutoTokenizer.from_pretrained(os.environ["AT2_RAG_TOKENIZER"])
    path = default_model_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def tiny_lm(default_tokenizer):
    """A 2-layer Llama with random weights and the default model's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from at2_rag import LanguageModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(default_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=default_tokenizer.eos_token_id)
    return LanguageModel(LlamaForCausalLM(config), default_tokenizer, "tiny-llama")


@pytest.fixture(scope="session")
def tiny_calibration(tiny_lm):
    """A calibration for the tiny model: hybrid evidence (lexical weighted) and fusion for both drafters."""
    from at2_rag import Calibration, EvidenceModel, FusionModel
    from at2_rag.evidence import AT2_COMPONENTS, LEXICAL_COMPONENTS

    names = list(AT2_COMPONENTS + LEXICAL_COMPONENTS)
    evidence = {
        "at2": EvidenceModel(name="at2", components=list(AT2_COMPONENTS), mean=[0, 0], scale=[1, 1],
                             weights=[1.0, 1.0], bias=0.0, threshold=0.5),
        "hybrid": EvidenceModel(name="hybrid", components=names, mean=[0] * 6, scale=[1] * 6,
                                weights=[0.1, 0.1, 4.0, 0.5, 4.0, 0.5], bias=-1.5, threshold=0.5),
    }
    fusion = {kind: FusionModel(weight=0.5, k=1.0) for kind in ("llm", "attributor")}
    return Calibration(model_id="tiny-llama", sentence_coefficients="", passage_coefficients="", evidence=evidence,
                       default_evidence="hybrid", fusion=fusion)


@pytest.fixture(scope="session")
def tiny_attributor(tiny_lm, tiny_calibration):
    from at2_rag import AT2Attributor, AverageAttentionScorer

    return AT2Attributor(tiny_lm, AverageAttentionScorer(), AverageAttentionScorer(), max_new_tokens=6,
                         calibration=tiny_calibration)


def _eager_attentions(lm, ids):
    """Full attention matrices from the eager implementation (the O(L^2) reference capture tests compare to)."""
    import torch

    previous = lm.model.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            return lm.model(ids.to(lm.device), output_attentions=True).attentions
    finally:
        lm.model.set_attn_implementation(previous)


@pytest.fixture(scope="session")
def eager_attentions():
    return _eager_attentions


@pytest.fixture(scope="session")
def kykuit():
    """A small three-passage question with a two-sentence answer (capture tests share it)."""
    from types import SimpleNamespace

    from at2_rag.passages import to_passages

    return SimpleNamespace(
        query="How many rooms does the Rockefeller house above Pocantico Hills have?",
        response="Kykuit has 40 rooms. It was built for John D. Rockefeller.",
        passages=to_passages([
            ("Kykuit", "Kykuit is a 40-room historic house museum in Pocantico Hills, New York. It was built for "
             "John D. Rockefeller."),
            ("Union Church", "Union Church of Pocantico Hills is a historic church below the Kykuit estate."),
            ("Stone Barns", "Stone Barns Center for Food & Agriculture is a non-profit farm in Pocantico Hills."),
        ]))


@pytest.fixture(scope="session")
def validation_rows():
    from at2_rag.eval.hotpotqa import load_hotpotqa

    return load_hotpotqa(DATA / "validation.jsonl")


@pytest.fixture(scope="session")
def train_path():
    return DATA / "train.jsonl"


@pytest.fixture(scope="session")
def rag_corpus():
    """Eight short paragraphs and three questions with answers as a capable LLM would write them."""
    corpus = [json.loads(line) for line in (SHARED / "rag" / "corpus.jsonl").read_text().splitlines() if line]
    questions = [json.loads(line) for line in (SHARED / "rag" / "questions.jsonl").read_text().splitlines() if line]
    return corpus, questions

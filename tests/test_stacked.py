"""The shipped detector's fit (at2_rag.fit.stacked): forward selection by leave-one-dataset-out, operating points
over sets, invented sentences, MiniLM similarity inputs; and the lexical facts it reads."""

import numpy as np
import pytest

from at2_rag.fit import stacked
from at2_rag.support import EMBEDDING, LEXICAL, ContextVocabulary, context_pieces, embedding_facts


def _records(seed=0, n=60):
    """Answers of every labelled set where ``coverage`` separates the labels and ``log_words`` is noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in stacked.DATASETS:
        for i in range(n):
            labels = [int(rng.random() < 0.3) for _ in range(3)]
            inputs = [{**{f: float(rng.normal()) for f in LEXICAL},
                       "coverage": float(rng.normal(0.0 if lab else 1.5, 0.5))} for lab in labels]
            rows.append({"id": f"{d}:{i}", "group": f"{d}:{i}", "dataset": d, "labels": labels, "inputs": inputs})
    return rows


def test_forward_selection_keeps_what_transfers_and_stops():
    rows = _records()
    best, table = stacked.choose(rows, {name: [name] for name in ("log_words", "coverage", "first")})
    assert best["inputs"] == best["candidates"] == ["coverage"]
    assert best["mean_auroc"] > 0.9 and set(best["auroc_by_left_out_set"]) == set(stacked.DATASETS)  # sets present
    assert {tuple(row["candidates"]) for row in table} >= {("log_words",), ("coverage",), ("first",)}


def test_a_block_of_inputs_is_chosen_or_left_as_one_candidate():
    rows = _records()
    best, _ = stacked.choose(rows, {"noise": ["log_words", "first"], "with coverage": ["position", "coverage"]})
    assert best["candidates"] == ["with coverage"] and best["inputs"] == ["position", "coverage"]


def test_model_signals_join_the_records_and_the_candidates(tmp_path):
    """Sentences with collected signals keep them (and only those sentences are used); every single-pass signal
    is a candidate, the lookback ratios one candidate, and an evidence probability the rows carry; PMI, which needs
    a second pass, is not."""
    import json

    from at2_rag.eval.hallucination import read_answers
    from at2_rag.support import MODEL, NO_CONTEXT
    from conftest import SHARED

    if not (SHARED / "hallucination").is_dir():
        pytest.skip("shared labelled answers not present")
    answer = next(a for a in read_answers(SHARED / "hallucination" / "ragtruth_dev.jsonl") if a.task == "QA")
    texts = [answer.response[a:b] for a, b in stacked.sentence_spans(answer.response)]
    signals = [{**{name: float(k) for name in MODEL}, "lookback_0": 0.5, "lookback_1": 0.25, "coverage": -9.0,
                "evidence_top": 0.75}
               for k in range(len(texts))]
    (tmp_path / "ragtruth-QA.jsonl").write_text(json.dumps({"id": answer.id, "texts": texts, "inputs": signals}) + "\n")
    rows, _ = stacked.records(SHARED / "hallucination", signals_dir=tmp_path)
    assert [r["id"] for r in rows] == [answer.id]
    kept = rows[0]["inputs"]
    assert kept and all(row["lookback_1"] == 0.25 and row["evidence_top"] == 0.75 and row["coverage"] != -9.0
                        for row in kept)  # lexical: recomputed
    offered = stacked.candidates(rows, verifier=False)
    assert offered["lookback"] == ["lookback_0", "lookback_1"]
    assert {n for n in MODEL if n not in NO_CONTEXT} <= set(offered) and not set(NO_CONTEXT) & set(offered)
    assert offered["evidence_top"] == ["evidence_top"] and "lexical_top" not in offered  # only what was collected
    assert "lookback" not in stacked.candidates(stacked.records(SHARED / "hallucination")[0][:5], verifier=False)


def test_left_out_scores_never_come_from_a_fit_on_the_same_set(monkeypatch):
    rows = _records(n=20)
    seen = []
    real = stacked._fit

    def spy(train, inputs, c, invented=(), seed=0):
        seen.append({r["dataset"] for r in train})
        return real(train, inputs, c, invented, seed)

    monkeypatch.setattr(stacked, "_fit", spy)
    raw = stacked.left_out_raw(rows, ["coverage"], 0.1)
    assert set(raw) == {r["id"] for r in rows}
    assert len(seen) == len(stacked.DATASETS) and all(len(s) == len(stacked.DATASETS) - 1 for s in seen)


def test_operating_points_are_ordered_and_capped():
    rows = _records(n=80)
    rng = np.random.default_rng(1)
    support = [np.clip(np.array([0.8 - 0.5 * lab for lab in r["labels"]]) + rng.normal(0, 0.15, 3), 0, 1)
               for r in rows]
    thresholds, curve = stacked.operating_points(rows, support)
    assert thresholds["lenient"] <= thresholds["balanced"] <= thresholds["strict"]  # nested caps
    k = curve["grid"].index(thresholds["balanced"])
    assert curve["mean_clean_flagged"][k] <= 0.15
    assert curve["mean_balanced_accuracy"][curve["grid"].index(thresholds["strict"])] == \
        pytest.approx(max(curve["mean_balanced_accuracy"]))


def test_invented_records_join_lexical_fits_only():
    invented = [{"id": "x:alone", "inputs": [{f: 0.0 for f in LEXICAL}], "labels": [1]}]
    assert stacked._usable(invented, ["coverage"]) == invented
    assert stacked._usable(invented, ["coverage", "embedding_top"]) == []


def test_embedding_facts_read_sentences_and_adjacent_pairs():
    assert context_pieces([["A b.", "C d.", " "], ["E f."]]) == ["A b.", "C d.", "A b. C d.", "E f."]
    vocabulary = ["paris", "france", "capital", "jade", "carved"]

    def embed(texts):  # bag of words over a tiny vocabulary, L2-normalised
        rows = np.array([[t.lower().count(w) for w in vocabulary] for t in texts], dtype=float) + 1e-9
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    facts = embedding_facts(embed, ["Paris is the capital of France.", "It was carved from jade."],
                            [["Paris is the capital.", "It is in France."]])
    assert list(facts[0]) == list(EMBEDDING)
    assert facts[0]["embedding_top"] > 0.99 > facts[1]["embedding_top"]   # the adjacent pair holds all three words
    assert facts[0]["embedding_top3"] <= facts[0]["embedding_top"]
    assert embedding_facts(embed, [], [["x"]]) == []


def test_pair_coverage_needs_content_pairs_together():
    vocabulary = ContextVocabulary(["Who deciphered it?", "Champollion deciphered the hieroglyphs. Falcons were trained."])
    assert vocabulary.facts("The answer is Champollion.", 0, 1)["pair_coverage"] == 1.0
    assert vocabulary.facts("It is guarded by trained falcons.", 0, 1)["pair_coverage"] < 0.5
    assert vocabulary.facts("Champollion deciphered the hieroglyphs.", 0, 1)["pair_coverage"] == 1.0


def _reading(tiny_lm, inputs):
    from at2_rag.support import SupportDetector

    return SupportDetector(model_id=tiny_lm.model_id, num_layers=tiny_lm.num_layers, num_heads=tiny_lm.num_heads,
                           inputs=inputs, mean=[0.0] * len(inputs), scale=[1.0] * len(inputs),
                           weights=[1.0] * len(inputs), bias=-0.5, calibration_x=[0.0, 1.0],
                           calibration_y=[0.0, 1.0], thresholds={"lenient": 0.2, "balanced": 0.4, "strict": 0.6})


def test_a_detector_reading_similarities_gets_them_from_the_embedder(tiny_lm, tiny_calibration, kykuit):
    from at2_rag import AT2Attributor, AverageAttentionScorer, ConfigurationError

    detector = _reading(tiny_lm, list(EMBEDDING))
    with pytest.raises(ConfigurationError):
        AT2Attributor(tiny_lm, AverageAttentionScorer(), calibration=tiny_calibration, detector=detector)
    calls = []

    def embed(texts):
        calls.append(list(texts))
        rng = np.random.default_rng(len(texts))
        rows = rng.normal(size=(len(texts), 8))
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    attributor = AT2Attributor(tiny_lm, AverageAttentionScorer(), calibration=tiny_calibration, detector=detector,
                               embed=embed)
    response = "Kykuit has 40 rooms. It was carved from green jade."
    cited = attributor.cite(kykuit.query, kykuit.passages, response=response)
    rows = attributor.pipeline.detector_rows(cited.attribution)
    assert all(set(EMBEDDING) <= set(row) for row in rows)
    assert [c.support for c in cited.citations] == pytest.approx(detector.predict(rows).tolist())
    assert calls and calls[0][:2] == ["Kykuit has 40 rooms.", "It was carved from green jade."]


def test_records_of_the_shared_labelled_sets():
    """Every set is read, labels follow the labelled spans, HotpotQA validation rows are refused for fitting."""
    from conftest import DATA, SHARED

    if not (SHARED / "hallucination").is_dir():
        pytest.skip("shared labelled answers not present")
    rows, answers = stacked.records(SHARED / "hallucination", hotpotqa=DATA / "train.jsonl")
    assert {r["dataset"] for r in rows} == set(stacked.SETS)
    for r in rows[::97]:
        assert len(r["labels"]) == len(r["inputs"]) == len(r["targets"]) and set(LEXICAL) <= set(r["inputs"][0])
        answer = answers[r["id"]]
        for (a, b), label in zip(r["targets"], r["labels"]):
            assert label == int(any(min(b, e) > max(a, s) for s, e in answer.spans))
    other = [r for r in rows if r["id"].endswith(":other")]
    assert other and all(set(r["labels"]) == {1} and r["texts"][0].startswith("The answer is") for r in other)
    with pytest.raises(ValueError):
        stacked.hotpot_answers(DATA / "validation.jsonl")

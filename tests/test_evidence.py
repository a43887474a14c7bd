"""Evidence, abstention and fusion contracts (no model needed)."""

from pathlib import Path

import numpy as np
import pytest

from at2_rag import Attribution, FusionModel, Passage, PassageSentence, TargetScores
from at2_rag.cite import cite
from at2_rag.evidence import components, tfidf_similarity
from at2_rag.fit.calibrate import abstention_threshold, fit_evidence_model


def test_abstention_threshold_reaches_the_precision():
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    hits = rng.random(500) < scores  # higher scores are hits more often
    t = abstention_threshold(scores, hits, 0.8)
    assert hits[scores >= t].mean() >= 0.8
    assert abstention_threshold(np.array([0.1, 0.2]), np.array([False, False])) == 0.2


def test_fusion_weights_interpolate_between_the_rankings():
    at2, retriever = [0.9, 0.1, 0.5], [0.1, 0.9, 0.5]
    assert np.argmax(FusionModel(weight=1.0, k=1).fuse(at2, retriever)) == 0
    assert np.argmax(FusionModel(weight=0.0, k=1).fuse(at2, retriever)) == 1
    even = FusionModel(weight=0.5, k=1).fuse(at2, retriever)
    assert even[0] == pytest.approx(even[1])


def test_components_and_a_fitted_model():
    sentences = ["Paris: Paris is the capital of France.", "Rome: Rome is in Italy.", "Bread: Bread is baked."]
    values = components("What is the capital of France?", ["Paris is the capital."], sentences,
                        np.array([[0.1, 0.5, 0.2]]))
    assert set(values) >= {"at2_z", "at2_share", "lex_qa", "lex_a", "lex_qa_z", "lex_a_z"}
    assert np.argmax(values["lex_qa"][0]) == 0 and np.argmax(values["at2_z"][0]) == 1
    labels = np.array([[1, 0, 0]])
    model = fit_evidence_model("hybrid", ["at2_z", "lex_qa"], [values] * 5, [labels] * 5)
    prob = model.predict(values)
    assert prob.shape == (1, 3) and np.all((prob > 0) & (prob < 1)) and np.argmax(prob[0]) == 0
    assert tfidf_similarity(["the a"], ["the", "a"]).shape == (1, 2)  # stop words only: zeros, no error


def _attribution():
    passages = [Passage(id="a", text="Paris is in France. It is big."), Passage(id="b", text="Rome is in Italy.")]
    sentences = [PassageSentence(passage_index=0, start=0, end=19, text="Paris is in France."),
                 PassageSentence(passage_index=0, start=20, end=30, text="It is big."),
                 PassageSentence(passage_index=1, start=0, end=17, text="Rome is in Italy.")]
    targets = [TargetScores(text="Paris is French.", start=0, end=16, scores=[0, 0]),
               TargetScores(text="It has dragons.", start=17, end=32, scores=[0, 0])]
    return Attribution(query="q", response="Paris is French. It has dragons.", passages=passages, scores=[0, 0],
                       targets=targets, sentences=sentences, scorer="x", model="m")


def test_cite_abstains_where_unsupported():
    evidence = np.array([[0.9, 0.6, 0.1], [0.2, 0.1, 0.15]])
    cited = cite(_attribution(), evidence, supported=evidence.max(-1) >= 0.5, evidence_name="hybrid")
    first, second = cited.citations
    assert first.supported and [s.index for s in first.passages] == [0]
    assert [x.index for x in first.passages[0].sentences] == [0, 1] and first.passages[0].quote == "Paris is in France."
    assert not second.supported and second.passages == [] and cited.unsupported == ["It has dragons."]
    assert cited.formatted == "Paris is French.[1] It has dragons."


@pytest.mark.parametrize("max_passages", [1, 2])
def test_cite_respects_max_sources(max_passages):
    evidence = np.array([[0.9, 0.1, 0.8], [0.9, 0.1, 0.8]])
    cited = cite(_attribution(), evidence, supported=None, evidence_name="raw", max_passages=max_passages)
    assert all(len(c.passages) == max_passages for c in cited.citations)


def test_support_needs_the_answer_words_in_the_context():
    from at2_rag import EvidenceModel

    model = EvidenceModel(name="hybrid", components=["lex_qa"], mean=[0], scale=[1], weights=[5.0], bias=0.0,
                          threshold=0.5, answer_floor=0.2)
    values = {"lex_qa": np.array([[0.9, 0.1], [0.9, 0.1]]), "lex_a": np.array([[0.5, 0.0], [0.05, 0.0]])}
    assert model.supported(model.predict(values), values).tolist() == [True, False]


def test_sub_contexts_keep_the_gold_passages_and_their_columns():
    """Calibration sub-contexts: gold passages plus 0, 1, 3 distractors; components and labels are those of the
    kept sentences, as if the context held only them (lexical parts recomputed, AT2 columns restricted)."""
    from at2_rag.eval.hotpotqa import record_components, supporting_labels
    from at2_rag.fit.calibrate import SUB_CONTEXT_DISTRACTORS, sub_contexts
    from at2_rag.eval.hotpotqa import load_hotpotqa

    example = load_hotpotqa(Path(__file__).resolve().parents[2] / "shared/data/hotpotqa/train.jsonl", limit=1)[0]
    n = sum(len(s.sentence_spans()) for s in example.passages)
    rng = np.random.default_rng(0)
    record = {"targets": [example.answer_sentence], "at2_sentence": rng.normal(size=(1, n)).tolist(),
              "emb_qa": rng.normal(size=(1, n)).tolist()}
    full_labels = supporting_labels(example, 1)
    subs = sub_contexts(record, example, seed=0)
    assert len(subs) == len(SUB_CONTEXT_DISTRACTORS)
    for k, (values, labels) in zip(SUB_CONTEXT_DISTRACTORS, subs):
        sizes = values["lex_qa"].shape[1]
        assert labels.shape == (1, sizes) and labels.sum() == full_labels.sum()  # every supporting fact kept
        gold_sentences = sum(len(example.passages[i].sentence_spans()) for i in example.gold)
        assert sizes >= gold_sentences and (k > 0 or sizes == gold_sentences)
        assert all(v.shape == (1, sizes) for v in values.values())
    gold_only, _ = subs[0]
    direct = record_components(record, example, example.gold)
    for name in direct:
        np.testing.assert_allclose(gold_only[name], direct[name])

"""Context compression (issue 34): kept spans are sentences of the input in order, budgets are honoured,
``budget="auto"`` and ``prune(threshold="auto")`` follow the keep rule deterministically, no model pass is
added; the shipped keep rule loads and a broken one is refused. Fast tier on the tiny random model."""

import json

import numpy as np
import pytest

from at2_rag import AT2Attributor, AverageAttentionScorer, InvalidInputError
from at2_rag.compress import (AUTO_RULES, DraftRule, KeepRule, SENTENCE_FEATURES, check_budget, fill,
                              select_auto)
from at2_rag.errors import CoefficientMismatchError, ConfigurationError
from at2_rag.logistic import LogisticModel


def _model(inputs, weights, bias):
    return LogisticModel(inputs=inputs, mean=[0.0] * len(inputs), scale=[1.0] * len(inputs), weights=weights,
                         bias=bias)


def _rule(auto="threshold", parameter=0.3, passage_threshold=0.5):
    part = DraftRule(sentence=_model(["evidence_max", "first", "passage_rank"], [4.0, 1.0, 1.0], -3.0),
                     passage=_model(["evidence_max", "rank"], [4.0, 2.0], -3.0), auto=auto, parameter=parameter,
                     passage_threshold=passage_threshold)
    return KeepRule(model_id="tiny-llama", drafts={"llm": part, "attributor": part})


@pytest.fixture(scope="module")
def ruled(tiny_lm, tiny_calibration):
    return AT2Attributor(tiny_lm, AverageAttentionScorer(), AverageAttentionScorer(), max_new_tokens=6,
                         calibration=tiny_calibration, keep_rule=_rule())


def _sentences(passages):
    return [(i, a, b) for i, p in enumerate(passages) for a, b in p.sentence_spans()]


@pytest.mark.parametrize("budget", [0.3, 0.6, 1.0, 12, 10_000, "auto"])
def test_kept_spans_are_input_sentences_in_order(ruled, kykuit, budget):
    small = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=budget)
    spans = _sentences(kykuit.passages)
    got = [(k.passage_index, k.start, k.end) for k in small.kept]
    assert set(got) <= set(spans) and got == sorted(got)
    assert len(small.texts) == len(kykuit.passages)
    for i, passage in enumerate(kykuit.passages):
        mine = [passage.text[a:b] for j, a, b in got if j == i]
        assert small.texts[i] == " … ".join(mine)
        assert all(t in passage.text for t in mine)
    assert len(small.ranking) == len(spans) == len(small.attribution.sentences)


def test_share_and_token_budgets_are_honoured(ruled, kykuit):
    counts = [len(ruled.lm.encode_response(kykuit.passages[i].text[a:b])) for i, a, b in _sentences(kykuit.passages)]
    for budget in (0.2, 0.5, 0.8, 1.0):
        small = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=budget)
        assert small.tokens_before == sum(counts)
        assert small.tokens_after <= int(budget * sum(counts))
        assert small.tokens_after == sum(c for c, s in zip(counts, small.attribution.sentences)
                                         if (s.passage_index, s.start) in {(k.passage_index, k.start)
                                                                           for k in small.kept})
    for budget in (1, min(counts), min(counts) + 5, 30):
        small = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=budget)
        assert small.tokens_after <= budget
    assert ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=1).kept == []
    everything = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=1.0)
    assert len(everything.kept) == len(counts) and everything.ratio == 1.0


@pytest.mark.parametrize("kwargs", [
    {"budget": 0.0}, {"budget": 1.5}, {"budget": -0.2}, {"budget": 0}, {"budget": -3}, {"budget": "half"},
    {"budget": True}, {"budget": None}, {"budget": [0.3]}, {"budget": float("nan")}, {"budget": "AUTO"},
    {"joiner": None}, {"keep_order": "yes"}, {"min_sentences_per_passage": -1},
    {"min_sentences_per_passage": 1.5}, {"min_sentences_per_passage": True},
])
def test_bad_options_raise_before_model_work(ruled, kykuit, monkeypatch, kwargs):
    monkeypatch.setattr(ruled, "attribute", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(InvalidInputError):
        ruled.compress(kykuit.query, kykuit.passages, kykuit.response, **kwargs)


def test_auto_needs_a_keep_rule(tiny_attributor, kykuit, monkeypatch):
    assert tiny_attributor.keep_rule is None
    monkeypatch.setattr(tiny_attributor, "attribute", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(ConfigurationError, match="keep rule"):
        tiny_attributor.compress(kykuit.query, kykuit.passages, kykuit.response)
    with pytest.raises(ConfigurationError, match="keep rule"):
        tiny_attributor.prune(kykuit.query, kykuit.passages, kykuit.response)


def test_share_budget_without_a_rule_ranks_by_evidence(tiny_attributor, kykuit):
    small = tiny_attributor.compress(kykuit.query, kykuit.passages, kykuit.response, budget=0.5)
    assert small.keep_probability is None and small.tokens_after <= 0.5 * small.tokens_before


def test_auto_is_deterministic_and_follows_the_rule(ruled, kykuit):
    first = ruled.compress(kykuit.query, kykuit.passages, kykuit.response)
    again = ruled.compress(kykuit.query, kykuit.passages, kykuit.response)
    assert first.model_dump(exclude={"attribution": {"timings"}}) == again.model_dump(
        exclude={"attribution": {"timings"}}) and first.budget == "auto"
    p = np.asarray(first.keep_probability)
    kept = {(k.passage_index, k.start) for k in first.kept}
    wanted = {(s.passage_index, s.start) for s, q in zip(first.attribution.sentences, p)
              if q >= 0.3 or q == p.max()}
    assert kept == wanted
    assert first.ranking == first.keep_probability  # the rule's probability ranks the sentences


def test_auto_rules_on_numbers():
    p = np.array([0.9, 0.05, 0.6, 0.3, 0.01])
    counts = np.array([10, 10, 40, 10, 30])
    assert select_auto(p, counts, "threshold", 0.5) == [0, 2]
    assert select_auto(p, counts, "threshold", 0.99) == [0]  # the best always
    assert select_auto(p, counts, "expected-recall", 0.8) == [0, 2]  # (0.9 + 0.6) / 1.86 = 0.81
    assert select_auto(p, counts, "recall-per-token", 1.0) == [0, 3]  # recall share >= token share
    assert set(AUTO_RULES) == {"threshold", "expected-recall", "recall-per-token"}
    with pytest.raises(InvalidInputError):
        select_auto(p, counts, "greedy", 0.5)


def test_fill_is_a_hard_cap_and_min_per_passage_enters_together():
    ranking = np.array([0.9, 0.8, 0.7, 0.1])
    counts = np.array([5, 20, 4, 3])
    assert fill(ranking, counts, 10) == [0, 2]  # the 20-token sentence is skipped, smaller ones still fit
    assert fill(ranking, counts, 2) == []
    owner = [0, 1, 1, 0]
    assert sorted(fill(ranking, counts, 10, owner, 2)) == [0, 3]  # passage 1's best two cost 24
    assert sorted(fill(ranking, counts, 40, owner, 2)) == [0, 1, 2, 3]


def test_texts_in_input_order_with_empty_dropped_passages(ruled, kykuit):
    small = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=0.3)
    assert len(small.texts) == 3
    kept_passages = set(small.passages_kept)
    assert kept_passages and len(kept_passages) < 3
    for i, text in enumerate(small.texts):
        assert (text == "") == (i not in kept_passages)


def test_keep_order_false_puts_each_passage_best_first(ruled, kykuit):
    ordered = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=1.0, joiner=" | ")
    ranked = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=1.0, joiner=" | ",
                            keep_order=False)
    sentences = ranked.attribution.sentences
    mine = [j for j, s in enumerate(sentences) if s.passage_index == 0]
    assert len(mine) == 2
    best_first = sorted(mine, key=lambda j: -ranked.ranking[j])
    assert ranked.texts[0] == " | ".join(sentences[j].text.strip() for j in best_first)
    assert ordered.texts[0] == " | ".join(sentences[j].text.strip() for j in mine)
    assert ordered.kept == ranked.kept  # ``kept`` stays in passage then text order


@pytest.mark.parametrize("budget", ["auto", 0.4, 1_000])
def test_min_sentences_per_passage(ruled, kykuit, budget):
    small = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=budget,
                           min_sentences_per_passage=2)
    sizes = {i: len(p.sentence_spans()) for i, p in enumerate(kykuit.passages)}
    for i in small.passages_kept:
        assert sum(k.passage_index == i for k in small.kept) == min(2, sizes[i])
    if budget != "auto":
        limit = budget if isinstance(budget, int) else int(budget * small.tokens_before)
        assert small.tokens_after <= limit


def test_compression_adds_no_model_pass(ruled, kykuit, monkeypatch):
    attribution = ruled.attribute(kykuit.query, kykuit.passages, kykuit.response)
    monkeypatch.setattr(ruled.lm.model, "forward", lambda *a, **k: pytest.fail("a model pass ran"))
    monkeypatch.setattr(ruled.pipeline, "jobs", lambda *a, **k: pytest.fail("a model pass ran"))
    for budget in ("auto", 0.5, 20):
        ruled.pipeline.compress(attribution, budget)
    ruled.pipeline.prune(attribution, threshold="auto")


def test_html_marks_dropped_sentences(ruled, kykuit):
    small = ruled.compress(kykuit.query, kykuit.passages, kykuit.response, budget=0.3)
    html = small.to_html()
    assert 'class="ps drop"' in html or "drop" in html
    assert f"{small.tokens_before} -&gt; {small.tokens_after}" in html or \
        f"{small.tokens_before} -> {small.tokens_after}" in html


def test_prune_auto_keeps_a_variable_number_and_top_n_stays_exact(tiny_lm, tiny_calibration, kykuit):
    def make(threshold):
        return AT2Attributor(tiny_lm, AverageAttentionScorer(), AverageAttentionScorer(), max_new_tokens=6,
                             calibration=tiny_calibration, keep_rule=_rule(passage_threshold=threshold))

    attribution = make(0.5).attribute(kykuit.query, kykuit.passages, kykuit.response)
    counts = set()
    for threshold in (0.0, 0.5, 0.999):
        pruned = make(threshold).pipeline.prune(attribution, threshold="auto")
        p = np.asarray(pruned.keep_probability)
        best = int(np.argmax(pruned.ranking))
        assert pruned.indices == sorted(pruned.indices) and best in pruned.indices
        assert set(pruned.indices) == {i for i in range(3) if p[i] >= 0.5} | {best}
        counts.add(len(pruned.indices))
    assert len(counts) > 1
    ruled = make(0.5)
    for n in (1, 2, 3):
        pruned = ruled.prune(kykuit.query, kykuit.passages, kykuit.response, top_n=n)
        assert pruned.indices == sorted(np.argsort(-np.asarray(pruned.ranking), kind="stable")[:n].tolist())
        assert pruned.keep_probability is None
    assert ruled.prune(kykuit.query, kykuit.passages, kykuit.response).keep_probability is not None


def test_shipped_keep_rule_loads_and_a_broken_one_is_refused(tmp_path):
    from at2_rag.coefficients import shipped_path
    from at2_rag.lm import DEFAULT_MODEL_ID

    path = shipped_path(DEFAULT_MODEL_ID, "keep-rule")
    assert path is not None, "the keep rule of the default model should ship"
    rule = KeepRule.load(path)
    assert set(rule.drafts) == {"llm", "attributor"} and rule.training_data and rule.command
    for part in rule.drafts.values():
        assert set(part.sentence.inputs) <= set(SENTENCE_FEATURES) and part.auto in AUTO_RULES
        assert part.sentence.calibration_x and part.passage.calibration_x
    raw = json.loads(path.read_text())
    bad_cases = {
        "not json": "{",
        "missing drafts": json.dumps({k: v for k, v in raw.items() if k != "drafts"}),
        "no llm": json.dumps({**raw, "drafts": {"attributor": raw["drafts"]["attributor"]}}),
        "short weights": json.dumps({**raw, "drafts": {**raw["drafts"], "llm": {
            **raw["drafts"]["llm"], "sentence": {**raw["drafts"]["llm"]["sentence"], "weights": [1.0]}}}}),
        "unknown input": json.dumps({**raw, "drafts": {**raw["drafts"], "llm": {
            **raw["drafts"]["llm"], "passage": {**raw["drafts"]["llm"]["passage"],
                                                "inputs": ["bogus"] * len(raw["drafts"]["llm"]["passage"]["inputs"])
                                                }}}}),
        "bad rule": json.dumps({**raw, "drafts": {**raw["drafts"], "llm": {**raw["drafts"]["llm"], "auto": "greedy"}}}),
    }
    for name, text in bad_cases.items():
        broken = tmp_path / f"{name.replace(' ', '_')}.keep-rule.json"
        broken.write_text(text)
        with pytest.raises(CoefficientMismatchError):
            KeepRule.load(broken)


def test_check_budget_values():
    assert check_budget("auto") == "auto" and check_budget(0.3) == 0.3 and check_budget(400) == 400
    assert check_budget(1.0) == 1.0


@pytest.mark.slow
def test_rosetta_stone_answer_keeps_one_passage(attributor, rag_corpus):
    """The shared RAG corpus: the Rosetta Stone answer on its four retrieved passages keeps the Rosetta Stone
    passage alone under threshold='auto' (top_n=2 also kept Ada Lovelace)."""
    from at2_rag.demo import rag_items, retriever
    from conftest import SHARED

    _, retrieve = retriever([])
    item = rag_items(SHARED / "rag", retrieve)[0]
    pruned = attributor.prune(item.question, item.passages, response=item.answer)
    assert [item.passages[i].title for i in pruned.indices] == ["Rosetta Stone"]
    assert len(attributor.prune(item.question, item.passages, response=item.answer, top_n=2).indices) == 2
    small = attributor.compress(item.question, item.passages, response=item.answer)
    assert small.passages_kept == pruned.indices and small.tokens_after < small.tokens_before


def test_cli_fit_keep_rule_and_bench_compression_check_their_data(tmp_path):
    import subprocess
    import sys

    for args in (["lab", "fit-keep-rule", "--out", str(tmp_path / "x.json")],
                 ["lab", "bench", "compression", "--data", str(tmp_path / "missing.jsonl")]):
        result = subprocess.run([sys.executable, "-m", "at2_rag.cli", *args], capture_output=True, text=True,
                                timeout=100)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr

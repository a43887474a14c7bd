"""Recombined training contexts: deterministic, never touching validation rows, round-tripping through the
ablation record; shared-prompt ablations equal one pass per response."""

import numpy as np
import pytest
import torch

from at2_rag.eval.hotpotqa import load_hotpotqa
from at2_rag.fit.recombine import build_recombined, rebuild


@pytest.fixture(scope="module")
def train_rows(train_path):
    return load_hotpotqa(train_path)


def test_builder_is_deterministic_for_a_seed(train_rows):
    a = build_recombined(train_rows, 30, seed=3)
    b = build_recombined(train_rows, 30, seed=3)
    c = build_recombined(train_rows, 30, seed=4)
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
    assert [x.recipe for x in a] != [x.recipe for x in c]


def test_contexts_hold_gold_passages_distractors_and_their_responses(train_rows):
    contexts = build_recombined(train_rows, 120, seed=0)
    sizes = [len(c.passages) for c in contexts]
    assert min(sizes) >= 3 and max(sizes) <= 10 and len(set(sizes)) > 4
    foreign = 0
    for c in contexts:
        row = train_rows[c.base_row]
        assert c.question == row.question and c.id.startswith(row.id)
        assert {p for r, p in c.recipe if r == c.base_row} >= set(row.gold)
        assert len(set(c.recipe)) == len(c.recipe)
        foreign += any(r != c.base_row for r, _ in c.recipe)
        for source, (r, p) in zip(c.passages, c.recipe):
            assert source.text == train_rows[r].passages[p].text and source.id == f"{train_rows[r].id}:{p}"
        assert c.responses["gold"] == row.answer_sentence
        support = c.responses["support"]
        assert any(support in train_rows[c.base_row].passages[p].text for p in row.gold)
    assert foreign > 80
    assert len({c.base_row for c in contexts}) == len(train_rows)  # every row serves as a base


def test_no_validation_row_enters_a_context(train_rows, validation_rows):
    titles = {s.title for row in validation_rows for s in row.passages}
    validation_ids = {row.id for row in validation_rows}
    contexts = build_recombined(train_rows, 300, seed=1, exclude_titles=titles)
    for c in contexts:
        assert not {s.id.split(":")[0] for s in c.passages} & validation_ids
        assert not {s.title for s in c.passages} & titles
    unguarded = build_recombined(train_rows, 300, seed=1)
    assert any({s.title for s in c.passages} & titles for c in unguarded)  # the guard is doing something


def test_rebuild_returns_the_same_context(train_rows):
    for c in build_recombined(train_rows, 10, seed=2):
        again = rebuild(train_rows, c.id, c.base_row, [list(x) for x in c.recipe])
        assert again.passages == c.passages and again.question == c.question


def test_shared_prompt_logprobs_equal_one_pass_per_response(tiny_lm, kykuit):
    from at2_rag.ablation import shared_prompt_logprobs
    from at2_rag.prompts import build_prompt

    prompt = build_prompt(tiny_lm.tokenizer, kykuit.query, kykuit.passages).input_ids
    responses = [tiny_lm.encode_response(t) for t in ("Kykuit has 40 rooms.", "Forty.", kykuit.response)]
    shared = shared_prompt_logprobs(tiny_lm, prompt, responses)
    for response, row in zip(responses, shared):
        single = tiny_lm.response_logprobs([prompt], [response])[0, : len(response)]
        assert torch.allclose(row, single, atol=1e-5)


def test_contexts_collect_resume_and_round_trip_through_the_record(tiny_lm, train_rows, tmp_path):
    from at2_rag.fit.theta import (Design, collect_contexts, export_ablations, import_ablations,
                                  refresh_context_features)

    contexts = build_recombined(train_rows, 2, seed=5, max_passages=4)
    kinds = ("gold", "support", "greedy", "sampled")
    paths = collect_contexts(tiny_lm, contexts, tmp_path / "a", "passage", kinds, n_masks=4, max_new_tokens=5,
                             progress=False)
    assert paths and all(p.exists() for p in paths)
    again = collect_contexts(tiny_lm, contexts, tmp_path / "a", "passage", kinds, n_masks=4, max_new_tokens=5,
                             progress=False)
    assert again == paths  # resumed: nothing collected twice
    by_context: dict[str, list] = {}
    for p in paths:
        with np.load(p) as item:
            by_context.setdefault(str(item["context"]), []).append(
                (str(item["response_kind"]), str(item["response"]), item["masks"]))
    for c in contexts:
        got = by_context[c.id]
        assert {k for k, _, _ in got} >= {"gold", "support"}
        assert dict((k, r) for k, r, _ in got)["gold"] == c.responses["gold"]
        assert all(np.array_equal(m, got[0][2]) for _, _, m in got)  # one set of masks per context
    record = export_ablations(paths, tmp_path / "record.jsonl.gz")
    imported = import_ablations(record, tmp_path / "b")
    refresh_context_features(tiny_lm, imported, train_rows, "passage", ("attention-weight",), progress=False)
    for a, b in zip(sorted(paths), sorted(imported)):
        with np.load(a) as x, np.load(b) as y:
            for key in ("masks", "outputs", "response", "context", "recipe", "response_kind", "base_row"):
                assert np.array_equal(x[key], y[key]), key
            assert np.allclose(x["features"].astype(np.float32), y["features"].astype(np.float32), atol=2e-3)
    design = Design.load(sorted(imported))
    assert len(np.unique(design.groups)) == len(contexts)  # cross-fitting groups by context


def test_cli_trains_on_recombined_contexts_and_names_its_data(tiny_lm, train_path, tmp_path):
    from at2_rag.cli import main
    from at2_rag.coefficients import Coefficients

    model_dir = tmp_path / "tiny"
    tiny_lm.model.save_pretrained(model_dir)
    tiny_lm.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "theta.safetensors"
    argv = ["train", "--data", str(train_path), "--limit", "12", "--contexts", "10", "--kinds", "gold,support",
            "--masks", "4", "--steps", "20", "--max-passages", "4", "--source-kind", "sentence", "--model", str(model_dir),
            "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    main(argv)
    meta = Coefficients.load(out).metadata
    assert "10 recombined contexts (seed 0, 3-4 passages; titles of validation.jsonl" in meta.training_data
    assert meta.n_examples == 20 and "crossfit_correlation" in meta.metrics
    assert (tmp_path / "work" / "sentence" / "ablations.jsonl.gz").is_file()


def test_cli_rejects_an_unknown_response_kind(train_path, capsys):
    from at2_rag.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(train_path), "--contexts", "3", "--kinds", "gold,poem", "--out", "x.safetensors"])
    assert exit_info.value.code == 2 and "poem" in capsys.readouterr().err

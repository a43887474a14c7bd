"""Corpus attribution (`at2-rag attribute`): results per record, resumability, bad records, and the Ray backend
(local Ray with 2 CPUs) giving the same results as one process; training collection on Ray writing the same files."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

RECORDS = [
    {"id": "paris", "query": "Where is the Eiffel Tower?",
     "passages": ["The Eiffel Tower is in Paris. It was finished in 1889.", "Bananas are yellow when ripe."],
     "response": "The Eiffel Tower is in Paris."},
    {"id": 2, "query": "What colour are ripe bananas?",
     "passages": [{"title": "Fruit", "text": "Bananas are yellow when ripe. They grow in bunches."},
                 ["Tower", "The Eiffel Tower is in Paris."]]},
    {"id": "empty-query", "query": "", "passages": ["Some text."]},
    {"id": "not-a-list", "query": "What?", "passages": "one string"},
    {"id": "rome", "query": "Where is the Colosseum?",
     "passages": ["The Colosseum stands in Rome.", "Bananas are yellow.", "Paris has the Eiffel Tower."],
     "response": "It is in Rome. It is very old."},
]


def _write_input(path, records=RECORDS, garbage=True):
    lines = [json.dumps(r) for r in records]
    if garbage:
        lines.insert(2, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _read(path):
    return {item["id"]: item for item in map(json.loads, path.read_text().splitlines())}


def _assert_same_results(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key]["response"] == b[key]["response"]
        np.testing.assert_allclose(a[key]["scores"], b[key]["scores"], atol=atol)
        np.testing.assert_allclose(a[key]["sentence_scores"], b[key]["sentence_scores"], atol=atol)
        assert [c["sentence"] for c in a[key]["citations"]] == [c["sentence"] for c in b[key]["citations"]]


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_lm, tmp_path_factory):
    """The tiny random Llama saved as a local model folder: what every Ray actor loads."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_lm.model.save_pretrained(path)
    tiny_lm.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """Single-process results for RECORDS (the baseline every other run must equal)."""
    from at2_rag import AT2Attributor
    from at2_rag.corpus import run_local

    tmp = tmp_path_factory.mktemp("reference")
    data = _write_input(tmp / "in.jsonl")
    attributor = AT2Attributor.from_pretrained(str(tiny_model_dir), max_new_tokens=8)
    counts = run_local(attributor, data, tmp / "out.jsonl", progress=False)
    return attributor, data, tmp / "out.jsonl", counts


def test_results_errors_and_resume(reference, tmp_path):
    from at2_rag.corpus import errors_path, run_local

    attributor, data, out, counts = reference
    assert counts["written"] == 3 and counts["errors"] == 3 and counts["skipped"] == 0
    results = _read(out)
    assert set(results) == {"paris", "2", "rome"}
    assert results["paris"]["generated"] is False and results["2"]["generated"] is True
    assert results["2"]["passage_ids"] == ["0", "1"]
    assert len(results["rome"]["scores"]) == 3 and len(results["rome"]["citations"]) == 2
    errors = [json.loads(line) for line in errors_path(out).read_text().splitlines()]
    by_line = {e["line"]: e for e in errors}
    assert by_line[3]["id"] is None and "not JSON" in by_line[3]["error"] and by_line[3]["text"] == "{not json\n"
    assert by_line[4]["id"] == "empty-query" and "EmptyInputError" in by_line[4]["error"]
    assert by_line[5]["id"] == "not-a-list" and "passages" in by_line[5]["error"]

    copy = tmp_path / "out.jsonl"
    lines = out.read_text().splitlines(keepends=True)
    copy.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # a crash cut the second result short
    errors_path(copy).write_text(errors_path(out).read_text())
    again = run_local(attributor, data, copy, progress=False)
    assert again["skipped"] == 1 + 2 and again["written"] == 2  # 1 result, 2 errors with ids were done
    _assert_same_results(_read(copy), results, atol=0)


def test_cli_reports_missing_input(tmp_path, capsys):
    from at2_rag.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["attribute", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out.jsonl")])
    assert exit_info.value.code == 2 and "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_driver_killed_mid_run_resumes(reference, tiny_model_dir, tmp_path):
    """Kill the whole Ray run (driver and its local cluster) once results start to land, then resume."""
    pytest.importorskip("ray")
    from at2_rag.corpus import run_local

    attributor, _, ref_out, _ = reference
    many = [{**r, "id": f"{r['id']}-{i}"} for i in range(40) for r in RECORDS if r["id"] in ("paris", "rome")]
    data = _write_input(tmp_path / "in.jsonl", many, garbage=False)
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "at2_rag.cli", "attribute", "--data", str(data), "--out", str(out),
               "--model", str(tiny_model_dir), "--max-new-tokens", "8", "--ray", "local", "--workers", "2",
               "--batch-size", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not (out.exists() and out.read_text().count("\n")):
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    landed = len(out.read_text().splitlines()) if out.exists() else 0
    assert 0 < landed < len(many), "the run should be killed part-way"

    counts = run_local(attributor, data, out, progress=False)
    assert counts["skipped"] == landed and counts["written"] == len(many) - landed
    results = _read(out)
    assert len(out.read_text().splitlines()) == len(results) == len(many)  # nothing twice
    expected = _read(ref_out)
    for key, item in results.items():
        _assert_same_results({key: item}, {key: expected[key.rsplit("-", 1)[0]]})


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from at2_rag.distributed import init_ray

    init_ray("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_equals_single_process(reference, tiny_model_dir, local_ray, tmp_path):
    from at2_rag.corpus import errors_path
    from at2_rag.distributed import run_ray

    _, data, ref_out, _ = reference
    out = tmp_path / "out.jsonl"
    counts = run_ray(data, out, {"model": str(tiny_model_dir), "max_new_tokens": 8}, workers=2, batch_size=2,
                     progress=False)
    assert counts["written"] == 3 and counts["errors"] == 3
    _assert_same_results(_read(out), _read(ref_out))
    errors = [json.loads(line) for line in errors_path(out).read_text().splitlines()]
    assert sorted(str(e["id"]) for e in errors) == ["None", "empty-query", "not-a-list"]
    assert run_ray(data, out, {"model": str(tiny_model_dir), "max_new_tokens": 8}, progress=False)["written"] == 0


@pytest.mark.slow
def test_training_collection_on_ray_writes_the_same_files(tiny_lm, tiny_model_dir, validation_rows, local_ray,
                                                          tmp_path):
    from at2_rag.fit.ray_collect import collect_on_ray
    from at2_rag.fit.theta import collect_examples

    rows = [row.model_copy(deep=True) for row in validation_rows[:3]]
    for row in rows:
        row.passages = row.passages[:3]
    kwargs = {"level": "passage", "n_masks": 4, "families": ("attention-weight", "value-norm"),
              "responses": [row.answer_sentence for row in rows]}
    names = collect_on_ray(str(tiny_model_dir), rows, tmp_path / "ray", workers=2, progress=False, **kwargs)
    local = collect_examples(tiny_lm, rows, tmp_path / "local", progress=False, **kwargs)
    assert sorted(names) == [p.name for p in local]
    for path in local:
        with np.load(path) as a, np.load(tmp_path / "ray" / path.name) as b:
            assert set(a.files) == set(b.files)
            for key in a.files:
                if a[key].dtype.kind in "fc":
                    np.testing.assert_allclose(a[key], b[key], atol=1e-5)
                else:
                    assert (a[key] == b[key]).all()
    assert collect_on_ray(str(tiny_model_dir), rows, tmp_path / "ray", workers=2, progress=False, **kwargs) == []


@pytest.mark.slow
def test_recombined_collection_on_ray_writes_the_same_files(tiny_lm, tiny_model_dir, train_path, local_ray,
                                                            tmp_path):
    from at2_rag.fit.ray_collect import collect_on_ray
    from at2_rag.eval.hotpotqa import load_hotpotqa
    from at2_rag.fit.recombine import build_recombined
    from at2_rag.fit.theta import collect_contexts

    contexts = build_recombined(load_hotpotqa(train_path, 20), 3, seed=7, max_passages=4)
    kwargs = {"level": "sentence", "n_masks": 4, "kinds": ("gold", "support", "sampled"),
              "max_new_tokens": 5}
    names = collect_on_ray(str(tiny_model_dir), contexts, tmp_path / "ray", workers=2, progress=False,
                           contexts=True, **kwargs)
    local = collect_contexts(tiny_lm, contexts, tmp_path / "local", progress=False, **kwargs)
    assert sorted(n for n in names if n.endswith(".npz")) == sorted(p.name for p in local)
    assert len([n for n in names if n.endswith(".done")]) == len(contexts)
    for path in local:
        with np.load(path) as a, np.load(tmp_path / "ray" / path.name) as b:
            assert set(a.files) == set(b.files)
            for key in ("masks", "response", "context", "recipe", "response_kind"):
                assert (a[key] == b[key]).all()
            np.testing.assert_allclose(a["outputs"], b["outputs"], atol=1e-5)
    assert collect_on_ray(str(tiny_model_dir), contexts, tmp_path / "ray", workers=2, progress=False,
                          contexts=True, **kwargs) == []

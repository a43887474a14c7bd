"""The CLI reports bad arguments and inputs in one line, with exit code 2 (usage) or 1 (runtime), before
any model loads."""

import json
import subprocess
import sys

import pytest

from conftest import SHARED

RAG = SHARED / "rag"

pytestmark = pytest.mark.timeout(120)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "at2_rag.cli", *args], capture_output=True, text=True, timeout=100)


@pytest.mark.parametrize("content, needle", [
    (b'{"id": 1,\n', "bad.jsonl:1"),
    (json.dumps({"id": "x", "question": "q?"}).encode() + b"\n", "missing key 'context'"),
    (b'\xff\xfe{"id": "x"}\n', "UnicodeDecodeError"),
])
def test_bad_data_file_is_one_line(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    result = _run("demo", "--data", str(path), "--rag", str(tmp_path))
    assert result.returncode == 2 and needle in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_limit_must_be_positive(limit):
    result = _run("demo", "--limit", limit, "--rag", ".")
    assert result.returncode == 2 and "at least 1" in result.stderr


def test_model_load_error_is_one_line(train_path):
    result = _run("demo", "--limit", "1", "--data", str(train_path), "--rag", str(RAG), "--model", "./no/such/model")
    assert result.returncode == 1 and "ModelLoadError" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_file():
    result = _run("evaluate", "--data", "/nonexistent.jsonl")
    assert result.returncode == 2 and "data file not found" in result.stderr


def test_export_coefficients_writes_the_reference_format(tmp_path):
    """The shipped passage θ exported for the AT2 reference reads back equal; a missing file is one line."""
    import torch

    from at2_rag.coefficients import Coefficients, from_at2_checkpoint, shipped_path

    out = tmp_path / "score_estimator.pt"
    result = _run("export-coefficients", str(out), "--source-kind", "passage")
    assert result.returncode == 0, result.stderr
    shipped = Coefficients.load(shipped_path("HuggingFaceTB/SmolLM2-135M-Instruct", "passage"))
    back = from_at2_checkpoint(out, {"model_id": shipped.metadata.model_id, "model_type": shipped.metadata.model_type,
                                     "num_layers": 30, "num_heads": 9})
    assert torch.equal(back.theta, shipped.theta.float()) and back.metadata.level == "passage"
    missing = _run("export-coefficients", str(out), "--coefficients", str(tmp_path / "none.safetensors"))
    assert missing.returncode == 2 and "no coefficient file" in missing.stderr


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_lm, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_lm.model.save_pretrained(path)
    tiny_lm.tokenizer.save_pretrained(path)
    return path


def test_cite_and_compress_commands(tiny_model_dir, tmp_path):
    record = {"question": "Where is the Eiffel Tower?", "answer": "It is in Paris. It opened in 1889.",
              "passages": [{"title": "Eiffel", "text": "The Eiffel Tower is in Paris. It opened in 1889."},
                           "Bananas are yellow when ripe."]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(record))
    cited = _run("cite", str(path), "--model", str(tiny_model_dir), "--json", str(tmp_path / "c.jsonl"),
                 "--html", str(tmp_path / "c.html"))
    assert cited.returncode == 0, cited.stderr
    assert cited.stdout.startswith("0: It is in Paris.")
    row = json.loads((tmp_path / "c.jsonl").read_text())
    assert [c["sentence"] for c in row["citations"]] == ["It is in Paris.", "It opened in 1889."]
    assert "at2v" in (tmp_path / "c.html").read_text()
    small = _run("compress", str(path), "--model", str(tiny_model_dir), "--budget", "0.5",
                 "--json", str(tmp_path / "k.jsonl"))
    assert small.returncode == 0, small.stderr
    row = json.loads((tmp_path / "k.jsonl").read_text())
    assert len(row["texts"]) == 2 and row["tokens_after"] <= row["tokens_before"] // 2 + 20


def test_user_and_lab_commands_are_separate():
    top = _run("--help")
    assert all(name in top.stdout for name in ("demo", "attribute", "cite", "compress", "lab"))
    assert "fit-detector" not in top.stdout.split("positional arguments", 1)[1].split("options")[0]
    lab = _run("lab", "--help")
    assert all(name in lab.stdout for name in ("train", "calibrate", "fit-detector", "evaluate", "bench"))
    old = _run("calibrate", "--out", "x.json")  # the old spelling still works, with a note
    assert "deprecated: use at2-rag lab calibrate" in old.stderr and "--data" in old.stderr
    assert old.returncode == 2


def test_bad_cite_input_is_one_line(tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"question": "q?"}))
    result = _run("cite", str(path))
    assert result.returncode == 2 and "passages" in result.stderr and "Traceback" not in result.stderr

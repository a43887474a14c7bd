"""The converted copy of a GGUF model: where it goes, when it is used, and that it holds the same model."""

import logging
import os

import pytest
import torch

from at2_rag import model_cache


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AT2_RAG_CACHE", "off")
    assert model_cache.cache_root() is None
    monkeypatch.setenv("AT2_RAG_CACHE", str(tmp_path / "mine"))
    assert model_cache.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("AT2_RAG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache.cache_root() == tmp_path / "xdg" / "at2-rag"


def test_a_changed_file_gets_a_new_copy_and_an_interrupted_copy_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("AT2_RAG_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF one")
    first = model_cache.converted_dir(gguf)
    first.mkdir(parents=True)
    assert model_cache.find(gguf) is None  # no completion marker: an interrupted copy
    (first / model_cache.COMPLETE).write_text("done")
    assert model_cache.find(gguf) == first
    gguf.write_bytes(b"GGUF two, longer")
    os.utime(gguf, ns=(1, 1))
    assert model_cache.converted_dir(gguf) != first
    assert model_cache.find(gguf) is None


def test_saved_copy_loads_as_the_same_model(monkeypatch, tmp_path, tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("AT2_RAG_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"stand-in for the file the model was read from")
    where = model_cache.save(gguf, tiny_lm.model, tiny_lm.tokenizer)
    assert where is not None and model_cache.find(gguf) == where
    assert not [p for p in where.parent.iterdir() if p.name.startswith(".partial-")]
    assert where.stat().st_mode & 0o777 == 0o755  # readable by others when the cache is shared
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in where.iterdir())
    model = AutoModelForCausalLM.from_pretrained(where)
    tokenizer = AutoTokenizer.from_pretrained(where)
    mine, theirs = tiny_lm.model.state_dict(), model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    messages = [{"role": "user", "content": "Who deciphered the Rosetta Stone?"}]
    assert (tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            == tiny_lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    assert tokenizer("Champollion, 1822.").input_ids == tiny_lm.tokenizer("Champollion, 1822.").input_ids


def test_a_new_copy_replaces_the_old_copies_of_its_file_and_those_of_missing_files(monkeypatch, tmp_path, tiny_lm):
    import json

    root = tmp_path / "cache"
    monkeypatch.setenv("AT2_RAG_CACHE", str(root))
    gguf, other = tmp_path / "tiny.gguf", tmp_path / "other.gguf"
    gguf.write_bytes(b"x")
    other.write_bytes(b"y")
    for name, source in (("tiny-old", gguf), ("gone-1", tmp_path / "deleted.gguf"), ("other-1", other)):
        (root / name).mkdir(parents=True)
        (root / name / model_cache.COMPLETE).write_text(json.dumps({"source": str(source.resolve())}))
    where = model_cache.save(gguf, tiny_lm.model, tiny_lm.tokenizer)
    assert sorted(p.name for p in root.iterdir()) == sorted([where.name, "other-1"])


def test_a_copy_another_process_finished_first_is_kept(monkeypatch, tmp_path, tiny_lm):
    monkeypatch.setenv("AT2_RAG_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"x")
    first = model_cache.save(gguf, tiny_lm.model, tiny_lm.tokenizer)
    marker = (first / model_cache.COMPLETE).stat().st_mtime_ns
    assert model_cache.save(gguf, tiny_lm.model, tiny_lm.tokenizer) == first
    assert (first / model_cache.COMPLETE).stat().st_mtime_ns == marker  # not rewritten
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging left behind


def test_a_damaged_copy_is_removed_with_a_warning_and_not_used(monkeypatch, tmp_path, tiny_lm, caplog):
    monkeypatch.setenv("AT2_RAG_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"x")
    where = model_cache.save(gguf, tiny_lm.model, tiny_lm.tokenizer)
    model, _ = model_cache.load(gguf, torch.bfloat16)
    assert model.dtype == torch.bfloat16
    weights = where / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="at2_rag.model_cache"):
        assert model_cache.load(gguf, torch.float32) is None
    assert "does not load" in caplog.text and not where.exists() and model_cache.find(gguf) is None


def test_an_unwritable_cache_is_skipped_with_a_warning(monkeypatch, tmp_path, tiny_lm, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("AT2_RAG_CACHE", str(blocker))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="at2_rag.model_cache"):
        assert model_cache.save(gguf, tiny_lm.model, tiny_lm.tokenizer) is None
    assert "could not keep a converted copy" in caplog.text


@pytest.mark.slow
def test_default_model_loads_from_its_copy_with_identical_weights_and_prompts(monkeypatch, tmp_path):
    from at2_rag.lm import _load_model, default_model_path

    monkeypatch.setenv("AT2_RAG_CACHE", str(tmp_path / "cache"))
    load = _load_model.__wrapped__  # past the per-process cache: two real loads
    direct = load(None, "cpu", torch.float32, None, "float32")
    copy = model_cache.find(default_model_path())
    assert copy is not None
    again = load(None, "cpu", torch.bfloat16, None, "bfloat16")
    assert again.model.dtype == torch.bfloat16
    reread = load(None, "cpu", torch.float32, None, "float32")
    mine, theirs = direct.model.state_dict(), reread.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert reread.model_id == direct.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    text = "Passage 1: The Rosetta Stone was found in 1799.\nQuestion: When was it found?"
    messages = [{"role": "user", "content": text}]
    assert (reread.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            == direct.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    assert reread.tokenizer.eos_token_id == direct.tokenizer.eos_token_id
    assert reread.tokenizer.pad_token_id == direct.tokenizer.pad_token_id

"""Shared fixtures: the real default model (loaded once per session) and real HotpotQA rows."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hotpotqa"


@pytest.fixture(scope="session")
def lm():
    from at2_rag import load_model

    return load_model()


@pytest.fixture(scope="session")
def attributor(lm):
    from at2_rag import AT2Attributor

    return AT2Attributor.from_pretrained(max_new_tokens=24)


@pytest.fixture(scope="session")
def validation_rows():
    from at2_rag.hotpotqa import load_hotpotqa

    return load_hotpotqa(DATA / "validation.jsonl")


@pytest.fixture(scope="session")
def train_path():
    return DATA / "train.jsonl"

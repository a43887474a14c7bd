"""The README's LlamaIndex and LangChain snippets run verbatim (real model, real frameworks)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _snippet(heading: str) -> str:
    section = README.split(f"### {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("heading", ["LlamaIndex", "LangChain"])
def test_snippet_runs(heading, capsys):
    exec(compile(_snippet(heading), f"README {heading}", "exec"), {})
    assert "[" in capsys.readouterr().out  # an answer with citation markers (or the kept-node list) was printed

"""The layout keeps its direction: no import cycle inside ``at2_rag``; the runtime never imports fitting or
evaluation code; results import neither torch nor the view at module level; the pinned outputs of the shipped
files do not move."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "at2_rag"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules of ``at2_rag`` that a file imports (relative imports resolved), anywhere or at module level."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports for type checkers only never run
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if not module.startswith("at2_rag"):
                continue
            out.add(module)
            for alias in node.names:  # "from . import view" imports a module
                candidate = f"{module}.{alias.name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file():
                    out.add(candidate)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("at2_rag"))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_cycle_in_the_package():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node == "at2_rag":
                continue  # a package importing its own submodules is not a cycle
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*stack, nxt])}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_runtime_never_imports_fitting_or_evaluation():
    for name, deps in _graph().items():
        if name.startswith(("at2_rag.fit", "at2_rag.eval")) or name in ("at2_rag.cli",):
            continue
        bad = sorted(d for d in deps if d.startswith(("at2_rag.fit", "at2_rag.eval")))
        # the demo reads the bundled HotpotQA rows and MiniLM retrieval from eval (its optional extra)
        if name == "at2_rag.demo":
            bad = [d for d in bad if d in ("at2_rag.eval.hotpotqa", "at2_rag.embeddings")]
            continue
        assert not bad, f"{name} imports {bad}"


def test_evaluation_never_imports_fitting():
    for name, deps in _graph().items():
        if name.startswith("at2_rag.eval"):
            assert not [d for d in deps if d.startswith("at2_rag.fit")], name


def test_results_load_without_torch_or_the_view():
    top = _imports(PACKAGE / "results.py", top_level_only=True)
    assert not top & {"at2_rag.view", "at2_rag.signals", "at2_rag.lm"}, top
    assert "import torch" not in (PACKAGE / "results.py").read_text()
    import subprocess

    # the package __init__ loads the model stack; the result models alone must not need torch
    probe = ("import sys; sys.modules['torch'] = None\n"
             "import importlib, types\n"
             "pkg = types.ModuleType('at2_rag'); pkg.__path__ = ['at2_rag']; sys.modules['at2_rag'] = pkg\n"
             "from at2_rag.results import CitedResponse, Attribution\n"
             "print('ok')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.slow
def test_pinned_outputs_of_the_shipped_files(attributor):
    """Citations, supports and prune results on four HotpotQA validation rows, recorded before the 2026-12-06
    redesign (tests/data/pinned_shipped.json): the shipped files must give the same. Supports were re-pinned
    (tests/data/repin_shipped.py) when the support detector was refit the same day; nothing else moved."""
    from conftest import pinned_outputs

    for row, now in pinned_outputs(attributor):
        assert now["kept"] == row["kept"]
        assert now["at2_scores"] == pytest.approx(row["at2_scores"], abs=2e-6)
        for got, want in zip(now["citations"], row["citations"], strict=True):
            assert {**got, "support": pytest.approx(want["support"], abs=2e-6)} == want

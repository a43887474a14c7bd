import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def small_rows(tmp_path, train_path):
    """Two real train rows cut to 4 passages each (both gold passages kept) to keep the test short."""
    out = tmp_path / "rows.jsonl"
    lines = []
    for line in train_path.read_text(encoding="utf-8").splitlines()[:2]:
        row = json.loads(line)
        gold = {f["title"] for f in row["supporting_facts"]}
        others = [p for p in row["context"] if p["title"] not in gold][:2]
        row["context"] = [p for p in row["context"] if p["title"] in gold] + others
        lines.append(json.dumps(row))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_benchmark_runs_end_to_end_on_two_rows(tmp_path, small_rows):
    from at2_rag.eval.pruning import GenerationCache, main

    out = tmp_path / "bench.json"
    args = ["--data", str(small_rows), "--limit", "2", "--esm-ablations", "4", "--cache-dir", str(tmp_path / "cache"),
            "--json", str(out)]
    main(args)
    saved = json.loads(out.read_text())
    assert saved["n_examples"] == 2 and (tmp_path / "bench.png").stat().st_size > 0
    methods = saved["methods"]
    assert {"baseline", "oracle", "at2", "average-attention", "esm-4", "embedding"} <= set(methods)
    for method in ("at2", "embedding"):
        for k in "12345":
            assert 0 <= methods[method][k]["gold_recall"] <= 1 and len(methods[method][k]["f1_ci95"]) == 2
    assert methods["embedding"]["4"]["gold_recall"] == 1.0  # 4 of 4 passages kept
    assert all(1.5 <= methods[m]["mean_gold_rank"] <= 3.5 for m in ("at2", "average-attention", "embedding"))
    assert saved["random_gold_rank"] == 2.5
    assert 0 < methods["at2"]["attribution_over_generation"] < methods["esm-4"]["attribution_over_generation"]
    cache = GenerationCache(tmp_path / "cache" / "generations.jsonl")
    assert len(cache.entries) >= 4 and all(e["answer"] is not None for e in cache.entries.values())

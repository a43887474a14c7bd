import numpy as np
import pytest


@pytest.fixture(scope="module")
def small_rows(validation_rows):
    rows = [row.model_copy(deep=True) for row in validation_rows[:2]]
    for row in rows:
        distractors = [i for i in range(len(row.passages)) if i not in row.gold][:2]
        keep = sorted(set(row.gold) | set(distractors))
        row.gold = [keep.index(g) for g in row.gold if g in keep]
        row.passages = [row.passages[i] for i in keep]
    return rows


@pytest.mark.slow
def test_evaluation_resumes_and_reuses_ablations(attributor, small_rows, tmp_path, monkeypatch):
    from at2_rag import make_scorer
    from at2_rag.eval import attribution as evaluation

    coefficients = attributor.scorer.coefficients
    scorers = [make_scorer("at2", coefficients), make_scorer("average-attention")]
    first = evaluation.evaluate_scorers(attributor, small_rows, scorers, n_lds_masks=6, progress=False,
                                        work_dir=tmp_path)
    assert first["n_examples"] == 2 and set(first["scorers"]) == {"at2", "average-attention"}
    for summary in first["scorers"].values():
        assert -1 <= summary["lds"] <= 1
        assert summary["lds_ci95"][0] <= summary["lds"] <= summary["lds_ci95"][1]
        assert set(summary["top_k_drop"]) == {"1", "2", "3"}

    calls = []
    real = evaluation.ablation_logprobs
    monkeypatch.setattr(evaluation, "ablation_logprobs",
                        lambda job, masks, **kw: calls.append(len(masks)) or real(job, masks, **kw))
    again = evaluation.evaluate_scorers(attributor, small_rows, scorers, n_lds_masks=6, progress=False,
                                        work_dir=tmp_path)
    assert again == first and not calls  # every record was read back: no generation, no ablation
    assert set(first["scorers"]["at2"]["lds_by_objective"]) == {"response-log-odds", "token-log-odds"}

    import json
    old = next(tmp_path.glob("00000-*/average-attention.json"))  # as written before records named their target
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k not in ("objective", "method")}))
    evaluation.evaluate_scorers(attributor, small_rows, scorers, n_lds_masks=6, progress=False, work_dir=tmp_path)
    assert json.loads(old.read_text())["objective"] == "response-log-odds" and not calls  # rescored from the cache

    with_esm = evaluation.evaluate_scorers(attributor, small_rows[:1], [*scorers, make_scorer("esm-4")],
                                           n_lds_masks=6, progress=False, work_dir=tmp_path)
    alone = evaluation.evaluate_scorers(attributor, small_rows[:1], scorers[:1], n_lds_masks=6, progress=False,
                                        work_dir=tmp_path)["scorers"]["at2"]
    assert with_esm["scorers"]["at2"]["lds"] == alone["lds"]
    assert with_esm["scorers"]["at2"]["top_k_drop"] == alone["top_k_drop"]
    # ESM-4's own masks plus its top-k masks at most: LDS masks and the full prompt were cached
    assert 0 < sum(calls) <= 4 + 3

    with pytest.raises(ValueError, match="other settings"):
        evaluation.evaluate_scorers(attributor, small_rows, scorers, n_lds_masks=8, progress=False, work_dir=tmp_path)


@pytest.mark.slow
def test_ablation_cache_matches_direct_ablation(attributor, small_rows, tmp_path):
    from at2_rag.ablation import ablation_outputs, random_masks
    from at2_rag.eval.attribution import AblationCache
    from at2_rag.eval.metrics import top_k_drop

    job = attributor.pipeline.jobs([small_rows[0].question], [small_rows[0].passages])[0]
    masks = random_masks(len(job.passages), 5, seed=3)
    cache = AblationCache(job, tmp_path / "ablations.npz")
    direct = ablation_outputs(job, masks)
    np.testing.assert_allclose(cache(masks), direct, atol=1e-5)
    reloaded = AblationCache(job, tmp_path / "ablations.npz")
    np.testing.assert_allclose(reloaded(masks[::-1]), direct[::-1], atol=1e-5)
    scores = attributor.scorer.score(job)
    assert top_k_drop(job, scores, ablate=reloaded) == pytest.approx(top_k_drop(job, scores), abs=1e-4)

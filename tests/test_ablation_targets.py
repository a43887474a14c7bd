"""The ablation target (the paper's whole-response log-odds, or the mean of per-token log-odds) and the ablation
method (remove the text, or mask it from attention in place), end to end: values, ESM, the evaluation cache,
training files and coefficient metadata."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from at2_rag import CoefficientMismatchError
from at2_rag.ablation import OBJECTIVES, ablation_logprobs, ablation_outputs, random_masks, span_outputs, target_values
from at2_rag.features import collect
from at2_rag.scorers import ESMScorer, lasso_surrogate

RESPONSE = "Kykuit has 40 rooms. It was built for John D. Rockefeller."


def test_target_values_follow_their_definitions():
    logprobs = torch.log(torch.tensor([[0.9, 0.5, 0.2], [0.99, 0.999, 0.6]], dtype=torch.float64))
    p = logprobs.exp()
    whole = p.prod(-1)
    assert torch.allclose(target_values(logprobs, "response-log-odds"), torch.log(whole / (1 - whole)) / 3)
    assert torch.allclose(target_values(logprobs, "token-log-odds"), torch.log(p / (1 - p)).mean(-1))
    one = logprobs[:, :1]
    assert torch.allclose(target_values(one, "response-log-odds"), target_values(one, "token-log-odds"))
    tiny = torch.full((1, 200), -30.0)  # P = e^-6000: no overflow, log-odds -> log P / n
    assert torch.allclose(target_values(tiny, "response-log-odds"), torch.tensor([-30.0]))
    with pytest.raises(ValueError, match="objective must be one of"):
        target_values(logprobs, "probability")


@pytest.fixture(scope="module")
def job(tiny_lm, kykuit):
    return collect(tiny_lm, [kykuit.query], [kykuit.passages], [RESPONSE])[0]


def test_esm_fits_the_objective_it_is_given(job):
    masks = random_masks(job.num_units, 8, seed=0)
    for objective in OBJECTIVES:
        expected = lasso_surrogate(masks, ablation_outputs(job, masks, objective=objective))
        np.testing.assert_allclose(ESMScorer(n_ablations=8, objective=objective).score(job), expected)


def test_mask_ablation_hides_the_source_in_place(tiny_lm, kykuit, job):
    everything = np.ones((1, job.num_units), dtype=bool)
    plain = tiny_lm.response_logprobs([job.layout.input_ids], [job.response_ids])[0]
    assert torch.allclose(ablation_logprobs(job, everything, method="mask")[0], plain, atol=1e-5)
    without_first = np.array([[False, True, True]])
    hidden = ablation_logprobs(job, without_first, method="mask")[0]
    removed = ablation_logprobs(job, without_first, method="remove")[0]
    assert not torch.allclose(hidden, plain, atol=1e-4) and not torch.allclose(hidden, removed, atol=1e-4)
    # what a hidden source says cannot matter: other tokens in its place give the same log-probs
    a, b = job.layout.token_spans[0]
    scrambled = list(job.layout.input_ids)
    scrambled[a:b] = [(t * 7 + 11) % len(tiny_lm.tokenizer) for t in scrambled[a:b]]
    again = tiny_lm.response_logprobs([scrambled], [job.response_ids], hide=[[(a, b)]])[0]
    assert torch.allclose(again, hidden, atol=1e-5)


def test_one_cache_serves_every_objective(job, tmp_path):
    from at2_rag.eval.attribution import AblationCache

    masks = random_masks(job.num_units, 5, seed=2)
    cache = AblationCache(job, tmp_path / "ablations.npz", objective="token-log-odds")
    for objective in OBJECTIVES:
        np.testing.assert_allclose(cache(masks, objective), ablation_outputs(job, masks, objective=objective), atol=1e-6)
    assert cache.passes == 5
    masked = AblationCache(job, tmp_path / "ablations.npz", method="mask")  # another method: not reused
    masked(masks[:1])
    assert masked.passes == 1


def test_training_records_objective_and_method(tiny_lm, kykuit, tmp_path):
    from at2_rag.coefficients import Coefficients
    from at2_rag.fit.theta import Design, collect_examples, train

    examples = [SimpleNamespace(id=f"k{i}", question=kykuit.query, passages=kykuit.passages[i:] + kykuit.passages[:i])
                for i in range(3)]
    paths = collect_examples(tiny_lm, examples, tmp_path / "mask", n_masks=6, responses=[RESPONSE] * 3,
                             families=("attention-weight",), method="mask", progress=False)
    for objective in OBJECTIVES:
        design = Design.load(paths, objective=objective)
        with np.load(paths[0]) as item:
            expected = span_outputs(torch.from_numpy(item["token_logprobs"]), item["target_spans"].tolist(), objective)
        np.testing.assert_allclose(design.y[:2], expected.numpy().T, atol=1e-6)
    coefficients = train(tiny_lm, paths, "passage", "three rotations", steps=5, progress=False,
                         objective="token-log-odds")
    assert (coefficients.metadata.objective, coefficients.metadata.ablation) == ("token-log-odds", "mask")
    loaded = Coefficients.load(coefficients.save(tmp_path / "theta.safetensors"))
    assert (loaded.metadata.objective, loaded.metadata.ablation) == ("token-log-odds", "mask")
    removed = collect_examples(tiny_lm, examples[:1], tmp_path / "remove", n_masks=6, responses=[RESPONSE],
                               families=("attention-weight",), progress=False)
    with pytest.raises(ValueError, match="mix ablation methods"):
        train(tiny_lm, paths + removed, "passage", "mixed", steps=5, progress=False)
    with pytest.raises(ValueError, match="ablated by 'mask'"):
        collect_examples(tiny_lm, examples[:1], tmp_path / "mask", n_masks=6, responses=[RESPONSE], progress=False)
    bad = coefficients.model_copy(update={"metadata": coefficients.metadata.model_copy(update={"objective": "odds"})})
    with pytest.raises(CoefficientMismatchError, match="objective"):
        bad.save(tmp_path / "bad.safetensors")


def test_shipped_files_say_what_they_were_fit_to():
    from at2_rag.coefficients import Coefficients, shipped_path

    for kind in ("passage", "sentence"):
        metadata = Coefficients.load(shipped_path("HuggingFaceTB/SmolLM2-135M-Instruct", kind)).metadata
        assert (metadata.objective, metadata.ablation) == ("token-log-odds", "remove")

"""Against the paper's own code (PyPI ``at2`` 0.0.1 and ``context-cite`` 0.0.4) on a tiny random Llama with the
real tokenizer: features, scores through each other's estimator files, the ablation targets, the LASSO and
attention-mask ablation. Skipped when the reference packages are not installed (the test extra has them)."""

from pathlib import Path

import numpy as np
import pytest
import torch

ref_attention = pytest.importorskip("at2.attribution.attention")
ref_estimators = pytest.importorskip("at2.attribution.score_estimators")
ref_features = pytest.importorskip("at2.attribution.features")
ref_tasks = pytest.importorskip("at2.tasks.base")
ref_solver = pytest.importorskip("context_cite.solver")
ref_utils = pytest.importorskip("context_cite.utils")

from at2_rag import CoefficientMismatchError  # noqa: E402
from at2_rag.ablation import ablation_logprobs, random_masks, target_spans, target_values  # noqa: E402
from at2_rag.coefficients import (  # noqa: E402
    CoefficientMetadata,
    Coefficients,
    from_at2_checkpoint,
    to_at2_checkpoint,
)
from at2_rag.features import collect  # noqa: E402
from at2_rag.scorers import AT2Scorer, lasso_surrogate  # noqa: E402

RESPONSE = "Kykuit has 40 rooms. It was built for John D. Rockefeller."


@pytest.fixture(scope="module")
def job(tiny_lm, kykuit):
    return collect(tiny_lm, [kykuit.query], [kykuit.passages], [RESPONSE])[0]


@pytest.fixture(scope="module")
def reference_weights(tiny_lm, job):
    """The reference's attention weights ``[layers, heads, response tokens, tokens]`` for the same ids."""
    ids = job.layout.input_ids + job.response_ids
    with torch.inference_mode():
        out = tiny_lm.model(torch.tensor([ids]), output_hidden_states=True)
    hidden = [h[:, :-1] for h in out.hidden_states]
    start = len(job.layout.input_ids)
    return ref_attention.get_attention_weights(tiny_lm.model, hidden, start, start + len(job.response_ids),
                                               model_type="llama").float()


def test_features_equal_the_reference(job, reference_weights):
    for spans, ours in ((job.layout.token_spans, job.passage_token_features),
                        (job.layout.sentence_token_spans, job.sentence_token_features)):
        columns = torch.stack([reference_weights[..., a:b].sum(-1) for a, b in spans], dim=-1)  # [L, H, T, S]
        reference = columns.permute(2, 3, 0, 1).flatten(2)
        assert torch.allclose(ours, reference, atol=1e-5, rtol=0)


def _coefficients(lm, seed=0) -> Coefficients:
    theta = torch.randn(lm.num_layers * lm.num_heads, generator=torch.Generator().manual_seed(seed))
    return Coefficients(theta=theta, metadata=CoefficientMetadata(
        model_id=lm.model_id, model_type=lm.fingerprint["model_type"], num_layers=lm.num_layers,
        num_heads=lm.num_heads, level="passage"))


def test_our_file_scores_the_same_in_the_reference(tiny_lm, job, reference_weights, tmp_path):
    coefficients = _coefficients(tiny_lm)
    path = tmp_path / "score_estimator.pt"
    to_at2_checkpoint(coefficients, path)
    back = from_at2_checkpoint(path, tiny_lm.fingerprint).metadata
    assert (back.level, back.objective, back.ablation) == ("passage", "token-log-odds", "remove")
    estimator = ref_estimators.LinearScoreEstimator.load(Path(path))
    features = reference_weights.permute(2, 3, 0, 1).flatten(2)  # [T, tokens, L*H], as its feature extractor
    with torch.no_grad():
        token_scores = estimator(features)[:, :, 0]  # what get_scores returns
    per_source = torch.stack([token_scores[:, a:b].sum(-1) for a, b in job.layout.token_spans], dim=-1)
    reference = torch.stack([per_source[a:b].mean(0) for a, b in target_spans(job)])  # its mean over targets
    ours = torch.from_numpy(AT2Scorer(coefficients).score(job)).float()
    assert torch.allclose(ours, reference, atol=1e-5)
    assert (ours.argsort(-1) == reference.argsort(-1)).all()


def test_a_reference_file_reads_back(tiny_lm, tmp_path):
    extractor = ref_features.AttentionFeatureExtractor(tiny_lm.num_layers, tiny_lm.num_heads, model_type="llama")
    estimator = ref_estimators.LinearScoreEstimator(extractor)
    estimator.linear.weight.data[:] = torch.linspace(-1, 1, tiny_lm.num_layers * tiny_lm.num_heads)
    estimator.save(tmp_path / "plain.pt")
    coefficients = from_at2_checkpoint(tmp_path / "plain.pt", tiny_lm.fingerprint)
    assert torch.equal(coefficients.theta, estimator.linear.weight.data[0])
    assert coefficients.metadata.level == "sentence"  # the reference trainer's defaults
    assert (coefficients.metadata.objective, coefficients.metadata.ablation) == ("response-log-odds", "mask")
    biased = ref_estimators.LinearScoreEstimator(extractor, bias=True)
    biased.linear.bias.data[:] = 1e-4
    biased.save(tmp_path / "biased.pt")
    with pytest.raises(CoefficientMismatchError, match="bias"):
        from_at2_checkpoint(tmp_path / "biased.pt", tiny_lm.fingerprint)


def test_targets_and_lasso_equal_context_cite(job):
    masks = random_masks(job.num_units, 24, seed=5)
    logprobs = ablation_logprobs(job, masks).double().clamp(max=-1e-7)
    token_logits = (logprobs - torch.log(-torch.expm1(logprobs))).numpy()  # what its forward pass yields
    for a, b in target_spans(job):
        n = b - a
        reference = ref_utils.aggregate_logit_probs(token_logits[:, a:b])
        ours = target_values(logprobs[:, a:b], "response-log-odds").numpy()
        np.testing.assert_allclose(ours * n, reference, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(target_values(logprobs[:, a:b], "token-log-odds").numpy(),
                                   ref_utils.aggregate_logit_probs(token_logits[:, a:b], "total_token_logit_prob"),
                                   rtol=1e-6, atol=1e-8)
        weight, _ = ref_solver.LassoRegression().fit(masks, reference, n)
        # its weights are fit to outputs / n and scaled back by n; ours stay per token (same ranking, same zeros)
        np.testing.assert_allclose(lasso_surrogate(masks, ours[:, None])[0] * n, weight, rtol=1e-4, atol=1e-6)


def test_mask_ablation_equals_the_reference_forward(tiny_lm, job):
    """The reference ablates by zeroing the attention mask over a source's tokens and calling the model."""
    masks = random_masks(job.num_units, 3, seed=1)
    ours = ablation_logprobs(job, masks, method="mask")
    ids = torch.tensor([job.layout.input_ids + job.response_ids])
    start, n = len(job.layout.input_ids), len(job.response_ids)
    for mask, row in zip(masks, ours):
        attention = torch.ones_like(ids)
        for keep, (a, b) in zip(mask, job.layout.token_spans):
            attention[0, a:b] = int(keep)
        with torch.inference_mode():
            logits = tiny_lm.model(input_ids=ids, attention_mask=attention).logits.float()
        reference = ref_tasks.compute_logit_probs(logits[:, start - 1 : start + n - 1], ids[:, start:])[0]
        logp = row.double().clamp(max=-1e-7)
        assert torch.allclose((logp - torch.log(-torch.expm1(logp))).float(), reference, atol=1e-4)


def test_contextcite_mask_stream(job):
    ours = random_masks(job.num_units, 32, 0.5, seed=7, stream="contextcite")
    assert np.array_equal(ours, ref_tasks.create_masks(32, job.num_units, 0.5, 7))
    assert not np.array_equal(ours, random_masks(job.num_units, 32, 0.5, seed=7))

import json

import pytest
import torch
from safetensors.torch import save_file

from at2_rag import CoefficientMetadata, CoefficientMismatchError, Coefficients

FP = {"model_id": "org/model", "model_type": "llama", "num_layers": 30, "num_heads": 9}


def make(layers=30, heads=9, model_id="org/model"):
    meta = CoefficientMetadata(model_id=model_id, model_type="llama", num_layers=layers, num_heads=heads,
                               level="passage", training_data="unit test", metrics={"holdout_correlation": 0.5})
    return Coefficients(theta=torch.randn(layers * heads), metadata=meta)


def test_round_trip(tmp_path):
    c = make()
    loaded = Coefficients.load(c.save(tmp_path / "c.safetensors"))
    assert torch.equal(loaded.theta, c.theta.float()) and loaded.metadata == c.metadata
    loaded.check(FP)


def test_loaded_theta_survives_the_file_being_overwritten(tmp_path):
    """safetensors maps files: θ in use must not change when training writes a new file to the same path."""
    import shutil

    path = make().save(tmp_path / "c.safetensors")
    loaded = Coefficients.load(path)
    before = loaded.theta.clone()
    other = make(model_id="org/other-model-with-a-longer-name").save(tmp_path / "other.safetensors")
    shutil.copyfile(other, path)  # in place: same inode, new bytes
    assert torch.equal(loaded.theta, before)


def test_shape_mismatch(tmp_path):
    with pytest.raises(CoefficientMismatchError, match="24 layers x 9 heads"):
        Coefficients.load(make(layers=24).save(tmp_path / "c.safetensors")).check(FP)


def test_model_mismatch_needs_opt_in(tmp_path):
    c = Coefficients.load(make(model_id="org/other").save(tmp_path / "c.safetensors"))
    with pytest.raises(CoefficientMismatchError, match="allow_other_model"):
        c.check(FP)
    c.check(FP, allow_other_model=True)


def test_not_a_coefficient_file(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CoefficientMismatchError, match="not an at2-rag coefficient file"):
        Coefficients.load(tmp_path / "junk.safetensors")
    save_file({"theta": torch.zeros(30, 9)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CoefficientMismatchError, match="no 'at2' metadata"):
        Coefficients.load(tmp_path / "bare.safetensors")
    bad = json.loads(make().metadata.model_dump_json())
    bad["num_heads"] = 8
    save_file({"theta": torch.zeros(30, 9)}, str(tmp_path / "lying.safetensors"), metadata={"at2": json.dumps(bad)})
    with pytest.raises(CoefficientMismatchError, match="metadata says"):
        Coefficients.load(tmp_path / "lying.safetensors")
    with pytest.raises(CoefficientMismatchError, match="not found"):
        Coefficients.load(tmp_path / "missing.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("level", ["passage", "sentence"])
def test_shipped_coefficients_fit_default_model(lm, level):
    from at2_rag.coefficients import held_out_correlation, shipped_path

    path = shipped_path(lm.model_id, level)
    assert path is not None, "coefficients for the default model must ship in at2_rag/coefficients/"
    c = Coefficients.load(path)
    c.check(lm.fingerprint)
    assert c.metadata.level == level
    assert c.metadata.n_examples > 0 and -1 <= held_out_correlation(c.metadata) <= 1  # cross-fit or holdout


def test_published_at2_checkpoint_converts_without_pickle(tmp_path):
    from at2_rag.coefficients import from_at2_checkpoint, resolve

    weight = torch.randn(1, 270)
    torch.save({"class": "LinearScoreEstimator", "state_dict": {"linear.weight": weight},
                "kwargs": {"num_features": 270, "normalize": True}, "extras": {}}, tmp_path / "score_estimator.pt")
    c = resolve(tmp_path / "score_estimator.pt", FP)
    assert torch.equal(c.theta, weight.flatten()) and c.metadata.model_id == "org/model"
    with pytest.raises(CoefficientMismatchError, match="270 coefficients"):
        from_at2_checkpoint(tmp_path / "score_estimator.pt", {**FP, "num_heads": 8})

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {"linear.weight": weight}, "extras": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CoefficientMismatchError, match="not an AT2 score estimator"):
        from_at2_checkpoint(tmp_path / "evil.pt", FP)


def test_reference_checkpoint_bias_shape_and_model_type_are_checked(tmp_path):
    """A bias changes the reference's ranking (added once per source token): refused, never dropped silently."""
    from at2_rag.coefficients import from_at2_checkpoint

    weight = torch.randn(1, 270)
    extractor = {"class": "AttentionFeatureExtractor", "kwargs": {"num_layers": 30, "num_heads": 9, "model_type": None}}
    path = tmp_path / "score_estimator.pt"
    torch.save({"class": "LinearScoreEstimator", "state_dict": {"linear.weight": weight, "linear.bias": torch.zeros(1)},
                "feature_extractor": extractor, "kwargs": {}, "extras": {}}, path)
    assert from_at2_checkpoint(path, FP).metadata.level == "sentence"  # a zero bias changes nothing
    cases = [({"state_dict": {"linear.weight": weight, "linear.bias": torch.full((1,), 1e-4)}}, "bias"),
             ({"feature_extractor": {**extractor, "kwargs": {"num_layers": 27, "num_heads": 10}}}, "27 layers x 10"),
             ({"feature_extractor": {**extractor, "kwargs": {**extractor["kwargs"], "model_type": "qwen2"}}}, "qwen2"),
             ({"class": "MLPScoreEstimator"}, "MLPScoreEstimator"),
             ({"extras": {"level": "tokens"}}, "level")]
    for update, message in cases:
        torch.save({"class": "LinearScoreEstimator", "state_dict": {"linear.weight": weight},
                    "feature_extractor": extractor, "kwargs": {}, "extras": {}, **update}, path)
        with pytest.raises(CoefficientMismatchError, match=message):
            from_at2_checkpoint(path, FP)


@pytest.mark.parametrize("kind", ["passage", "sentence"])
def test_export_to_the_reference_format_round_trips(tmp_path, kind):
    """What the reference's ScoreEstimator.load needs: its class name, exactly the state dict of a bias-free
    nn.Linear(L·H, 1), the feature extractor's constructor arguments and the estimator's flags."""
    from at2_rag.coefficients import from_at2_checkpoint, to_at2_checkpoint

    c = make()
    c = c.model_copy(update={"metadata": c.metadata.model_copy(update={"level": kind})})
    path = tmp_path / "score_estimator.pt"
    to_at2_checkpoint(c, path)
    saved = torch.load(path, weights_only=True)
    assert saved["class"] == "LinearScoreEstimator" and set(saved["state_dict"]) == {"linear.weight"}
    assert saved["state_dict"]["linear.weight"].shape == (1, 270)
    estimator = torch.nn.Module()  # the reference's LinearScoreEstimator holds self.linear
    estimator.linear = torch.nn.Linear(270, 1, bias=False)
    estimator.load_state_dict(saved["state_dict"])  # strict, as the reference loads it
    assert saved["feature_extractor"] == {"class": "AttentionFeatureExtractor",
                                          "kwargs": {"num_layers": 30, "num_heads": 9, "model_type": "llama"}}
    assert saved["kwargs"] == {"normalize": True, "non_negative": False, "bias": False}
    back = from_at2_checkpoint(path, FP)
    assert torch.equal(back.theta, c.theta.float()) and back.metadata.level == kind
    wide = c.metadata.model_copy(update={"feature_family": "attention-weight+value-norm"})
    with pytest.raises(CoefficientMismatchError, match="only attention-weight"):
        to_at2_checkpoint(Coefficients(theta=torch.randn(540), metadata=wide), tmp_path / "w.pt")


@pytest.mark.parametrize("family", ["attention-weight", "value-norm", "output-norm",
                                    "attention-weight+value-norm+output-norm"])
def test_each_feature_family_round_trips(tmp_path, family):
    n_families = family.count("+") + 1
    meta = make().metadata.model_copy(update={"feature_family": family})
    c = Coefficients(theta=torch.randn(n_families * 30 * 9), metadata=meta)
    loaded = Coefficients.load(c.save(tmp_path / "c.safetensors"))
    assert torch.equal(loaded.theta, c.theta) and loaded.families == tuple(family.split("+"))
    loaded.check(FP)


def test_feature_family_mismatches_are_refused(tmp_path):
    from at2_rag import AT2Scorer

    meta = make().metadata.model_copy(update={"feature_family": "value-norm"})
    path = Coefficients(theta=torch.randn(270), metadata=meta).save(tmp_path / "v.safetensors")
    with pytest.raises(CoefficientMismatchError, match="'value-norm' features, not 'attention-weight'"):
        AT2Scorer.from_file(path, families="attention-weight")
    assert AT2Scorer.from_file(path, families="value-norm").name == "at2:value-norm"
    wide = meta.model_copy(update={"feature_family": "value-norm+output-norm"})
    with pytest.raises(CoefficientMismatchError, match="2 feature families"):
        Coefficients(theta=torch.randn(270), metadata=wide).save(tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").unlink(missing_ok=True)
    save_file({"theta": torch.randn(270)}, str(tmp_path / "u.safetensors"),
              metadata={"at2": meta.model_copy(update={"feature_family": "key-norm"}).model_dump_json()})
    with pytest.raises(CoefficientMismatchError, match="key-norm"):
        Coefficients.load(tmp_path / "u.safetensors")


def test_esm_solver_is_contextcites_standardised_lasso():
    """Scores equal the reference pipeline's (StandardScaler then Lasso) slopes in mask units."""
    import numpy as np
    from sklearn.linear_model import Lasso
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from at2_rag.scorers import lasso_surrogate

    rng = np.random.default_rng(0)
    masks = rng.random((64, 12)) < 0.5
    outputs = (masks @ rng.standard_normal(12) + 0.1 * rng.standard_normal(64))[:, None]
    ours = lasso_surrogate(masks, outputs, alpha=0.01)[0]
    pipeline = make_pipeline(StandardScaler(), Lasso(alpha=0.01, random_state=0))
    pipeline.fit(masks.astype(float), outputs[:, 0])
    predicted = pipeline.predict(masks.astype(float))
    offset = predicted - masks @ ours
    assert np.allclose(offset, offset[0], atol=1e-8)  # same predictions up to the intercept


@pytest.mark.parametrize("level", ["passage", "sentence"])
def test_default_coefficients_are_the_ones_the_shipped_calibration_was_fit_with(level):
    """A better θ may ship before its recalibration: the default stays the calibrated file."""
    import json

    from at2_rag.coefficients import shipped_path

    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    calibration = json.loads(shipped_path(model, "calibration").read_text())
    assert Coefficients.load(shipped_path(model, level)).digest == calibration[f"{level}_coefficients"]


def test_the_early_stopped_sentence_file_ships_beside_the_paper_fit_and_names_its_recipe():
    from at2_rag.coefficients import held_out_correlation, shipped_files, shipped_path

    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    files = {p.name: Coefficients.load(p) for p in shipped_files(model, "sentence")}
    early = files["HuggingFaceTB__SmolLM2-135M-Instruct.sentence.early-stop.safetensors"]
    paper = Coefficients.load(shipped_path(model, "sentence"))
    assert "50 steps" in early.metadata.notes and "--steps 50" in early.metadata.notes
    assert early.metadata.n_examples == paper.metadata.n_examples == 110
    assert held_out_correlation(early.metadata) > held_out_correlation(paper.metadata)  # why it ships at all
    assert (early.metadata.num_layers, early.metadata.num_heads) == (paper.metadata.num_layers, paper.metadata.num_heads)

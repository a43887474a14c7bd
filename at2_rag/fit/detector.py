"""Fit the support detector (`at2-rag lab fit-detector`) on labelled RAG answers: choose inputs, C and training
datasets by grouped cross-validation on train parts, fit with signs fixed, calibrate (Platt) and choose operating
points on held-out parts. Validation parts are never read."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..attributor import AT2Attributor
from ..eval.hallucination import (
    SUMMARY_LIMIT,
    LabelledAnswer,
    design,
    example_f1,
    reliability,
    sentence_spans_of,
    span_prf,
)
from ..support import LEXICAL, MODEL, STRICTNESS, SUPPORT_SIGN, ContextVocabulary, SupportDetector
from .logistic import fit_logistic, platt_knots

FEATURE_SETS = {
    "lexical": list(LEXICAL),
    "lexical+evidence": [*LEXICAL, "evidence_top", "lexical_top"],
    "model": list(MODEL),
    "lookback": None,  # filled with the lookback columns
    "lexical+evidence+model": [*LEXICAL, "evidence_top", "lexical_top", *MODEL],
    "all": None,
}


def feature_sets(num_heads_total: int) -> dict[str, list[str]]:
    lookback = [f"lookback_{i}" for i in range(num_heads_total)]
    sets = {k: list(v) for k, v in FEATURE_SETS.items() if v is not None}
    sets["lookback"] = lookback
    sets["all"] = [*sets["lexical+evidence+model"], *lookback]
    return sets


CLEAN_FLAG_CAP = {"lenient": 0.05, "balanced": 0.15}  # most clean answers an operating point may flag


def choose_thresholds(records: Sequence[dict], support: Sequence[np.ndarray], boot: int = 200,
                      seed: int = 0) -> tuple[dict[str, float], dict]:
    """Operating points on held-out records (calibration part plus out-of-fold train predictions): 'balanced'
    (the default) and 'lenient' maximise the bootstrap-median example-level F1 among thresholds that flag at most
    15% / 5% of clean answers (a flag on most answers tells a user nothing); 'strict' maximises it without a cap
    (recall first). The bootstrap median, not one sample's peak, keeps the choice off a knife edge."""
    grid = np.round(np.arange(0.05, 1.0, 0.005), 3)
    rng = np.random.default_rng(seed)
    n = len(records)
    samples = rng.integers(0, n, (boot, n))
    truth = np.array([any(lab == 1 for lab in r["labels"]) for r in records])
    lowest = np.array([np.min(s) if len(s) else np.inf for s in support])  # an answer is flagged below this
    clean = np.flatnonzero(~truth)
    f1 = np.zeros((len(grid), boot))
    clean_flagged = np.zeros(len(grid))
    for k, t in enumerate(grid):
        flagged = lowest < t
        hit = (truth & flagged)[samples].sum(1)
        total = flagged[samples].sum(1) + truth[samples].sum(1)
        f1[k] = np.where(total > 0, 2 * hit / np.maximum(total, 1), 0.0)  # example-level F1 = 2 TP / (P + A)
        clean_flagged[k] = flagged[clean].mean() if len(clean) else 0.0
    median = np.median(f1, 1)
    thresholds = {"strict": float(grid[int(np.argmax(median))])}
    for name, cap in CLEAN_FLAG_CAP.items():
        allowed = np.flatnonzero(clean_flagged <= cap)
        thresholds[name] = float(grid[allowed[np.argmax(median[allowed])]] if len(allowed) else grid[0])
    curve = {"grid": grid.tolist(), "f1_median": median.tolist(), "f1_low": np.percentile(f1, 2.5, 1).tolist(),
             "f1_high": np.percentile(f1, 97.5, 1).tolist(), "clean_flagged": clean_flagged.tolist()}
    return thresholds, curve


def choose_span_mode(records: Sequence[dict], answers: dict[str, LabelledAnswer], support: Sequence[np.ndarray],
                     threshold: float) -> tuple[str, dict[str, float]]:
    """What to mark inside a sentence flagged below ``threshold``: the runs of novel words or the whole sentence,
    whichever has the better span F1 on these records; and both F1s."""
    span_f1 = {}
    for mode in ("novel-words", "sentence"):
        spans = sentence_spans_of(records, answers, mode)
        flags = [s < threshold for s in support]
        span_f1[mode] = span_prf(records, answers, [[span for spans_t, f in zip(sp, fl) if f for span in spans_t]
                                                    for sp, fl in zip(spans, flags)])["f1"]
    return max(span_f1, key=span_f1.get), span_f1


def input_matrix(record: dict, features: Sequence[str]) -> np.ndarray:
    """One record's inputs as [sentences, features] (labelled or not)."""
    return np.array([[row[f] for f in features] for row in record["inputs"]], dtype=float).reshape(-1, len(features))


def _fold(group: str, folds: int) -> int:
    return int(hashlib.sha256(f"fold:{group}".encode()).hexdigest(), 16) % folds


def out_of_fold_raw(records: Sequence[dict], features: Sequence[str], c: float, invented: Sequence[dict] = (),
                    folds: int = 5) -> list[np.ndarray]:
    """Per record, the raw logistic score of each sentence from a model fit without that record's group (and
    with the ``invented`` records of the other groups)."""
    fold = {r["group"]: _fold(r["group"], folds) for r in records}
    out: dict[str, np.ndarray] = {}
    for k in range(folds):
        held = [r for r in records if fold[r["group"]] == k]
        if not held:
            continue
        added = [r for r in invented if r["group"] in fold and fold[r["group"]] != k]
        x, y, _ = design([r for r in records if fold[r["group"]] != k] + added, features)
        params = fit_logistic(x, y, features, c, SUPPORT_SIGN, balanced=True)
        for r in held:
            out[r["id"]] = params.raw(input_matrix(r, features))
    return [out[r["id"]] for r in records]


def fit_detector(attributor: AT2Attributor, train: Sequence[dict], calibration: Sequence[dict],
                 features: Sequence[str], c: float, meta: dict,
                 answers: dict[str, LabelledAnswer] | None = None,
                 invented: Sequence[dict] = ()) -> tuple[SupportDetector, dict]:
    """Logistic model on ``train`` records; Platt calibration and thresholds on held-out sentences (the
    ``calibration`` records and out-of-fold predictions for the primary dataset's train records); given the
    ``answers``, the span mode with the best span F1 on the calibration records."""
    train_groups = {r["group"] for r in train}
    added = [r for r in invented if r["group"] in train_groups]
    x, y, _ = design([*train, *added], features)
    params = fit_logistic(x, y, features, c, SUPPORT_SIGN, balanced=True)
    usable = [r for r in calibration if "error" not in r]
    primary = [r for r in train if r.get("dataset", PRIMARY) == PRIMARY and "error" not in r]
    raw_held = [params.raw(input_matrix(r, features)) for r in usable] + out_of_fold_raw(primary, features, c, added)
    held = usable + primary
    labelled = [(v, 1 - lab) for r, raw in zip(held, raw_held) for v, lab in zip(raw, r["labels"]) if lab is not None]
    knots_x, knots_y = platt_knots(np.array([v for v, _ in labelled]), np.array([lab for _, lab in labelled]))
    lm = attributor.lm
    detector = SupportDetector(
        model_id=lm.model_id, num_layers=lm.num_layers, num_heads=lm.num_heads,
        **params.model_dump(exclude={"calibration_x", "calibration_y"}), calibration_x=knots_x, calibration_y=knots_y, thresholds={s: 0.5 for s in STRICTNESS}, **meta)
    held_support = [np.interp(raw, detector.calibration_x, detector.calibration_y) for raw in raw_held]
    support = held_support[:len(usable)]
    detector.thresholds, curve = choose_thresholds(held, held_support)
    span_f1 = {}
    if answers is not None:
        detector.span_mode, span_f1 = choose_span_mode(usable, answers, support, detector.thresholds["balanced"])
    calibration_groups = {r["group"] for r in usable}
    held_invented = [r for r in invented if r["group"] in calibration_groups]
    if held_invented:
        invented_support = np.array([detector.predict(r["inputs"][-1:])[0] for r in held_invented
                                     if r["labels"][-1] == 1])
        detector.metrics.update({f"invented_flagged_{name}": float(np.mean(invented_support < t))
                                 for name, t in detector.thresholds.items()})
    return detector, {"curve": curve, "reliability": reliability(np.concatenate(held_support), held),
                      "span_f1_by_mode": span_f1}




# ---- fitting: `at2-rag lab fit-detector` -------------------------------------------------------------------------

# What the shipped detector is fit on: (file, task or None for all, first N of those or None for all).
TRAIN_DATA = (("ragtruth_dev.jsonl", "QA", None), ("ragtruth_dev.jsonl", "Summary", SUMMARY_LIMIT),
              ("halueval_qa.jsonl", None, 300))
PRIMARY = "ragtruth"  # the kind of answer the detector is for: model choice is by cross-validation on it
C_GRID = (0.01, 0.1, 1.0)


def invented_records(records: Sequence[dict], answers: dict[str, LabelledAnswer], seed: int = 0) -> list[dict]:
    """Known-unsupported claims for training: per answer, a sentence of another source's answer appended to it,
    and the same sentence alone as a one-sentence answer (both labelled unsupported), plus the answer's first
    sentence alone when it is labelled supported. Labelled RAG answers almost never hold a sentence whose every
    word is new, so without these a detector learns nothing about the plainest invention. Lexical inputs only
    (they need no model pass)."""
    usable = [r for r in records if "error" not in r and r["texts"]]
    pool = [(r["group"], text) for r in usable for text in r["texts"] if len(text.split()) >= 4]
    rng = np.random.default_rng(seed)
    out = []
    for r in usable:
        foreign = [text for group, text in (pool[i] for i in rng.permutation(len(pool))[:8]) if group != r["group"]]
        if not foreign:
            continue
        a = answers[r["id"]]
        vocabulary = ContextVocabulary([a.question, *a.passages])
        n = len(r["texts"])
        base = {"group": r["group"], "dataset": r.get("dataset"), "part": r.get("part"), "invented": True}
        out.append({**base, "id": f"{r['id']}:appended", "texts": [*r["texts"], foreign[0]],
                    "labels": [*r["labels"], 1],
                    "inputs": [*r["inputs"], vocabulary.facts(foreign[0], n, n + 1)]})
        out.append({**base, "id": f"{r['id']}:alone", "texts": [foreign[0]], "labels": [1],
                    "inputs": [vocabulary.facts(foreign[0], 0, 1)]})
        if r["labels"][0] == 0:
            out.append({**base, "id": f"{r['id']}:first", "texts": [r["texts"][0]], "labels": [0],
                        "inputs": [vocabulary.facts(r["texts"][0], 0, 1)]})
    return out


def _cv_primary(records: Sequence[dict], features: Sequence[str], c: float, extra: bool,
                invented: Sequence[dict] = (), folds: int = 5) -> float:
    """Sentence AUROC on the primary dataset's train part, by group folds; ``extra``: also fit on the train
    parts of the other datasets; ``invented``: records of ``invented_records`` added to the training folds
    (neither is ever scored)."""
    from sklearn.metrics import roc_auc_score

    primary = [r for r in records if r["dataset"] == PRIMARY and "error" not in r]
    others = [r for r in records if r["dataset"] != PRIMARY and "error" not in r] if extra else []
    fold = {r["group"]: _fold(r["group"], folds) for r in primary}
    y_all, s_all = [], []
    for k in range(folds):
        added = [r for r in invented if r["group"] in fold and fold[r["group"]] != k]
        x, y, _ = design([r for r in primary if fold[r["group"]] != k] + others + added, features)
        params = fit_logistic(x, y, features, c, SUPPORT_SIGN, balanced=True)
        xt, yt, _ = design([r for r in primary if fold[r["group"]] == k], features)
        if not len(yt):
            continue
        y_all.extend(yt)
        s_all.extend(params.raw(xt))
    return float(roc_auc_score(1 - np.asarray(y_all), 1 - np.asarray(s_all)))


def fit(attributor: AT2Attributor, records: Sequence[dict], command: str,
        answers: dict[str, LabelledAnswer]) -> tuple[SupportDetector, dict]:
    """Choose feature set, C and training datasets by cross-validation on train parts; fit on train parts,
    calibrate on calibration parts. Validation parts are not read."""
    width = attributor.lm.num_layers * attributor.lm.num_heads
    train = [r for r in records if r["part"] == "train"]
    calibration = [r for r in records if r["part"] == "calibration" and r["dataset"] == PRIMARY]
    invented = invented_records([r for r in records if r["dataset"] == PRIMARY and r["part"] != "validation"], answers)
    table = []
    for set_name, features in tqdm(feature_sets(width).items(), desc="model choice", unit="set"):
        for extra in (False, True):
            for c in C_GRID:
                table.append({"features": set_name, "all_datasets": extra, "invented": False, "C": c,
                              "cv_auroc": _cv_primary(train, features, c, extra)})
    for c in C_GRID:
        table.append({"features": "lexical", "all_datasets": False, "invented": True, "C": c,
                      "cv_auroc": _cv_primary(train, LEXICAL, c, False, invented)})
    # The shipped detector is chosen among fits that also learn from invented sentences: only lexical inputs can
    # be computed for them without a model pass, and a detector that calls a wholly invented sentence supported
    # is not one to ship, whatever its AUROC on the labelled answers.
    best = max((row for row in table if row["invented"]), key=lambda row: row["cv_auroc"])
    features = feature_sets(width)[best["features"]]
    fit_on = train if best["all_datasets"] else [r for r in train if r["dataset"] == PRIMARY]
    at2_only = max((row for row in table if row["features"] == "lookback"), key=lambda row: row["cv_auroc"])
    names = ", ".join(f"{n}{f' {t}' if t else ''}{f' (first {k})' if k else ''}" for n, t, k in TRAIN_DATA)
    meta = {"training_data": f"train parts of {names} (split by source, 3:1:1 train:calibration:"
                             f"validation); {'all datasets' if best['all_datasets'] else PRIMARY + ' only'}: "
                             f"{sum(1 for r in fit_on if 'error' not in r)} answers",
            "command": command,
            "notes": f"features '{best['features']}' with signs fixed, trained with invented sentences (another "
                     f"source's sentence, appended or alone), C={best['C']} chosen by grouped CV sentence AUROC on "
                     f"{PRIMARY} train answers ({best['cv_auroc']:.3f}); Platt calibration and thresholds on "
                     f"{len(calibration)} {PRIMARY} calibration answers and out-of-fold {PRIMARY} train answers"}
    detector, extras = fit_detector(attributor, fit_on, calibration, features, best["C"], meta, answers, invented)
    detector.metrics.update({"cv_auroc": best["cv_auroc"], "calibration_answers": float(len(calibration))})
    baseline_fit = [r for r in train if r["dataset"] == PRIMARY]
    word_threshold = _best_overlap_threshold(baseline_fit)
    at2_features = feature_sets(width)["lookback"] + ["source_attention", "logprob_mean", "pmi_mean"]
    at2_detector, _ = fit_detector(attributor, baseline_fit, calibration, at2_features, at2_only["C"],
                                   {"notes": "baseline: model-internal signals only (no lexical facts)"})
    return detector, {"model_choice": table, "chosen": best, **extras, "word_overlap_threshold": word_threshold,
                      "at2_only": at2_detector.model_dump()}


def _best_overlap_threshold(records: Sequence[dict]) -> float:
    """Word-overlap baseline: flag a sentence whose content-word coverage is below t; t maximises example F1."""
    usable = [r for r in records if "error" not in r]
    best_t, best_f1 = 0.5, -1.0
    for t in np.round(np.arange(0.05, 1.0, 0.05), 2):
        f1 = example_f1(usable, [[row["coverage"] < t for row in r["inputs"]] for r in usable])["f1"]
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t



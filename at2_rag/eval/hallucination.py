"""Labelled RAG answers: read them, turn their spans into sentence labels, collect the support detector's inputs
(one attribution pass + one short pass per answer, cached), fit the detector (`at2-rag fit-detector`) and
benchmark it against baselines (`at2-rag bench hallucination`).

Data format (one JSON object per line): ``{"id", "question", "passages": [str], "response",
"hallucinated_spans": [[start, end], ...], "task"?, "model"?, "source_id"?, "unjudged_spans"?}``. A response
sentence is unsupported when a labelled span overlaps it; a sentence mostly inside ``unjudged_spans`` is left
out of fitting and sentence-level metrics. Parts: answers are split by their source (``source_id``, else the
question) with a hash, so every answer to one context lands in the same part.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from tqdm.auto import tqdm

from ..attributor import AT2Attributor
from ..detector import LEXICAL, MODEL, STRICTNESS, SUPPORT_SIGN, SupportDetector
from ..errors import AT2Error

SUMMARY_QUERY = "Summarize the passages."
SUMMARY_LIMIT = 100  # RAGTruth Summary answers are long (~6 s each here): the first 100 of 281
PARTS = ("train", "calibration", "validation")


class LabelledAnswer(BaseModel):
    id: str
    dataset: str = ""
    task: str = ""
    model: str = ""
    group: str
    question: str
    passages: list[str]
    response: str
    spans: list[tuple[int, int]]
    unjudged: list[tuple[int, int]] = []


def part_of(group: str) -> str:
    """'validation' for 20% of groups, 'calibration' for 20%, 'train' for the rest (stable hash)."""
    bucket = int(hashlib.sha256(group.encode()).hexdigest(), 16) % 5
    return "validation" if bucket == 0 else "calibration" if bucket == 1 else "train"


def read_answers(path: str | Path, part: str | None = None) -> list[LabelledAnswer]:
    """Answers of a file in the shared format (``part``: only that part; None: all)."""
    out = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            group = str(row.get("source_id") or row.get("halueval_row") or row["question"] or row["id"])
            answer = LabelledAnswer(
                id=str(row["id"]), dataset=row.get("dataset", ""), task=row.get("task", ""),
                model=row.get("model", ""), group=f"{row.get('dataset', '')}:{group}",
                question=row["question"].strip() or SUMMARY_QUERY, passages=list(row["passages"]),
                response=row["response"], spans=[tuple(s) for s in row.get("hallucinated_spans", [])],
                unjudged=[tuple(s) for s in row.get("unjudged_spans", [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{line_no}: not a labelled answer ({exc})") from exc
        if part is None or part_of(answer.group) == part:
            out.append(answer)
    return out


def _overlap(a: int, b: int, spans: Iterable[tuple[int, int]]) -> int:
    return sum(max(0, min(b, e) - max(a, s)) for s, e in spans)


def sentence_labels(answer: LabelledAnswer, targets: Sequence[tuple[int, int]]) -> list[int | None]:
    """1 = unsupported (a labelled span overlaps it), 0 = supported, None = mostly unjudged."""
    labels: list[int | None] = []
    for a, b in targets:
        if answer.unjudged and _overlap(a, b, answer.unjudged) > 0.5 * (b - a):
            labels.append(None)
        else:
            labels.append(int(_overlap(a, b, answer.spans) > 0))
    return labels


def collect_inputs(attributor: AT2Attributor, answers: Sequence[LabelledAnswer], out: str | Path,
                   desc: str = "answers") -> list[dict]:
    """Per answer: detector inputs of each sentence, the sentences' spans and labels, and timings; cached in
    ``out`` (JSONL, resumable: answers already there are not run again)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            record = json.loads(line)
            done[record["id"]] = record
    with out.open("a") as fh:
        for answer in tqdm(answers, desc=desc, unit="answer"):
            if answer.id in done:
                continue
            record = answer_record(attributor, answer)
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            done[answer.id] = record
    return [done[a.id] for a in answers]


def answer_record(attributor: AT2Attributor, answer: LabelledAnswer) -> dict:
    start = time.perf_counter()
    record = {"id": answer.id, "group": answer.group, "task": answer.task, "model": answer.model}
    try:
        job = attributor.jobs([answer.question], [answer.passages], [answer.response])[0]
        attribution = attributor.score_job(job, support=True)
        rows = attributor.support_inputs(attribution)
        baseline = attributor.evidence_scores(attribution)[1] if attributor.calibration is not None else None
    except AT2Error as exc:
        return {**record, "error": f"{type(exc).__name__}: {exc}"}
    targets = [(t.start, t.end) for t in attribution.targets]
    record.update(
        targets=targets, texts=[t.text for t in attribution.targets], labels=sentence_labels(answer, targets),
        inputs=rows, evidence_supported=None if baseline is None else [bool(x) for x in baseline],
        truncated=attribution.truncated, seconds=time.perf_counter() - start, tokens=len(job.layout) + len(job.response_ids),
    )
    return record


def design(records: Sequence[dict], features: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y supported=1, group index) over every labelled sentence of these records."""
    x, y, g = [], [], []
    groups = {r["group"]: i for i, r in enumerate(records)}
    for r in records:
        if "error" in r:
            continue
        for row, label in zip(r["inputs"], r["labels"]):
            if label is None:
                continue
            x.append([row[f] for f in features])
            y.append(1 - label)
            g.append(groups[r["group"]])
    return np.asarray(x, dtype=float), np.asarray(y, dtype=int), np.asarray(g)


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


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, features: Sequence[str]):
    """L2 logistic regression (classes weighted equally) on standardised inputs, with the sign of each weight in
    ``SUPPORT_SIGN`` fixed: more words the context never uses can only lower support, more coverage only raise
    it. Unconstrained, correlated coverage features take opposite signs and a sentence whose every word is
    new (rare in the labelled answers) extrapolates to high support."""
    from scipy.optimize import minimize

    mean, std = x.mean(0), x.std(0)
    scale = np.where(std > 0, std, 1.0)
    z = (x - mean) / scale
    weight = np.where(y == 1, len(y) / (2 * max(1, y.sum())), len(y) / (2 * max(1, len(y) - y.sum())))
    sign = np.array([SUPPORT_SIGN.get(f, 0) for f in features])

    def loss(theta):
        w, b = theta[:-1], theta[-1]
        logits = z @ w + b
        p = 1.0 / (1.0 + np.exp(-logits))
        value = np.sum(weight * (np.logaddexp(0.0, logits) - y * logits)) + 0.5 / c * w @ w
        grad = weight * (p - y)
        return value, np.append(z.T @ grad + w / c, grad.sum())

    bounds = [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in sign] + [(None, None)]
    theta = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": 5000}).x
    return mean, scale, theta[:-1], float(theta[-1])


def _predict(params, x: np.ndarray) -> np.ndarray:
    mean, scale, w, b = params
    return 1.0 / (1.0 + np.exp(-(((x - mean) / scale) @ w + b)))


def example_f1(records: Sequence[dict], flags: Sequence[Sequence[bool]]) -> dict[str, float]:
    """RAGTruth example-level precision/recall/F1: an answer is flagged when any sentence is unsupported."""
    truth = np.array([any(lab == 1 for lab in r["labels"]) for r in records])
    pred = np.array([any(f) for f in flags])
    return _prf(int((truth & pred).sum()), int(pred.sum()), int(truth.sum()))


def _prf(hit: int, predicted: int, actual: int) -> dict[str, float]:
    p = hit / predicted if predicted else 0.0
    r = hit / actual if actual else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


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
    samples = [rng.integers(0, n, n) for _ in range(boot)]
    f1 = np.zeros((len(grid), boot))
    clean_flagged = np.zeros(len(grid))
    clean = [i for i, r in enumerate(records) if not any(lab == 1 for lab in r["labels"])]
    for k, t in enumerate(grid):
        flags = [list(s < t) for s in support]
        for b, idx in enumerate(samples):
            f1[k, b] = example_f1([records[i] for i in idx], [flags[i] for i in idx])["f1"]
        clean_flagged[k] = np.mean([any(flags[i]) for i in clean]) if clean else 0.0
    median = np.median(f1, 1)
    thresholds = {"strict": float(grid[int(np.argmax(median))])}
    for name, cap in CLEAN_FLAG_CAP.items():
        allowed = np.flatnonzero(clean_flagged <= cap)
        thresholds[name] = float(grid[allowed[np.argmax(median[allowed])]] if len(allowed) else grid[0])
    curve = {"grid": grid.tolist(), "f1_median": median.tolist(), "f1_low": np.percentile(f1, 2.5, 1).tolist(),
             "f1_high": np.percentile(f1, 97.5, 1).tolist(), "clean_flagged": clean_flagged.tolist()}
    return thresholds, curve


def _matrix(record: dict, features: Sequence[str]) -> np.ndarray:
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
        params = fit_logistic(x, y, c, features)
        for r in held:
            out[r["id"]] = _predict(params, _matrix(r, features))
    return [out[r["id"]] for r in records]


def platt_knots(raw: np.ndarray, y: np.ndarray, knots: int = 200) -> tuple[list[float], list[float]]:
    """Platt scaling (a logistic map of the raw score's logit) fit on held-out sentences, written as knots for
    linear interpolation: at quantiles of the held-out raw scores plus the ends. Unlike isotonic steps it keeps
    every distinction of the raw ranking, so thresholds can move in small steps."""
    from sklearn.linear_model import LogisticRegression

    logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
    model = LogisticRegression(C=1e4, max_iter=2000).fit(logit(raw).reshape(-1, 1), y)
    xs = np.unique(np.concatenate([[0.0, 1.0], np.quantile(raw, np.linspace(0, 1, knots + 1))]))
    return xs.tolist(), model.predict_proba(logit(xs).reshape(-1, 1))[:, 1].tolist()


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
    params = fit_logistic(x, y, c, features)
    usable = [r for r in calibration if "error" not in r]
    primary = [r for r in train if r.get("dataset", PRIMARY) == PRIMARY and "error" not in r]
    raw_held = [_predict(params, _matrix(r, features)) for r in usable] + out_of_fold_raw(primary, features, c, added)
    held = usable + primary
    labelled = [(v, 1 - lab) for r, raw in zip(held, raw_held) for v, lab in zip(raw, r["labels"]) if lab is not None]
    knots_x, knots_y = platt_knots(np.array([v for v, _ in labelled]), np.array([lab for _, lab in labelled]))
    lm = attributor.lm
    detector = SupportDetector(
        model_id=lm.model_id, num_layers=lm.num_layers, num_heads=lm.num_heads, features=list(features),
        mean=params[0].tolist(), scale=params[1].tolist(), weights=params[2].tolist(), bias=params[3],
        calibration_x=knots_x, calibration_y=knots_y, thresholds={s: 0.5 for s in STRICTNESS}, **meta)
    held_support = [np.interp(raw, detector.calibration_x, detector.calibration_y) for raw in raw_held]
    support = held_support[:len(usable)]
    detector.thresholds, curve = choose_thresholds(held, held_support)
    span_f1 = {}
    if answers is not None:
        for mode in ("novel-words", "sentence"):
            spans = sentence_spans_of(usable, answers, mode)
            flags = [s < detector.thresholds["balanced"] for s in support]
            span_f1[mode] = span_prf(usable, answers, [[span for spans_t, f in zip(sp, fl) if f for span in spans_t]
                                                       for sp, fl in zip(spans, flags)])["f1"]
        detector.span_mode = max(span_f1, key=span_f1.get)
    calibration_groups = {r["group"] for r in usable}
    held_invented = [r for r in invented if r["group"] in calibration_groups]
    if held_invented:
        invented_support = np.array([detector.support(r["inputs"][-1:])[0] for r in held_invented
                                     if r["labels"][-1] == 1])
        detector.metrics.update({f"invented_flagged_{name}": float(np.mean(invented_support < t))
                                 for name, t in detector.thresholds.items()})
    return detector, {"curve": curve, "reliability": reliability(np.concatenate(held_support), held),
                      "span_f1_by_mode": span_f1}


def sentence_spans_of(records: Sequence[dict], answers: dict[str, LabelledAnswer], mode: str) -> list[list]:
    """Per record, per sentence: the unsupported spans the detector would mark if it flagged the sentence."""
    from ..detector import ContextVocabulary

    out = []
    for r in records:
        a = answers[r["id"]]
        vocabulary = ContextVocabulary([a.question, *a.passages])
        out.append([vocabulary.unsupported_spans(a.response[s:e], s, mode=mode) for s, e in r["targets"]])
    return out


def reliability(support: np.ndarray, records: Sequence[dict], bins: int = 10) -> list[dict]:
    """Calibration table: per bin of predicted support, the share of sentences that are supported."""
    labels = np.array([1 - lab if lab is not None else -1 for r in records for lab in r["labels"]])
    keep = labels >= 0
    support, labels = support[keep], labels[keep]
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        inside = (support >= a) & ((support < b) | (b == 1.0))
        if inside.any():
            out.append({"bin": [float(a), float(b)], "n": int(inside.sum()), "predicted": float(support[inside].mean()),
                        "observed": float(labels[inside].mean())})
    return out


def span_prf(records: Sequence[dict], answers: dict[str, LabelledAnswer],
             predicted: Sequence[Sequence[tuple[int, int]]]) -> dict[str, float]:
    """RAGTruth-style span level: characters of predicted unsupported spans against labelled ones, pooled."""
    hit = pred = actual = 0
    for record, spans in zip(records, predicted):
        gold = answers[record["id"]].spans
        chars = set()
        for a, b in spans:
            chars.update(range(a, b))
        gold_chars = set()
        for a, b in gold:
            gold_chars.update(range(a, b))
        hit += len(chars & gold_chars)
        pred += len(chars)
        actual += len(gold_chars)
    return _prf(hit, pred, actual)


def sentence_auroc(records: Sequence[dict], unsupported_scores: Sequence[np.ndarray]) -> float | None:
    from sklearn.metrics import roc_auc_score

    y, s = [], []
    for r, scores in zip(records, unsupported_scores):
        for lab, v in zip(r["labels"], scores):
            if lab is not None:
                y.append(lab)
                s.append(v)
    return float(roc_auc_score(y, s)) if 0 < sum(y) < len(y) else None


def bootstrap_example(records: Sequence[dict], flags: Sequence[Sequence[bool]], boot: int = 1000) -> list[float]:
    rng = np.random.default_rng(0)
    n = len(records)
    values = []
    for _ in range(boot):
        idx = rng.integers(0, n, n)
        values.append(example_f1([records[i] for i in idx], [flags[i] for i in idx])["f1"])
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


# ---- fitting: `at2-rag fit-detector` -------------------------------------------------------------------------

# What the shipped detector is fit on: (file, task or None for all, first N of those or None for all).
TRAIN_DATA = (("ragtruth_dev.jsonl", "QA", None), ("ragtruth_dev.jsonl", "Summary", SUMMARY_LIMIT),
              ("halueval_qa.jsonl", None, 300))
PRIMARY = "ragtruth"  # the kind of answer the detector is for: model choice is by cross-validation on it
C_GRID = (0.01, 0.1, 1.0)


def load_all(attributor: AT2Attributor, data_dir: str | Path, work_dir: str | Path,
             data=TRAIN_DATA) -> tuple[list[dict], dict[str, LabelledAnswer]]:
    """Detector inputs of the answers named by ``data`` (cached per file in ``work_dir``)."""
    records, answers = [], {}
    for name, task, limit in data:
        rows = [a for a in read_answers(Path(data_dir) / name) if task is None or a.task == task][:limit]
        answers.update({a.id: a for a in rows})
        for record in collect_inputs(attributor, rows, Path(work_dir) / name, desc=name):
            records.append({**refresh_lexical(record, answers[record["id"]]), "dataset": name.split("_")[0],
                            "part": part_of(record["group"])})
    return records, answers


def refresh_lexical(record: dict, answer: LabelledAnswer) -> dict:
    """The record with its lexical inputs recomputed by the current code (they need no model: cached model
    inputs stay valid when only the lexical facts change)."""
    from ..detector import ContextVocabulary

    if "error" in record:
        return record
    vocabulary = ContextVocabulary([answer.question, *answer.passages])
    n = len(record["texts"])
    inputs = [{**row, **vocabulary.facts(text, t, n)} for t, (row, text) in enumerate(zip(record["inputs"],
                                                                                          record["texts"]))]
    return {**record, "inputs": inputs}


def invented_records(records: Sequence[dict], answers: dict[str, LabelledAnswer], seed: int = 0) -> list[dict]:
    """Known-unsupported claims for training: per answer, a sentence of another source's answer appended to it,
    and the same sentence alone as a one-sentence answer (both labelled unsupported), plus the answer's first
    sentence alone when it is labelled supported. Labelled RAG answers almost never hold a sentence whose every
    word is new, so without these a detector learns nothing about the plainest invention. Lexical inputs only
    (they need no model pass)."""
    from ..detector import ContextVocabulary

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
        params = fit_logistic(x, y, c, features)
        xt, yt, _ = design([r for r in primary if fold[r["group"]] == k], features)
        if not len(yt):
            continue
        y_all.extend(yt)
        s_all.extend(_predict(params, xt))
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


# ---- benchmark: `at2-rag bench hallucination` ------------------------------------------------------------------

def methods(attributor: AT2Attributor, baselines: dict | None) -> dict[str, object]:
    """Per method, a function record -> per-sentence unsupported scores in [0, 1] and flags."""
    detector = attributor.detector
    out = {}
    if detector is not None:
        for strictness in STRICTNESS:
            threshold = detector.threshold(strictness)
            out[f"at2-rag detector ({strictness})"] = (
                lambda r, t=threshold: (1 - detector.support(r["inputs"]), detector.support(r["inputs"]) < t))
    out["flag everything"] = lambda r: (np.ones(len(r["inputs"])), np.ones(len(r["inputs"]), dtype=bool))
    if baselines is not None:
        t = baselines["word_overlap_threshold"]
        out["word overlap"] = lambda r: (1 - np.array([row["coverage"] for row in r["inputs"]]),
                                         np.array([row["coverage"] < t for row in r["inputs"]]))
        at2 = SupportDetector.model_validate(baselines["at2_only"])
        out["AT2-only signals"] = lambda r: (1 - at2.support(r["inputs"]), at2.support(r["inputs"]) < at2.threshold())
    out["HotpotQA evidence threshold (previous)"] = lambda r: (
        1 - np.array([row["evidence_top"] for row in r["inputs"]]),
        ~np.array(r["evidence_supported"], dtype=bool))
    return out


def _balanced(records: Sequence[dict], seed: int = 0) -> list[dict]:
    """Equal numbers of answers with and without a labelled span (the smaller class sets the size)."""
    rng = np.random.default_rng(seed)
    bad = [r for r in records if any(lab == 1 for lab in r["labels"])]
    good = [r for r in records if not any(lab == 1 for lab in r["labels"])]
    n = min(len(bad), len(good))
    pick = lambda rows: [rows[i] for i in sorted(rng.choice(len(rows), n, replace=False))] if n else []  # noqa: E731
    return pick(bad) + pick(good)


def evaluate(records: Sequence[dict], answers: dict[str, LabelledAnswer], fn, vocabularies) -> dict:
    scores, flags = zip(*(fn(r) for r in records)) if records else ((), ())
    spans = [[span for spans_t, f in zip(vocabularies[r["id"]], flag) if f for span in spans_t]
             for r, flag in zip(records, flags)]
    clean = [f for r, f in zip(records, flags) if not any(lab == 1 for lab in r["labels"])]
    return {"example": {**example_f1(records, flags), "f1_ci95": bootstrap_example(records, flags)},
            "span": span_prf(records, answers, spans),
            "sentence_auroc": sentence_auroc(records, scores),
            "clean_answers_flagged": float(np.mean([any(f) for f in clean])) if clean else None,
            "sentences_flagged": float(np.mean(np.concatenate([np.asarray(f, dtype=float) for f in flags])))
            if flags else None, "n_answers": len(records)}


def bench(attributor: AT2Attributor, data: str | Path, work_dir: str | Path, part: str | None,
          baselines: dict | None) -> dict:
    """Every method on one labelled file (natural rate and a balanced sample), overall, by task and by LLM."""
    answers_list = read_answers(data, part)
    answers = {a.id: a for a in answers_list}
    records = [r for r in collect_inputs(attributor, answers_list, Path(work_dir) / Path(data).name, desc="answers")
               if "error" not in r]
    records = [refresh_lexical(r, answers[r["id"]]) for r in records]
    mode = attributor.detector.span_mode if attributor.detector is not None else "novel-words"
    vocabularies = dict(zip((r["id"] for r in records), sentence_spans_of(records, answers, mode)))
    result = {"data": str(data), "part": part, "model": attributor.lm.model_id, "n_answers": len(records),
              "seconds_per_answer": float(np.mean([r["seconds"] for r in records])) if records else None,
              "tokens_per_answer": float(np.mean([r["tokens"] for r in records])) if records else None,
              "methods": {}}
    for name, fn in methods(attributor, baselines).items():
        entry = {"natural": evaluate(records, answers, fn, vocabularies),
                 "balanced": evaluate(_balanced(records), answers, fn, vocabularies), "by_task": {}, "by_model": {}}
        for key, field in (("by_task", "task"), ("by_model", "model")):
            for value in sorted({r[field] for r in records}):
                subset = [r for r in records if r[field] == value]
                entry[key][value] = evaluate(subset, answers, fn, vocabularies)
        result["methods"][name] = entry
    if attributor.detector is not None:
        support = np.concatenate([attributor.detector.support(r["inputs"]) for r in records]) if records else np.array([])
        result["reliability"] = reliability(support, records)
    return result


def plot_reliability(result: dict, path: str | Path) -> None:
    """Reliability diagram of the detector's calibrated support on the benched answers (bin size as area)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = result.get("reliability") or []
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], color="#2563eb", linewidth=1)
    ax.scatter([b["predicted"] for b in bins], [b["observed"] for b in bins],
               s=[max(8.0, 600 * b["n"] / max(1, sum(x["n"] for x in bins))) for b in bins], color="#2563eb",
               alpha=0.7, label="bins (area = sentences)")
    for b in bins:
        ax.annotate(str(b["n"]), (b["predicted"], b["observed"]), textcoords="offset points", xytext=(5, -10),
                    fontsize=7, color="#374151")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("predicted support (calibrated)")
    ax.set_ylabel("share of sentences labelled supported")
    ax.set_title(f"{Path(result['data']).name}, part {result['part']}, n={result['n_answers']} answers", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_bench(result: dict) -> None:
    print(f"\n{result['model']} on {result['n_answers']} answers of {result['data']} (part: {result['part']}); "
          f"{result['seconds_per_answer']:.2f} s per answer ({result['tokens_per_answer']:.0f} tokens)")
    head = (f"{'method':<40} {'sample':<9} {'ex P':>6} {'ex R':>6} {'ex F1':>6} {'F1 95% CI':>14} {'span F1':>8} "
            f"{'sent AUROC':>10} {'clean flagged':>13}")
    print(head)
    for name, entry in result["methods"].items():
        for sample in ("natural", "balanced"):
            e = entry[sample]
            auroc = f"{e['sentence_auroc']:.3f}" if e["sentence_auroc"] is not None else "-"
            ci = "[{:.2f}, {:.2f}]".format(*e["example"]["f1_ci95"])
            clean = f"{e['clean_answers_flagged']:.2f}" if e["clean_answers_flagged"] is not None else "-"
            print(f"{name:<40} {sample:<9} {e['example']['precision']:>6.3f} {e['example']['recall']:>6.3f} "
                  f"{e['example']['f1']:>6.3f} {ci:>14} {e['span']['f1']:>8.3f} {auroc:>10} {clean:>13}")

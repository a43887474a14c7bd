"""Labelled RAG answers: read them, turn their spans into sentence labels, collect the support detector's inputs
(one attribution pass per answer, cached), and benchmark the verdict against baselines (`at2-rag lab bench
hallucination`). The detector itself is fit in ``at2_rag.fit.detector``.

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
from ..support import STRICTNESS, ContextVocabulary, SupportDetector
from .metrics import bootstrap_ci
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
        pipeline = attributor.pipeline
        job = pipeline.jobs([answer.question], [answer.passages], [answer.response])[0]
        attribution = pipeline.score(job, signals=True)
        rows = pipeline.detector_rows(attribution)
        baseline = pipeline.evidence(attribution).supported if attributor.calibration is not None else None
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


def example_f1(records: Sequence[dict], flags: Sequence[Sequence[bool]]) -> dict[str, float]:
    """RAGTruth example-level precision/recall/F1: an answer is flagged when any sentence is unsupported."""
    truth = np.array([any(lab == 1 for lab in r["labels"]) for r in records])
    pred = np.array([any(f) for f in flags])
    return _prf(int((truth & pred).sum()), int(pred.sum()), int(truth.sum()))


def _prf(hit: int, predicted: int, actual: int) -> dict[str, float]:
    p = hit / predicted if predicted else 0.0
    r = hit / actual if actual else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def sentence_spans_of(records: Sequence[dict], answers: dict[str, LabelledAnswer], mode: str) -> list[list]:
    """Per record, per sentence: the unsupported spans the detector would mark if it flagged the sentence."""
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


def balanced_accuracy(records: Sequence[dict], flags: Sequence[Sequence[bool]]) -> float | None:
    """Sentence-level balanced accuracy of the flags (the mean of the recall of unsupported and of supported
    sentences; LLM-AggreFact's metric), over judged sentences."""
    pairs = [(lab, bool(f)) for r, fl in zip(records, flags) for lab, f in zip(r["labels"], fl) if lab is not None]
    bad = [f for lab, f in pairs if lab == 1]
    good = [not f for lab, f in pairs if lab == 0]
    parts = [float(np.mean(x)) for x in (bad, good) if x]
    return float(np.mean(parts)) if parts else None


def sentence_auroc(records: Sequence[dict], unsupported_scores: Sequence[np.ndarray]) -> float | None:
    from sklearn.metrics import roc_auc_score

    y, s = [], []
    for r, scores in zip(records, unsupported_scores):
        for lab, v in zip(r["labels"], scores):
            if lab is not None:
                y.append(lab)
                s.append(v)
    return float(roc_auc_score(y, s)) if 0 < sum(y) < len(y) else None


def load_all(attributor: AT2Attributor, data_dir: str | Path, work_dir: str | Path,
             data: Sequence[tuple[str, str | None, int | None]]) -> tuple[list[dict], dict[str, LabelledAnswer]]:
    """Detector inputs of the answers named by ``data``: (file, task or None for all, first N or None for all);
    cached per file in ``work_dir``."""
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
    if "error" in record:
        return record
    vocabulary = ContextVocabulary([answer.question, *answer.passages])
    n = len(record["texts"])
    inputs = [{**row, **vocabulary.facts(text, t, n)} for t, (row, text) in enumerate(zip(record["inputs"],
                                                                                          record["texts"]))]
    return {**record, "inputs": inputs}



# ---- benchmark: `at2-rag lab bench hallucination` ------------------------------------------------------------------

def methods(attributor: AT2Attributor, baselines: dict | None) -> dict[str, object]:
    """Per method, a function record -> per-sentence unsupported scores in [0, 1] and flags."""
    detector = attributor.detector
    out = {}
    if detector is not None:
        for strictness in STRICTNESS:
            threshold = detector.threshold(strictness)
            out[f"at2-rag detector ({strictness})"] = (
                lambda r, t=threshold: (1 - detector.predict(r["inputs"]), detector.predict(r["inputs"]) < t))
    out["flag everything"] = lambda r: (np.ones(len(r["inputs"])), np.ones(len(r["inputs"]), dtype=bool))
    if baselines is not None:
        t = baselines["word_overlap_threshold"]
        out["word overlap"] = lambda r: (1 - np.array([row["coverage"] for row in r["inputs"]]),
                                         np.array([row["coverage"] < t for row in r["inputs"]]))
        at2 = SupportDetector.model_validate(baselines["at2_only"])
        out["AT2-only signals"] = lambda r: (1 - at2.predict(r["inputs"]), at2.predict(r["inputs"]) < at2.threshold())
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


def _f1_of(sample: Sequence[tuple[dict, Sequence[bool]]]) -> float:
    return example_f1([r for r, _ in sample], [f for _, f in sample])["f1"]


def evaluate(records: Sequence[dict], answers: dict[str, LabelledAnswer], fn, vocabularies) -> dict:
    scores, flags = zip(*(fn(r) for r in records)) if records else ((), ())
    spans = [[span for spans_t, f in zip(vocabularies[r["id"]], flag) if f for span in spans_t]
             for r, flag in zip(records, flags)]
    clean = [f for r, f in zip(records, flags) if not any(lab == 1 for lab in r["labels"])]
    return {"example": {**example_f1(records, flags), "f1_ci95": bootstrap_ci(list(zip(records, flags)), 1000, statistic=_f1_of)},
            "span": span_prf(records, answers, spans),
            "sentence_auroc": sentence_auroc(records, scores),
            "sentence_balanced_accuracy": balanced_accuracy(records, flags),
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
        support = np.concatenate([attributor.detector.predict(r["inputs"]) for r in records]) if records else np.array([])
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
            f"{'sent AUROC':>10} {'sent BAcc':>9} {'clean flagged':>13}")
    print(head)
    for name, entry in result["methods"].items():
        for sample in ("natural", "balanced"):
            e = entry[sample]
            auroc = f"{e['sentence_auroc']:.3f}" if e["sentence_auroc"] is not None else "-"
            ci = "[{:.2f}, {:.2f}]".format(*e["example"]["f1_ci95"])
            clean = f"{e['clean_answers_flagged']:.2f}" if e["clean_answers_flagged"] is not None else "-"
            bacc = f"{e['sentence_balanced_accuracy']:.3f}" if e["sentence_balanced_accuracy"] is not None else "-"
            print(f"{name:<40} {sample:<9} {e['example']['precision']:>6.3f} {e['example']['recall']:>6.3f} "
                  f"{e['example']['f1']:>6.3f} {ci:>14} {e['span']['f1']:>8.3f} {auroc:>10} {bacc:>9} {clean:>13}")

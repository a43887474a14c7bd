"""Fit the shipped support detector: a ``SupportDetector`` over lexical facts, the bundled MiniLM's similarity of
each answer sentence to its closest context pieces and, when given, the verifier's entailment, chosen by
leave-one-dataset-out validation over every labelled set (`python -m at2_rag.fit.stacked`).

No attributor pass is needed: every input is computed from the text. The verifier's inputs are its
*out-of-fold* scores (``at2_rag.fit.verifier --lodo``: each labelled set scored by a verifier fit without it),
so the stack learns how far to trust it on answers it never saw. Steps:

1. inputs by forward selection: fit on every labelled set but one, score the one left out; add the input that
   raises the mean left-out sentence AUROC most, while it adds at least ``MIN_GAIN``; then ``C`` the same way
   (a fit that reads many inputs learns each set's quirks and transfers worse than two inputs that mean the
   same thing everywhere);
2. Platt calibration on the pooled left-out scores of that setting;
3. operating points on the same left-out scores: 'balanced' and 'lenient' flag at most 15% / 5% of clean
   answers *in every set*; 'strict' is uncapped;
4. the span mode (novel-word runs or the whole sentence) by span F1 on the left-out scores;
5. the final weights on every set (at most ``CAP`` sentences each).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..eval.hallucination import (
    LabelledAnswer,
    design,
    example_f1,
    read_answers,
    reliability,
    sentence_labels,
    sentence_spans_of,
    span_prf,
)
from ..passages import sentence_spans
from ..support import (
    EMBEDDING,
    EVIDENCE,
    LEXICAL,
    MODEL,
    NO_CONTEXT,
    STRICTNESS,
    SUPPORT_SIGN,
    VERIFIER,
    ContextVocabulary,
    SupportDetector,
    embedding_facts,
)
from .detector import CLEAN_FLAG_CAP, choose_span_mode, input_matrix, invented_records
from .logistic import fit_logistic, platt_knots
from .verifier import DATASETS, HOTPOTQA

CANDIDATES = [*LEXICAL, *EMBEDDING]  # (+ the verifier's score when given)
MIN_GAIN = 0.002  # least rise of the mean left-out AUROC that earns an input its place
C_GRID = (0.01, 0.1, 1.0)
SETS = (*DATASETS, HOTPOTQA)  # what one fold leaves out
CAP = 1500  # most sentences any one set contributes to a fit (HaluEval and WiCE would otherwise outweigh RAGTruth)
FIT_PATH = Path("docs/results/detector_stacked_fit.json")


def hotpot_answers(path: str | Path, seed: int = 0) -> list[LabelledAnswer]:
    """HotpotQA train rows as labelled answers over their passages ("Title: text"): the gold answer framed as
    "The answer is X." followed by the first supporting fact (supported), and another row's answer framed the
    same way (unsupported)."""
    if "validation" in Path(path).name:
        raise ValueError("HotpotQA validation rows are never used for fitting")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    out = []
    for n, row in enumerate(rows):
        passages = [f"{c['title']}: {''.join(c['sentences']).strip()}" for c in row["context"]]
        titles = {c["title"]: c["sentences"] for c in row["context"]}
        facts = [titles[f["title"]][f["sent_id"]].strip() for f in row["supporting_facts"]
                 if f["title"] in titles and f["sent_id"] < len(titles[f["title"]])]
        gold = f"The answer is {row['answer'].strip()}."
        response = f"{gold} {facts[0]}" if facts else gold
        common = {"dataset": HOTPOTQA, "task": "QA", "group": f"{HOTPOTQA}:{row['id']}", "question": row["question"],
                  "passages": passages}
        out.append(LabelledAnswer(id=f"{HOTPOTQA}:{row['id']}", response=response, spans=[], **common))
        others = [r["answer"] for r in rows if r["answer"].lower() != row["answer"].lower()
                  and (r["answer"].lower() in ("yes", "no")) == (row["answer"].lower() in ("yes", "no"))]
        if others:
            wrong = f"The answer is {others[int(rng.integers(len(others)))].strip()}."
            out.append(LabelledAnswer(id=f"{HOTPOTQA}:{row['id']}:other", response=wrong,
                                      spans=[(0, len(wrong))], **common))
    return out


def records(data_dir: str | Path, scores_path: str | Path | None = None, embed=None,
            cache: str | Path | None = None, hotpotqa: str | Path | None = None,
            signals_dir: str | Path | None = None) -> tuple[list[dict], dict[str, LabelledAnswer]]:
    """One record per labelled answer: its judged sentences (``targets``, ``texts``), labels (1 = unsupported),
    and per sentence the lexical facts, the MiniLM similarities (``embed``: an embedder, as at run time; kept
    in ``cache``, JSONL, by answer and sentence text, and read from it when there) and the verifier's
    out-of-fold score (``scores_path``; a sentence it did not score is left out); ``hotpotqa``: also the
    HotpotQA train rows of ``hotpot_answers``; ``signals_dir``: the model signals of ``collect_signals`` (a
    sentence without them is left out)."""
    cached: dict[tuple, dict] = {}
    if cache is not None and Path(cache).exists():
        for line in Path(cache).read_text().splitlines():
            row = json.loads(line)
            cached[(row["dataset"], row["answer"], row["text"])] = {f: row[f] for f in EMBEDDING}
    scored = None
    if scores_path is not None:
        scored = {}
        for line in Path(scores_path).read_text().splitlines():
            row = json.loads(line)
            scored[(row["dataset"], row["answer"], row["index"])] = row["verifier"]
    signals = _signal_rows(signals_dir) if signals_dir is not None else None
    out, answers = [], {}
    files: dict[str, list[LabelledAnswer]] = {}
    chosen: list[tuple[str, LabelledAnswer]] = []
    for name, (file, task) in DATASETS.items():
        if file not in files:
            files[file] = read_answers(Path(data_dir) / file)
        chosen += [(name, a) for a in files[file] if task is None or a.task == task]
    if hotpotqa is not None:
        chosen += [(HOTPOTQA, a) for a in hotpot_answers(hotpotqa)]
    for name, answer in tqdm(chosen, desc="answers", unit="answer", disable=embed is None):
        spans = sentence_spans(answer.response) or [(0, len(answer.response))]
        spans = [(a, b) for a, b in spans if re.search(r"\w", answer.response[a:b])]  # as the verifier fit
        labels = sentence_labels(answer, spans)
        texts = [answer.response[a:b] for a, b in spans]
        keep = [k for k, lab in enumerate(labels) if lab is not None
                and (scored is None or (name, answer.id, k) in scored)
                and (signals is None or (answer.id, texts[k].strip()) in signals)]
        if not keep:
            continue
        vocabulary = ContextVocabulary([answer.question, *answer.passages])
        if embed is None:
            similar = [{} for _ in keep]
        elif all((name, answer.id, texts[k]) in cached for k in keep):
            similar = [cached[(name, answer.id, texts[k])] for k in keep]
        else:
            similar = embedding_facts(embed, [texts[k] for k in keep], [
                [p[a:b] for a, b in (sentence_spans(p) or [(0, len(p))])] for p in answer.passages])
            cached.update({(name, answer.id, texts[k]): v for k, v in zip(keep, similar)})
        inputs = []
        for k, extra in zip(keep, similar):
            row = {**vocabulary.facts(texts[k].strip(), k, len(spans)), **extra}
            if scored is not None:
                row[VERIFIER] = float(scored[(name, answer.id, k)])
            if signals is not None:
                row.update(signals[(answer.id, texts[k].strip())])
            inputs.append(row)
        out.append({"id": answer.id, "group": answer.group, "dataset": name, "targets": [spans[k] for k in keep],
                    "texts": [texts[k] for k in keep], "labels": [labels[k] for k in keep], "inputs": inputs})
        answers[answer.id] = answer
    if cache is not None and embed is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        Path(cache).write_text("".join(json.dumps({"dataset": d, "answer": a, "text": t, **v}) + "\n"
                                       for (d, a, t), v in cached.items()))
    return out, answers


SIGNAL_ANSWERS = {"halueval": 1500}  # most answers per set that ``collect_signals`` runs (a seeded sample)


def signal_answers(data_dir: str | Path, hotpotqa: str | Path | None) -> dict[str, list[LabelledAnswer]]:
    """Per set, the labelled answers whose model signals ``collect_signals`` computes: every answer, or a seeded
    sample of ``SIGNAL_ANSWERS[set]``."""
    files: dict[str, list[LabelledAnswer]] = {}
    out = {}
    for name, (file, task) in DATASETS.items():
        if file not in files:
            files[file] = read_answers(Path(data_dir) / file)
        chosen = [a for a in files[file] if task is None or a.task == task]
        if name in SIGNAL_ANSWERS and len(chosen) > SIGNAL_ANSWERS[name]:
            order = np.random.default_rng(0).permutation(len(chosen))[: SIGNAL_ANSWERS[name]]
            chosen = [chosen[i] for i in sorted(order)]
        out[name] = chosen
    if hotpotqa is not None:
        out[HOTPOTQA] = hotpot_answers(hotpotqa)
    return out


def collect_signals(attributor, data_dir: str | Path, hotpotqa: str | Path | None, out_dir: str | Path) -> None:
    """One attributor pass per answer of ``signal_answers``: the model signals of each sentence (lookback ratios,
    log-probabilities, and PMI from a short pass without the passages), cached per set in ``out_dir``
    (``<set>.jsonl``, resumable)."""
    from ..eval.hallucination import collect_inputs

    for name, answers in signal_answers(data_dir, hotpotqa).items():
        collect_inputs(attributor, answers, Path(out_dir) / f"{name}.jsonl", desc=name)


def _signal_rows(signals_dir: str | Path) -> dict[tuple[str, str], dict]:
    """(answer id, sentence text) -> the model inputs of that sentence, from ``collect_signals``'s files."""
    out = {}
    for path in sorted(Path(signals_dir).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "error" in record:
                continue
            for text, row in zip(record["texts"], record["inputs"]):
                out[(record["id"], text.strip())] = {k: v for k, v in row.items()
                                                     if k in MODEL or k in EVIDENCE or k.startswith("lookback_")}
    return out


def _capped(rows: Sequence[dict], seed: int) -> list[dict]:
    """Whole answers of one set, in a fixed random order, until ``CAP`` sentences."""
    order = np.random.default_rng(seed).permutation(len(rows))
    out, n = [], 0
    for i in order:
        if n >= CAP:
            break
        out.append(rows[i])
        n += len(rows[i]["labels"])
    return out


def _usable(invented: Sequence[dict], inputs: Sequence[str]) -> list[dict]:
    """Invented records carry lexical facts only: they join fits whose inputs are all lexical."""
    return list(invented) if all(f in LEXICAL for f in inputs) else []


def _fit(rows: Sequence[dict], inputs: Sequence[str], c: float, invented: Sequence[dict] = (), seed: int = 0):
    """Fit on ``rows`` (at most ``CAP`` sentences per set) and the invented records of their answers."""
    by_set: dict[str, list[dict]] = {}
    for r in rows:
        by_set.setdefault(r["dataset"], []).append(r)
    chosen = [r for name in sorted(by_set) for r in _capped(by_set[name], seed)]
    ids = {r["id"] for r in chosen}
    added = [r for r in _usable(invented, inputs) if r["id"].rsplit(":", 1)[0] in ids]
    x, y, _ = design([*chosen, *added], inputs)
    return fit_logistic(x, y, inputs, c, SUPPORT_SIGN, balanced=True)


def _auroc(rows: Sequence[dict], raw: Sequence[np.ndarray]) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([np.asarray(r["labels"], dtype=float) for r in rows])
    s = np.concatenate(raw)
    return float(roc_auc_score(y, -s)) if 0 < y.sum() < len(y) else None


def left_out_raw(rows: Sequence[dict], inputs: Sequence[str], c: float,
                 invented: Sequence[dict] = ()) -> dict[str, np.ndarray]:
    """Per answer id (and invented record id), raw support of each sentence from a fit without that set."""
    out = {}
    usable = _usable(invented, inputs)
    for name in SETS:
        held = [r for r in rows if r["dataset"] == name] + [r for r in usable if r["dataset"] == name]
        if not held:
            continue
        model = _fit([r for r in rows if r["dataset"] != name], inputs, c, invented)
        out.update({r["id"]: model.raw(input_matrix(r, inputs)) for r in held})
    return out


def lodo_auroc(rows: Sequence[dict], inputs: Sequence[str], c: float, invented: Sequence[dict] = ()) -> dict:
    """Mean, worst and per-set sentence AUROC (labelled answers only) of fits that never saw the scored set."""
    raw = left_out_raw(rows, inputs, c, invented)
    per_set = {d: _auroc([r for r in rows if r["dataset"] == d], [raw[r["id"]] for r in rows if r["dataset"] == d])
               for d in SETS if any(r["dataset"] == d for r in rows)}
    values = [v for v in per_set.values() if v is not None]
    return {"inputs": list(inputs), "C": c, "auroc_by_left_out_set": per_set, "mean_auroc": float(np.mean(values)),
            "min_auroc": float(np.min(values))}


def choose(rows: Sequence[dict], candidates: dict[str, list[str]], invented: Sequence[dict] = (),
           gain: float = MIN_GAIN) -> tuple[dict, list[dict]]:
    """Forward selection by leave-one-dataset-out: add the candidate (name -> its inputs; 'lookback' is one
    candidate of every head's ratio) that raises the mean left-out AUROC most, while it raises it by at least
    ``gain``; then the best ``C`` for those inputs. Returns the choice and every step tried."""
    table: list[dict] = []
    chosen: list[str] = []
    best = {"mean_auroc": -np.inf, "inputs": []}
    while len(chosen) < len(candidates):
        trials = []
        for name, inputs in candidates.items():
            if name not in chosen:
                trial = lodo_auroc(rows, [*best["inputs"], *inputs], C_GRID[1], invented)
                trials.append({**trial, "candidates": [*chosen, name]})
        table += trials
        top = max(trials, key=lambda row: row["mean_auroc"])
        if top["mean_auroc"] < best["mean_auroc"] + gain:
            break
        best, chosen = top, top["candidates"]
    by_c = [{**lodo_auroc(rows, best["inputs"], c, invented), "candidates": chosen} for c in C_GRID]
    table += by_c
    return (max(by_c, key=lambda row: round(row["mean_auroc"], 3)),
            [{k: v for k, v in row.items() if k != "inputs"} for row in table])


def transfer(rows: Sequence[dict], inputs: Sequence[str], c: float, train_sets: Sequence[str]) -> dict:
    """Sentence AUROC on every other set of one fit on ``train_sets`` only (how far one style carries)."""
    model = _fit([r for r in rows if r["dataset"] in train_sets], inputs, c)
    return {d: _auroc([r for r in rows if r["dataset"] == d], [model.raw(input_matrix(r, inputs))
                                                              for r in rows if r["dataset"] == d])
            for d in SETS if d not in train_sets and any(r["dataset"] == d for r in rows)}


def candidates(rows: Sequence[dict], verifier: bool) -> dict[str, list[str]]:
    """Candidate inputs: lexical facts and MiniLM similarities; the verifier's score when scored; and the model
    signals of the pass when the rows carry them (single-pass ones only: PMI needs a second pass), the lookback
    ratios as one candidate, and the evidence probabilities of each sentence's top cited source sentence."""
    out = {name: [name] for name in CANDIDATES}
    if verifier:
        out[VERIFIER] = [VERIFIER]
    first = rows[0]["inputs"][0] if rows else {}
    if "logprob_mean" in first:
        out.update({name: [name] for name in (*MODEL, *EVIDENCE) if name not in NO_CONTEXT and name in first})
        out["lookback"] = sorted((k for k in first if k.startswith("lookback_")), key=lambda k: int(k.split("_")[1]))
    return out


def fit(data_dir: str | Path, fingerprint: dict, command: str, scores_path: str | Path | None = None,
        cache: str | Path | None = None, previous: SupportDetector | None = None,
        hotpotqa: str | Path | None = None, signals_dir: str | Path | None = None) -> tuple[SupportDetector, dict]:
    """Choose, calibrate and fit the detector (the steps of the module docstring); the report beside it, with
    the baselines (``previous``: the detector this one replaces)."""
    from ..embeddings import minilm_embedder

    rows, answers = records(data_dir, scores_path, minilm_embedder(), cache, hotpotqa, signals_dir)
    invented = invented_records(rows, answers)
    offered = candidates(rows, scores_path is not None)
    best, table = choose(rows, offered, invented)
    inputs = best["inputs"]
    added = {name: [{"C": c, **{k: v for k, v in lodo_auroc(rows, [*inputs, *offered[name]], c, invented).items()
                                 if k != "inputs"}} for c in (0.001, *C_GRID)]
             for name in offered if name not in best["candidates"] and name not in CANDIDATES}
    from_ragtruth = {}
    if "lookback" in offered:  # the model signals fit on RAGTruth alone, as the first detector was
        single = [n for n in offered if n in MODEL]
        ragtruth = [d for d in SETS if d.startswith("ragtruth")]
        lookback = offered["lookback"]
        columns = {"signals": single, "lookback": lookback, "signals+lookback": [*single, *lookback], "chosen": inputs}
        from_ragtruth = {label: transfer(rows, cols, 0.01, ragtruth) for label, cols in columns.items()}
    raw = left_out_raw(rows, inputs, best["C"], invented)
    held_raw = [raw[r["id"]] for r in rows]
    calibrating = [*rows, *_usable(invented, inputs)]
    flat_raw = np.concatenate([raw[r["id"]] for r in calibrating])
    flat_y = 1 - np.concatenate([np.asarray(r["labels"]) for r in calibrating])
    knots_x, knots_y = platt_knots(flat_raw, flat_y)
    final = _fit(rows, inputs, best["C"], invented)
    sizes = {d: sum(len(r["labels"]) for r in rows if r["dataset"] == d) for d in SETS}
    detector = SupportDetector(
        **fingerprint, **final.model_dump(exclude={"calibration_x", "calibration_y"}), calibration_x=knots_x,
        calibration_y=knots_y, thresholds={s: 0.5 for s in STRICTNESS},
        training_data="every judged sentence of ragtruth_dev.jsonl (QA, Summary), halueval_qa.jsonl, "
                      "expertqa_validation.jsonl, wice_dev.jsonl and HotpotQA train rows (gold and another row's "
                      f"answer as 'The answer is X.'; at most {CAP} per set: "
                      + ", ".join(f"{d} {n}" for d, n in sizes.items()) + " sentences), plus invented sentences "
                      "(another answer's sentence, appended or alone)"
                      + ("; verifier input: its out-of-fold entailment" if scores_path else ""),
        command=command,
        notes=f"inputs {', '.join(best['candidates'])} with signs fixed, C={best['C']}, chosen by "
              f"leave-one-dataset-out sentence AUROC (forward selection; mean {best['mean_auroc']:.3f}, worst "
              f"{best['min_auroc']:.3f}); Platt calibration, "
              "operating points (mean sentence balanced accuracy over sets, mean share of clean answers flagged "
              "capped) and span mode on the left-out scores")
    support = [np.interp(r_, knots_x, knots_y) for r_ in held_raw]
    detector.thresholds, curve = operating_points(rows, support)
    detector.span_mode, span_f1 = choose_span_mode(rows, answers, support, detector.thresholds["balanced"])
    left_out = {}
    spans = sentence_spans_of(rows, answers, detector.span_mode)
    for d in SETS:
        part = [k for k, r in enumerate(rows) if r["dataset"] == d]
        left_out[d] = left_out_report([rows[k] for k in part], [support[k] for k in part], detector.thresholds)
        left_out[d]["balanced"]["span_f1"] = span_prf(
            [rows[k] for k in part], answers, [[span for spans_t, f in zip(spans[k], support[k] < detector.thresholds[
                "balanced"]) if f for span in spans_t] for k in part])["f1"]
    alone = [r for r in _usable(invented, inputs) if r["id"].endswith(":alone")]
    alone_support = np.array([np.interp(raw[r["id"]][0], knots_x, knots_y) for r in alone])
    detector.metrics.update({"lodo_mean_auroc": best["mean_auroc"], "lodo_min_auroc": best["min_auroc"],
                             **{f"invented_flagged_{name}": float(np.mean(alone_support < t))
                                for name, t in detector.thresholds.items() if len(alone)}})
    return detector, {"command": command, "chosen": best, "model_choice": table, "curve": curve,
                      "span_f1_by_mode": span_f1, "reliability": reliability(np.concatenate(support), rows),
                      "left_out": left_out, "thresholds": detector.thresholds,
                      "baselines": baselines(rows, previous),
                      "added_to_chosen": added,  # each unchosen model signal (and the verifier) on top, per C
                      "fit_on_ragtruth_only": from_ragtruth}  # AUROC on the other sets, C = 0.01


def operating_points(rows: Sequence[dict], support: Sequence[np.ndarray]) -> tuple[dict[str, float], dict]:
    """Thresholds on left-out support, each set weighted equally: 'strict' maximises the mean over sets of
    sentence-level balanced accuracy; 'balanced' (the default) and 'lenient' maximise it among thresholds whose
    mean share of clean answers flagged is at most 15% / 5%. (Capping every set at once is not possible with one
    threshold: sets of long answers reach 15% while short ones flag almost nothing.)"""
    grid = np.round(np.arange(0.05, 1.0, 0.005), 3)
    sets = sorted({r["dataset"] for r in rows})
    accuracy = np.zeros((len(sets), len(grid)))
    clean_flagged = np.zeros((len(sets), len(grid)))
    for i, d in enumerate(sets):
        part = [(r, s) for r, s in zip(rows, support) if r["dataset"] == d]
        y = np.concatenate([np.asarray(r["labels"], dtype=int) for r, _ in part])
        s = np.concatenate([s for _, s in part])
        lowest = np.array([s_.min() for _, s_ in part])
        clean = np.array([not any(r["labels"]) for r, _ in part])
        for k, t in enumerate(grid):
            flagged = s < t
            recalls = [flagged[y == 1].mean() if (y == 1).any() else np.nan,
                       (~flagged[y == 0]).mean() if (y == 0).any() else np.nan]
            accuracy[i, k] = np.nanmean(recalls)
            clean_flagged[i, k] = (lowest[clean] < t).mean() if clean.any() else 0.0
    mean_accuracy, mean_flagged = accuracy.mean(0), clean_flagged.mean(0)
    thresholds = {"strict": float(grid[int(np.argmax(mean_accuracy))])}
    for name, cap in CLEAN_FLAG_CAP.items():
        allowed = np.flatnonzero(mean_flagged <= cap)
        thresholds[name] = float(grid[allowed[np.argmax(mean_accuracy[allowed])]] if len(allowed) else grid[0])
    curve = {"grid": grid.tolist(), "sets": sets, "mean_balanced_accuracy": mean_accuracy.tolist(),
             "mean_clean_flagged": mean_flagged.tolist(),
             "balanced_accuracy": {d: a.tolist() for d, a in zip(sets, accuracy)},
             "clean_flagged": {d: c.tolist() for d, c in zip(sets, clean_flagged)}}
    return thresholds, curve


def baselines(rows: Sequence[dict], previous: SupportDetector | None = None) -> dict:
    """Per set: word overlap (content-word coverage; its threshold chosen on the other sets, by their mean
    sentence balanced accuracy), flagging everything, and the ``previous`` detector at its own thresholds
    (which may have been fit on parts of these sets)."""
    out: dict[str, dict] = {}
    coverage = {r["id"]: np.array([row["coverage"] for row in r["inputs"]]) for r in rows}
    for d in SETS:
        held = [r for r in rows if r["dataset"] == d]
        others = [r for r in rows if r["dataset"] != d]
        t = operating_points(others, [coverage[r["id"]] for r in others])[0]["strict"]
        entry = {"word_overlap": left_out_report(held, [coverage[r["id"]] for r in held], {"default": t})}
        entry["word_overlap"]["threshold"] = t
        entry["flag_all"] = left_out_report(held, [np.zeros(len(r["labels"])) for r in held], {"default": 1.0})
        if previous is not None:
            lexical = [{k: v for k, v in row.items() if k in LEXICAL} for r in held for row in r["inputs"]]
            if all(f in lexical[0] for f in previous.inputs):
                predicted = previous.predict(lexical)
                split = np.cumsum([len(r["labels"]) for r in held])[:-1]
                entry["previous"] = left_out_report(held, np.split(predicted, split),
                                                    {"default": previous.threshold()})
        out[d] = entry
    return out


def left_out_report(rows: Sequence[dict], support: Sequence[np.ndarray], thresholds: dict[str, float]) -> dict:
    """Sentence AUROC, balanced accuracy, example F1 and clean answers flagged at each operating point, on
    support scores from fits that never saw these answers' set."""
    y = np.concatenate([np.asarray(r["labels"], dtype=int) for r in rows])
    s = np.concatenate(support)
    out = {"answers": len(rows), "sentences": int(len(y)), "unsupported": int(y.sum()),
           "sentence_auroc": _auroc(rows, support)}
    clean = [i for i, r in enumerate(rows) if not any(r["labels"])]
    for name, t in thresholds.items():
        flags = [x < t for x in support]
        flagged = s < t
        parts = [flagged[y == 1].mean() if (y == 1).any() else np.nan, (~flagged[y == 0]).mean() if (y == 0).any()
                 else np.nan]
        out[name] = {"balanced_accuracy": float(np.nanmean(parts)), "example_f1": example_f1(rows, flags)["f1"],
                     "clean_answers_flagged": float(np.mean([flags[i].any() for i in clean])) if clean else None}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m at2_rag.fit.stacked", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/hallucination")
    parser.add_argument("--verifier-scores", help="out-of-fold verifier scores (python -m at2_rag.fit.verifier "
                        "--lodo writes them): the verifier's entailment joins the candidate inputs")
    parser.add_argument("--cache", default="runs/detector/embedding.jsonl", help="MiniLM similarities per sentence")
    parser.add_argument("--fingerprint", default="at2_rag/coefficients/HuggingFaceTB__SmolLM2-135M-Instruct.passage.json",
                        help="coefficient file whose model_id / num_layers / num_heads the detector is filed under")
    parser.add_argument("--out", default="at2_rag/coefficients/HuggingFaceTB__SmolLM2-135M-Instruct.detector.json")
    parser.add_argument("--json", default=str(FIT_PATH))
    parser.add_argument("--hotpotqa", default="../shared/data/hotpotqa/train.jsonl", help="HotpotQA train rows")
    parser.add_argument("--plot", default="docs/detector_reliability.png",
                        help="reliability diagram of the left-out support (PNG; needs matplotlib)")
    parser.add_argument("--previous", help="the detector file this fit replaces, reported beside it")
    parser.add_argument("--signals", help="directory of per-set model signals (lookback ratios, log-probabilities): "
                        "they join the candidate inputs, and only sentences with signals are used")
    parser.add_argument("--collect", action="store_true", help="first compute the model signals into --signals "
                        "(one bundled-attributor pass per answer; resumable)")
    parser.add_argument("--precision", default="float32", help="the pass's number format for --collect")
    args = parser.parse_args(argv)
    if args.collect:
        if not args.signals:
            parser.error("--collect needs --signals DIR")
        from ..attributor import AT2Attributor

        attributor = AT2Attributor.from_pretrained(detector=False, precision=args.precision)
        collect_signals(attributor, args.data, args.hotpotqa, args.signals)
    meta = json.loads(Path(args.fingerprint).read_text())
    fingerprint = {k: meta[k] for k in ("model_id", "num_layers", "num_heads")}
    command = "python -m at2_rag.fit.stacked" + "".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:]))
    previous = SupportDetector.load(args.previous) if args.previous else None
    detector, report = fit(args.data, fingerprint, command, args.verifier_scores, args.cache, previous, args.hotpotqa,
                           args.signals)
    detector.save(args.out)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        from ..eval.hallucination import plot_reliability

        answers = sum(v["answers"] for v in report["left_out"].values())
        plot_reliability({"reliability": report["reliability"], "data": "labelled sets", "part": "left out",
                          "n_answers": answers}, args.plot)
    print(json.dumps({"chosen": report["chosen"], "thresholds": report["thresholds"], "left_out": report["left_out"]},
                     indent=1))


if __name__ == "__main__":
    main()

"""Fit what citations and fusion need on HotpotQA train rows (`at2-rag lab calibrate`), reproducibly.

For each train row and each drafter kind ('llm': the gold answer as a short sentence, a stand-in for a
strong LLM's answer; 'attributor': the attributor's own draft) one teacher-forced or generated pass gives
AT2 passage and sentence scores; records are kept as JSON per row (resumable). Fitting then learns:
evidence models (pure AT2, AT2 + lexical, + embedding) on supporting-fact labels, their abstention
thresholds, the default evidence model (by 5-fold cross-validation on train), and weighted reciprocal-rank
fusion of AT2 with the retriever (question-embedding similarity) per drafter kind.

Evidence models are fit on each row and on sub-contexts of it (the gold passages plus a few distractors: the
size of a pruned RAG context), since their within-row standardised components depend on how many sentences a
context holds; thresholds and cross-validated metrics come from the full rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..attributor import AT2Attributor
from ..evidence import AT2_COMPONENTS, EMBEDDING_COMPONENTS, LEXICAL_COMPONENTS, Calibration, Embedder, EvidenceModel, FusionModel
from ..embeddings import question_similarity
from ..eval.hotpotqa import (HotpotExample, cached_records, record_components, sentence_columns, supporting_labels,
                            titled_sentences)
from ..eval.metrics import ranking_metrics
from .logistic import fit_logistic

KINDS = ("llm", "attributor")
EVIDENCE_SETS = {
    "at2": AT2_COMPONENTS,
    "hybrid": AT2_COMPONENTS + LEXICAL_COMPONENTS,
    "hybrid-embedding": AT2_COMPONENTS + LEXICAL_COMPONENTS + EMBEDDING_COMPONENTS,
}
FUSION_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0, 1, 11))
FUSION_KS = (1.0, 3.0, 10.0, 60.0)
SUB_CONTEXT_DISTRACTORS = (0, 1, 3)


def record_for(attributor: AT2Attributor, example: HotpotExample, kind: str, embed: Embedder) -> dict:
    """One pass over a row for a drafter kind: AT2 passage/sentence scores, texts, embedding similarities."""
    response = example.answer_sentence if kind == "llm" else None
    job = attributor.pipeline.jobs([example.question], [example.passages], [response])[0]
    attribution = attributor.pipeline.score(job)
    titled = titled_sentences(example.passages, job.sentences)
    qa = [f"{example.question} {t.text}" for t in attribution.targets]
    vectors = embed([*qa, *titled])
    passages = [f"{s.title}: {s.text}" if s.title else s.text for s in example.passages]
    return {
        "id": example.id, "kind": kind, "response": attribution.response,
        "targets": [t.text for t in attribution.targets],
        "at2_sentence": [t.sentence_scores for t in attribution.targets],
        "at2_passage": attribution.scores,
        "retriever": question_similarity(embed, example.question, passages).tolist(),
        "emb_qa": (vectors[: len(qa)] @ vectors[len(qa) :].T).tolist(),
    }


def collect_records(attributor: AT2Attributor, examples: Sequence[HotpotExample], work_dir: str | Path,
                    embed: Embedder, kinds: Sequence[str] = KINDS, progress: bool = True) -> dict[str, list[dict]]:
    """Records per kind, one JSON file per (kind, row) under ``work_dir`` (existing files are reused)."""
    return cached_records(examples, work_dir, kinds, lambda ex, kind: record_for(attributor, ex, kind, embed),
                          "calibration passes", progress)


def sub_contexts(record: dict, example: HotpotExample, seed: int) -> list[tuple[dict, np.ndarray]]:
    """(components, labels) of the row cut to its gold passages plus k random distractors, for each k in
    ``SUB_CONTEXT_DISTRACTORS``. AT2 scores are the full pass's restricted to the kept sentences (no new pass):
    what the components of a smaller context look like, not a re-run of the model on it."""
    rng = np.random.default_rng(seed)
    distractors = [i for i in range(len(example.passages)) if i not in example.gold]
    labels = supporting_labels(example, len(record["targets"]))
    out = []
    for k in SUB_CONTEXT_DISTRACTORS:
        picked = rng.choice(distractors, size=min(k, len(distractors)), replace=False).tolist()
        passages = sorted({*example.gold, *picked})
        out.append((record_components(record, example, passages), labels[:, sentence_columns(example, passages)]))
    return out


def fit_evidence_model(name: str, names: Sequence[str], rows: Sequence[dict[str, np.ndarray]],
                       labels: Sequence[np.ndarray], precision: float = 0.8, c: float = 1.0) -> EvidenceModel:
    """Fit on rows of components (each ``[targets, sentences]``) and 0/1 supporting-fact labels of the same shape;
    then choose the threshold: the lowest top-sentence probability at which the top sentence is a supporting
    fact with at least ``precision`` (on these rows)."""
    x = np.concatenate([np.stack([r[n] for n in names], -1).reshape(-1, len(names)) for r in rows])
    y = np.concatenate([np.asarray(lab).reshape(-1) for lab in labels]).astype(int)
    fitted = EvidenceModel(name=name, threshold=0.0, **fit_logistic(x, y, names, c=c).model_dump())
    tops, hits = top_evidence(fitted, rows, labels)
    fitted.threshold = abstention_threshold(tops, hits, precision)
    return fitted


def abstention_threshold(top_scores: np.ndarray, hits: np.ndarray, precision: float = 0.8) -> float:
    """Lowest threshold t such that among items with score >= t, the hit rate is at least ``precision`` (the
    deepest such cut; a shallower cut may dip below it). Falls back to the highest score when none reaches it."""
    order = np.argsort(-top_scores, kind="stable")
    cumulative = np.cumsum(hits[order]) / np.arange(1, len(order) + 1)
    ok = cumulative >= precision
    if not ok.any():
        return float(top_scores.max()) if len(top_scores) else 1.0
    last = len(ok) - 1 - int(np.argmax(ok[::-1]))  # the deepest cut that still meets the precision
    return float(top_scores[order[last]])


def evidence_metrics(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[str, float]:
    """Citation ranking metrics over every response sentence: top-1 hit, recall@2, recall@4, MRR."""
    rows = [ranking_metrics(s_row, np.flatnonzero(l_row)) for s, lab in zip(scores, labels)
            for s_row, l_row in zip(s, lab)]
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def _with_subs(comps: list, labels: list, subs: list, rows: Sequence[int]) -> tuple[list, list]:
    """Components and labels of ``rows`` and of their sub-contexts, flattened."""
    out_comps = [comps[i] for i in rows] + [c for i in rows for c, _ in subs[i]]
    out_labels = [labels[i] for i in rows] + [lab for i in rows for _, lab in subs[i]]
    return out_comps, out_labels


def evidence_inputs(records: dict[str, list[dict]], examples: Sequence[HotpotExample]) -> tuple[dict, dict, dict]:
    """Per drafter kind: each row's evidence components, supporting-fact labels and sub-contexts."""
    comps = {kind: [record_components(r, ex) for r, ex in zip(records[kind], examples)] for kind in records}
    labels = {kind: [supporting_labels(ex, len(r["targets"])) for r, ex in zip(records[kind], examples)]
              for kind in records}
    subs = {kind: [sub_contexts(r, ex, seed=i) for i, (r, ex) in enumerate(zip(records[kind], examples))]
            for kind in records}
    return comps, labels, subs


def fit_on_rows(name: str, names: Sequence[str], comps: list, labels: list, subs: list,
                rows: Sequence[int]) -> EvidenceModel:
    """An evidence model fit on ``rows`` and on their sub-contexts."""
    return fit_evidence_model(name, names, *_with_subs(comps, labels, subs, rows))


def top_evidence(model: EvidenceModel, comps: list, labels: list) -> tuple[np.ndarray, np.ndarray]:
    """Per response sentence: the model's top-sentence probability and whether that sentence is a supporting
    fact (what the abstention threshold is chosen on)."""
    tops, hits = [], []
    for values, lab in zip(comps, labels):
        prob = model.predict(values)
        tops += prob.max(-1).tolist()
        hits += lab[np.arange(len(prob)), prob.argmax(-1)].tolist()
    return np.asarray(tops), np.asarray(hits, dtype=bool)


def _cross_validated(name: str, names: Sequence[str], comps: list, labels: list, subs: list,
                     folds: int = 5) -> dict[str, float]:
    """Ranking metrics of an evidence model scored on full rows it was not fit on (``folds``-fold, by row;
    fit on the other rows and their sub-contexts)."""
    scores: list = [None] * len(comps)
    for fold in range(folds):
        test = [i for i in range(len(comps)) if i % folds == fold]
        train = [i for i in range(len(comps)) if i % folds != fold]
        model = fit_on_rows(name, names, comps, labels, subs, train)
        for i in test:
            scores[i] = model.predict(comps[i])
    return evidence_metrics(scores, labels)


def answer_floor(model: EvidenceModel, comps: list, labels: list, keep: float = 0.9) -> float:
    """The answer-overlap floor that keeps ``keep`` of the response sentences whose best evidence is a
    supporting fact (lower floors pass more invented claims; higher ones drop true citations)."""
    overlaps = []
    for values, lab in zip(comps, labels):
        best = model.predict(values).argmax(-1)
        hit = lab[np.arange(len(best)), best].astype(bool)
        overlaps += values["lex_a"].max(-1)[hit].tolist()
    return float(np.quantile(overlaps, 1 - keep)) if overlaps else 0.0


def fit_fusion(records: Sequence[dict], examples: Sequence[HotpotExample], ks=(1, 2, 3, 4, 5)) -> FusionModel:
    """The (weight, k) of weighted RRF with the best mean gold-passage recall@1..5 on these rows."""
    best = None
    for weight in FUSION_WEIGHTS:
        for k in FUSION_KS:
            fusion = FusionModel(weight=weight, k=k)
            recalls = []
            for record, ex in zip(records, examples):
                order = np.argsort(-fusion.fuse(record["at2_passage"], record["retriever"]), kind="stable")
                recalls.append([len(set(order[:n].tolist()) & set(ex.gold)) / len(ex.gold) for n in ks])
            score = float(np.mean(recalls))
            if best is None or score > best[0] + 1e-12:
                best = (score, fusion, np.mean(recalls, 0))
    score, fusion, per_k = best
    fusion.metrics = {"train_mean_gold_recall": score,
                      **{f"train_gold_recall@{k}": float(v) for k, v in zip(ks, per_k)}}
    return fusion


def fit_calibration(attributor: AT2Attributor, records: dict[str, list[dict]], examples: Sequence[HotpotExample],
                    training_data: str) -> Calibration:
    """Evidence models (fit on 'llm' records and their sub-contexts; thresholds on all full records), default
    by cross-validation on full rows, fusion."""
    comps, labels, subs = evidence_inputs(records, examples)
    evidence: dict[str, EvidenceModel] = {}
    cv: dict[str, float] = {}
    for name, names in EVIDENCE_SETS.items():
        model = fit_on_rows(name, names, comps["llm"], labels["llm"], subs["llm"], range(len(examples)))
        tops, hits = (np.concatenate(parts) for parts in zip(*(top_evidence(model, comps[kind], labels[kind])
                                                               for kind in records)))
        model.threshold = abstention_threshold(tops, hits)
        model.answer_floor = answer_floor(model, comps["llm"], labels["llm"])
        metrics = _cross_validated(name, names, comps["llm"], labels["llm"], subs["llm"])
        model.metrics = {f"train_cv_{key}": value for key, value in metrics.items()}
        evidence[name] = model
        cv[name] = metrics["recall@2"] + metrics["mrr"]
    default = max(("at2", "hybrid"), key=cv.__getitem__)  # the default must work without an embedder
    fusion = {kind: fit_fusion(records[kind], examples) for kind in records}
    passage = getattr(attributor.scorer, "coefficients", None)
    sentence = getattr(attributor.sentence_scorer, "coefficients", None)
    return Calibration(
        model_id=attributor.lm.model_id,
        sentence_coefficients=sentence.digest if sentence is not None else "",
        passage_coefficients=passage.digest if passage is not None else "",
        evidence=evidence, default_evidence=default, fusion=fusion, training_data=training_data,
        notes="evidence models: logistic regression on supporting-fact labels of 'llm' records (gold answer as a "
              "short sentence), each row and its sub-contexts (gold passages + 0, 1, 3 random distractors; AT2 "
              "scores of the full pass restricted to them); thresholds and cross-validated metrics on full rows; "
              "abstention: top-sentence probability >= a threshold for 80% precision over all records, and "
              "answer-only TF-IDF overlap >= a floor keeping 90% of correctly cited answer sentences; default "
              "evidence by 5-fold CV (recall@2 + MRR) among models that need no embedder; fusion: weighted RRF of "
              "AT2 passage scores and MiniLM question similarity, grid-searched for mean gold recall@1..5, per "
              "drafter kind.",
    )

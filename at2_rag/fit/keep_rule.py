"""Fit the keep rule behind ``compress(budget="auto")`` and ``prune(threshold="auto")`` on HotpotQA train rows
(`at2-rag lab fit-keep-rule`), reproducibly.

Records: one pass per train row and draft kind ('llm': the gold answer as a short sentence, a stand-in for a
strong LLM's draft; 'attributor': the attributor's own draft), kept as JSON per row under the work dir
(``at2_rag.eval.compression.collect_records``: the attribution, the retriever's score of each passage (MiniLM
question similarity, as in calibration) and each sentence's token count). Everything below is computed from
the records through the runtime's own steps (``Pipeline.keep_evidence``, ``Pipeline.ranking``,
``compress.sentence_features``), per draft kind:

* Inputs: chosen by greedy forward selection on 5-fold cross-validation by row, for the mean supporting-fact
  recall at 10%, 20% and 30% of the context's tokens (what a share budget keeps).
* Sentence model: logistic regression on supporting-fact labels, fit on each row and on sub-contexts of it
  (gold passages plus 0, 1 or 3 random distractors; the full pass's scores restricted to them: the size of a
  pruned RAG context), then Platt-calibrated on cross-validated predictions of the full rows.
* The ``"auto"`` stopping rule: each candidate rule (``compress.select_auto``) traces recall against tokens
  kept on the cross-validated probabilities; the rule that reaches the target recall with the fewest tokens is
  chosen, with its parameter set to reach the target on train.
* Passage model and threshold: logistic regression on gold passages (its inputs include the sentence model's
  probabilities), Platt-calibrated on cross-validated predictions; the threshold is the lowest whose
  cross-validated mean number of passages kept stays within 1.9 (fewer than fixed top-2, with a margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..attributor import AT2Attributor
from ..compress import (AUTO_RULES, DraftRule, KeepRule, fill, passage_features, select_auto,
                        sentence_features)
from ..eval.compression import record_attribution, supporting_mask
from ..eval.hotpotqa import HotpotExample
from ..logistic import LogisticModel
from ..results import Attribution
from .logistic import fit_logistic, platt_knots

SHARES = (0.1, 0.2, 0.3)
SUB_CONTEXT_DISTRACTORS = (0, 1, 3)
TARGET_RECALL = 0.92
MAX_PASSAGES = 1.9
SENTENCE_SIGNS = {"evidence_max": 1, "evidence_mean": 1, "evidence_z": 1, "evidence_rank": 1, "evidence_share": 1,
                  "lex_qa": 1, "lex_a": 1, "passage_evidence": 1, "passage_evidence_rank": 1, "passage_rank": 1,
                  "passage_z": 1}
PASSAGE_SIGNS = {"evidence_max": 1, "evidence_z": 1, "evidence_rank": 1, "evidence_gap": -1, "ranking_z": 1,
                 "rank": 1, "sentence_max": 1, "sentence_sum": 1}


@dataclass
class Context:
    """One context (a row, or a sub-context of it) with everything the keep rule reads, and its labels."""

    attribution: Attribution
    evidence: np.ndarray
    values: dict | None
    ranking: np.ndarray
    counts: np.ndarray
    labels: np.ndarray  # per sentence: supporting fact
    gold: np.ndarray  # per passage: holds a supporting fact
    features: dict[str, np.ndarray]

    @property
    def owner(self) -> np.ndarray:
        return np.array([s.passage_index for s in self.attribution.sentences], dtype=int)


def restrict(attribution: Attribution, passages: Sequence[int]) -> tuple[Attribution, list[int]]:
    """The attribution cut to ``passages`` (in that order): the full pass's scores, no new pass; and the
    columns of its sentences among the full attribution's."""
    keep = list(passages)
    new_index = {old: new for new, old in enumerate(keep)}
    columns = [j for j, s in enumerate(attribution.sentences) if s.passage_index in new_index]
    columns.sort(key=lambda j: (new_index[attribution.sentences[j].passage_index], j))
    sentences = [attribution.sentences[j].model_copy(update={"passage_index": new_index[attribution.sentences[j]
                                                                                        .passage_index]})
                 for j in columns]
    targets = [t.model_copy(update={"scores": [t.scores[i] for i in keep],
                                    "sentence_scores": [t.sentence_scores[j] for j in columns]})
               for t in attribution.targets]
    return attribution.model_copy(update={
        "passages": [attribution.passages[i] for i in keep], "scores": [attribution.scores[i] for i in keep],
        "targets": targets, "sentences": sentences,
        "sentence_scores": [attribution.sentence_scores[j] for j in columns]}), columns


def build_context(attributor: AT2Attributor, attribution: Attribution, retriever: Sequence[float] | None,
                  counts: Sequence[int], labels: np.ndarray, kind: str) -> Context:
    pipeline = attributor.pipeline
    evidence = pipeline.keep_evidence(attribution)
    ranking = np.asarray(pipeline.ranking(attribution, retriever, kind), dtype=float)
    owner = np.array([s.passage_index for s in attribution.sentences], dtype=int)
    gold = np.array([labels[owner == i].max() if (owner == i).any() else 0.0
                     for i in range(len(attribution.passages))])
    return Context(attribution, evidence.scores, evidence.values, ranking, np.asarray(counts, dtype=int),
                   np.asarray(labels, dtype=float), gold,
                   sentence_features(attribution, evidence.scores, ranking, evidence.values))


def contexts_of(attributor: AT2Attributor, records: Sequence[dict], examples: Sequence[HotpotExample], kind: str,
                retriever: bool = True, subs: bool = True) -> tuple[list[Context], list[list[Context]]]:
    """Per row: its full context, and its sub-contexts (gold passages + 0, 1, 3 random distractors)."""
    full, sub = [], []
    for n, (record, ex) in enumerate(zip(records, examples)):
        attribution = record_attribution(record)
        labels = supporting_mask(ex, attribution)
        scores = record["retriever"] if retriever else None
        full.append(build_context(attributor, attribution, scores, record["tokens"], labels, kind))
        row_subs = []
        if subs:
            rng = np.random.default_rng(n)
            distractors = [i for i in range(len(ex.passages)) if i not in ex.gold]
            for k in SUB_CONTEXT_DISTRACTORS:
                picked = rng.choice(distractors, size=min(k, len(distractors)), replace=False).tolist()
                passages = sorted({*ex.gold, *picked})
                small, columns = restrict(attribution, passages)
                row_subs.append(build_context(attributor, small, None if scores is None else
                                              [scores[i] for i in passages],
                                              [record["tokens"][j] for j in columns], labels[columns], kind))
        sub.append(row_subs)
    return full, sub


# ---- sentence model -----------------------------------------------------------------------------------------

def _stack(contexts: Sequence[Context], inputs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.stack([c.features[n] for n in inputs], -1) for c in contexts])
    y = np.concatenate([c.labels for c in contexts])
    return x, y


def fit_sentence(contexts: Sequence[Context], inputs: Sequence[str], c: float = 1.0) -> LogisticModel:
    x, y = _stack(contexts, inputs)
    return fit_logistic(x, y, inputs, c=c, signs={k: v for k, v in SENTENCE_SIGNS.items() if k in inputs})


def cross_validated(full: list[Context], sub: list[list[Context]], fit, folds: int = 5) -> list:
    """``fit(training contexts)`` -> model, applied to each held-out full row: a list of per-row predictions."""
    out: list = [None] * len(full)
    for fold in range(folds):
        train = [i for i in range(len(full)) if i % folds != fold]
        model = fit([full[i] for i in train] + [s for i in train for s in sub[i]])
        for i in range(len(full)):
            if i % folds == fold:
                out[i] = model(full[i])
    return out


def recall_at_shares(full: Sequence[Context], rankings: Sequence[np.ndarray], shares=SHARES) -> dict[str, float]:
    """Mean supporting-fact recall of the best-ranked sentences filling each share of the tokens."""
    out = {}
    for share in shares:
        recalls = []
        for ctx, ranking in zip(full, rankings):
            kept = fill(ranking, ctx.counts, int(share * ctx.counts.sum()))
            recalls.append(ctx.labels[kept].sum() / max(1.0, ctx.labels.sum()))
        out[f"recall@{share:.0%}"] = float(np.mean(recalls))
    return out


def select_inputs(full: list[Context], sub: list[list[Context]], candidates: Sequence[str],
                  max_inputs: int = 8, min_gain: float = 0.002) -> tuple[list[str], list[dict]]:
    """Greedy forward selection of sentence-model inputs by cross-validated mean recall at ``SHARES``."""
    chosen: list[str] = []
    trail = []
    best_score = -1.0
    while len(chosen) < max_inputs:
        scores = {}
        for name in candidates:
            if name in chosen:
                continue
            inputs = [*chosen, name]
            preds = cross_validated(full, sub, lambda ctxs, inputs=inputs: (
                lambda m: (lambda ctx: m.raw(ctx.features)))(fit_sentence(ctxs, inputs)))
            scores[name] = float(np.mean(list(recall_at_shares(full, preds).values())))
        name = max(scores, key=scores.get)
        if scores[name] < best_score + min_gain:
            break
        chosen.append(name)
        best_score = scores[name]
        trail.append({"inputs": list(chosen), "cv_mean_recall": best_score})
    return chosen, trail


# ---- the auto rule ------------------------------------------------------------------------------------------

def auto_curve(full: Sequence[Context], probabilities: Sequence[np.ndarray], rule: str,
               parameter: float) -> tuple[float, float, float]:
    """Mean recall, mean share of tokens kept, and mean sentences kept under an auto rule."""
    recalls, shares, kept_n = [], [], []
    for ctx, p in zip(full, probabilities):
        kept = select_auto(p, ctx.counts, rule, parameter)
        recalls.append(ctx.labels[kept].sum() / max(1.0, ctx.labels.sum()))
        shares.append(ctx.counts[kept].sum() / max(1, ctx.counts.sum()))
        kept_n.append(len(kept))
    return float(np.mean(recalls)), float(np.mean(shares)), float(np.mean(kept_n))


def grid(rule: str) -> np.ndarray:
    if rule == "threshold":
        return np.unique(np.concatenate([np.linspace(0.0, 0.2, 201), np.linspace(0.2, 1.0, 81)]))[::-1]
    if rule == "expected-recall":
        return np.linspace(0.3, 1.0, 141)
    return np.unique(np.concatenate([np.linspace(0.0, 1.0, 101), np.linspace(1.0, 20.0, 191)]))[::-1]


def parameter_for(full, probabilities, rule: str, target: float) -> tuple[float, tuple[float, float, float]]:
    """The least-keeping parameter of ``rule`` whose mean recall reaches ``target`` (grid ordered from keeping
    least to keeping most)."""
    last = None
    for parameter in grid(rule):
        result = auto_curve(full, probabilities, rule, parameter)
        last = (float(parameter), result)
        if result[0] >= target:
            return last
    return last


def choose_auto(full: Sequence[Context], probabilities: Sequence[np.ndarray], target: float = TARGET_RECALL
                ) -> tuple[str, float, dict]:
    """Per candidate rule, the parameter reaching ``target`` mean recall and the tokens it keeps (on
    cross-validated probabilities); the rule that keeps the fewest tokens wins."""
    table = {}
    for rule in AUTO_RULES:
        parameter, (recall, share, n) = parameter_for(full, probabilities, rule, target)
        table[rule] = {"parameter": parameter, "recall": recall, "token_share": share, "sentences": n}
    ok = [r for r in table if table[r]["recall"] >= target] or list(table)
    rule = min(ok, key=lambda r: (table[r]["token_share"], -table[r]["recall"]))
    return rule, table[rule]["parameter"], table


# ---- passage model ------------------------------------------------------------------------------------------

def passage_rows(ctx: Context, sentence: LogisticModel) -> dict[str, np.ndarray]:
    return passage_features(ctx.attribution, ctx.evidence, ctx.ranking, sentence.predict(ctx.features))


def fit_passage(contexts: Sequence[Context], sentence: LogisticModel, inputs: Sequence[str]) -> LogisticModel:
    x = np.concatenate([np.stack([passage_rows(c, sentence)[n] for n in inputs], -1) for c in contexts])
    y = np.concatenate([c.gold for c in contexts])
    return fit_logistic(x, y, inputs, signs={k: v for k, v in PASSAGE_SIGNS.items() if k in inputs})


def prune_stats(full: Sequence[Context], probabilities: Sequence[np.ndarray], threshold: float | None,
                top_n: int | None = None) -> tuple[float, float]:
    """Rate of keeping every gold passage, and mean passages kept: by ``threshold`` on the passage
    probabilities (the best always kept), or a fixed ``top_n`` of the ranking."""
    both, kept_n = [], []
    for ctx, p in zip(full, probabilities):
        if top_n is not None:
            kept = np.argsort(-ctx.ranking, kind="stable")[:top_n]
        else:
            kept = [i for r, i in enumerate(np.argsort(-p, kind="stable")) if r == 0 or p[i] >= threshold]
        gold = set(np.flatnonzero(ctx.gold).tolist())
        both.append(float(gold <= set(int(i) for i in kept)))
        kept_n.append(len(kept))
    return float(np.mean(both)), float(np.mean(kept_n))


def choose_passage_threshold(full, probabilities, max_passages: float = MAX_PASSAGES) -> tuple[float, dict]:
    """The lowest threshold whose mean passages kept stays within ``max_passages`` (fewer than fixed top-2's
    two, with a margin): the most gold kept at that size. Reported against fixed top-2 on the same rows."""
    top2 = prune_stats(full, probabilities, None, top_n=2)
    chosen = 0.99
    for t in np.linspace(0.99, 0.01, 197):
        if prune_stats(full, probabilities, float(t))[1] > max_passages:
            break
        chosen = float(t)
    both, n = prune_stats(full, probabilities, chosen)
    return chosen, {"both_gold": both, "passages": n, "top2_both_gold": top2[0], "top2_passages": top2[1]}


# ---- the whole fit ------------------------------------------------------------------------------------------

def fit_draft(attributor: AT2Attributor, records: Sequence[dict], examples: Sequence[HotpotExample], kind: str,
              inputs: Sequence[str] | None = None, passage_inputs: Sequence[str] | None = None,
              log=print) -> tuple[DraftRule, dict]:
    """The keep rule of one draft kind, and a report of how it was chosen (train cross-validation)."""
    full, sub = contexts_of(attributor, records, examples, kind)
    report: dict = {}
    if inputs is None:
        from ..compress import SENTENCE_FEATURES

        inputs, report["selection"] = select_inputs(full, sub, SENTENCE_FEATURES)
        log(f"[{kind}] sentence inputs: {inputs}")
    inputs = list(inputs)

    def fit_raw(ctxs):
        model = fit_sentence(ctxs, inputs)
        return lambda ctx: model.raw(ctx.features)

    raw_cv = cross_validated(full, sub, fit_raw)
    labels = np.concatenate([c.labels for c in full])
    xs, ys = platt_knots(np.concatenate(raw_cv), labels)
    calibrate = lambda raw: np.interp(raw, xs, ys)  # noqa: E731
    probabilities = [calibrate(r) for r in raw_cv]
    report["cv_recall"] = recall_at_shares(full, raw_cv)
    rule, parameter, table = choose_auto(full, probabilities)
    report["auto_rules"] = table
    log(f"[{kind}] CV recall at shares {report['cv_recall']}; auto rules {table}; chosen {rule} {parameter:.4g}")
    sentence = fit_sentence(full + [s for row in sub for s in row], inputs)
    sentence.calibration_x, sentence.calibration_y = xs, ys

    passage_inputs = list(passage_inputs or ("evidence_max", "evidence_gap", "ranking_z", "rank", "sentence_max",
                                             "sentence_sum"))

    def fit_pass(ctxs):
        model_s = fit_sentence(ctxs, inputs)
        model_s.calibration_x, model_s.calibration_y = xs, ys
        model_p = fit_passage(ctxs, model_s, passage_inputs)
        return lambda ctx: model_p.raw(passage_rows(ctx, model_s))

    passage_cv = cross_validated(full, sub, fit_pass)
    gold = np.concatenate([c.gold for c in full])
    pxs, pys = platt_knots(np.concatenate(passage_cv), gold)
    passage_probabilities = [np.interp(r, pxs, pys) for r in passage_cv]
    threshold, prune_report = choose_passage_threshold(full, passage_probabilities)
    report["prune"] = prune_report
    log(f"[{kind}] passage threshold {threshold:.3f}: {prune_report}")
    passage = fit_passage(full + [s for row in sub for s in row], sentence, passage_inputs)
    passage.calibration_x, passage.calibration_y = pxs, pys
    recall, share, n = auto_curve(full, probabilities, rule, parameter)
    metrics = {f"train_cv_{k}": v for k, v in report["cv_recall"].items()}
    metrics.update({"train_cv_auto_recall": recall, "train_cv_auto_token_share": share,
                    "train_cv_auto_sentences": n, "train_cv_prune_both_gold": prune_report["both_gold"],
                    "train_cv_prune_passages": prune_report["passages"],
                    "train_cv_top2_both_gold": prune_report["top2_both_gold"]})
    return DraftRule(sentence=sentence, passage=passage, auto=rule, parameter=parameter,
                     passage_threshold=threshold, metrics=metrics), report


def fit_keep_rule(attributor: AT2Attributor, records: dict[str, list[dict]], examples: Sequence[HotpotExample],
                  training_data: str, command: str = "", log=print) -> tuple[KeepRule, dict]:
    drafts, reports = {}, {}
    for kind in records:
        drafts[kind], reports[kind] = fit_draft(attributor, records[kind], examples, kind, log=log)
    rule = KeepRule(
        model_id=attributor.lm.model_id, evidence_model=attributor.evidence_model, drafts=drafts,
        training_data=training_data,
        command=command,
        metrics={f"{kind}_{k}": v for kind, part in drafts.items() for k, v in part.metrics.items()},
        notes="Per draft kind. Sentence model: logistic regression (inputs by greedy forward selection on 5-fold "
              "CV by row, for mean supporting-fact recall at 10/20/30%% of the tokens) on supporting-fact labels of "
              "each train row and its sub-contexts (gold passages + 0, 1, 3 distractors), Platt-calibrated on CV "
              "predictions; its probability ranks sentences for every budget. budget='auto': of the rules "
              "threshold / expected-recall / recall-per-token, the one reaching %.2f mean CV recall with the fewest "
              "tokens, its parameter set for that recall. Passage model: logistic regression on gold passages "
              "(with the sentence probabilities as inputs), Platt-calibrated; threshold: the lowest keeping at most "
              "%.1f passages on average (CV)." % (TARGET_RECALL, MAX_PASSAGES))
    return rule, reports

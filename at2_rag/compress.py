"""Compression policy: keep the passage sentences an answer relies on, under a budget, from scores of the one pass.

Every passage sentence already has an AT2 score and an evidence score per answer sentence; the passage has a
ranking (AT2, fused with the retriever's). ``sentence_features`` turns these into a few numbers per sentence;
``budget`` is a share of the context's tokens, a token count, or ``"auto"``: the keep rule's calibrated
probability that a sentence holds a fact the answer needs, kept while it is worth its tokens. The same rule,
at passage level, gives adaptive pruning (``prune(threshold="auto")``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .errors import CoefficientMismatchError, ConfigurationError, InvalidInputError
from .logistic import LogisticModel
from .results import Attribution, CompressedContext, KeptSentence

SENTENCE_FEATURES = ("evidence_max", "evidence_z", "at2_z", "passage_rank", "passage_z", "position")
PASSAGE_FEATURES = ("evidence_max", "evidence_z", "ranking_z", "rank", "at2_z")


def _z(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def _ranks(scores: Sequence[float]) -> np.ndarray:
    """1 for the best score, 2 for the next (ties keep input order)."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(-np.asarray(scores, dtype=float), kind="stable")] = np.arange(1, len(scores) + 1)
    return ranks


def sentence_features(attribution: Attribution, evidence: np.ndarray,
                      passage_ranking: Sequence[float]) -> dict[str, np.ndarray]:
    """Per passage sentence: its best evidence over the answer's targets (and standardised), its AT2 score
    (standardised), its passage's rank and ranking score (standardised), its position inside its passage."""
    evidence = np.asarray(evidence, dtype=float).reshape(len(attribution.targets), len(attribution.sentences))
    best = evidence.max(0) if len(attribution.targets) else np.zeros(len(attribution.sentences))
    owner = np.array([s.passage_index for s in attribution.sentences], dtype=int)
    ranks = _ranks(passage_ranking)
    ranking_z = _z(np.asarray(passage_ranking, dtype=float))
    position = np.zeros(len(owner))
    for i in set(owner.tolist()):
        where = np.flatnonzero(owner == i)
        position[where] = np.arange(len(where)) / max(1, len(where) - 1)
    return {"evidence_max": best, "evidence_z": _z(best), "at2_z": _z(np.asarray(attribution.sentence_scores)),
            "passage_rank": 1.0 / ranks[owner], "passage_z": ranking_z[owner], "position": position}


def passage_features(attribution: Attribution, evidence: np.ndarray,
                     passage_ranking: Sequence[float]) -> dict[str, np.ndarray]:
    """Per passage: its best sentence's evidence (and standardised over passages), its ranking score
    (standardised), its reciprocal rank, its AT2 score (standardised)."""
    sentences = sentence_features(attribution, evidence, passage_ranking)
    owner = np.array([s.passage_index for s in attribution.sentences], dtype=int)
    best = np.array([sentences["evidence_max"][owner == i].max() if (owner == i).any() else 0.0
                     for i in range(len(attribution.passages))])
    return {"evidence_max": best, "evidence_z": _z(best), "ranking_z": _z(np.asarray(passage_ranking, dtype=float)),
            "rank": 1.0 / _ranks(passage_ranking), "at2_z": _z(np.asarray(attribution.scores, dtype=float))}


class KeepRule(BaseModel):
    """What ``budget="auto"`` and ``threshold="auto"`` read: calibrated probabilities that a sentence (a passage)
    holds a supporting fact, and the least probability worth keeping. Fit on HotpotQA train rows only."""

    model_id: str
    sentence: LogisticModel
    passage: LogisticModel
    sentence_threshold: float = Field(description="Keep a sentence when its probability reaches this.")
    passage_threshold: float = Field(default=0.5, description="Keep a passage when its probability reaches this.")
    training_data: str = ""
    command: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    notes: str = ""

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> KeepRule:
        try:
            rule = cls.model_validate(json.loads(Path(path).read_text()))
        except (ValueError, OSError) as exc:
            raise CoefficientMismatchError(f"{path} is not a keep-rule file: {exc}") from exc
        for part in (rule.sentence, rule.passage):
            problem = part.check_shape()
            if problem:
                raise CoefficientMismatchError(f"{path}: {problem}")
        return rule


def sentence_probability(rule: KeepRule | None, attribution: Attribution, evidence: np.ndarray,
                         passage_ranking: Sequence[float]) -> np.ndarray:
    if rule is None:
        raise ConfigurationError("budget='auto' needs a keep rule; none is loaded for this model (give a share "
                                 "of tokens or a token count, or fit one with `at2-rag lab fit-keep-rule`)")
    return rule.sentence.predict(sentence_features(attribution, evidence, passage_ranking))


def passage_probability(rule: KeepRule | None, attribution: Attribution, passage_ranking: Sequence[float],
                        evidence: np.ndarray) -> np.ndarray:
    """Per passage, the rule's probability rescaled so that its threshold maps to 0.5 (``prune.select`` keeps
    what reaches 0.5)."""
    if rule is None:
        raise ConfigurationError("threshold='auto' needs a keep rule; none is loaded for this model (give top_n "
                                 "or a threshold, or fit one with `at2-rag lab fit-keep-rule`)")
    p = rule.passage.predict(passage_features(attribution, evidence, passage_ranking))
    t = rule.passage_threshold
    return np.where(p >= t, 0.5 + 0.5 * (p - t) / max(1e-9, 1 - t), 0.5 * p / max(1e-9, t))


def check_budget(budget) -> float | int | str:
    """``"auto"``, a share of tokens in (0, 1], or a positive token count."""
    if budget == "auto":
        return budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise InvalidInputError(f"budget must be 'auto', a share of tokens in (0, 1] or a token count, not {budget!r}")
    if isinstance(budget, float):
        if not 0 < budget <= 1:
            raise InvalidInputError(f"a budget given as a share must lie in (0, 1], not {budget}")
        return budget
    if budget < 1:
        raise InvalidInputError(f"a budget given as a token count must be at least 1, not {budget}")
    return budget


def compress(attribution: Attribution, evidence: np.ndarray, passage_ranking: Sequence[float],
             token_counts: Sequence[int], budget: float | int | str = "auto", rule: KeepRule | None = None,
             keep_order: bool = True, joiner: str = " … ", min_sentences_per_passage: int = 0) -> CompressedContext:
    """Keep the best-ranked sentences within ``budget`` (the best one always), then at least
    ``min_sentences_per_passage`` of each passage that keeps any; ``keep_order``: kept sentences in text order
    (else best first)."""
    budget = check_budget(budget)
    if not isinstance(joiner, str):
        raise InvalidInputError(f"joiner must be a string, not {joiner!r}")
    if isinstance(min_sentences_per_passage, bool) or not isinstance(min_sentences_per_passage, int) or \
            min_sentences_per_passage < 0:
        raise InvalidInputError(f"min_sentences_per_passage must be an int >= 0, not {min_sentences_per_passage!r}")
    counts = np.asarray(token_counts, dtype=int)
    features = sentence_features(attribution, evidence, passage_ranking)
    probability = None
    if budget == "auto":
        probability = sentence_probability(rule, attribution, evidence, passage_ranking)
        ranking = probability
    else:
        ranking = features["evidence_max"] + 1e-3 * features["passage_rank"]
    order = np.argsort(-ranking, kind="stable")
    total = int(counts.sum())
    limit = None if budget == "auto" else (int(budget * total) if isinstance(budget, float) else int(budget))
    chosen: list[int] = []
    used = 0
    for rank, j in enumerate(order.tolist()):
        if budget == "auto":
            if rank > 0 and probability[j] < rule.sentence_threshold:
                break
        elif rank > 0 and used + counts[j] > limit:
            continue
        chosen.append(j)
        used += int(counts[j])
    owner = [s.passage_index for s in attribution.sentences]
    if min_sentences_per_passage:
        for i in sorted({owner[j] for j in chosen}):
            mine = [j for j in order.tolist() if owner[j] == i]
            for j in mine[:min_sentences_per_passage]:
                if j not in chosen:
                    chosen.append(j)
                    used += int(counts[j])
    chosen_set = set(chosen)
    kept_order = sorted(chosen_set) if keep_order else [j for j in order.tolist() if j in chosen_set]
    texts = []
    for i in range(len(attribution.passages)):
        texts.append(joiner.join(attribution.sentences[j].text.strip() for j in kept_order if owner[j] == i))
    kept = [KeptSentence(passage_index=owner[j], start=attribution.sentences[j].start,
                         end=attribution.sentences[j].end, score=float(ranking[j])) for j in kept_order]
    return CompressedContext(texts=texts, kept=kept, ranking=ranking.tolist(),
                             keep_probability=None if probability is None else probability.tolist(),
                             budget=str(budget), tokens_before=total, tokens_after=used, joiner=joiner,
                             attribution=attribution)

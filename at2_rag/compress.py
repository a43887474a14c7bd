"""Compression policy: keep the passage sentences an answer relies on, under a budget, from scores of the one pass.

Every passage sentence already has an AT2 score and a calibrated evidence probability per answer sentence
(AT2 + lexical match, ``Pipeline.evidence``); every passage has a ranking (AT2, fused with the retriever's
score when given). ``sentence_features`` turns these into a few numbers per sentence, and the keep rule's
sentence model (a ``LogisticModel`` fit on HotpotQA train rows, ``at2_rag.fit.keep_rule``) turns them into a
calibrated probability that the sentence holds a supporting fact: that probability is the ranking for every
budget. ``budget``: a share of the context's tokens (``0.3``) or a token count (``400``), filled best first
(a hard cap); or ``"auto"``: the keep rule's stopping rule, chosen on train rows (see ``select_auto``). The
same kind of rule at passage level gives adaptive pruning (``prune(threshold="auto")``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from .errors import CoefficientMismatchError, ConfigurationError, InvalidInputError
from .logistic import LogisticModel
from .results import Attribution, CompressedContext, KeptSentence

AUTO_RULES = ("threshold", "expected-recall", "recall-per-token")


def _z(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def _ranks(scores: Sequence[float]) -> np.ndarray:
    """1 for the best score, 2 for the next (ties keep input order)."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(-np.asarray(scores, dtype=float), kind="stable")] = np.arange(1, len(scores) + 1)
    return ranks


def sentence_features(attribution: Attribution, evidence: np.ndarray, passage_ranking: Sequence[float],
                      values: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every candidate input of the sentence model, one number per passage sentence.

    ``evidence``: ``[targets, sentences]`` evidence probabilities; ``values``: the evidence components
    (``lex_qa``, ``lex_a``, ...) when the evidence model computed them. Inputs: the sentence's best evidence
    over the answer's targets (``evidence_max``, and its mean, within-context z-score, reciprocal rank, and
    share of its passage's best), its best lexical match to question + answer and to the answer alone, its AT2
    score (z-scored), its passage's best evidence (and reciprocal rank among passages), its passage's ranking
    (reciprocal rank, z-score), its position in its passage (0 first .. 1 last; ``first``: 1 for the first)
    and its length (log characters)."""
    n = len(attribution.sentences)
    evidence = np.asarray(evidence, dtype=float).reshape(len(attribution.targets), n)
    best = evidence.max(0) if len(attribution.targets) else np.zeros(n)
    mean = evidence.mean(0) if len(attribution.targets) else np.zeros(n)
    owner = np.array([s.passage_index for s in attribution.sentences], dtype=int)
    n_passages = len(attribution.passages)
    passage_best = np.zeros(n_passages)
    position, first = np.zeros(n), np.zeros(n)
    for i in range(n_passages):
        where = np.flatnonzero(owner == i)
        if len(where):
            passage_best[i] = best[where].max()
            position[where] = np.arange(len(where)) / max(1, len(where) - 1)
            first[where[0]] = 1.0
    ranking = np.asarray(passage_ranking, dtype=float)
    lexical = {}
    for name in ("lex_qa", "lex_a"):
        v = None if values is None else values.get(name)
        lexical[name] = np.asarray(v, dtype=float).reshape(-1, n).max(0) if v is not None and len(v) else np.zeros(n)
    at2 = np.asarray(attribution.sentence_scores, dtype=float) if attribution.sentence_scores else np.zeros(n)
    return {
        "evidence_max": best, "evidence_mean": mean, "evidence_z": _z(best), "evidence_rank": 1.0 / _ranks(best),
        "evidence_share": best / np.maximum(passage_best[owner], 1e-9),
        "lex_qa": lexical["lex_qa"], "lex_a": lexical["lex_a"], "at2_z": _z(at2),
        "passage_evidence": passage_best[owner], "passage_evidence_rank": (1.0 / _ranks(passage_best))[owner],
        "passage_rank": (1.0 / _ranks(ranking))[owner], "passage_z": _z(ranking)[owner],
        "position": position, "first": first,
        "length": np.log1p([len(s.text) for s in attribution.sentences]),
    }


SENTENCE_FEATURES = ("evidence_max", "evidence_mean", "evidence_z", "evidence_rank", "evidence_share", "lex_qa",
                     "lex_a", "at2_z", "passage_evidence", "passage_evidence_rank", "passage_rank", "passage_z",
                     "position", "first", "length")
PASSAGE_FEATURES = ("evidence_max", "evidence_z", "evidence_rank", "evidence_gap", "ranking_z", "rank", "at2_z",
                    "sentence_max", "sentence_sum")


def passage_features(attribution: Attribution, evidence: np.ndarray, passage_ranking: Sequence[float],
                     sentence_probability: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every candidate input of the passage model, one number per passage: its best sentence's evidence (and
    z-score over passages, reciprocal rank, gap to the best passage's), its ranking score (z-score, reciprocal
    rank), its AT2 score (z-score), and with the sentence model's probabilities, its best and summed sentence
    probability."""
    n_passages = len(attribution.passages)
    n = len(attribution.sentences)
    evidence = np.asarray(evidence, dtype=float).reshape(len(attribution.targets), n)
    best_sentence = evidence.max(0) if len(attribution.targets) else np.zeros(n)
    owner = np.array([s.passage_index for s in attribution.sentences], dtype=int)
    best = np.array([best_sentence[owner == i].max() if (owner == i).any() else 0.0 for i in range(n_passages)])
    ranking = np.asarray(passage_ranking, dtype=float)
    out = {"evidence_max": best, "evidence_z": _z(best), "evidence_rank": 1.0 / _ranks(best),
           "evidence_gap": best.max() - best if n_passages else best,
           "ranking_z": _z(ranking), "rank": 1.0 / _ranks(ranking),
           "at2_z": _z(np.asarray(attribution.scores, dtype=float))}
    if sentence_probability is not None:
        p = np.asarray(sentence_probability, dtype=float)
        out["sentence_max"] = np.array([p[owner == i].max() if (owner == i).any() else 0.0 for i in range(n_passages)])
        out["sentence_sum"] = np.array([p[owner == i].sum() for i in range(n_passages)])
    return out


class DraftRule(BaseModel):
    """The keep rule for one kind of draft ('llm': the caller's answer; 'attributor': this model's own)."""

    sentence: LogisticModel = Field(description="P(sentence holds a supporting fact); its raw score ranks "
                                    "sentences for every budget.")
    passage: LogisticModel = Field(description="P(passage holds a supporting fact), for threshold='auto'.")
    auto: Literal["threshold", "expected-recall", "recall-per-token"] = Field(
        default="threshold", description="The stopping rule of budget='auto' (see ``select_auto``).")
    parameter: float = Field(description="The stopping rule's parameter (a probability, a recall, or a ratio).")
    passage_threshold: float = Field(default=0.5, description="Keep a passage when its probability reaches this.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Train cross-validated numbers.")


class KeepRule(BaseModel):
    """What ``budget="auto"`` and ``threshold="auto"`` read (and what ranks sentences for every budget): per
    kind of draft, calibrated probabilities that a sentence (a passage) holds a supporting fact and the rule
    that stops keeping. Fit on HotpotQA train rows only (``at2-rag lab fit-keep-rule``)."""

    model_id: str
    evidence_model: str = Field(default="hybrid", description="The evidence model the inputs were computed with.")
    drafts: dict[str, DraftRule] = Field(description="Per draft kind: 'llm' and 'attributor'.")
    training_data: str = ""
    command: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    notes: str = ""

    def part(self, drafter: str = "llm") -> DraftRule:
        """The rule for a draft kind (the 'llm' rule when that kind was not fit)."""
        return self.drafts.get(drafter) or self.drafts["llm"]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> KeepRule:
        try:
            rule = cls.model_validate(json.loads(Path(path).read_text()))
        except (ValueError, OSError) as exc:
            raise CoefficientMismatchError(f"{path} is not a keep-rule file: {exc}") from exc
        if "llm" not in rule.drafts:
            raise CoefficientMismatchError(f"{path}: a keep rule needs at least the 'llm' draft kind")
        for kind, part in rule.drafts.items():
            for model, known in ((part.sentence, SENTENCE_FEATURES), (part.passage, PASSAGE_FEATURES)):
                problem = model.check_shape()
                if problem is None and not set(model.inputs) <= set(known):
                    problem = f"unknown inputs {sorted(set(model.inputs) - set(known))}"
                if problem:
                    raise CoefficientMismatchError(f"{path} ({kind}): {problem}")
        return rule



def sentence_probability(rule: KeepRule | None, attribution: Attribution, evidence: np.ndarray,
                         passage_ranking: Sequence[float], values: Mapping[str, np.ndarray] | None = None,
                         drafter: str = "llm") -> np.ndarray:
    """Per passage sentence, the keep rule's calibrated probability that it holds a supporting fact."""
    if rule is None:
        raise ConfigurationError("budget='auto' needs a keep rule; none is loaded for this model (give a share "
                                 "of tokens or a token count, or fit one with `at2-rag lab fit-keep-rule`)")
    return rule.part(drafter).sentence.predict(sentence_features(attribution, evidence, passage_ranking, values))


def passage_probability(rule: KeepRule | None, attribution: Attribution, passage_ranking: Sequence[float],
                        evidence: np.ndarray, values: Mapping[str, np.ndarray] | None = None,
                        drafter: str = "llm") -> np.ndarray:
    """Per passage, the rule's probability rescaled so that its threshold maps to 0.5 (``prune.select`` keeps
    what reaches 0.5)."""
    if rule is None:
        raise ConfigurationError("threshold='auto' needs a keep rule; none is loaded for this model (give top_n "
                                 "or a threshold, or fit one with `at2-rag lab fit-keep-rule`)")
    part = rule.part(drafter)
    sentences = part.sentence.predict(sentence_features(attribution, evidence, passage_ranking, values))
    p = part.passage.predict(passage_features(attribution, evidence, passage_ranking, sentences))
    t = part.passage_threshold
    return np.where(p >= t, 0.5 + 0.5 * (p - t) / max(1e-9, 1 - t), 0.5 * p / max(1e-9, t))


def check_budget(budget) -> float | int | str:
    """``"auto"``, a share of tokens in (0, 1], or a positive token count."""
    if budget == "auto" and isinstance(budget, str):
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


def check_options(budget, keep_order: bool = True, joiner: str = " … ", min_sentences_per_passage: int = 0):
    """Check every option of ``compress`` (before any model work); returns the budget."""
    budget = check_budget(budget)
    if not isinstance(joiner, str):
        raise InvalidInputError(f"joiner must be a string, not {joiner!r}")
    if isinstance(min_sentences_per_passage, bool) or not isinstance(min_sentences_per_passage, int) or \
            min_sentences_per_passage < 0:
        raise InvalidInputError(f"min_sentences_per_passage must be an int >= 0, not {min_sentences_per_passage!r}")
    if not isinstance(keep_order, bool):
        raise InvalidInputError(f"keep_order must be a bool, not {keep_order!r}")
    return budget


def select_auto(probability: np.ndarray, counts: np.ndarray, rule: str, parameter: float) -> list[int]:
    """Sentences ``budget="auto"`` keeps, best first (always at least one).

    ``threshold``: every sentence whose probability reaches ``parameter``. ``expected-recall``: the fewest best
    sentences whose summed probability reaches ``parameter`` of the context's (expected supporting-fact recall).
    ``recall-per-token``: sentences by probability per token, while a sentence's share of the expected
    supporting facts is at least ``parameter`` times its share of the context's tokens."""
    p = np.asarray(probability, dtype=float)
    counts = np.maximum(np.asarray(counts, dtype=float), 1.0)
    if not len(p):
        return []
    if rule == "threshold":
        order = np.argsort(-p, kind="stable")
        return [int(j) for r, j in enumerate(order) if r == 0 or p[j] >= parameter]
    if rule == "expected-recall":
        order = np.argsort(-p, kind="stable")
        cumulative = np.cumsum(p[order]) / max(p.sum(), 1e-12)
        stop = int(np.searchsorted(cumulative, parameter - 1e-12)) + 1
        return order[: max(1, min(stop, len(p)))].tolist()
    if rule == "recall-per-token":
        worth = (p / max(p.sum(), 1e-12)) / (counts / counts.sum())
        order = np.argsort(-worth, kind="stable")
        return [int(j) for r, j in enumerate(order) if r == 0 or worth[j] >= parameter]
    raise InvalidInputError(f"unknown auto rule {rule!r}; one of {AUTO_RULES}")


def fill(ranking: np.ndarray, counts: np.ndarray, limit: int, owner: Sequence[int] | None = None,
         min_per_passage: int = 0) -> list[int]:
    """Best-ranked sentences whose tokens fit in ``limit`` (a hard cap: a sentence that does not fit is skipped
    and smaller ones further down may still fit). With ``min_per_passage``, a passage enters with its best
    ``min_per_passage`` sentences together, or not at all."""
    order = np.argsort(-np.asarray(ranking, dtype=float), kind="stable").tolist()
    chosen: list[int] = []
    taken: set[int] = set()
    entered: set[int] = set()
    used = 0
    for j in order:
        if j in taken:
            continue
        unit = [j]
        if min_per_passage > 1 and owner is not None and owner[j] not in entered:
            unit = [k for k in order if owner[k] == owner[j]][:min_per_passage]
        cost = int(sum(counts[k] for k in unit))
        if used + cost > limit:
            continue
        chosen += unit
        taken.update(unit)
        if owner is not None:
            entered.add(owner[j])
        used += cost
    return chosen


def fallback_ranking(features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Without a keep rule: best evidence, ties broken by the passage's rank."""
    return features["evidence_max"] + 1e-3 * features["passage_rank"]


def compress(attribution: Attribution, evidence: np.ndarray, passage_ranking: Sequence[float],
             token_counts: Sequence[int], budget: float | int | str = "auto", rule: KeepRule | None = None,
             keep_order: bool = True, joiner: str = " … ", min_sentences_per_passage: int = 0,
             values: Mapping[str, np.ndarray] | None = None, drafter: str = "llm") -> CompressedContext:
    """Keep the passage sentences the answer relies on.

    Sentences are ranked by the keep rule's probability (without a rule: by their best evidence). A share or a
    token count is filled best first and never exceeded (a budget smaller than every sentence keeps none);
    ``"auto"`` keeps what the rule's stopping rule says (at least one sentence). ``min_sentences_per_passage``:
    a passage that keeps any sentence keeps at least this many (its best ones; under a share or token count a
    passage enters with all of them or not at all). ``keep_order``: each passage's kept sentences in text
    order (else best first). ``texts`` has one entry per input passage, in input order ('' when dropped)."""
    budget = check_options(budget, keep_order, joiner, min_sentences_per_passage)
    counts = np.asarray(token_counts, dtype=int)
    owner = [s.passage_index for s in attribution.sentences]
    features = sentence_features(attribution, evidence, passage_ranking, values)
    probability = None
    if budget == "auto" or rule is not None:
        probability = sentence_probability(rule, attribution, evidence, passage_ranking, values, drafter)
        ranking = probability
    else:
        ranking = fallback_ranking(features)
    order = np.argsort(-ranking, kind="stable").tolist()
    total = int(counts.sum())
    if budget == "auto":
        part = rule.part(drafter)
        chosen = select_auto(probability, counts, part.auto, part.parameter)
        if min_sentences_per_passage:
            for i in sorted({owner[j] for j in chosen}):
                for j in [k for k in order if owner[k] == i][:min_sentences_per_passage]:
                    if j not in chosen:
                        chosen.append(j)
    else:
        limit = int(budget * total) if isinstance(budget, float) else int(budget)
        chosen = fill(ranking, counts, limit, owner, min_sentences_per_passage)
    chosen_set = set(chosen)
    rank_of = {j: r for r, j in enumerate(order)}
    kept_order = sorted(chosen_set, key=lambda j: (owner[j], j if keep_order else rank_of[j]))
    texts = [joiner.join(attribution.sentences[j].text.strip() for j in kept_order if owner[j] == i)
             for i in range(len(attribution.passages))]
    kept = [KeptSentence(passage_index=owner[j], start=attribution.sentences[j].start,
                         end=attribution.sentences[j].end, score=float(ranking[j])) for j in sorted(chosen_set)]
    return CompressedContext(texts=texts, kept=kept, ranking=ranking.tolist(),
                             keep_probability=None if probability is None else probability.tolist(),
                             budget=str(budget), tokens_before=total,
                             tokens_after=int(sum(counts[j] for j in chosen_set)), joiner=joiner,
                             attribution=attribution)

"""Recombined training contexts from HotpotQA train rows: many more AT2 training examples than rows.

AT2's training signal needs no labels, only (context, query, response) triples, so one train row yields many
examples: a random subset of its passages (its gold passages always kept), distractors drawn from other train
rows, in shuffled order, each read with several responses (the gold answer, a supporting-fact sentence, the
model's greedy draft and a sampled one). Everything is a function of the rows and the seed; the recipe (which
row's passage sits where) travels in the ablation record, so a context is rebuilt exactly from the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from ..errors import InvalidInputError
from ..passages import Passage
from ..eval.hotpotqa import HotpotExample

RESPONSE_KINDS = ("gold", "support", "greedy", "sampled")
"""Responses read per context: the gold answer as a sentence, one supporting-fact sentence (both fixed text),
and the model's own greedy and sampled drafts (written at collection time)."""


class RecombinedExample(BaseModel):
    """One recombined context: the base row's question over ``recipe``'s passages, in that order."""

    id: str = Field(description="Stable id: the base row's id and the context's index.")
    question: str
    base_row: int = Field(description="Index (in the train rows) of the row whose question is asked.")
    recipe: list[tuple[int, int]] = Field(description="(row index, passage index) of every source, in prompt order.")
    passages: list[Passage]
    responses: dict[str, str] = Field(default_factory=dict,
                                      description="Fixed-text responses by kind (gold, support); drafts are "
                                      "written by the model when the context is collected.")


def _seed(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _source(rows: Sequence[HotpotExample], row: int, passage: int) -> Passage:
    original = rows[row].passages[passage]
    return original.model_copy(update={"id": f"{rows[row].id}:{passage}"})


def build_recombined(
    rows: Sequence[HotpotExample],
    n_contexts: int,
    seed: int = 0,
    min_passages: int = 3,
    max_passages: int = 10,
    foreign_share: float = 0.5,
    exclude_titles: set[str] | frozenset[str] = frozenset(),
) -> list[RecombinedExample]:
    """``n_contexts`` contexts cycling through ``rows`` as base rows (deterministic for a given seed).

    Each context holds the base row's gold passages plus ``k - gold`` others (k uniform in
    ``[min_passages, max_passages]``); each other slot is, with probability ``foreign_share``, a passage of
    another row, else one of the base row's own distractors. Passages titled as in ``exclude_titles`` (e.g.
    every title of the validation rows) are never drawn, and a base row whose gold passage is excluded is skipped.
    """
    if not rows:
        raise InvalidInputError("recombining needs at least one train row")
    if not 1 <= min_passages <= max_passages:
        raise InvalidInputError(f"need 1 <= min_passages <= max_passages, got {min_passages}, {max_passages}")
    allowed = [[p for p, s in enumerate(row.passages) if s.title not in exclude_titles] for row in rows]
    bases = [r for r, row in enumerate(rows) if row.gold and set(row.gold) <= set(allowed[r])]
    if not bases:
        raise InvalidInputError("no train row keeps its gold passages once the excluded titles are removed")
    pool = [(r, p) for r in range(len(rows)) for p in allowed[r]]
    out = []
    for c in range(n_contexts):
        rng = _seed(seed, c)
        base = bases[c % len(bases)]
        row = rows[base]
        k = max(len(row.gold), int(rng.integers(min_passages, max_passages + 1)))
        recipe = [(base, p) for p in row.gold]
        own = [p for p in allowed[base] if p not in row.gold]
        rng.shuffle(own)
        foreign = [pool[i] for i in rng.permutation(len(pool)) if pool[i][0] != base]
        while len(recipe) < k and (own or foreign):
            take_foreign = foreign and (not own or rng.random() < foreign_share)
            recipe.append(foreign.pop() if take_foreign else (base, own.pop()))
        recipe = [recipe[i] for i in rng.permutation(len(recipe))]
        passages = [_source(rows, r, p) for r, p in recipe]
        fact = row.supporting[int(rng.integers(len(row.supporting)))]
        a, b = row.passages[fact[0]].sentence_spans()[fact[1]]
        responses = {"gold": row.answer_sentence, "support": row.passages[fact[0]].text[a:b].strip()}
        out.append(RecombinedExample(id=f"{row.id}-c{c}", question=row.question, base_row=base, recipe=recipe,
                                     passages=passages, responses=responses))
    return out


def rebuild(rows: Sequence[HotpotExample], example_id: str, base_row: int,
            recipe: Sequence[Sequence[int]]) -> RecombinedExample:
    """The context a stored record names, from the same rows (checks the base row's id)."""
    if not 0 <= base_row < len(rows) or not example_id.startswith(rows[base_row].id):
        raise InvalidInputError(f"record {example_id} does not come from these rows (base row {base_row})")
    passages = [_source(rows, int(r), int(p)) for r, p in recipe]
    return RecombinedExample(id=example_id, question=rows[base_row].question, base_row=base_row,
                             recipe=[(int(r), int(p)) for r, p in recipe], passages=passages)


def context_seed(example_id: str) -> int:
    """Seed of a context's ablation masks (and sampled draft), stable across runs and shards."""
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:4], "little")

"""Rule-based synthetic claims for the verifier (FactCC-style, Kryscinski et al., 2020).

From a supported (claim, context) pair, each generator makes one changed claim, or returns None when its rule
does not apply:

- negatives (the context no longer supports the claim): ``entity_swap`` (a name for another name of the
  context), ``number_swap`` (a number for another number of the same kind from the context), ``date_change``
  (a year, month, or quantity shifted), ``negation`` (insert or remove "not"/"never"), ``role_swap`` (two
  names on either side of a verb exchanged), ``splice`` (a clause of another row's passage spliced in);
- positives (still supported): ``reword`` (a parenthetical dropped, a leading phrase moved to the end).

Everything is seeded (``random.Random(seed)``): the same pairs and seed give the same claims on every run. No
model, no third-party package.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
# Capitalised words that start sentences or frame them: never a name on their own.
_COMMON = frozenset("""A An The In On At Of For From With By To As After Before During Since Until Between Among
According Although Though While When Where Whereas Which Who Whom Whose What Why How If Unless Because However
Therefore Thus Moreover Furthermore Also Additionally Overall Finally First Second Third Then There Here This That
These Those It Its He She His Her Hers They Their Them We Our Us You Your I My Me Some Many Most Several Both Each
Every All Any No Not Yes Based Sure Other Another Such One Two Three Later Today Currently Generally Typically Usually
Despite Unlike Like Under Over Within Without Into Onto Upon Through Throughout Instead Rather Please Note Passage
Passages Document Documents Answer Question Summary But And So Yet Or Nor""".split()) | frozenset(MONTHS)
_CONNECT = frozenset({"of", "de", "da", "del", "la", "le", "von", "van", "der", "the", "and", "&", "du", "di"})
_TOKEN = re.compile(r"[^\W_][\w'’.\-]*[^\W_]|[^\W_]", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.,])\d+(?:\.\d+)?(?![\w]|[.,]\d)")
_MONTH = re.compile(r"\b(" + "|".join(MONTHS) + r")\b")
_MONTH_BEFORE = re.compile(r"\b(" + "|".join(MONTHS) + r")\s+$")
_MONTH_AFTER = re.compile(r"(?:st|nd|rd|th)?\s+(?:of\s+)?(" + "|".join(MONTHS) + r")\b")
_REFERENCE = re.compile(r"\[[\d,\s\]\[]*$|\b(?:passage|document|doc|source|step|reference|ref)\s*$", re.IGNORECASE)
_META_CLAIM = re.compile(r"\b(?:here (?:is|are)|summary|summari[sz]e|passages?|the question|provided (?:text|context)"
                         r"|unable to)\b", re.IGNORECASE)
_LIST_MARKER = re.compile(r"[.)](\s|$)")
_NEGATIVE_WORDS = re.compile(r"\b(?:neither|nor|none|nothing|nobody|no one|without|hardly|barely)\b", re.IGNORECASE)
_AUX = re.compile(r"\b(is|are|was|were|has|have|had|can|could|will|would|should|may|might|must|does|did|do)\b"
                  r"(?!\s+(?:not|never|n't)\b)")
_NEGATED = re.compile(r"\s+(?:not|never)\b", re.IGNORECASE)
_CONTRACTED = {"isn't": "is", "aren't": "are", "wasn't": "was", "weren't": "were", "hasn't": "has",
               "haven't": "have", "hadn't": "had", "can't": "can", "couldn't": "could", "won't": "will",
               "wouldn't": "would", "shouldn't": "should", "doesn't": "does", "didn't": "did", "don't": "do",
               "cannot": "can"}
_CONTRACTION = re.compile(r"\b(" + "|".join(re.escape(k) for k in _CONTRACTED) + r")\b", re.IGNORECASE)
_PAST = re.compile(r"(?<=[a-z] )([a-z]{3,}ed)\b")
_NOT_VERBS = frozenset({"based", "used", "called", "named", "located", "known", "red", "bed", "need", "seed",
                        "speed", "feed", "indeed", "united", "limited", "related", "required", "proceed", "exceed",
                        "hundred", "naked", "sacred", "wicked", "beloved", "sized", "aged", "shed", "ted"})
_LEADING = re.compile(r"^(In|On|At|During|After|Before|By|Since|From|Until|Under|Following|Throughout) "
                      r"([^,;()]{2,60}), (\S.*?)([.!?]?)$")
_PAREN = re.compile(r"\s*\([^()]{1,120}\)")
_ROLE_BETWEEN = re.compile(r"^\s*(?:[,]?\s*)?((?:[a-z][\w'-]*\s+){0,4}[a-z][\w'-]*)\s*$")
_VERBISH = re.compile(r"is|was|are|were|has|had|have|beat|won|wrote|led|became|[a-z]{3,}ed|[a-z]{3,}(?<![ius])s")
_SYMMETRIC = frozenset({"and", "or", "with", "&", "nor", "vs", "versus", "also", "both", "between"})

NEGATIVE_KINDS = ("entity_swap", "number_swap", "date_change", "negation", "role_swap", "splice")
# how often a kind is picked when several apply: the subtle changes more often than a spliced foreign clause
WEIGHTS = {"entity_swap": 3, "number_swap": 3, "date_change": 2, "negation": 2, "role_swap": 3, "splice": 1}
POSITIVE_KINDS = ("reword",)


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    text: str
    kind: str  # "name", "year", "number", "month"


def names(text: str) -> list[Mention]:
    """Capitalised word runs ("Pawn Stars Australia", "University of Oxford"), framing words left out."""
    tokens = list(_TOKEN.finditer(text))
    out: list[Mention] = []
    k = 0
    while k < len(tokens):
        word = tokens[k].group(0)
        if not _is_cap(word) or word in _COMMON:
            k += 1
            continue
        j = k
        while j + 1 < len(tokens):
            nxt = tokens[j + 1].group(0)
            gap = text[tokens[j].end():tokens[j + 1].start()]
            if gap != " ":
                break
            if _is_cap(nxt) and nxt not in _COMMON:
                j += 1
            elif nxt in _CONNECT and j + 2 < len(tokens) and _is_cap(tokens[j + 2].group(0)) \
                    and tokens[j + 2].group(0) not in _COMMON and text[tokens[j + 1].end():tokens[j + 2].start()] == " ":
                j += 2
            else:
                break
        start, end = tokens[k].start(), tokens[j].end()
        if j == k and _sentence_start(text, start):  # "Keep your plant ...": a capital, not a name
            k += 1
            continue
        while end > start and text[end - 1] in ".’'":  # "Inc." stays, a sentence's full stop does not
            if text[end - 1] == "." and re.search(r"\b[A-Z][a-z]?\.$", text[start:end]):
                break
            end -= 1
        if text[start:end].endswith(("'s", "’s")):  # "Lufthansa's": the name without the possessive
            end -= 2
        out.append(Mention(start, end, text[start:end], "name"))
        k = j + 1
    return out


def _sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \"'“‘(*-•")
    return not before or before[-1] in ".!?:;\n" or re.search(r"(^|\n)\s*(\d+[.)]|[-*•])?\s*$", text[:start]) is not None


def _is_cap(word: str) -> bool:
    return word[:1].isupper() and not word.isdigit() and len(word) > 1


def numbers(text: str) -> list[Mention]:
    """Numbers by kind: "year" (1000-2099), "day" (1-31 next to a month name: "21 July", "July 21"), "number"."""
    out = []
    for m in _NUMBER.finditer(text):
        value = m.group(0)
        if _REFERENCE.search(text[:m.start()]):  # "[3]", "Passage 2": a reference, not a claim
            continue
        if re.match(r"\s+words\b", text[m.end():]):  # "a summary in 89 words": about the answer itself
            continue
        if _LIST_MARKER.match(text[m.end():]) and re.search(r"(^|\n)\s*$", text[:m.start()]):  # "2. Select ..."
            continue
        if re.fullmatch(r"(1\d|20)\d\d", value):
            kind = "year"
        elif re.fullmatch(r"[1-9]|[12]\d|3[01]", value) and (_MONTH_BEFORE.search(text[:m.start()])
                                                              or _MONTH_AFTER.match(text[m.end():])):
            kind = "day"
        else:
            kind = "number"
        out.append(Mention(m.start(), m.end(), value, kind))
    return out


def months(text: str) -> list[Mention]:
    return [Mention(m.start(), m.end(), m.group(0), "month") for m in _MONTH.finditer(text)]


def _replace(text: str, mention: Mention, new: str) -> str:
    return text[:mention.start] + new + text[mention.end:]


def _changed(claim: str, new: str | None) -> str | None:
    return new if new is not None and new.strip() != claim.strip() else None


# --- negatives ---------------------------------------------------------------------------------------------

def entity_swap(claim: str, context: str, rng: random.Random, pool: Sequence[str] = ()) -> str | None:
    """A name of the claim replaced (every occurrence) by another name of the context, preferring one of as many
    words; None without a name in the claim or another name in the context."""
    mine = names(claim)
    if not mine:
        return None
    own = {m.text.lower() for m in mine}
    target = rng.choice(mine)
    candidates = sorted({m.text for m in names(context)
                         if m.text.lower() not in own and not _overlaps_words(m.text, target.text)
                         and m.text.lower() not in claim.lower()})
    if not candidates:
        return None
    kind = _name_kind(target.text)
    candidates = [c for c in candidates if _name_kind(c) == kind]  # "American" never stands in for "Rick Harrison"
    if not candidates:
        return None
    same = [c for c in candidates if len(c.split()) == len(target.text.split())]
    new = rng.choice(same or candidates)
    return _changed(claim, re.sub(r"(?<!\w)" + re.escape(target.text) + r"(?!\w)", lambda _: new, claim))


def _name_kind(name: str) -> str:
    """A rough type: a demonym or language ("American", "Japanese"), or any other name."""
    return "demonym" if re.fullmatch(r"[A-Z][a-z]+(?:ian|ean|can|ese|ish)", name) else "name"


def _overlaps_words(a: str, b: str) -> bool:
    """'Rick Harrison' and 'Harrison' name the same thing: never swap one for the other."""
    wa = {w.lower() for w in a.split() if w not in _CONNECT}
    wb = {w.lower() for w in b.split() if w not in _CONNECT}
    return bool(wa & wb)


def number_swap(claim: str, context: str, rng: random.Random, pool: Sequence[str] = ()) -> str | None:
    """A number of the claim replaced by a different number of the same kind (year, day of a month, other)
    from the context."""
    mine = numbers(claim)
    if not mine:
        return None
    target = rng.choice(mine)
    own = {m.text for m in mine}
    candidates = sorted({m.text for m in numbers(context) if m.kind == target.kind and m.text not in own
                         and _value(m.text) != _value(target.text)})
    if not candidates:
        return None
    return _changed(claim, _replace(claim, target, rng.choice(candidates)))


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def date_change(claim: str, context: str, rng: random.Random, pool: Sequence[str] = ()) -> str | None:
    """A year moved by 1-10 years, a month changed to another, or a quantity changed (doubled, halved, or moved
    by a few units); the new value is one the context does not hold."""
    mentions = numbers(claim) + months(claim)
    if not mentions:
        return None
    target = rng.choice(mentions)
    present = {m.text for m in numbers(context)} | {m.text for m in months(context)}
    for _ in range(10):
        new = _shift(target, rng)
        if new is not None and new != target.text and new not in present:
            return _changed(claim, _replace(claim, target, new))
    return None


def _shift(mention: Mention, rng: random.Random) -> str | None:
    if mention.kind == "month":
        return rng.choice([m for m in MONTHS if m != mention.text])
    if mention.kind == "year":
        return str(int(mention.text) + rng.choice([-1, 1]) * rng.randint(1, 10))
    if mention.kind == "day":
        return str(rng.randint(1, 28))
    value = _value(mention.text)
    decimals = len(mention.text.split(".")[1]) if "." in mention.text else 0
    if value == 0:
        new = float(rng.randint(1, 9))
    else:
        op = rng.choice(["double", "half", "plus", "minus", "tenfold"])
        new = {"double": value * 2, "half": value / 2, "plus": value + rng.randint(1, 5),
               "minus": value - rng.randint(1, 5), "tenfold": value * 10}[op]
        if new <= 0:
            new = value + rng.randint(1, 5)
        if decimals == 0 and new != int(new):
            new = float(int(new) + 1)
    text = f"{new:,.{decimals}f}" if "," in mention.text else f"{new:.{decimals}f}"
    return text


def negation(claim: str, context: str, rng: random.Random, pool: Sequence[str] = ()) -> str | None:
    """Remove a negation when the claim has one ("is not" -> "is", "didn't" -> "did", "never" dropped);
    otherwise insert "not"/"never" after the first auxiliary, or "never" before a past-tense verb."""
    if _CONTRACTION.search(claim):
        m = _CONTRACTION.search(claim)
        word = _CONTRACTED[m.group(0).lower()]
        word = word.capitalize() if m.group(0)[0].isupper() else word
        return _changed(claim, claim[:m.start()] + word + claim[m.end():])
    m = _NEGATED.search(claim)
    if m:
        return _changed(claim, claim[:m.start()] + claim[m.end():])
    if _NEGATIVE_WORDS.search(claim):  # "neither ... nor": one more "not" would not read as a negation
        return None
    for m in _AUX.finditer(claim):
        nxt = claim[m.end():].split(None, 1)[0] if claim[m.end():].strip() else ""
        if m.group(1) in ("has", "have", "had") and not re.fullmatch(r"(been|[a-z]+(ed|en|wn|ne|ght|ung|ade))", nxt):
            continue  # "has three children": a main verb, "has not three" would not read as English
        if m.group(1) in ("do", "does", "did") and not re.fullmatch(r"[a-z]+", nxt):
            continue
        word = rng.choice(["not", "not", "never"])
        return _changed(claim, claim[:m.end()] + " " + word + claim[m.end():])
    for m in _PAST.finditer(claim):
        if m.group(1) not in _NOT_VERBS:
            return _changed(claim, claim[:m.start()] + "never " + claim[m.start():])
    return None


def role_swap(claim: str, context: str, rng: random.Random, pool: Sequence[str] = ()) -> str | None:
    """Two names with one to five lower-case words between them, one of them verb-like (a verb phrase: "X defeated
    Y", "X is the son of Y"), trade places; None when only symmetric words ("and", "with") stand between them."""
    mine = names(claim)
    options = []
    for a, b in zip(mine, mine[1:]):
        between = claim[a.end:b.start]
        m = _ROLE_BETWEEN.match(between)
        if not m or a.text == b.text or _overlaps_words(a.text, b.text):
            continue
        words_between = m.group(1).split()
        if all(w in _SYMMETRIC for w in words_between) or not any(_VERBISH.fullmatch(w) for w in words_between):
            continue
        options.append((a, b))
    if not options:
        return None
    a, b = rng.choice(options)
    return _changed(claim, claim[:a.start] + b.text + claim[a.end:b.start] + a.text + claim[b.end:])


def splice(claim: str, context: str, rng: random.Random, pool: Sequence[str] = ()) -> str | None:
    """A clause of another passage (``pool``: sentences of other rows) replaces the claim's last clause, or is
    joined to the claim with ", and"."""
    candidates = [s for s in pool if 5 <= len(s.split()) <= 40 and s[:1].isupper() and s.rstrip()[-1:] in ".!?"]
    if not candidates or len(claim.split()) < 6 or claim.rstrip()[-1:] not in ".!?":
        return None
    foreign = rng.choice(candidates).strip()
    clause = re.split(r"[,;:]\s+", foreign)[0] if rng.random() < 0.5 else foreign
    if len(clause.split()) < 4:
        clause = foreign
    clause = clause.rstrip(" .!?;:")
    first = clause.split(" ", 1)[0]
    if first in _COMMON and first not in MONTHS:
        clause = clause[0].lower() + clause[1:]
    end = claim.rstrip()[-1] if claim.rstrip()[-1:] in ".!?" else "."
    body = claim.rstrip().rstrip(".!?")
    cut = body.rfind(", ")
    if cut >= 0 and len(body[:cut].split()) >= 4 and rng.random() < 0.5:
        return _changed(claim, f"{body[:cut]}, {clause}{end}")
    return _changed(claim, f"{body}, and {clause}{end}")


# --- positives ---------------------------------------------------------------------------------------------

def reword(claim: str, context: str, rng: random.Random, pool: Sequence[str] = ()) -> str | None:
    """The claim reworded without changing what it says: a parenthetical dropped, or a leading phrase
    ("In 1990, X did Y.") moved to the end ("X did Y in 1990.")."""
    options = []
    dropped = _PAREN.sub("", claim, count=1)
    if dropped != claim and len(dropped.split()) >= 4:
        options.append(re.sub(r"\s+([,.;:])", r"\1", dropped))
    m = _LEADING.match(claim.strip())
    if m:
        prep, phrase, rest, end = m.groups()
        if not re.search(r"[,;:]", rest):  # "In 2013, X did Y, and Z ...": where the phrase belongs is unclear
            options.append(f"{rest[0].upper()}{rest[1:]} {prep.lower()} {phrase}{end or '.'}")
    if not options:
        return None
    return _changed(claim, rng.choice(options))


Generator = Callable[..., "str | None"]
GENERATORS: dict[str, Generator] = {"entity_swap": entity_swap, "number_swap": number_swap,
                                    "date_change": date_change, "negation": negation, "role_swap": role_swap,
                                    "splice": splice, "reword": reword}


@dataclass(frozen=True)
class Synthetic:
    claim: str
    label: int  # 1 supported, 0 not
    kind: str
    origin: int  # index of the (claim, context) pair it came from
    original: str


def synthesize(pairs: Sequence[tuple[str, str]], pool: Sequence[str], seed: int = 0, positive_rate: float = 0.25,
               kinds: Sequence[str] = NEGATIVE_KINDS) -> list[Synthetic]:
    """One negative per supported (claim, context) pair, its kind drawn among the generators that apply,
    weighted by ``WEIGHTS`` (subtle changes more often than a spliced foreign clause, which nearly always
    applies), and for a share ``positive_rate`` of the pairs a reworded positive when ``reword`` applies.
    ``pool``: sentences of other rows for ``splice`` (a sentence of the pair's own context is skipped)."""
    rng = random.Random(seed)
    out = []
    for index, (claim, context) in enumerate(pairs):
        if _META_CLAIM.search(claim):  # "Here is a summary of the passages:" claims nothing to change
            continue
        order = list(kinds)
        rng.shuffle(order)
        foreign = [s for s in (pool[rng.randrange(len(pool))] for _ in range(8)) if s not in context] if pool else []
        made = {}
        for kind in order:
            new = GENERATORS[kind](claim, context, random.Random(rng.random()), foreign)
            if new is not None:
                made[kind] = new
        if made:
            options = sorted(made)
            kind = rng.choices(options, weights=[WEIGHTS.get(k, 1) for k in options])[0]
            out.append(Synthetic(made[kind], 0, kind, index, claim))
        if rng.random() < positive_rate:
            new = reword(claim, context, random.Random(rng.random()))
            if new is not None:
                out.append(Synthetic(new, 1, "reword", index, claim))
    return out


def counts(items: Sequence[Synthetic]) -> dict[str, int]:
    return dict(sorted(Counter(s.kind for s in items).items()))

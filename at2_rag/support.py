"""The support verdict: is an answer sentence supported by the context at all? A detector fit on labelled RAG
answers.

Citing (which source sentence supports a claim) is a ranking and stays with the evidence model. Whether
anything supports it is a classification with its own labels (answers with human-marked unsupported spans)
and its own features: the model-derived signals of ``signals.py``, the evidence model's best score, and
lexical facts (numbers and names absent from the context, content-word coverage). A logistic model over them,
calibrated by Platt scaling on held-out answers, gives ``support``: the estimated probability that the sentence
is supported. ``strictness`` picks the operating point.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .errors import CoefficientMismatchError, InvalidInputError
from .logistic import LogisticModel
from .results import SentenceSignals

_WORD = re.compile(r"[^\W_]+(?:[.,'’-][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"^\d[\d.,]*$")
_META = {"passage", "passages", "provided", "mention", "mentioned", "mentions", "information", "context",
         "sorry", "unable", "document", "documents", "article", "sources", "specified", "specify", "question"}
# Words that frame an answer rather than claim anything ("Sure!", "Based on the given passages, here is my
# answer:", "I hope this helps!"): like function words, they neither need nor earn support from the context.
DISCOURSE = frozenset("""sure certainly okay ok yes hope helps help glad happy thank thanks please let know note
based given provided here here's there's that's let's i'm i've i'd answer answers question questions passage
passages context document documents source sources text information mention mentioned mentions additional further
following summary unable therefore thus however overall conclusion possible attempt briefly brief words key points
article requested necessary contain determined described example less instructions""".split())
_REFERRING = {"passage", "passag", "document", "source", "sourc", "article", "step"}  # "Passage 2", "document 3"
STOPWORDS = frozenset("""a an the and or but if then than that this these those is are was were be been being am
of in on at to for from by with without about into over under as it its it's they them their there here he she his
her him we our you your i me my not no nor so such can could may might will would shall should do does did done
has have had having which who whom whose what when where why how all any both each few more most other some own
same very just also only too up down out off again further once s t also however while because during before after
above below between through until against among within upon per via one two""".split())
LEXICAL = ("coverage", "novel_content", "novel_numbers", "novel_names", "novel_long", "novel_run", "bigram_coverage",
           "pair_coverage", "trigram_coverage", "log_words", "meta", "position", "first")
MODEL = ("source_attention", "logprob_mean", "logprob_min", "entropy_mean", "no_context_logprob_mean",
         "pmi_mean", "pmi_min")
NO_CONTEXT = ("no_context_logprob_mean", "pmi_mean", "pmi_min")
EVIDENCE = ("evidence_top", "lexical_top")
VERIFIER = "verifier"  # P(entailed) of the sentence given its evidence, from the MiniLM verifier (verifier.py)
# cosine similarity (bundled all-MiniLM-L6-v2) of the sentence to its closest context piece, and the mean of the
# three closest; the pieces are the passages' sentences and each pair of adjacent sentences
EMBEDDING = ("embedding_top", "embedding_top3")
STRICTNESS = ("lenient", "balanced", "strict")
# Inputs whose direction is known: +1 can only raise support, -1 only lower it (the fit keeps these signs).
SUPPORT_SIGN = {"coverage": 1, "bigram_coverage": 1, "pair_coverage": 1, "trigram_coverage": 1, "evidence_top": 1,
                "lexical_top": 1, VERIFIER: 1, "embedding_top": 1, "embedding_top3": 1,
                "novel_content": -1, "novel_numbers": -1, "novel_names": -1, "novel_long": -1, "novel_run": -1}


def _stem(word: str) -> str:
    word = word.lower().replace(",", "").replace("’", "'")
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


STOPWORDS = STOPWORDS | DISCOURSE | {_stem(w) for w in DISCOURSE}  # the stems too: "passages" -> "passag"


def words(text: str) -> list[re.Match]:
    return list(_WORD.finditer(text))


class ContextVocabulary:
    """Stems and stem bigrams of the context (question + passages), for lexical support facts."""

    def __init__(self, texts: Sequence[str]):
        self.stems: set[str] = set()
        self.bigrams: set[tuple[str, str]] = set()
        self.trigrams: set[tuple[str, str, str]] = set()
        for text in texts:
            stems = [_stem(m.group(0)) for m in words(text)]
            self.stems.update(stems)
            self.bigrams.update(zip(stems, stems[1:]))
            self.trigrams.update(zip(stems, stems[1:], stems[2:]))

    def novel(self, word: str) -> bool:
        """A content word, number or name of the answer that the context never uses."""
        stem = _stem(word)
        return stem not in STOPWORDS and stem not in self.stems

    def _pair_known(self, pair: tuple[str, str]) -> bool:
        """``pair_coverage``'s rule: two adjacent content words must appear together in the context; a function or
        framing word next to a content word ("is Colne" in "The answer is Colne.") only needs the content word
        known (``bigram_coverage`` asks for the pair itself)."""
        if pair[0] in STOPWORDS or pair[1] in STOPWORDS:
            return (pair[1] if pair[0] in STOPWORDS else pair[0]) in self.stems
        return pair in self.bigrams

    def facts(self, sentence: str, index: int, count: int) -> dict[str, float]:
        found = words(sentence)
        tokens = [m.group(0) for m in found]
        stems = [_stem(t) for t in tokens]
        # a number right after "passage" / "document" names a source, it claims nothing
        stems = [s if not (k and _NUMBER.match(s) and stems[k - 1] in _REFERRING) else "the" for k, s in enumerate(stems)]
        content = [(t, s) for t, s in zip(tokens, stems) if s not in STOPWORDS]
        novel = [t for t, s in content if s not in self.stems]
        pairs = [p for p in zip(stems, stems[1:]) if not (p[0] in STOPWORDS and p[1] in STOPWORDS)]
        triples = [p for p in zip(stems, stems[1:], stems[2:]) if not all(w in STOPWORDS for w in p)]
        run = longest = 0
        for s in stems:
            if s in STOPWORDS:
                continue
            run = run + 1 if s not in self.stems else 0
            longest = max(longest, run)
        return {
            "coverage": 1.0 - len(novel) / len(content) if content else 1.0,
            "novel_content": float(len(novel)),
            "novel_numbers": float(sum(bool(_NUMBER.match(t)) for t in novel)),
            "novel_names": float(sum(t[:1].isupper() for t in novel[1:] if tokens and t != tokens[0])),
            "novel_long": float(sum(len(t) >= 7 for t in novel)),
            "novel_run": float(longest),
            "bigram_coverage": sum(p in self.bigrams for p in pairs) / len(pairs) if pairs else 1.0,
            "pair_coverage": sum(self._pair_known(p) for p in pairs) / len(pairs) if pairs else 1.0,
            "trigram_coverage": sum(p in self.trigrams for p in triples) / len(triples) if triples else 1.0,
            "log_words": float(np.log1p(len(tokens))),
            "meta": float(sum(s in _META for s in stems)),
            "position": index / max(1, count - 1),
            "first": float(index == 0),
        }

    def unsupported_spans(self, sentence: str, offset: int = 0, gap: int = 2,
                          mode: str = "novel-words") -> list[tuple[int, int]]:
        """Char spans (shifted by ``offset``) of runs of novel words, bridging up to ``gap`` known words; the
        whole sentence when no word is novel (the claim as a whole is what the context lacks) or when ``mode``
        is 'sentence'."""
        found = words(sentence) if mode == "novel-words" else []
        spans: list[list[int]] = []
        last = -10
        for k, m in enumerate(found):
            if self.novel(m.group(0)):
                if spans and k - last <= gap + 1:
                    spans[-1][1] = m.end()
                else:
                    spans.append([m.start(), m.end()])
                last = k
        if not spans:
            return [(offset, offset + len(sentence))]
        return [(offset + a, offset + b) for a, b in spans]


def context_pieces(passage_sentences: Sequence[Sequence[str]]) -> list[str]:
    """What an answer sentence is compared with: every passage sentence and every pair of adjacent ones (a claim
    often joins two)."""
    pieces = []
    for sentences in passage_sentences:
        sentences = [s.strip() for s in sentences if s.strip()]
        pieces += sentences + [f"{a} {b}" for a, b in zip(sentences, sentences[1:])]
    return pieces


def embedding_facts(embed, sentences: Sequence[str], passage_sentences: Sequence[Sequence[str]]) -> list[dict[str, float]]:
    """Per answer sentence, ``EMBEDDING``: its cosine similarity to the closest context piece and the mean of
    the three closest (rows of ``embed`` are L2-normalised)."""
    pieces = context_pieces(passage_sentences)
    if not sentences:
        return []
    if not pieces:
        return [{"embedding_top": 0.0, "embedding_top3": 0.0} for _ in sentences]
    vectors = np.asarray(embed([*(s.strip() for s in sentences), *pieces]))
    similarity = vectors[:len(sentences)] @ vectors[len(sentences):].T
    top = -np.sort(-similarity, axis=1)
    return [{"embedding_top": float(row[0]), "embedding_top3": float(row[:3].mean())} for row in top]


def feature_row(signals: SentenceSignals | None, lexical: dict[str, float], evidence: dict[str, float]) -> dict[str, float]:
    """Every detector input of one answer sentence, by name (lookback ratios as ``lookback_<i>``; model signals
    only when the pass computed them)."""
    row = dict(lexical)
    row.update(evidence)
    if signals is not None:
        for name in MODEL:
            value = getattr(signals, name)
            row[name] = 0.0 if value is None else float(value)
        row.update({f"lookback_{i}": v for i, v in enumerate(signals.lookback)})
    return row


class SupportDetector(LogisticModel):
    """Logistic model over named inputs, Platt calibration, and operating points by strictness: ``predict`` gives
    the calibrated probability that each answer sentence is supported."""

    model_id: str
    num_layers: int
    num_heads: int
    thresholds: dict[str, float] = Field(description="Least calibrated support for ``supported=True``, per "
                                         "strictness ('lenient' flags fewest sentences, 'strict' most).")
    default_strictness: str = "balanced"
    span_mode: str = Field(default="novel-words", description="'novel-words': inside an unsupported sentence, mark "
                           "the runs of words the context never uses; 'sentence': mark the whole sentence (chosen "
                           "by span F1 on the calibration part).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out train numbers from the fit.")
    training_data: str = ""
    command: str = ""
    notes: str = ""

    def check(self, fingerprint: dict) -> None:
        """Refuse a detector fit for another model or shape (its lookback inputs index that model's heads)."""
        mine = (self.model_id, self.num_layers, self.num_heads)
        theirs = (fingerprint.get("model_id"), fingerprint.get("num_layers"), fingerprint.get("num_heads"))
        if mine != theirs:
            raise CoefficientMismatchError(f"the support detector was fit for {mine}, not {theirs}")

    @property
    def needs_no_context(self) -> bool:
        """Whether its inputs include the short pass without the context (PMI)."""
        return any(f in NO_CONTEXT for f in self.inputs)

    @property
    def needs_verifier(self) -> bool:
        """Whether it reads the verifier's entailment probability (then the attributor loads the verifier)."""
        return VERIFIER in self.inputs

    @property
    def needs_embedding(self) -> bool:
        """Whether it reads the MiniLM similarity of a sentence to the context (then the attributor loads the
        embedder)."""
        return any(f in EMBEDDING for f in self.inputs)

    @property
    def needs_signals(self) -> bool:
        """Whether it reads model signals of the pass (lookback ratios, log-probabilities); lexical and evidence
        inputs need none, and then the pass computes none."""
        return any(f in MODEL or f.startswith("lookback_") for f in self.inputs)

    def threshold(self, strictness: str | None = None) -> float:
        name = strictness or self.default_strictness
        if name not in self.thresholds:
            raise InvalidInputError(f"strictness must be one of {sorted(self.thresholds)}, not {name!r}")
        return self.thresholds[name]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SupportDetector:
        try:
            detector = cls.model_validate(json.loads(Path(path).read_text()))
        except (ValueError, OSError) as exc:
            raise CoefficientMismatchError(f"{path} is not a support detector file: {exc}") from exc
        problem = detector.check_shape()
        if problem:
            raise CoefficientMismatchError(f"{path}: {problem}")
        return detector

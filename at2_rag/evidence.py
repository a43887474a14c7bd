"""Evidence for citations: how strongly each source sentence supports each response sentence.

AT2's sentence scores say what the model read while producing a sentence; a lexical match of the
question + response sentence says which text overlaps. An ``EvidenceModel`` is a logistic model over such
components, fit on supporting facts of training rows (``at2-rag lab calibrate``), so its output reads as the
probability that a source sentence is a supporting fact of the response sentence. The pure-AT2 model uses
AT2 components only; the hybrid adds lexical ones (and embedding similarity when an embedder is given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from .logistic import LogisticModel

Embedder = Callable[[list[str]], np.ndarray]  # texts -> [n, dim] L2-normalised rows

AT2_COMPONENTS = ("at2_z", "at2_share")
LEXICAL_COMPONENTS = ("lex_qa", "lex_qa_z", "lex_a", "lex_a_z")
EMBEDDING_COMPONENTS = ("emb_qa", "emb_qa_z")
ALL_COMPONENTS = AT2_COMPONENTS + LEXICAL_COMPONENTS + EMBEDDING_COMPONENTS


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise each row (one response sentence over all source sentences)."""
    std = x.std(-1, keepdims=True)
    return (x - x.mean(-1, keepdims=True)) / np.where(std > 0, std, 1.0)


def tfidf_similarity(queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
    """``[queries, documents]`` cosine similarity of TF-IDF vectors, IDF taken from ``documents`` alone
    (the retrieved passages are the corpus: nothing outside the request is needed)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", token_pattern=r"(?u)\b\w+\b")
    try:
        docs = vectorizer.fit_transform(documents)
    except ValueError:  # every word is a stop word
        return np.zeros((len(queries), len(documents)))
    return (vectorizer.transform(queries) @ docs.T).toarray()


def components(
    query: str,
    response_sentences: Sequence[str],
    passage_sentences: Sequence[str],
    at2_scores: np.ndarray,
    embed: Embedder | None = None,
) -> dict[str, np.ndarray]:
    """Every component, each ``[response sentences, source sentences]``.

    ``passage_sentences`` should carry their source's title ("Title: sentence"): questions name entities.
    """
    at2_scores = np.asarray(at2_scores, dtype=float)
    positive = np.clip(at2_scores, 0, None).sum(-1, keepdims=True)
    out = {"at2_z": zscore(at2_scores), "at2_share": at2_scores / np.where(positive > 0, positive, 1.0)}
    qa = [f"{query} {sentence}" for sentence in response_sentences]
    out["lex_qa"] = tfidf_similarity(qa, passage_sentences)
    out["lex_a"] = tfidf_similarity(list(response_sentences), passage_sentences)
    out["lex_qa_z"], out["lex_a_z"] = zscore(out["lex_qa"]), zscore(out["lex_a"])
    if embed is not None:
        vectors = np.asarray(embed([*qa, *passage_sentences]), dtype=float)
        out["emb_qa"] = vectors[: len(qa)] @ vectors[len(qa) :].T
        out["emb_qa_z"] = zscore(out["emb_qa"])
    return out


class EvidenceModel(LogisticModel):
    """A logistic model over named components, with its abstention threshold (all fit on train rows)."""

    name: str = Field(description="'at2' (AT2 components only), 'hybrid' (AT2 + lexical) or 'hybrid-embedding'.")
    threshold: float = Field(description="Least top-sentence probability for a response sentence to count as "
                             "supported (calibrated for >= 80% precision on train rows).")
    answer_floor: float = Field(default=0.0, description="Least TF-IDF similarity between the response sentence "
                                "alone and its closest passage sentence: a claim whose words appear nowhere in the "
                                "context is not supported, however the question matches (calibrated on train).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Train-split numbers from calibration.")

    @property
    def needs_embedding(self) -> bool:
        return any(c in EMBEDDING_COMPONENTS for c in self.inputs)

    def supported(self, probabilities: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
        """Per response sentence: best evidence over the threshold and its words found in the context."""
        return (probabilities.max(-1) >= self.threshold) & (values["lex_a"].max(-1) >= self.answer_floor)


class FusionModel(BaseModel):
    """Weighted reciprocal-rank fusion of AT2's ranking with the retriever's (weights fit on train rows)."""

    weight: float = Field(description="Weight of AT2's ranks; 1 - weight goes to the retriever's ranks.")
    k: float = Field(description="RRF constant: larger values flatten the contribution of top ranks.")
    metrics: dict[str, float] = Field(default_factory=dict)

    def fuse(self, at2_scores: Sequence[float], retriever_scores: Sequence[float]) -> np.ndarray:
        """Fused score per source (higher is better); ties between ranks keep the retriever's order."""
        return self.weight * _rrf(at2_scores, self.k) + (1 - self.weight) * _rrf(retriever_scores, self.k)


def _rrf(scores: Sequence[float], k: float) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    ranks = np.empty(len(scores))
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return 1.0 / (k + ranks)


class Calibration(BaseModel):
    """What ``at2-rag lab calibrate`` fits for one model: evidence models, the default one, and fusion weights
    per drafter kind ('llm': the user's answer; 'attributor': the attributor's own draft)."""

    model_id: str
    sentence_coefficients: str = Field(description="Digest of the sentence θ the AT2 components were computed with.")
    passage_coefficients: str = Field(description="Digest of the passage θ fusion was fit with.")
    evidence: dict[str, EvidenceModel]
    default_evidence: str
    fusion: dict[str, FusionModel]
    training_data: str = ""
    notes: str = ""

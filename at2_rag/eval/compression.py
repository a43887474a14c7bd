"""Context compression benchmark (`at2-rag lab bench compression`, issue 34).

Per HotpotQA row and draft ('llm': the gold answer as a short sentence, a stand-in for a strong LLM's draft;
'attributor': the attributor's own draft) one pass gives the attribution; a record keeps it (JSON per row,
resumable) with the retriever's score of each passage (MiniLM question similarity, as in calibration) and
MiniLM similarities of each sentence to the question and to question + draft (the baselines). Everything else
is replayed from the records through the runtime's own steps (``Pipeline.compress``, ``Pipeline.prune``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..attributor import AT2Attributor
from ..evidence import Embedder
from ..embeddings import question_similarity
from ..results import Attribution
from .hotpotqa import HotpotExample, cached_records

KINDS = ("llm", "attributor")
DRAFTS = {"llm": "gold answer as a sentence (stand-in for a strong LLM's draft)",
          "attributor": "attributor's own draft"}


def titled(attribution: Attribution) -> list[str]:
    """"Title: sentence" for every passage sentence (questions name the entities that titles carry)."""
    return [f"{attribution.passages[s.passage_index].title}: {s.text}" if attribution.passages[s.passage_index].title
            else s.text for s in attribution.sentences]


def compression_record(attributor: AT2Attributor, example: HotpotExample, kind: str, embed: Embedder) -> dict:
    """One pass over a row for a draft kind (no model signals: compression does not read them)."""
    response = example.answer_sentence if kind == "llm" else None
    job = attributor.pipeline.jobs([example.question], [example.passages], [response])[0]
    attribution = attributor.pipeline.score(job, signals=False)
    sentences = titled(attribution)
    vectors = embed([example.question, f"{example.question} {attribution.response}", *sentences])
    passages = [f"{p.title}: {p.text}" if p.title else p.text for p in example.passages]
    return {
        "id": example.id, "kind": kind, "attribution": attribution.model_dump(mode="json"),
        "retriever": question_similarity(embed, example.question, passages).tolist(),
        "tokens": [len(attributor.lm.encode_response(s.text)) for s in attribution.sentences],
        "minilm_q": (vectors[2:] @ vectors[0]).tolist(),
        "minilm_qd": (vectors[2:] @ vectors[1]).tolist(),
    }


def collect_records(attributor: AT2Attributor, examples: Sequence[HotpotExample], work_dir: str | Path,
                    embed: Embedder, kinds: Sequence[str] = KINDS, progress: bool = True) -> dict[str, list[dict]]:
    """Records per kind, one JSON file per (kind, row) under ``work_dir`` (existing files are reused)."""
    return cached_records(examples, work_dir, kinds, lambda ex, kind: compression_record(attributor, ex, kind, embed),
                          "compression passes", progress)


def record_attribution(record: dict) -> Attribution:
    return Attribution.model_validate(record["attribution"])


def supporting_mask(example: HotpotExample, attribution: Attribution) -> np.ndarray:
    """Per passage sentence of the attribution: 1 when it is one of the row's supporting facts."""
    index = {}
    for i, p in enumerate(example.passages):
        for j, (a, _) in enumerate(p.sentence_spans()):
            index[(i, a)] = j
    facts = set(map(tuple, example.supporting))
    return np.array([(s.passage_index, index.get((s.passage_index, s.start), -1)) in facts
                     for s in attribution.sentences], dtype=float)


# ---- methods ------------------------------------------------------------------------------------------------

SHARES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
TOP_KS = (1, 2, 3, 4, 5)
RANDOM_DRAWS = 20
F1_SHARES = (0.3,)


def _fill(ranking: np.ndarray, counts: np.ndarray, share: float) -> list[int]:
    from ..compress import fill

    return fill(ranking, counts, int(share * counts.sum()))


def _context_text(attribution: Attribution, kept: Sequence[int]) -> str:
    kept = set(kept)
    return " ".join(s.text for j, s in enumerate(attribution.sentences) if j in kept)


def _row_point(kept: Sequence[int], labels: np.ndarray, counts: np.ndarray, attribution: Attribution,
               answer: str) -> dict:
    from .metrics import contains_answer

    kept = list(kept)
    return {"recall": float(labels[kept].sum() / max(1.0, labels.sum())),
            "share": float(counts[kept].sum() / max(1, counts.sum())),
            "contains": contains_answer(_context_text(attribution, kept), answer),
            "sentences": len(kept),
            "passages": len({attribution.sentences[j].passage_index for j in kept})}


def _kept_indices(compressed, attribution: Attribution) -> list[int]:
    where = {(s.passage_index, s.start): j for j, s in enumerate(attribution.sentences)}
    return [where[(k.passage_index, k.start)] for k in compressed.kept]


def row_points(attributor: AT2Attributor, record: dict, example: HotpotExample, seed: int) -> dict[str, dict]:
    """Every method's point (recall, share, containment, ...) on one row and draft, keyed 'method|budget'."""
    from ..evidence import tfidf_similarity

    kind = record["kind"]
    attribution = record_attribution(record)
    labels = supporting_mask(example, attribution)
    counts = np.asarray(record["tokens"], dtype=int)
    sentences = titled(attribution)
    answer = example.answer
    pipeline = attributor.pipeline
    out: dict[str, dict] = {}
    for name, retriever in (("at2-rag", record["retriever"]), ("at2-rag (no retriever scores)", None)):
        for budget in (*SHARES, "auto"):
            compressed = pipeline.compress(attribution, budget, retriever, kind)
            out[f"{name}|{budget}"] = _row_point(_kept_indices(compressed, attribution), labels, counts,
                                                 attribution, answer)
    evidence = pipeline.evidence(attribution)
    rankings = {
        "evidence only": evidence.scores.max(0),
        "TF-IDF (question + draft)": tfidf_similarity([f"{example.question} {attribution.response}"], sentences)[0],
        "MiniLM (question)": np.asarray(record["minilm_q"]),
        "MiniLM (question + draft)": np.asarray(record["minilm_qd"]),
    }
    for name, ranking in rankings.items():
        for share in SHARES:
            out[f"{name}|{share}"] = _row_point(_fill(ranking, counts, share), labels, counts, attribution, answer)
    rng = np.random.default_rng(seed)
    for share in SHARES:
        draws = [_row_point(_fill(rng.random(len(counts)), counts, share), labels, counts, attribution, answer)
                 for _ in range(RANDOM_DRAWS)]
        out[f"random|{share}"] = {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
    owner = np.array([s.passage_index for s in attribution.sentences])
    for name, retriever in (("passage top-k", record["retriever"]), ("passage top-k (no retriever scores)", None)):
        ranking = np.asarray(pipeline.ranking(attribution, retriever, kind))
        order = np.argsort(-ranking, kind="stable")
        for k in TOP_KS:
            kept = np.flatnonzero(np.isin(owner, order[:k])).tolist()
            out[f"{name}|{k}"] = _row_point(kept, labels, counts, attribution, answer)
        if attributor.keep_rule is not None:
            pruned = pipeline.prune(attribution, threshold="auto", retriever_scores=retriever, drafter=kind)
            kept = np.flatnonzero(np.isin(owner, pruned.indices)).tolist()
            out[f"{name.replace('top-k', 'auto')}|auto"] = _row_point(kept, labels, counts, attribution, answer)
    return out


def prune_points(attributor: AT2Attributor, record: dict, example: HotpotExample) -> dict[str, dict]:
    """Adaptive pruning against fixed top_n=2 on one row: both gold passages kept, passages kept."""
    attribution = record_attribution(record)
    kind = record["kind"]
    out = {}
    for suffix, retriever in (("", record["retriever"]), (" (no retriever scores)", None)):
        for name, kwargs in (("top_n=2", {"top_n": 2}), ("auto", {"threshold": "auto"})):
            if name == "auto" and attributor.keep_rule is None:
                continue
            pruned = attributor.pipeline.prune(attribution, retriever_scores=retriever, drafter=kind, **kwargs)
            out[name + suffix] = {"both_gold": float(set(example.gold) <= set(pruned.indices)),
                                  "passages": len(pruned.indices),
                                  "gold_recall": len(set(example.gold) & set(pruned.indices)) / len(example.gold)}
    return out


# ---- answer F1 with full, pruned and compressed context ----------------------------------------------------

class AnswerCache:
    """JSON-lines cache of the answering model's answers, keyed by row id and the exact context given."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, str] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                self.entries[entry["key"]] = entry["answer"]

    def answer(self, attributor: AT2Attributor, example: HotpotExample, passages: list) -> str:
        import hashlib

        digest = hashlib.sha256(json.dumps([[p.title, p.text] for p in passages]).encode()).hexdigest()[:16]
        key = f"{example.id}:{digest}"
        if key not in self.entries:
            self.entries[key] = attributor.generate(example.question, passages)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "answer": self.entries[key]}) + "\n")
        return self.entries[key]


def answer_contexts(attributor: AT2Attributor, record: dict, example: HotpotExample) -> dict[str, list]:
    """The contexts the answering model reads, per setting: full, passage-pruned (top_n=2 and auto), and
    compressed by at2-rag ("auto" and each of ``F1_SHARES``), all with the retriever's scores."""
    from ..passages import Passage

    attribution = record_attribution(record)
    kind, retriever = record["kind"], record["retriever"]
    pipeline = attributor.pipeline
    out = {"full": list(example.passages)}
    out["pruned top_n=2"] = pipeline.prune(attribution, top_n=2, retriever_scores=retriever, drafter=kind).passages
    if attributor.keep_rule is not None:
        out["pruned auto"] = pipeline.prune(attribution, threshold="auto", retriever_scores=retriever,
                                            drafter=kind).passages
    for budget in ("auto", *F1_SHARES):
        if budget == "auto" and attributor.keep_rule is None:
            continue
        compressed = pipeline.compress(attribution, budget, retriever, kind)
        out[f"compressed {budget}"] = [Passage(id=p.id, title=p.title, text=text)
                                       for p, text in zip(attribution.passages, compressed.texts) if text]
    return out


# ---- cost ---------------------------------------------------------------------------------------------------

def cost(attributor: AT2Attributor, examples: Sequence[HotpotExample], target_tokens: int = 2048,
         repeats: int = 5) -> dict:
    """Median seconds of ``attribute`` (one teacher-forced pass, gold-answer draft) on a context of about
    ``target_tokens`` tokens (passages of consecutive rows), and of ``Pipeline.compress`` / ``Pipeline.prune``
    on its result (no model pass)."""
    import time

    passages, n_tokens = [], 0
    for ex in examples:
        for p in ex.passages:
            if n_tokens >= target_tokens:
                break
            passages.append(p)
            n_tokens += len(attributor.lm.encode_response(f"{p.title}: {p.text}"))
    example = examples[0]
    timings: dict[str, list[float]] = {"attribute": [], "compress auto": [], "compress 0.3": [], "prune auto": []}
    attribution = None
    for _ in range(repeats):
        start = time.perf_counter()
        attribution = attributor.attribute(example.question, passages, example.answer_sentence)
        timings["attribute"].append(time.perf_counter() - start)
    layout_tokens = attribution.timings.get("prompt_tokens")
    for _ in range(repeats):
        for name, call in (("compress auto", lambda: attributor.pipeline.compress(attribution, "auto")),
                           ("compress 0.3", lambda: attributor.pipeline.compress(attribution, 0.3)),
                           ("prune auto", lambda: attributor.pipeline.prune(attribution, threshold="auto"))):
            if attributor.keep_rule is None and "auto" in name:
                continue
            start = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - start)
    medians = {k: float(np.median(v)) for k, v in timings.items() if v}
    return {"passages": len(passages), "passage_tokens": n_tokens, "prompt_tokens": layout_tokens,
            "repeats": repeats, "median_s": medians,
            "share_of_attribute": {k: v / medians["attribute"] for k, v in medians.items() if k != "attribute"}}


# ---- the shared RAG corpus case ------------------------------------------------------------------------------

def rag_case(attributor: AT2Attributor, rag_dir: str | Path) -> dict:
    """The first question of the shared RAG corpus ("Who deciphered the Rosetta Stone ...") on its 4 passages
    retrieved by MiniLM, with its capable-LLM answer: passages kept by top_n=2 and by threshold='auto'
    (without and with the retriever's scores), and what compress(budget='auto') keeps."""
    from ..demo import rag_items, retriever

    _, retrieve = retriever([])
    item = rag_items(Path(rag_dir), retrieve)[0]
    scores = np.asarray(retrieve(item.question, item.passages), dtype=float).tolist()
    attribution = attributor.attribute(item.question, item.passages, item.answer)
    pipeline = attributor.pipeline
    out = {"question": item.question, "titles": [p.title for p in item.passages], "gold": item.gold}
    for name, kwargs in (("top_n=2", {"top_n": 2}), ("auto", {"threshold": "auto"}),
                         ("auto, retriever scores", {"threshold": "auto", "retriever_scores": scores})):
        pruned = pipeline.prune(attribution, **kwargs)
        out[name] = {"kept": [item.passages[i].title for i in pruned.indices],
                     "keep_probability": pruned.keep_probability}
    small = pipeline.compress(attribution, "auto", scores)
    out["compress auto"] = {"texts": small.texts, "tokens": [small.tokens_before, small.tokens_after]}
    return out


# ---- the run ------------------------------------------------------------------------------------------------

def _summary(points: Sequence[dict]) -> dict:
    from .metrics import bootstrap_ci

    out = {"n_rows": len(points)}
    for key in points[0]:
        values = [p[key] for p in points]
        out[key] = float(np.mean(values))
        if key in ("recall", "share", "contains", "both_gold", "passages", "f1"):
            out[f"{key}_ci95"] = bootstrap_ci(values)
    return out


def run(attributor: AT2Attributor, examples: Sequence[HotpotExample], work_dir: str | Path, embed: Embedder,
        answers: bool = True, rag_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Every number of the benchmark on ``examples`` (records and answers cached under ``work_dir``)."""
    from .metrics import contains_answer, token_f1

    work_dir = Path(work_dir)
    records = collect_records(attributor, examples, work_dir, embed, progress=progress)
    result: dict = {"model": attributor.lm.model_id, "n_examples": len(examples), "drafts": DRAFTS,
                    "shares": list(SHARES), "top_ks": list(TOP_KS), "random_draws": RANDOM_DRAWS,
                    "keep_rule": None if attributor.keep_rule is None else {
                        kind: {"auto": part.auto, "parameter": part.parameter,
                               "passage_threshold": part.passage_threshold, "sentence_inputs": part.sentence.inputs,
                               "passage_inputs": part.passage.inputs}
                        for kind, part in attributor.keep_rule.drafts.items()},
                    "methods": {}, "pruning": {}, "answers": {}}
    cache = AnswerCache(work_dir / "answers.jsonl")
    for kind, rows in records.items():
        per_key: dict[str, list[dict]] = {}
        prune_rows: dict[str, list[dict]] = {}
        answer_rows: dict[str, list[dict]] = {}
        for n, (record, ex) in enumerate(zip(rows, examples)):
            for key, point in row_points(attributor, record, ex, seed=n).items():
                per_key.setdefault(key, []).append(point)
            for key, point in prune_points(attributor, record, ex).items():
                prune_rows.setdefault(key, []).append(point)
        result["methods"][kind] = {key: _summary(points) for key, points in per_key.items()}
        result["pruning"][kind] = {key: _summary(points) for key, points in prune_rows.items()}
        if answers:
            for record, ex in tqdm(list(zip(rows, examples)), desc=f"answers ({kind})", disable=not progress):
                for setting, passages in answer_contexts(attributor, record, ex).items():
                    answer = cache.answer(attributor, ex, passages) if passages else ""
                    answer_rows.setdefault(setting, []).append(
                        {"f1": token_f1(answer, ex.answer), "contains": contains_answer(answer, ex.answer)})
            result["answers"][kind] = {key: _summary(points) for key, points in answer_rows.items()}
    full_context = [contains_answer(" ".join(p.text for p in ex.passages), ex.answer) for ex in examples]
    result["full_context_contains"] = float(np.mean(full_context))
    result["cost"] = cost(attributor, examples)
    if rag_dir is not None and Path(rag_dir, "questions.jsonl").is_file():
        result["rag_case"] = rag_case(attributor, rag_dir)
    result["targets"] = targets(result)
    return result


def _at(methods: dict, name: str, budget) -> dict | None:
    return methods.get(f"{name}|{budget}")


def targets(result: dict) -> dict:
    """Issue 34's targets, on the gold-answer draft ('llm'), and where the own draft lands."""
    out = {}
    for kind in result["methods"]:
        methods = result["methods"][kind]
        auto = _at(methods, "at2-rag", "auto")
        rows = {}
        if auto:
            rows["auto: recall >= 0.90 with <= 25% of tokens"] = {
                "recall": auto["recall"], "share": auto["share"],
                "met": auto["recall"] >= 0.9 and auto["share"] <= 0.25}
        for share in (0.1, 0.2, 0.3):
            ours = methods[f"at2-rag|{share}"]["recall"]
            best = max(methods[f"{m}|{share}"]["recall"] for m in ("TF-IDF (question + draft)", "MiniLM (question)",
                                                                     "MiniLM (question + draft)"))
            margin = 0.03 if share == 0.1 else 0.0
            rows[f"recall at {share:.0%} >= best of TF-IDF and MiniLM" + (" + 0.03" if margin else "")] = {
                "at2-rag": ours, "best_baseline": best, "met": ours >= best + margin}
        pruning = result["pruning"][kind]
        if "auto" in pruning:
            rows["adaptive pruning: both gold kept >= top_n=2's, fewer passages"] = {
                "auto_both_gold": pruning["auto"]["both_gold"], "top2_both_gold": pruning["top_n=2"]["both_gold"],
                "auto_passages": pruning["auto"]["passages"],
                "met": pruning["auto"]["both_gold"] >= pruning["top_n=2"]["both_gold"]
                and pruning["auto"]["passages"] < 2}
        cost_share = result.get("cost", {}).get("share_of_attribute", {})
        if cost_share:
            rows["compression under 5% of attribute at ~2k tokens"] = {
                **cost_share, "met": max(cost_share.values()) < 0.05}
        out[kind] = rows
    return out


CURVE_METHODS = ("at2-rag", "at2-rag (no retriever scores)", "evidence only", "TF-IDF (question + draft)",
                 "MiniLM (question)", "MiniLM (question + draft)", "random")


def print_table(result: dict) -> None:
    for kind, methods in result["methods"].items():
        print(f"\n{DRAFTS[kind]}: supporting-fact recall / answer containment at each share of tokens")
        print(f"  {'method':<32}" + "".join(f"{s:>12.0%}" for s in SHARES))
        for name in CURVE_METHODS:
            cells = [methods[f"{name}|{s}"] for s in SHARES]
            print(f"  {name:<32}" + "".join(f"{m['recall']:>7.3f}/{m['contains']:.2f}" for m in cells))
        for name in ("at2-rag", "at2-rag (no retriever scores)"):
            m = methods.get(f"{name}|auto")
            if m:
                print(f"  {name + ' auto':<32} recall {m['recall']:.3f} [{m['recall_ci95'][0]:.3f}, "
                      f"{m['recall_ci95'][1]:.3f}], tokens {m['share']:.3f} [{m['share_ci95'][0]:.3f}, "
                      f"{m['share_ci95'][1]:.3f}], contains {m['contains']:.3f}, sentences {m['sentences']:.1f}")
        for name in ("passage top-k", "passage top-k (no retriever scores)"):
            cells = [(k, methods[f"{name}|{k}"]) for k in TOP_KS]
            print(f"  {name:<32}" + "".join(f"  k={k} {m['recall']:.3f}@{m['share']:.2f}" for k, m in cells))
        for key, m in result["pruning"][kind].items():
            print(f"  prune {key:<30} both gold {m['both_gold']:.3f}, passages {m['passages']:.2f}")
        for key, m in result["answers"].get(kind, {}).items():
            print(f"  answer F1 {key:<26} {m['f1']:.3f} [{m['f1_ci95'][0]:.3f}, {m['f1_ci95'][1]:.3f}], "
                  f"contains {m['contains']:.3f}")
    print(f"\ncost: {json.dumps(result.get('cost'))}")
    if "rag_case" in result:
        print(f"shared RAG corpus case: {json.dumps(result['rag_case'])[:600]}")
    print(f"targets: {json.dumps(result['targets'], indent=1)}")


def plot(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(result["methods"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, kind in zip(axes, kinds):
        methods = result["methods"][kind]
        for name in CURVE_METHODS:
            xs = [methods[f"{name}|{s}"]["share"] for s in SHARES]
            ys = [methods[f"{name}|{s}"]["recall"] for s in SHARES]
            ax.plot(xs, ys, marker="o", markersize=3, label=name,
                    linestyle="--" if name in ("random", "evidence only") else "-")
        xs = [methods[f"passage top-k|{k}"]["share"] for k in TOP_KS]
        ax.plot(xs, [methods[f"passage top-k|{k}"]["recall"] for k in TOP_KS], marker="s", markersize=3,
                linestyle=":", label="passage top-k (k=1..5)")
        auto = methods.get("at2-rag|auto")
        if auto:
            ax.errorbar([auto["share"]], [auto["recall"]], fmt="*", markersize=12, color="black",
                        xerr=[[auto["share"] - auto["share_ci95"][0]], [auto["share_ci95"][1] - auto["share"]]],
                        yerr=[[auto["recall"] - auto["recall_ci95"][0]], [auto["recall_ci95"][1] - auto["recall"]]],
                        label='at2-rag budget="auto"')
        ax.axhline(0.9, color="gray", linewidth=0.5)
        ax.axvline(0.25, color="gray", linewidth=0.5)
        ax.set_xlabel("share of context tokens kept")
        ax.set_title(f"{DRAFTS[kind]}", fontsize=9)
        ax.set_xlim(0, 0.6)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("supporting-fact sentence recall")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"HotpotQA compression, {result['model'].split('/')[-1]}, n={result['n_examples']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _auto_row(label: str, m: dict) -> str:
    """One markdown row: recall and token share with their intervals, contains, sentences, passages."""
    return (f"| {label} | {m['recall']:.3f} [{m['recall_ci95'][0]:.3f}, {m['recall_ci95'][1]:.3f}] | "
            f"{m['share']:.3f} [{m['share_ci95'][0]:.3f}, {m['share_ci95'][1]:.3f}] | {m['contains']:.3f} | "
            f"{m['sentences']:.1f} | {m['passages']:.2f} |")


def markdown(result: dict) -> str:
    """The tables of docs/benchmarks.md from a result."""
    lines = []
    for kind, methods in result["methods"].items():
        lines += [f"**{DRAFTS[kind]}**: supporting-fact recall [95% CI] at each share of the context's tokens "
                  "(answer containment in brackets after the slash)", "",
                  "| method | " + " | ".join(f"{s:.0%}" for s in SHARES) + " |",
                  "|---|" + "---|" * len(SHARES)]
        for name in CURVE_METHODS:
            cells = []
            for s in SHARES:
                m = methods[f"{name}|{s}"]
                ci = m.get("recall_ci95")
                cells.append(f"{m['recall']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and s in (0.1, 0.2, 0.3)
                                                     else "") + f" / {m['contains']:.2f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| budget=\"auto\" / passages | recall [95% CI] | token share [95% CI] | contains | sentences "
                  "| passages |", "|---|---|---|---|---|---|"]
        for name in ("at2-rag", "at2-rag (no retriever scores)"):
            m = methods.get(f"{name}|auto")
            if m:
                lines.append(_auto_row(f"{name}, auto", m))
        for name in ("passage top-k", "passage auto"):
            for k in ((*TOP_KS,) if name == "passage top-k" else ("auto",)):
                m = methods.get(f"{name}|{k}")
                if m:
                    lines.append(_auto_row(f"{name}{'' if k == 'auto' else f', k={k}'}", m))
        lines.append("")
    lines += ["**Adaptive passage pruning** (both gold passages kept; passages kept)", "",
              "| draft | setting | both gold [95% CI] | passages [95% CI] | gold recall |", "|---|---|---|---|---|"]
    for kind, rows in result["pruning"].items():
        for key, m in rows.items():
            lines.append(f"| {kind} | {key} | {m['both_gold']:.3f} [{m['both_gold_ci95'][0]:.2f}, "
                         f"{m['both_gold_ci95'][1]:.2f}] | {m['passages']:.2f} [{m['passages_ci95'][0]:.2f}, "
                         f"{m['passages_ci95'][1]:.2f}] | {m['gold_recall']:.3f} |")
    if result.get("answers"):
        lines += ["", "**Answer token F1 of the 135M model** [95% CI] (containment of the gold answer in its answer)",
                  "", "| context | " + " | ".join(result["answers"]) + " |", "|---|" + "---|" * len(result["answers"])]
        settings = list(next(iter(result["answers"].values())))
        for setting in settings:
            cells = []
            for kind in result["answers"]:
                m = result["answers"][kind].get(setting)
                cells.append("-" if m is None else f"{m['f1']:.3f} [{m['f1_ci95'][0]:.3f}, {m['f1_ci95'][1]:.3f}] "
                             f"({m['contains']:.2f})")
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

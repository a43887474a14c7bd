"""`at2-rag` command. User commands: demo, attribute, cite, compress. Lab commands (fitting shipped files and
benchmarks): `at2-rag lab train | calibrate | fit-detector | fit-keep-rule | evaluate | bench | export-coefficients`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

LAB_COMMANDS = ("train", "calibrate", "fit-detector", "fit-keep-rule", "evaluate", "bench", "export-coefficients")


class UsageError(Exception):
    """A bad argument or input file: reported in one line, exit code 2."""


def _data(path: str | None, split: str) -> Path:
    """The HotpotQA file given with --data (required: no default path lies outside the repository)."""
    if not path:
        raise UsageError(f"pass --data PATH to a HotpotQA jsonl (its {split} split)")
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"data file not found: {p} (pass --data PATH to a HotpotQA jsonl)")
    return p


def _rows(path: Path, limit: int | None):
    """HotpotQA rows, checked before any model loads (a bad line is a usage error)."""
    from .errors import InvalidInputError
    from .eval.hotpotqa import load_hotpotqa

    try:
        rows = load_hotpotqa(path, limit)
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from None
    if not rows:
        raise UsageError(f"{path} holds no rows")
    return rows


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_demo(args) -> None:
    from . import AT2Attributor
    from .demo import hotpot_items, rag_items, retriever, run

    examples = _rows(_data(args.data, "validation"), args.limit)
    rag_dir = Path(args.rag)
    if not (rag_dir / "questions.jsonl").is_file():
        raise UsageError(f"{rag_dir}: no questions.jsonl of the shared RAG corpus (--rag DIR)")
    print("loading the attributor and the retriever ...", file=sys.stderr, flush=True)
    attributor = AT2Attributor.from_pretrained(args.model, args.coefficients, max_new_tokens=48)
    name, retrieve = retriever([])
    keeps = f"the top {args.top_k}" if args.top_k else "the passages the answer needs (compressed to its sentences)"
    print(f"A {STAND_IN_NOTE}; at2-rag ({attributor.lm.model_id}) reads each answer in one pass, keeps {keeps} "
          f"(AT2 fused with {name} retrieval), cites each sentence, marks what is unsupported.\n", flush=True)
    rag = rag_items(rag_dir, retrieve)
    items = [*hotpot_items(examples), *rag]
    run(attributor, items, retrieve, name, args.top_k, rag[0] if rag else None, Path(args.html))


STAND_IN_NOTE = ("stand-in for your LLM writes each answer (HotpotQA: the gold answer as a sentence plus one "
                 "supporting-fact sentence; shared RAG corpus: the answers a capable LLM gave)")


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _exclude_titles(args, data: Path) -> tuple[set[str], str]:
    """Passage titles recombined contexts must never hold (every validation row's), and how that was decided."""
    path = Path(args.exclude_titles) if args.exclude_titles else data.with_name("validation.jsonl")
    if path.resolve() == data.resolve() or not path.is_file():
        if args.exclude_titles:
            raise UsageError(f"--exclude-titles: not a separate HotpotQA file: {path}")
        return set(), "no validation file beside the data: nothing excluded"
    titles = {s.title for row in _rows(path, None) for s in row.passages}
    return titles, f"titles of {path.name} (sha256 {_digest(path)}) excluded"


def cmd_train(args) -> None:
    from .lm import load_model
    from .fit.theta import (collect_contexts, collect_examples, export_ablations, import_ablations,
                           refresh_context_features, train, write_summary)

    data = _data(args.data, "train")
    examples = _rows(data, args.limit)
    families = _families(args.families)
    work = Path(args.work_dir) / args.level
    command = "at2-rag " + " ".join(args.argv)
    if args.contexts:
        from .fit.recombine import RESPONSE_KINDS, build_recombined

        if args.ablation != "remove":
            raise UsageError("--contexts shares one cached read of each ablated prompt: only --ablation remove")

        kinds = [k.strip() for k in args.kinds.split(",")]
        if unknown := set(kinds) - set(RESPONSE_KINDS):
            raise UsageError(f"--kinds: unknown {sorted(unknown)}; choose from {', '.join(RESPONSE_KINDS)}")
        exclude, excluded = _exclude_titles(args, data)
        contexts = build_recombined(examples, args.contexts, seed=args.seed, max_passages=args.max_passages,
                                    exclude_titles=exclude)
        lm = load_model(args.model)
        if args.ablations:
            refresh_context_features(lm, import_ablations(args.ablations, work), examples, args.level, families)
        if args.ray:
            from .fit.ray_collect import collect_on_ray

            collect_on_ray(args.model, contexts, work, address=args.ray, workers=args.workers, contexts=True,
                           level=args.level, kinds=kinds, n_masks=args.masks, families=families)
        paths = collect_contexts(lm, contexts, work, args.level, kinds, args.masks, shard=args.shard,
                                 num_shards=args.num_shards, families=families)
        source = (f"{data.name} (sha256 {_digest(data)}, first {len(examples)} rows), {args.contexts} recombined "
                  f"contexts (seed {args.seed}, 3-{args.max_passages} passages; {excluded}), responses: "
                  f"{','.join(kinds)}")
    else:
        lm = load_model(args.model)
        if args.ablations:
            import_ablations(args.ablations, work)
        responses = [ex.answer_sentence for ex in examples] if args.responses == "gold" else None
        if args.ray:
            from .fit.ray_collect import collect_on_ray

            collect_on_ray(args.model, examples, work, address=args.ray, workers=args.workers,
                           level=args.level, n_masks=args.masks, responses=responses, families=families,
                           method=args.ablation)
        paths = collect_examples(lm, examples, work, args.level, args.masks, shard=args.shard,
                                 num_shards=args.num_shards, responses=responses, families=families,
                                 method=args.ablation)
        source = f"{data.name} (sha256 {_digest(data)}, first {len(examples)} rows, responses: {args.responses})"
    if args.num_shards > 1 and not args.fit:
        print(f"shard {args.shard} collected in {work}; run again with --fit once every shard is done")
        return
    if args.num_shards > 1:
        paths = sorted(p for p in work.glob("[0-9]*.npz"))
    record = export_ablations(paths, work / "ablations.jsonl.gz")
    coefficients = train(lm, paths, args.level, source, families, steps=args.steps, l2=args.l2,
                         chunk_tokens=args.chunk_tokens, command=command, objective=args.objective)
    path = coefficients.save(args.out)
    write_summary(coefficients, Path(args.out).with_suffix(".json"))
    print(json.dumps(coefficients.metadata.metrics, indent=2))
    print(f"coefficients: {path}\nablations (keep them; --ablations reuses them): {record}")


def cmd_attribute(args) -> None:
    from .corpus import errors_path, run_local

    data = Path(args.data)
    if not data.is_file():
        raise UsageError(f"input file not found: {data}")
    kwargs = {"model": args.model, "coefficients": args.coefficients,
              "sentence_coefficients": args.sentence_coefficients, "max_new_tokens": args.max_new_tokens}
    if args.ray:
        from .distributed import run_ray

        counts = run_ray(data, args.out, kwargs, address=args.ray, workers=args.workers, batch_size=args.batch_size,
                         num_gpus=args.num_gpus, cpus_per_worker=args.cpus_per_worker)
    else:
        from . import AT2Attributor

        counts = run_local(AT2Attributor.from_pretrained(**kwargs), data, args.out)
    print(f"{counts['written']} attributed, {counts['errors']} errors ({errors_path(args.out)}), "
          f"{counts['skipped']} already done; {counts['seconds']:.1f}s")


def _records(path: str):
    """Records of a .json (one object or a list) or .jsonl file: {id?, query|question, passages, response|answer}."""
    from pydantic import ValidationError

    from .corpus import AttributionRecord

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"input file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()] if p.suffix == ".jsonl" else \
            json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not valid JSON: {exc}") from None
    rows = rows if isinstance(rows, list) else [rows]
    out = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UsageError(f"{p}: record {n + 1} is not an object")
        row = {"id": str(n), **row}
        row.setdefault("query", row.pop("question", None))
        row.setdefault("response", row.pop("answer", None))
        try:
            out.append(AttributionRecord.model_validate(row))
        except ValidationError as exc:
            raise UsageError(f"{p}: record {n + 1}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    return out


def _user_attributor(args):
    from . import AT2Attributor

    print("loading the attributor ...", file=sys.stderr, flush=True)
    return AT2Attributor.from_pretrained(args.model, precision=args.precision)


def cmd_cite(args) -> None:
    from .view import page

    records = _records(args.input)
    attributor = _user_attributor(args)
    results, fragments = [], []
    for record in records:
        cited = attributor.cite(record.query, record.passage_objects(), record.response, strictness=args.strictness)
        print(f"{record.id}: {cited.formatted}")
        for c in cited.citations:
            if not c.supported:
                print(f"  UNSUPPORTED (support {c.support:.2f}): {c.sentence}")
        results.append({"id": record.id, **cited.model_dump(exclude={"attribution"})})
        fragments.append(cited.to_html())
    _write_outputs(args, results, fragments and page(fragments, "at2-rag cite"))


def cmd_compress(args) -> None:
    from .view import page

    records = _records(args.input)
    budget = args.budget if args.budget == "auto" else (float(args.budget) if "." in args.budget else int(args.budget))
    attributor = _user_attributor(args)
    results, fragments = [], []
    for record in records:
        small = attributor.compress(record.query, record.passage_objects(), record.response, budget=budget)
        print(f"{record.id}: {small.tokens_before} -> {small.tokens_after} tokens, "
              f"{len(small.kept)} of {len(small.ranking)} sentences from passages {[i + 1 for i in small.passages_kept]}")
        for i, text in enumerate(small.texts):
            if text:
                print(f"  [{i + 1}] {text}")
        results.append({"id": record.id, **small.model_dump(exclude={"attribution"})})
        fragments.append(small.to_html())
    _write_outputs(args, results, fragments and page(fragments, "at2-rag compress"))


def _write_outputs(args, results: list[dict], html_page: str | None) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text("".join(json.dumps(r) + "\n" for r in results), encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.html and html_page:
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(html_page, encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)


def _families(spec: str) -> tuple[str, ...]:
    from .attention import parse_families

    try:
        return parse_families(spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_export_coefficients(args) -> None:
    from .coefficients import Coefficients, shipped_path, to_at2_checkpoint
    from .lm import DEFAULT_MODEL_ID

    source = args.coefficients or shipped_path(DEFAULT_MODEL_ID, args.level)
    if source is None or not Path(source).is_file():
        raise UsageError(f"no coefficient file {source} (--coefficients PATH.safetensors)")
    coefficients = Coefficients.load(source)
    to_at2_checkpoint(coefficients, args.out)
    meta = coefficients.metadata
    print(f"wrote {args.out}: {meta.num_layers} x {meta.num_heads} {meta.level} θ of {meta.model_id} "
          f"({meta.model_type}), readable by at2's LinearScoreEstimator.load")


def cmd_calibrate(args) -> None:
    from . import AT2Attributor
    from .fit.calibrate import collect_records, fit_calibration
    from .embeddings import minilm_embedder

    data = _data(args.data, "train")
    examples = _rows(data, args.limit)
    attributor = AT2Attributor.from_pretrained(args.model, max_new_tokens=32)
    records = collect_records(attributor, examples, args.work_dir, minilm_embedder())
    calibration = fit_calibration(attributor, records, examples, f"{data.name} ({len(examples)} rows)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(calibration.model_dump_json(indent=2))
    for name, model in calibration.evidence.items():
        print(f"evidence {name:<17} threshold {model.threshold:.3f}  " +
              "  ".join(f"{k} {v:.3f}" for k, v in model.metrics.items()))
    for kind, fusion in calibration.fusion.items():
        print(f"fusion ({kind} drafts): weight {fusion.weight} k {fusion.k}  " +
              "  ".join(f"{k} {v:.3f}" for k, v in fusion.metrics.items()))
    print(f"default evidence: {calibration.default_evidence}\ncalibration: {out}")


def cmd_fit_keep_rule(args) -> None:
    from . import AT2Attributor
    from .embeddings import minilm_embedder
    from .eval.compression import collect_records
    from .fit.keep_rule import fit_keep_rule

    data = _data(args.data, "train")
    examples = _rows(data, args.limit)
    attributor = AT2Attributor.from_pretrained(args.model, max_new_tokens=32, keep_rule=False)
    records = collect_records(attributor, examples, args.work_dir, minilm_embedder())
    rule, report = fit_keep_rule(attributor, records, examples,
                                 f"{data.name} (sha256 {_digest(data)}, {len(examples)} rows)",
                                 "at2-rag " + " ".join(args.argv))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rule.save(out)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    for kind, part in rule.drafts.items():
        print(f"{kind}: auto = {part.auto} {part.parameter:.4g}, passage threshold {part.passage_threshold:.3f}; "
              f"sentence inputs {part.sentence.inputs}\n  " +
              "  ".join(f"{k} {v:.3f}" for k, v in part.metrics.items()))
    print(f"keep rule: {out}")


def target_options(p) -> None:
    from .ablation import DEFAULT_METHOD, DEFAULT_OBJECTIVE, METHODS, OBJECTIVES

    p.add_argument("--objective", "--target", choices=OBJECTIVES, default=DEFAULT_OBJECTIVE,
                   help="what an ablation changes: the paper's log-odds of the whole target divided by its tokens "
                   "(response-log-odds), or the mean of per-token log-odds (token-log-odds)")
    p.add_argument("--ablation", choices=METHODS, default=DEFAULT_METHOD,
                   help="remove a source's text from the prompt, or mask it from attention in place")


def cmd_evaluate(args) -> None:
    from . import AT2Attributor, make_scorer
    from .eval.attribution import evaluate_scorers

    examples = _rows(_data(args.data, "validation"), args.limit)
    attributor = AT2Attributor.from_pretrained(args.model, args.coefficients, max_new_tokens=32,
                                               precision=args.precision)
    level_scorer = attributor.sentence_scorer if args.level == "sentence" else attributor.scorer
    coefficients = getattr(level_scorer, "coefficients", None)
    scorers = [make_scorer(name.strip(), coefficients, args.objective) for name in args.scorers.split(",")]
    for path in args.extra_coefficients or []:
        extra = make_scorer("at2", _load_checked(attributor, path))
        extra.name = f"at2[{Path(path).stem}]"  # one row per file, even when several share a family
        scorers.append(extra)
    ks = tuple(int(k) for k in args.ks.split(","))
    result = evaluate_scorers(attributor, examples, scorers, ks=ks, work_dir=args.work_dir, shard=args.shard,
                              num_shards=args.num_shards, level=args.level, responses=args.responses,
                              objective=args.objective, method=args.ablation)
    print(f"\n{result['model']} on {result['n_examples']} examples, {args.level} passages ({result['mean_units']:.1f} "
          f"per example), {args.responses} responses, {result['n_lds_masks']} LDS masks, target {args.objective}, "
          f"ablation by {args.ablation}; 95% bootstrap intervals")
    from .ablation import OBJECTIVES

    others = [t for t in OBJECTIVES if t != args.objective]
    print(f"{'scorer':<32} {'LDS':>22} " + " ".join(f"{'LDS ' + t:>22}" for t in others) + " "
          + " ".join(f"{'drop@' + str(k):>8}" for k in ks) + f" {'gold rank':>10} {'s/example':>10}")
    for name, r in result["scorers"].items():
        lo_hi = r["lds_ci95"]
        lds_text = f"{r['lds']:.3f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"
        other = " ".join(f"{r['lds_by_objective'][t]:>22.3f}" for t in others)
        drops = " ".join(f"{r['top_k_drop'][str(k)]:>8.3f}" for k in ks)
        print(f"{name:<32} {lds_text:>22} {other} {drops} {r['mean_gold_rank']:>10.2f} "
              f"{r['seconds_per_example']:>10.4f}")
    print(f"(random gold rank: {result['random_gold_rank']})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


def _load_checked(attributor, path):
    from .coefficients import Coefficients

    coefficients = Coefficients.load(path)
    coefficients.check(attributor.lm.fingerprint)
    return coefficients


def cmd_fit_detector(args) -> None:
    from . import AT2Attributor
    from .eval.hallucination import load_all
    from .fit.detector import TRAIN_DATA
    from .fit.detector import fit as fit_detector

    if not args.data:
        raise UsageError("pass --data DIR, the directory of labelled answers")
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir}: no such directory of labelled answers (--data)")
    attributor = AT2Attributor.from_pretrained(args.model, detector=False, truncate=True)
    records, answers = load_all(attributor, data_dir, args.work_dir, TRAIN_DATA)
    detector, extras = fit_detector(attributor, records, "at2-rag " + " ".join(args.argv), answers)
    out = Path(args.out or f"runs/{attributor.lm.model_id.replace('/', '__')}.detector.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    detector.save(out)
    report = Path(args.json or "runs/detector_fit.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"detector": str(out), "metrics": detector.metrics, "thresholds": detector.thresholds,
                                  **{k: v for k, v in extras.items() if k != "at2_only"}}, indent=1))
    baselines = Path(args.baselines)
    baselines.parent.mkdir(parents=True, exist_ok=True)
    baselines.write_text(json.dumps({k: extras[k] for k in ("word_overlap_threshold", "at2_only")}))
    print(f"{detector.notes}\nthresholds {detector.thresholds}\ndetector: {out}\nreport: {report}\n"
          f"baselines: {baselines}")


def cmd_bench(args) -> None:
    if args.name == "hallucination":
        from . import AT2Attributor
        from .eval.hallucination import bench, plot_reliability, print_bench

        if not args.data or not Path(args.data).is_file():
            raise UsageError("bench hallucination needs --data FILE.jsonl (labelled answers in the shared format)")
        attributor = AT2Attributor.from_pretrained(args.model, truncate=True)
        baselines = json.loads(Path(args.baselines).read_text()) if Path(args.baselines).is_file() else None
        result = bench(attributor, args.data, args.work_dir or "runs/hallucination", args.part, baselines)
        print_bench(result)
        out = Path(args.json or "runs/hallucination.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
        if args.plot:
            plot_reliability(result, args.plot)
            print(f"wrote {args.plot}")
        return
    if args.name == "compression":
        from . import AT2Attributor
        from .embeddings import minilm_embedder
        from .eval.compression import plot, print_table, run

        examples = _rows(_data(args.data, "validation"), args.limit)
        attributor = AT2Attributor.from_pretrained(args.model, max_new_tokens=32)
        if attributor.keep_rule is None:
            print("no keep rule ships for this model: budget='auto' and threshold='auto' are left out",
                  file=sys.stderr)
        result = run(attributor, examples, args.work_dir or "runs/compression", minilm_embedder(),
                     answers=not args.no_answers, rag_dir=args.rag)
        print_table(result)
        out = Path(args.json or "runs/compression.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        plot(result, args.plot or out.with_suffix(".png"))
        print(f"wrote {out} and {args.plot or out.with_suffix('.png')}")
        return
    if args.name == "hotpotqa":
        from .eval.pruning import main as bench_main

        _rows(_data(args.data, "validation"), args.limit)
        bench_main(["--data", str(_data(args.data, "validation")), "--limit", str(args.limit), "--json",
                    args.json or "runs/hotpotqa_pruning.json", "--esm-ablations", str(args.esm_ablations),
                    *(["--model", args.model] if args.model else [])])
        return
    from . import AT2Attributor
    from .eval.citations import print_table, run
    from .embeddings import minilm_embedder

    examples = _rows(_data(args.data, "validation"), args.limit)
    attributor = AT2Attributor.from_pretrained(args.model, max_new_tokens=32)
    result = run(attributor, examples, args.work_dir or "runs/citations", minilm_embedder(), args.esm_rows)
    print_table(result)
    out = Path(args.json or "runs/citations.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


def _ray_options(p) -> None:
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray (needs at2-rag[ray]): 'local' (default) starts a local instance; or a cluster "
                   "address such as 'auto' or 'ray://head:10001'")
    p.add_argument("--workers", type=_positive, default=1, help="with --ray: model-holding actors")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="at2-rag", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, limit):
        p.add_argument("--data", help="HotpotQA jsonl (required; e.g. ../shared/data/hotpotqa/<split>.jsonl)")
        p.add_argument("--limit", type=_positive, default=limit, help="rows to use (at least 1)")
        p.add_argument("--model", help="hub id, local directory or .gguf (default: bundled SmolLM2-135M-Instruct)")

    p = sub.add_parser("demo", help="prune and cite stand-in LLM answers (HotpotQA + shared RAG corpus), then the "
                       "fully local mode; writes the citation view as HTML")
    common(p, 3)
    p.add_argument("--coefficients")
    p.add_argument("--rag", required=True, help="the shared RAG corpus directory (corpus.jsonl, questions.jsonl)")
    p.add_argument("--top-k", type=_positive, default=None, help="keep exactly this many passages (default: as "
                   "many as the answer needs, by the shipped keep rule, and compress them to the sentences it needs)")
    p.add_argument("--html", default="reports/demo.html")
    p.set_defaults(func=cmd_demo)

    for name, func, what in (("cite", cmd_cite, "cite each sentence of given answers and flag what the passages do "
                              "not support"),
                             ("compress", cmd_compress, "keep the passage sentences given answers rely on")):
        p = sub.add_parser(name, help=what)
        p.add_argument("input", help=".json (an object or a list) or .jsonl of {query|question, passages, "
                       "response|answer} (passages: strings or {title, text}); no response: the attributor drafts")
        p.add_argument("--model", help="hub id, local directory or .gguf (default: bundled SmolLM2-135M-Instruct)")
        p.add_argument("--precision", choices=["auto", "float32", "bfloat16", "int8"], default=None,
                       help="number format of the pass on CPU (default: float32; auto: bfloat16 where the CPU "
                       "computes it natively)")
        p.add_argument("--json", help="write one result per line (JSONL)")
        p.add_argument("--html", help="write the view as a page")
        if name == "cite":
            p.add_argument("--strictness", choices=["lenient", "balanced", "strict"], default=None)
        else:
            p.add_argument("--budget", default="auto", help="'auto', a share of tokens (0.3) or a token count (400)")
        p.set_defaults(func=func)

    lab = sub.add_parser("lab", help="fit shipped files and run benchmarks").add_subparsers(dest="lab_command",
                                                                                           required=True)

    p = lab.add_parser("train", help="learn AT2 coefficients from ablations")
    common(p, None)
    p.add_argument("--out", required=True, help="coefficient file to write (.safetensors)")
    p.add_argument("--level", "--source-kind", dest="level", choices=["passage", "sentence"], default="passage",
                   help="passages, or the sentences inside them (--source-kind: the old name)")
    p.add_argument("--masks", type=int, default=32)
    p.add_argument("--responses", choices=["generated", "gold"], default="generated",
                   help="attribute the model's own answers, or the gold answer as a short sentence (teacher-forced)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help="also cut responses into chunks of this many tokens as training targets")
    p.add_argument("--families", default="attention-weight",
                   help="feature families θ weighs: attention-weight (the paper's), value-norm, output-norm, or "
                   "several joined by '+'")
    p.add_argument("--l2", type=float, default=0.0, help="L2 penalty on θ (standardised units)")
    p.add_argument("--ablations", help="reuse ablations exported by an earlier run (.jsonl.gz): only the cheap "
                   "feature pass runs for the examples it holds")
    p.add_argument("--work-dir", default="runs/train", help="collected ablations (resumable)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--fit", action="store_true", help="with shards: fit on everything collected so far")
    p.add_argument("--contexts", type=_positive, help="train on this many recombined contexts of the rows (a "
                   "subset of a row's passages plus other rows' passages, shuffled), each read with --kinds; "
                   "--responses is then ignored")
    p.add_argument("--kinds", default="gold,support,greedy,sampled",
                   help="with --contexts: responses per context (gold answer, supporting-fact sentence, the model's "
                   "greedy and sampled drafts)")
    p.add_argument("--seed", type=int, default=0, help="with --contexts: the recombination seed")
    p.add_argument("--max-passages", type=_positive, default=10,
                   help="with --contexts: passages per context at most (3 at least; lower it for a short window)")
    p.add_argument("--exclude-titles", help="with --contexts: a HotpotQA jsonl whose passage titles never enter a "
                   "context (default: validation.jsonl beside --data)")
    target_options(p)
    _ray_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("attribute", help="attribute a JSONL corpus of {id, query, passages, response?} records "
                       "(resumable; --ray to spread it over a Ray cluster)")
    p.add_argument("--data", required=True, help="input JSONL, one record per line")
    p.add_argument("--out", required=True, help="results JSONL (appended; ids already there are skipped); bad "
                   "records go to OUT.errors.jsonl")
    p.add_argument("--model", help="hub id, local directory or .gguf (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--coefficients")
    p.add_argument("--sentence-coefficients")
    p.add_argument("--max-new-tokens", type=_positive, default=64, help="for records without a response")
    p.add_argument("--batch-size", type=_positive, default=4, help="records per Ray batch")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs per Ray worker (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    _ray_options(p)
    p.set_defaults(func=cmd_attribute)

    p = lab.add_parser("export-coefficients", help="write coefficients in the AT2 reference's score_estimator.pt "
                       "format (attention-weight family)")
    p.add_argument("out", help="output .pt path")
    p.add_argument("--format", choices=["at2"], default="at2", help="the reference's LinearScoreEstimator format")
    p.add_argument("--coefficients", help="a .safetensors coefficient file (default: the shipped one)")
    p.add_argument("--level", "--source-kind", dest="level", choices=["passage", "sentence"], default="sentence",
                   help="which shipped file when --coefficients is not given")
    p.set_defaults(func=cmd_export_coefficients)

    p = lab.add_parser("calibrate", help="fit evidence models, abstention thresholds and fusion weights on train rows")
    common(p, None)
    p.add_argument("--out", required=True, help="calibration file to write (.json)")
    p.add_argument("--work-dir", default="runs/calibrate", help="per-row records (resumable)")
    p.set_defaults(func=cmd_calibrate)

    p = lab.add_parser("fit-keep-rule", help="fit the keep rule of compress(budget='auto') and "
                       "prune(threshold='auto') on HotpotQA train rows")
    common(p, None)
    p.add_argument("--out", required=True, help="keep-rule file to write (.json)")
    p.add_argument("--work-dir", default="runs/keep_rule", help="per-row records (resumable)")
    p.add_argument("--json", help="fit report: input selection, auto rules compared, pruning threshold")
    p.set_defaults(func=cmd_fit_keep_rule)

    p = lab.add_parser("evaluate", help="LDS and top-k drop of several scorers side by side")
    common(p, 40)
    p.add_argument("--coefficients")
    p.add_argument("--scorers", default="at2,average-attention,gradient,esm-32")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16", "int8"], default=None,
                   help="number format of every pass, ablations included (default: float32 on CPU)")
    p.add_argument("--extra-coefficients", nargs="*", help="more coefficient files (e.g. other feature families), "
                   "each scored as its own AT2 scorer")
    p.add_argument("--level", choices=["passage", "sentence"], default="passage")
    p.add_argument("--responses", choices=["generated", "gold"], default="generated")
    p.add_argument("--ks", default="1,2,3", help="top-k drop sizes, comma-separated")
    target_options(p)
    p.add_argument("--json")
    p.add_argument("--work-dir", help="keep per-example ablations and scores here: resumable, shardable, and "
                   "re-scoring with new coefficients (or another --target) reuses everything else")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.set_defaults(func=cmd_evaluate)

    p = lab.add_parser("fit-detector", help="fit the unsupported-sentence detector on labelled RAG answers")
    p.add_argument("--data", required=True, help="directory of labelled answers (e.g. ../shared/data/hallucination)")
    p.add_argument("--model", help="attributor model (default: the bundled one)")
    p.add_argument("--work-dir", default="runs/detector", help="per-answer detector inputs (resumable)")
    p.add_argument("--out", help="detector file (default runs/<model>.detector.json)")
    p.add_argument("--json", help="fit report: model choice, calibration curve, reliability table")
    p.add_argument("--baselines", default="runs/detector_baselines.json",
                   help="baselines fit on the same train parts, for bench hallucination")
    p.set_defaults(func=cmd_fit_detector)

    p = lab.add_parser("bench", help="benchmarks")
    p.add_argument("name", choices=["hotpotqa", "citations", "hallucination", "compression"],
                   help="hotpotqa: pruning (answer F1 after keeping top-k passages); citations: finding supporting "
                   "facts; hallucination: unsupported sentences and spans of labelled answers (--data FILE.jsonl); "
                   "compression: supporting-fact recall against the share of tokens kept, answer F1")
    p.add_argument("--part", choices=["train", "calibration", "validation"],
                   help="hallucination: only this part of the file (split by source); default all answers")
    p.add_argument("--baselines", default="runs/detector_baselines.json",
                   help="hallucination: baselines written by fit-detector (word overlap, AT2-only)")
    common(p, 40)
    p.add_argument("--json", help="results file (default: runs/<name>.json)")
    p.add_argument("--plot", help="hallucination: reliability diagram of the detector; compression: recall against "
                   "tokens kept (PNG)")
    p.add_argument("--esm-ablations", type=int, default=32, help="hotpotqa: ESM ablations, 0 to skip ESM")
    p.add_argument("--esm-rows", type=int, default=20, help="citations: rows that also get ESM-32 (slow)")
    p.add_argument("--work-dir", help="citations, compression: per-row records (resumable; default "
                   "runs/<name>)")
    p.add_argument("--rag", help="compression: the shared RAG corpus directory (the Rosetta Stone case)")
    p.add_argument("--no-answers", action="store_true", help="compression: skip the answer F1 generations")
    p.set_defaults(func=cmd_bench)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LAB_COMMANDS:
        print(f"at2-rag {argv[0]} is deprecated: use at2-rag lab {argv[0]}", file=sys.stderr)
        argv = ["lab", *argv]
    args = parser.parse_args(argv)
    args.argv = argv
    args.command = " ".join(filter(None, [args.command, getattr(args, "lab_command", None)]))
    from .errors import AT2Error

    try:
        args.func(args)
    except UsageError as exc:
        print(f"at2-rag {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)
    except AT2Error as exc:
        print(f"at2-rag {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Training collection on Ray actors (the optional ``ray`` extra): each actor loads the model once and collects
ablation files exactly as the single-process collector writes them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..distributed import _worker_resources, init_ray


class ExampleCollector:
    """Ray actor: collects training ablations (single examples, or recombined contexts with ``contexts=True``)
    with a model loaded once."""

    def __init__(self, model: str | None, examples: Sequence, kwargs: dict, contexts: bool = False):
        from ..lm import load_model

        self.lm = load_model(model)
        self.examples = examples
        self.kwargs = kwargs
        self.contexts = contexts

    def collect(self, index: int) -> list[tuple[str, bytes]]:
        """The example's files (names and bytes), exactly as the single-process collector writes them."""
        from .theta import collect_contexts, collect_examples

        collector = collect_contexts if self.contexts else collect_examples
        with tempfile.TemporaryDirectory() as tmp:
            paths = collector(self.lm, self.examples, tmp, shard=index, num_shards=len(self.examples),
                              progress=False, **self.kwargs)
            paths += sorted(Path(tmp).glob("*.done"))
            return [(path.name, path.read_bytes()) for path in paths]


def _finished(out_dir: Path, index: int, example, contexts: bool) -> bool:
    return (out_dir / f"{index:05d}-{example.id}.{'done' if contexts else 'npz'}").exists()


def collect_on_ray(model: str | None, examples: Sequence, out_dir: str | Path, address: str | None = "local",
                   workers: int = 1, num_gpus: float | None = None, cpus_per_worker: float = 1.0,
                   progress: bool = True, contexts: bool = False, **kwargs) -> list[str]:
    """Collect the examples whose files are missing from ``out_dir`` on ``workers`` Ray actors (dynamic load
    balancing); the driver writes each file as it arrives, so an interrupted run resumes where it stopped.
    ``kwargs`` go to ``theta.collect_examples``, or ``theta.collect_contexts`` with ``contexts``."""
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    ray = init_ray(address)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i, ex in enumerate(examples) if not _finished(out_dir, i, ex, contexts)]
    if not todo:
        return []
    options = {**_worker_resources(ray, num_gpus, cpus_per_worker), "max_restarts": 2, "max_task_retries": 2}
    actor = ray.remote(ExampleCollector).options(**options)
    pool = ActorPool([actor.remote(model, list(examples), kwargs, contexts) for _ in range(min(workers, len(todo)))])
    written = []
    for files in tqdm(pool.map_unordered(lambda a, i: a.collect.remote(i), todo), total=len(todo),
                      desc="collect (ray)", disable=not progress):
        for name, payload in sorted(files, key=lambda f: f[0].endswith(".done")):  # the marker last
            tmp = out_dir / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(payload)
            tmp.rename(out_dir / name)
            written.append(name)
    return written

"""Ray backends (optional extra ``at2-rag[ray]``): corpus attribution as a Ray Data pipeline, and training
collection as a pool of Ray actors. Each actor loads the model once; results are written by the driver as they
arrive, in the same formats as the single-process paths, so a run can stop anywhere and resume."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .corpus import (
    AttributionRecord,
    AttributionRecordResult,
    RecordError,
    ResultWriter,
    attribute_records,
    finished_ids,
    parse_record,
)
from .errors import AT2Error


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise AT2Error("running on Ray needs the ray extra: pip install 'at2-rag[ray]'") from exc
    return ray


def init_ray(address: str | None = "local", num_cpus: int | None = None):
    """Connect to the Ray cluster at ``address`` (``auto``, ``ray://host:10001``, ...) or start a local one
    (``local``). A session already initialised in this process is reused."""
    ray = _ray()
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address in (None, "local"):
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    return ray


MAX_BLOCKS = 10_000


def _num_blocks(data: Path, batch_size: int) -> int:
    """One block per batch of lines (at most ``MAX_BLOCKS``). Ray's default packs a small file into a few large
    blocks: an actor then returns a block's results only when all of it is done, so results land in bursts and a
    crash loses a whole block of work."""
    with data.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(1, min(MAX_BLOCKS, -(-lines // batch_size)))


def _worker_resources(ray, num_gpus: float | None, num_cpus: float) -> dict:
    """One GPU per worker when the cluster has GPUs (unless told otherwise), CPU workers otherwise."""
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"num_gpus": num_gpus, "num_cpus": num_cpus}


class RecordAttributor:
    """Ray Data actor: one attributor, loaded once, attributing batches of raw JSONL lines."""

    def __init__(self, attributor_kwargs: dict, done: frozenset[str]):
        from .attributor import AT2Attributor

        self.attributor = AT2Attributor.from_pretrained(**attributor_kwargs)
        self.done = done

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kinds, lines = [], []
        for text in batch["text"]:
            parsed = parse_record(str(text), None)
            if isinstance(parsed, AttributionRecord):
                if parsed.id in self.done:
                    continue
                parsed = attribute_records(self.attributor, [parsed], [None])[0]
            kinds.append("error" if isinstance(parsed, RecordError) else "result")
            lines.append(parsed.model_dump_json())
        return {"kind": np.array(kinds, dtype=object), "json": np.array(lines, dtype=object)}


def run_ray(data: str | Path, out: str | Path, attributor_kwargs: dict, address: str | None = "local",
            workers: int = 1, batch_size: int = 4, num_gpus: float | None = None, cpus_per_worker: float = 1.0,
            progress: bool = True) -> dict:
    """Attribute every pending record of ``data`` with a pool of ``workers`` Ray actors, appending to ``out``.

    ``attributor_kwargs`` go to ``AT2Attributor.from_pretrained`` in each actor (model, coefficients, ...).
    Results are appended (and synced) by this driver as batches finish: after a crash, run again to resume.
    """
    from tqdm.auto import tqdm

    ray = init_ray(address)
    done = frozenset(finished_ids(out))
    start = time.perf_counter()
    # Reading takes no CPU reservation: with every CPU held by an attributor actor, a reserving read never starts.
    data = Path(data).resolve()
    ds = ray.data.read_text(str(data), num_cpus=0, override_num_blocks=_num_blocks(data, batch_size)).map_batches(
        RecordAttributor, fn_constructor_kwargs={"attributor_kwargs": attributor_kwargs, "done": done},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers), batch_format="numpy",
        **_worker_resources(ray, num_gpus, cpus_per_worker))
    with ResultWriter(out) as writer:
        for row in tqdm(ds.iter_rows(), desc="attribute (ray)", disable=not progress):
            model = RecordError if row["kind"] == "error" else AttributionRecordResult
            writer.write(model.model_validate_json(row["json"]))
    return writer.counts(len(done), start)

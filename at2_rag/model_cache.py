"""A converted copy of each GGUF model the attributor loads, so later loads skip transformers' GGUF reader.

Reading a GGUF file through transformers parses its tokenizer metadata (about 49k tokens and merges for
SmolLM2) in Python and dequantises every tensor: 12-20 s on two cores, paid by every new process. After the
first load, the tokenizer (``tokenizer.json``) and the dequantised float32 weights (safetensors) are saved
under ``$AT2_RAG_CACHE`` (default ``$XDG_CACHE_HOME/at2-rag``, else ``~/.cache/at2-rag``), keyed by the file's
path, size and modification time and the transformers version that converted it; a later load reads them in
a few seconds. The weights are the same numbers (float32 holds every dequantised value), so scores are
identical. Writing a copy removes older copies of the same file and copies whose file is gone.
``AT2_RAG_CACHE=off`` turns the copy off; a cache that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)
OFF = ("off", "0", "false", "no")
COMPLETE = "at2-rag-complete"  # written last: a directory without it is an interrupted copy


def cache_root() -> Path | None:
    """Where converted models go, or None when the cache is turned off."""
    value = os.environ.get("AT2_RAG_CACHE")
    if value is not None and value.strip().lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "at2-rag"


def converted_dir(gguf: Path) -> Path | None:
    """The cache directory of ``gguf``'s converted copy (whether or not it exists yet); None when off."""
    import transformers

    root = cache_root()
    if root is None:
        return None
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return root / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def find(gguf: Path) -> Path | None:
    """The complete converted copy of ``gguf``, if one exists."""
    where = converted_dir(gguf)
    return where if where is not None and (where / COMPLETE).is_file() else None


def load(gguf: Path, dtype):
    """``(model, tokenizer)`` from ``gguf``'s converted copy in ``dtype``, or None when there is none. A copy
    that does not load (damaged on disk) is removed with a warning, and the caller reads the GGUF file again."""
    where = find(gguf)
    if where is None:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        return AutoModelForCausalLM.from_pretrained(where, dtype=dtype), AutoTokenizer.from_pretrained(where)
    except Exception as exc:  # noqa: BLE001 - any failure of a cache entry means: rebuild it from the source
        logger.warning("the converted copy of %s in %s does not load (%s); removing it and reading the GGUF file",
                       gguf, where, exc)
        shutil.rmtree(where, ignore_errors=True)
        return None


def write_model(model, where: Path) -> None:
    """The model's config and float32 weights in the standard layout (``config.json``, ``model.safetensors``).
    ``save_pretrained`` refuses a GGUF-loaded model even once it is dequantised, so the files are written here,
    without the GGUF quantisation entry; tied weights are stored once."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (where / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(where)
    save_model(model, str(where / "model.safetensors"), metadata={"format": "pt"})


def _remove_stale(kept: Path) -> None:
    """Remove the other copies of the same file (an older version of it) and copies whose file is gone, so a
    cache shared by many environments does not grow without bound."""
    source = json.loads((kept / COMPLETE).read_text())["source"]
    for other in kept.parent.iterdir():
        marker = other / COMPLETE
        if other == kept or not marker.is_file():
            continue
        try:
            theirs = json.loads(marker.read_text()).get("source", "")
        except (OSError, ValueError):
            continue
        if theirs == source or not Path(theirs).is_file():
            shutil.rmtree(other, ignore_errors=True)


def save(gguf: Path, model, tokenizer) -> Path | None:
    """Save ``gguf``'s loaded float32 model and tokenizer as its converted copy (atomically: written beside it,
    then renamed). Returns the copy's directory, or None when the cache is off or cannot be written."""
    where = converted_dir(gguf)
    if where is None:
        return None
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=where.parent))
        try:
            write_model(model, staging)
            tokenizer.save_pretrained(staging)
            (staging / COMPLETE).write_text(json.dumps({"source": str(gguf.resolve())}) + "\n")
            for path in (staging, *staging.iterdir()):  # mkdtemp and safetensors make them private
                path.chmod(0o755 if path.is_dir() else 0o644)
            if not (where / COMPLETE).is_file():  # else another process finished first: keep its copy
                if where.exists():  # an interrupted copy
                    shutil.rmtree(where, ignore_errors=True)
                try:
                    staging.rename(where)
                except OSError:
                    if not (where / COMPLETE).is_file():  # not a race lost to a complete copy
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_stale(where)
    except OSError as exc:
        logger.warning("could not keep a converted copy of %s in %s (%s); the next load reads the GGUF file again",
                       gguf, where.parent, exc)
        return None
    logger.info("kept a converted copy of %s in %s", gguf, where)
    return where

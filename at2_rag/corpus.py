"""Attribute a corpus of logged answers: JSONL records in, one result line per record out.

The runner is resumable (ids already in the output are skipped; a line cut short by a crash is dropped and
redone) and never stops on a bad record: its id and the reason go to an errors file. The same record
functions run in one process here and inside Ray actors (``distributed.py``), so both give equal results.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator

from .attributor import AT2Attributor
from .results import Citation
from .passages import Passage


class AttributionRecord(BaseModel):
    """One input line: a query, its passages and optionally the response to attribute (absent: generated)."""

    id: str
    query: str
    passages: list[Passage | str | tuple[str, str]] = Field(validation_alias=AliasChoices("passages", "sources"))
    response: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("passages", mode="before")
    @classmethod
    def _number_passages(cls, value):
        """Passage objects given as dicts without an id are numbered by position, like plain strings."""
        if isinstance(value, list):
            return [{**item, "id": str(i)} if isinstance(item, dict) and "id" not in item else item
                    for i, item in enumerate(value)]
        return value

    def passage_objects(self) -> list[Passage]:
        """Passages as ``Passage`` objects; plain strings and (title, text) pairs are numbered by position."""
        out = []
        for i, item in enumerate(self.passages):
            if isinstance(item, Passage):
                out.append(item)
            elif isinstance(item, str):
                out.append(Passage(id=str(i), text=item))
            else:
                out.append(Passage(id=str(i), title=item[0], text=item[1]))
        return out


class AttributionRecordResult(BaseModel):
    """One output line: source and source-sentence scores, citations and timings for a record."""

    id: str
    response: str
    generated: bool = Field(description="True when this model generated the response (none was given).")
    passage_ids: list[str]
    scores: list[float] = Field(description="Per source, in input order.")
    sentences: list[tuple[int, int, int]] = Field(description="(source index, start, end) of each source sentence.")
    sentence_scores: list[float]
    citations: list[Citation]
    formatted: str = Field(description="The response with [n] markers (n = source index + 1).")
    scorer: str
    model: str
    truncated: bool
    timings: dict[str, float]


class RecordError(BaseModel):
    """A record that could not be attributed, and why (written to the errors file; the run goes on)."""

    id: str | None
    line: int | None = Field(default=None, description="1-based line number in the input file (single-process "
                             "runs; Ray reads lines in parallel blocks and reports the id, or the text without one).")
    error: str
    text: str | None = Field(default=None, description="The start of the line, when it has no id to name it by.")


def parse_record(text: str, line: int | None) -> AttributionRecord | RecordError:
    """A record from one JSONL line, or the reason it is not one."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return RecordError(id=None, line=line, error=f"not JSON: {exc}", text=text[:200])
    record_id = raw.get("id") if isinstance(raw, dict) else None
    try:
        return AttributionRecord.model_validate(raw)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
        if record_id is None:
            return RecordError(id=None, line=line, error=reason, text=text[:200])
        return RecordError(id=str(record_id), line=line, error=reason)


def attribute_records(attributor: AT2Attributor, records: Iterable[AttributionRecord],
                      lines: Iterable[int | None]) -> list[AttributionRecordResult | RecordError]:
    """Attribute records one by one; a record that fails (bad input, too long for the window, out of memory)
    becomes a ``RecordError`` and the others go on."""
    out: list[AttributionRecordResult | RecordError] = []
    for record, line in zip(records, lines):
        try:
            out.append(attribute_record(attributor, record))
        except Exception as exc:  # noqa: BLE001 - one failing record must not stop a corpus run
            out.append(RecordError(id=record.id, line=line, error=f"{type(exc).__name__}: {exc}"))
    return out


def attribute_record(attributor: AT2Attributor, record: AttributionRecord) -> AttributionRecordResult:
    """Attribute one record (teacher-forced when it carries a response) and cite its sentences."""
    start = time.perf_counter()
    attribution = attributor.attribute(record.query, record.passage_objects(), record.response)
    cited = attributor.pipeline.cite(attribution)
    return AttributionRecordResult(
        id=record.id,
        response=attribution.response,
        generated=record.response is None,
        passage_ids=[s.id for s in attribution.passages],
        scores=attribution.scores,
        sentences=[(s.passage_index, s.start, s.end) for s in attribution.sentences],
        sentence_scores=attribution.sentence_scores,
        citations=cited.citations,
        formatted=cited.formatted,
        scorer=attribution.scorer,
        model=attribution.model,
        truncated=attribution.truncated,
        timings={**attribution.timings, "total_s": time.perf_counter() - start},
    )


def errors_path(out: str | Path) -> Path:
    """Where a run writes its bad records: ``OUT.errors.jsonl`` beside ``OUT``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".errors.jsonl")


def finished_ids(out: str | Path) -> set[str]:
    """Ids already written to ``out`` (and to its errors file); a last line cut short by a crash is removed."""
    done: set[str] = set()
    for path in (Path(out), errors_path(out)):
        if not path.is_file():
            continue
        keep = 0
        with path.open("rb") as f:
            for raw in f:
                try:
                    item = json.loads(raw)
                except json.JSONDecodeError:
                    break
                if not raw.endswith(b"\n"):
                    break
                keep += len(raw)
                if item.get("id") is not None:
                    done.add(str(item["id"]))
        if keep < path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(keep)
    return done


def pending_lines(data: str | Path, done: set[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of input lines whose id is not done (unparseable lines are kept: they get reported)."""
    with Path(data).open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record_id = json.loads(text).get("id")
            except (json.JSONDecodeError, AttributeError):
                record_id = None
            if record_id is None or str(record_id) not in done:
                yield number, text


class ResultWriter:
    """Appends result and error lines, flushed and synced one by one so a crash loses no finished record."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._results = self.out.open("a", encoding="utf-8")
        self._errors = errors_path(self.out).open("a", encoding="utf-8")
        self.written = self.failed = 0
        self.first_write: float | None = None

    def write(self, item: AttributionRecordResult | RecordError) -> None:
        if self.first_write is None:
            self.first_write = time.perf_counter()
        f = self._errors if isinstance(item, RecordError) else self._results
        f.write(item.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
        if isinstance(item, RecordError):
            self.failed += 1
        else:
            self.written += 1

    def counts(self, skipped: int, start: float) -> dict:
        """What a run did: records skipped, written and failed, seconds in all and until the first line."""
        first = None if self.first_write is None else self.first_write - start
        return {"skipped": skipped, "written": self.written, "errors": self.failed,
                "seconds": time.perf_counter() - start, "first_result_seconds": first}

    def close(self) -> None:
        self._results.close()
        self._errors.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_local(attributor: AT2Attributor, data: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Attribute every pending record of ``data`` in this process, appending to ``out``; returns counts."""
    from tqdm.auto import tqdm

    done = finished_ids(out)
    start = time.perf_counter()
    with ResultWriter(out) as writer:
        for number, text in tqdm(list(pending_lines(data, done)), desc="attribute", disable=not progress):
            parsed = parse_record(text, number)
            if isinstance(parsed, RecordError):
                writer.write(parsed)
                continue
            writer.write(attribute_records(attributor, [parsed], [number])[0])
    return writer.counts(len(done), start)

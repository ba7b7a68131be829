"""The steps of a batch run (the batch state machine, ``infra/batch.asl.json``), run by the batch function.

plan      lists the objects under the input prefix: CSV and Parquet ones become the Distributed Map's items
          (written as a JSON list its ItemReader reads), the others are recorded as skipped with the reason; and
          says how many the map scores at once (its MaxConcurrencyPath): the model's batch_max_concurrency in the
          function's own mlops.toml, the one the CDK app checked, not a number whoever starts a run could choose
score     one object, chunk by chunk (``mlops.batch.chunks``): each row is validated against the served schema and
          scored exactly as the API does (``mlops.serving.requests.validate_row``
          and ``mlops.serving.scoring.score``); a chunk that fails is
          read and scored again, up to ``ATTEMPTS`` times, then reported. Rows in = rows out + rows failed.
finish    gathers the objects' reports into the manifest.

Every report is an S3 object under the run's work prefix, so nothing large travels through Step Functions. Every
object a run writes is created, never overwritten (conditional writes, ``ObjectStore`` ``create_only``): a step that
runs again (the state machine's retries) finds its own report or manifest and answers with it; an output object that
is already there with other content fails the object's step instead of replacing it.

Why one module of this length: the three steps (plan, score, finish) share the run's layout and its counting
(rows in = rows out + rows failed, per object and in total), which must agree across them.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from botocore.exceptions import ClientError

from mlops.aws.storage import ObjectStore, parse_s3_uri
from mlops.batch.chunks import Chunk, CsvReader, CsvWriter, ParquetReader, ParquetWriter
from mlops.batch.start import (
    WORK_PREFIX,
    BatchObject,
    BatchSpec,
    FinishStep,
    ObjectFailedStep,
    PlanStep,
    ScoreStep,
    split_prefix,
)
from mlops.core.config import ModelConfig, ProjectConfig, load_config
from mlops.core.errors import MlopsError
from mlops.registry.store import Registry
from mlops.serving.cache import LoadedModel, ModelCache
from mlops.serving.errors import InvalidInput, NoModelDeployed
from mlops.serving.requests import FeatureSpec, validate_row
from mlops.serving.scoring import score

ATTEMPTS = 3  # reads and scorings of one chunk before it is reported as failed
CHUNK_ROWS = 10_000
LISTED_FAILURES = 1000  # per object in the manifest; rows_failed always counts them all
FORMATS: dict[str, Literal["csv", "parquet"]] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CONTENT_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
COMPRESSED = (".gz", ".zip", ".bz2", ".zst", ".xz", ".snappy")
NO_ANSWER = "the model gives no finite answer for these values; they are far outside the range it was trained on"


class BatchInputError(MlopsError):
    """The input or output prefix cannot be used (no such bucket, no access)."""


def _store(uri: str, s3: Any) -> tuple[ObjectStore, str]:
    bucket, key = parse_s3_uri(uri)
    return ObjectStore(s3, bucket), key


def _put_json(s3: Any, uri: str, value: Any) -> None:
    store, key = _store(uri, s3)
    store.put_json(key, value, create_only=True)


def _earlier(s3: Any, uri: str) -> Any | None:
    """What an earlier attempt of this step wrote at ``uri``, if it got that far."""
    store, key = _store(uri, s3)
    return store.get_json(key) if store.exists(key) else None


def _get_json(s3: Any, uri: str) -> Any:
    store, key = _store(uri, s3)
    return store.get_json(key)


def skip_reason(key: str) -> str | None:
    name = key.lower()
    if name.endswith(COMPRESSED):
        return "compressed objects are not read; store it uncompressed as .csv, or as Parquet (compressed inside)"
    if not name.endswith(tuple(FORMATS)):
        return "not CSV or Parquet by its name (.csv, .parquet or .pq)"
    return None


# -- plan ----------------------------------------------------------------------------------------------------------
def plan(spec: BatchSpec, s3: Any, config: ModelConfig) -> dict[str, Any]:
    bucket, prefix = split_prefix(spec.input, "input")
    objects: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key: str = item["Key"]
                if key.endswith("/"):  # a folder marker, not an object
                    continue
                reason = skip_reason(key)
                if reason is not None:
                    skipped.append({"input": f"s3://{bucket}/{key}", "reason": reason})
                    continue
                objects.append(BatchObject(index=len(objects), key=key, relative=key[len(prefix):],
                                           format=FORMATS[Path(key.lower()).suffix], size=item["Size"]).model_dump())
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code in ("NoSuchBucket", "AccessDenied", "AllAccessDisabled"):
            raise BatchInputError(f"cannot list {spec.input}: {code}. The batch function reads under s3://<data "
                                  "bucket>/batch/ and under the prefixes models declare in mlops.toml (batch_inputs), "
                                  "as last deployed (docs/batch.md)") from exc
        raise
    items = spec.work_uri("items.json")
    _put_json(s3, items, objects)
    _put_json(s3, spec.work_uri("plan.json"), {"objects": len(objects), "skipped": skipped})
    items_bucket, items_key = parse_s3_uri(items)
    return {"items_bucket": items_bucket, "items_key": items_key, "objects": len(objects), "skipped": len(skipped),
            "max_concurrency": config.batch_max_concurrency}


# -- score ---------------------------------------------------------------------------------------------------------
def _from_text(spec: FeatureSpec, text: str) -> Any:
    """A CSV cell as the API would receive it in JSON: an empty cell is missing, a number is a number."""
    if text == "":
        return None
    if spec.kind in ("numeric", "integer"):
        try:
            return float(text)
        except ValueError:
            return text  # validate_row names the field and the value
    return text


def per_class(loaded: LoadedModel) -> tuple[str, str] | None:
    """(output column prefix, answer key) of a classifier's probabilities or a clustering's distances, per class."""
    if loaded.model.is_classifier:
        return "probability_", "probabilities"
    return ("distance_", "distances") if loaded.model.is_clustering else None


def added_columns(loaded: LoadedModel) -> dict[str, pa.DataType]:
    if (figures := per_class(loaded)) is None:  # a regression: its prediction is a number
        return {"prediction": pa.float64(), "model_version": pa.int64()}
    return {"prediction": pa.string(), **{f"{figures[0]}{c}": pa.float64() for c in loaded.model.classes},
            "model_version": pa.int64()}


def object_problem(columns: list[str], schema: list[FeatureSpec], added: list[str]) -> tuple[str, str] | None:
    """(field, message) when no row of an object can be scored, whatever its values."""
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        return duplicated[0], f"duplicate column(s) {duplicated}; give each column one name"
    missing = [s.name for s in schema if s.name not in columns]
    if missing:
        return missing[0], f"missing feature column(s) {missing}; the model takes {[s.name for s in schema]}"
    clashing = [c for c in added if c in columns]
    if clashing:
        return clashing[0], f"the input already has column(s) {clashing}, which the predictions are written to; " \
                            "rename them"
    return None


class ObjectScorer:
    """Scores one object chunk by chunk, and counts what happened to every row."""

    def __init__(self, loaded: LoadedModel, reader: CsvReader | ParquetReader) -> None:
        self.loaded = loaded
        self.reader = reader
        self.added = added_columns(loaded)
        self.textual = isinstance(reader, CsvReader)
        # an object whose header already rules every row out (a missing feature...) is counted, not scored
        self.problem = object_problem(reader.columns, loaded.schema, list(self.added)) if reader.columns else None
        self.rows_in = self.rows_out = self.rows_failed = self.chunks = self.retries = 0
        self.failures: list[dict[str, Any]] = []
        self.failures_not_listed = 0
        self.failed_chunks: list[dict[str, Any]] = []
        self.complete = True  # every row was read

    def fail(self, row: int | None, field: str | None, message: str, count: int = 1) -> None:
        self.rows_failed += count
        if len(self.failures) < LISTED_FAILURES:
            self.failures.append({"row": row, "field": field, "message": message})
        else:
            self.failures_not_listed += 1

    def score(self, chunk: Chunk) -> tuple[list[int], dict[str, list[Any]], list[tuple[int, str | None, str]]]:
        """(positions of the scored records, the added columns for them, (row, field, message) of the others).
        Pure: a retry of the same chunk gives the same answer."""
        schema = self.loaded.schema
        failed: list[tuple[int, str | None, str]] = [(row, None, why) for row, why in chunk.bad.items()]
        clean, positions = [], []
        for position, (record, row) in enumerate(zip(chunk.records, chunk.numbers, strict=True)):
            features = {s.name: _from_text(s, record[s.name]) if self.textual else record[s.name] for s in schema}
            where = f"row {row}"
            try:
                clean.append(validate_row(features, schema, where))
            except InvalidInput as exc:
                failed.append((row, (exc.field or "").removeprefix(f"{where}.") or None, exc.message))
                continue
            positions.append(position)
        answers = score(self.loaded.model, clean) if clean else []
        keep = [p for p, a in zip(positions, answers, strict=True) if a is not None]
        failed += [(chunk.numbers[p], None, NO_ANSWER) for p, a in zip(positions, answers, strict=True) if a is None]
        found = [a for a in answers if a is not None]
        added: dict[str, list[Any]] = {"prediction": [a["prediction"] for a in found]}
        if (figures := per_class(self.loaded)) is not None:
            prefix, key = figures
            for c in self.loaded.model.classes:
                added[f"{prefix}{c}"] = [a[key][c] for a in found]
        added["model_version"] = [self.loaded.version.version] * len(found)
        return keep, added, sorted(failed, key=lambda f: f[0])

    def _attempt(self) -> tuple[Chunk, Any] | None:
        chunk = self.reader.next_chunk()
        if chunk is None:
            return None
        return chunk, (None if self.problem else self.score(chunk))

    def run(self, writer: CsvWriter | ParquetWriter | None) -> None:
        """Every chunk: read and scored (up to ``ATTEMPTS`` times), written, counted."""
        while True:
            result, failed_attempts, error = _with_retries(self._attempt, self.reader.restart)
            self.retries += min(failed_attempts, ATTEMPTS - 1)
            if error is not None:
                if not self._give_up(error):
                    return
                continue
            if result is None:
                return
            chunk, scored = result
            self.reader.commit()
            self.chunks += 1
            self.rows_in += chunk.size
            if scored is None:  # the object's problem, reported once
                self.rows_failed += chunk.size
                continue
            keep, columns, failed = scored
            for row, field, message in failed:
                self.fail(row, field, message)
            assert writer is not None
            writer.write(chunk, keep, columns)
            self.rows_out += len(keep)

    def _give_up(self, error: Exception) -> bool:
        """Report the chunk that failed every attempt; whether reading can go on after it."""
        first, why = self.reader.next_row, f"{type(error).__name__}: {error}"
        if isinstance(self.reader, ParquetReader):  # the next row group is where it is, whatever this one holds
            rows = self.reader.group_rows()
            self.rows_in += rows
            self.fail(first, None, f"rows {first}-{first + rows - 1}: the chunk failed {ATTEMPTS} times ({why}); "
                      "not scored", count=rows)
            self.failed_chunks.append({"first_row": first, "rows": rows, "attempts": ATTEMPTS, "error": why})
            self.reader.commit()
            return True
        # a CSV stream cannot be resumed past rows it could not read: the rest of the object is reported unread
        self.failed_chunks.append({"first_row": first, "rows": None, "attempts": ATTEMPTS, "error": why})
        self.failures.append({"row": first, "field": None, "message": f"rows from row {first} on could not be "
                              f"read ({why}) after {ATTEMPTS} attempts; they are not scored"})
        self.complete = False
        return False

    @property
    def status(self) -> str:
        if self.problem is not None or ((self.rows_failed or not self.complete) and not self.rows_out):
            return "failed"
        if self.rows_failed or not self.complete:
            return "partial"
        return "scored" if self.rows_in else "empty"


def _with_retries(read: Callable[[], Any], restart: Callable[[], None]) -> tuple[Any, int, Exception | None]:
    """(result, failed attempts, last error): ``read`` is tried ``ATTEMPTS`` times, ``restart`` between tries."""
    error: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return read(), attempt, None
        except Exception as exc:  # any failure of one chunk: what it was goes into the manifest
            error = exc
            if attempt + 1 < ATTEMPTS:
                time.sleep(0.2 * 2**attempt)
                restart()
    return None, ATTEMPTS, error


def _open_reader(s3: Any, bucket: str, obj: BatchObject, chunk_rows: int) -> CsvReader | ParquetReader:
    if obj.format == "csv":
        return CsvReader(s3, bucket, obj.key, chunk_rows)
    return ParquetReader(s3, bucket, obj.key, obj.size)


def score_object(spec: BatchSpec, obj: BatchObject, *, s3: Any, registry: Registry, cache: ModelCache,
                 chunk_rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """Score one object and write its output object and its report; returns the report's counts."""
    counts = ("index", "status", "rows_in", "rows_out", "rows_failed")
    if (done := _earlier(s3, spec.work_uri(f"objects/{obj.index:06d}.json"))) is not None:
        return {key: done[key] for key in counts}
    started = time.perf_counter()
    record = registry.version(spec.model, spec.model_version)
    if record is None:
        raise NoModelDeployed(f"{spec.model} v{spec.model_version} is not in the registry")
    loaded = cache.get(record)
    in_bucket, _ = split_prefix(spec.input, "input")
    reader = _open_reader(s3, in_bucket, obj, chunk_rows)
    scorer = ObjectScorer(loaded, reader)
    output = spec.output + obj.relative
    with tempfile.TemporaryDirectory() as tmp:  # /tmp: the output is uploaded once complete
        path = Path(tmp) / "out"
        writer: CsvWriter | ParquetWriter | None = None
        if scorer.problem is None and reader.columns:
            writer = (CsvWriter(path, [*reader.columns, *scorer.added]) if isinstance(reader, CsvReader)
                      else ParquetWriter(path, reader.schema, scorer.added))
        scorer.run(writer)
        if writer is not None:
            writer.close()
        if scorer.rows_out:
            store, key = _store(output, s3)
            store.put_file(key, path, content_type=CONTENT_TYPES[obj.format], create_only=True)
    if scorer.problem is not None:
        scorer.failures.append({"row": None, "field": scorer.problem[0], "message": scorer.problem[1]})
    features = {s.name for s in loaded.schema}
    report = {
        "index": obj.index, "input": f"s3://{in_bucket}/{obj.key}", "output": output if scorer.rows_out else None,
        "format": obj.format, "status": scorer.status, "rows_in": scorer.rows_in, "rows_out": scorer.rows_out,
        "rows_failed": scorer.rows_failed, "complete": scorer.complete, "chunks": scorer.chunks,
        "chunk_retries": scorer.retries, "failed_chunks": scorer.failed_chunks, "failures": scorer.failures,
        "failures_not_listed": scorer.failures_not_listed,
        "passthrough_columns": [c for c in reader.columns if c not in features],
        "seconds": round(time.perf_counter() - started, 3),
    }
    _put_json(s3, spec.work_uri(f"objects/{obj.index:06d}.json"), report)
    assert scorer.rows_in == scorer.rows_out + scorer.rows_failed
    return {key: report[key] for key in counts}


def object_failed(spec: BatchSpec, obj: BatchObject, error: dict[str, Any], s3: Any) -> dict[str, Any]:
    """The score step failed for good (its function crashed or timed out): the object is reported, unread."""
    if (done := _earlier(s3, spec.work_uri(f"objects/{obj.index:06d}.json"))) is not None:
        return {"index": obj.index, "status": done["status"]}  # it was reported after all: that report stands
    in_bucket, _ = split_prefix(spec.input, "input")
    cause = str(error.get("Cause") or "")
    with contextlib.suppress(ValueError, AttributeError):  # a Lambda error's cause is JSON with its message
        cause = json.loads(cause).get("errorMessage", cause)
    report = {"index": obj.index, "input": f"s3://{in_bucket}/{obj.key}", "output": None, "format": obj.format,
              "status": "failed", "rows_in": 0, "rows_out": 0, "rows_failed": 0, "complete": False, "chunks": 0,
              "chunk_retries": 0, "failed_chunks": [], "failures_not_listed": 0, "passthrough_columns": [],
              "failures": [{"row": None, "field": None,
                            "message": f"the object could not be scored: {error.get('Error')}: {cause}"}],
              "seconds": None}
    _put_json(s3, spec.work_uri(f"objects/{obj.index:06d}.json"), report)
    return {"index": obj.index, "status": "failed"}


# -- finish --------------------------------------------------------------------------------------------------------
SUMMARY_KEYS = ("batch_id", "model", "model_version", "input", "output", "manifest", "status", "rows_in", "rows_out",
                "rows_failed", "objects_total", "objects_failed", "objects_skipped", "started_at", "finished_at",
                "seconds")


def finish(spec: BatchSpec, s3: Any, now: datetime | None = None) -> dict[str, Any]:
    """Write the manifest; returns its summary (the execution's output: no per-row detail)."""
    if (written := _earlier(s3, spec.manifest)) is not None:
        return {key: written[key] for key in SUMMARY_KEYS}
    planned = _get_json(s3, spec.work_uri("plan.json"))
    store, prefix = _store(spec.work_uri("objects/"), s3)
    reports = sorted((store.get_json(key) for key in store.keys(prefix)), key=lambda r: r["index"])
    items = _get_json(s3, spec.work_uri("items.json"))
    reported = {r["index"] for r in reports}
    for item in items:  # an item whose child execution left no report at all (it should not happen: Catch)
        if item["index"] not in reported:
            reports.append({"index": item["index"], "input": f"s3://{split_prefix(spec.input, 'input')[0]}/"
                            f"{item['key']}", "output": None, "status": "failed", "rows_in": 0, "rows_out": 0,
                            "rows_failed": 0, "complete": False,
                            "failures": [{"row": None, "field": None, "message": "no report: the object's child "
                                          "execution failed; see the map run of the execution"}]})
    now = now or datetime.now(UTC)
    totals = {k: sum(r[k] for r in reports) for k in ("rows_in", "rows_out", "rows_failed")}
    failed = sum(1 for r in reports if r["status"] in ("failed", "partial"))
    if not reports:
        status = "empty"
    elif failed or totals["rows_failed"]:
        status = "completed_with_failures"
    else:
        status = "succeeded"
    started = datetime.fromisoformat(spec.started_at)
    manifest = {
        **spec.model_dump(), "status": status, **totals, "objects_total": len(reports), "objects_failed": failed,
        "objects_skipped": len(planned["skipped"]), "finished_at": now.isoformat(timespec="milliseconds"),
        "seconds": round((now - started).total_seconds(), 3),
        "work_prefix": spec.output + WORK_PREFIX, "objects": reports,
        "skipped": planned["skipped"],
    }
    if not reports:
        manifest["message"] = f"no CSV or Parquet object under {spec.input}"
    _put_json(s3, spec.manifest, manifest)
    assert totals["rows_in"] == totals["rows_out"] + totals["rows_failed"]
    return {key: manifest[key] for key in SUMMARY_KEYS}


def run_step(step: PlanStep | ScoreStep | ObjectFailedStep | FinishStep, *, s3: Any, registry: Registry,
             cache: ModelCache, chunk_rows: int = CHUNK_ROWS, config: ProjectConfig | None = None) -> dict[str, Any]:
    """The batch function's one entry: the step the state machine asks for. ``config``: the project's, by default
    the mlops.toml deployed with the function."""
    if isinstance(step, PlanStep):
        return plan(step.batch, s3, (config or load_config()).model(step.batch.model))
    if isinstance(step, ScoreStep):
        return score_object(step.batch, step.object, s3=s3, registry=registry, cache=cache, chunk_rows=chunk_rows)
    if isinstance(step, ObjectFailedStep):
        return object_failed(step.batch, step.object, step.error, s3)
    return finish(step.batch, s3)

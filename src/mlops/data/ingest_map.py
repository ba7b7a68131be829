"""Ingest at scale: a CSV above its model's ``ingest_map_above_mb`` is validated in parts, in parallel, by the ingest
state machine (``infra/ingest.asl.json``, a Distributed Map), then merged into ONE curated dataset with one manifest,
exactly as if one function had read it: rows in = curated + quarantined, the same rows curated and the same lines
quarantined for the same reasons, the same whole-file verdicts.

The steps, all run by the ingest function:

``plan`` (the S3 event)   reads the first chunk (the header, and the rows a contract is inferred from when the model
                          has none), then streams the object once to cut it at record boundaries into byte ranges of a
                          quarter of ``ingest_map_above_mb`` each (:class:`~mlops.data.blocks.RecordBlocks`, which
                          hashes the content on the way: the dataset's sha256), writes the ranges as a JSON list (the
                          Map's ItemReader reads it) and starts the execution, named after the content and the object
                          version: a redelivered event starts nothing twice (ExecutionAlreadyExists).
``part`` (one per range)  validates its range with the file's header and contract, in chunks, and writes its curated
                          Parquet, quarantined rows and a summary (counts, problems, new categories) with the 64-bit
                          hashes of its rows' text, under ``ingest-runs/<model>/<run>/parts/<index>/``. A part never
                          rejects for the share of bad rows: that verdict is the whole file's.
``merge``                 applies the whole-file verdicts (any part's rejection, no data row, mostly ragged rows, too
                          many bad rows over the whole file), finds duplicates across parts, writes the one dataset,
                          its quarantine and report, then the manifest (last: training starts once), and removes the
                          work files.
``abandon``               a part or the merge failed after its retries: a rejection report with the error.

Duplicates across parts: each part hashes the text of its rows (the contract's columns joined, as the validation
compares them) with pandas' SipHash of fixed key, which, unlike Python's ``hash()``, is the same in every Lambda
environment. The merge reads the parts in file order: a curated row whose text appeared on an earlier line of an
earlier part moves to the quarantine as "duplicate of line N" (its text re-read from its range), and a quarantined
row gets "; duplicate of line N" added to its reasons: what one function reading the file gives.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.core.config import ModelConfig, ProjectConfig
from mlops.core.errors import FileRejected
from mlops.data.blocks import RecordBlocks
from mlops.data.cells import column_text
from mlops.data.frames import PARQUET
from mlops.data.ingest import ContractStore, IngestOutcome, MapStarter, contract_rules, publish, reject
from mlops.data.reading import CsvReader, Header, row_errors, whole_file_verdicts
from mlops.data.schema import LINE, REASON, DataContract
from mlops.data.seen_rows import SeenRows
from mlops.data.validation import ChunkedValidation
from mlops.data.writers import CuratedWriter, QuarantineWriter

MB = 1 << 20
PART_SHARE = 4  # a range is this share of the model's ingest_map_above_mb
JOB, ITEMS = "job.json", "items.json"
TOP_REASONS = 100  # the reasons a part reports (the report shows the whole file's 10 most common)
_GOOD, _BAD = 0, 1


def part_bytes(model: ModelConfig) -> int:
    return max(1, model.ingest_map_above_mb * MB // PART_SHARE)


def run_name(sha256: str, key: str, version_id: str | None, etag: str | None) -> str:
    """The execution's name (80 characters at most): the content, and which object version delivered it."""
    delivery = hashlib.sha256(f"{key}\0{version_id}\0{etag}".encode()).hexdigest()
    return f"{sha256[:40]}-{delivery[:16]}"


def plan(outcome: IngestOutcome, model: ModelConfig, reader: CsvReader, store: ObjectStore, *, key: str,
         version_id: str | None, etag: str | None, size: int, chunk_bytes: int,
         start_map: MapStarter) -> IngestOutcome:
    """Cut the object into ranges and start the ingest state machine. Raises FileRejected for a file refused whole
    before any part runs."""
    first = next((frame for frame in reader.chunks() if not frame.empty), None)
    if first is None:
        reader.finish()  # no data row
    assert first is not None
    assert reader.header is not None
    contract = contract_rules(model, ContractStore(store))(first)  # may reject the file: the stream is still open
    del first
    reader.close()
    # cut in blocks of one chunk (bounded memory), grouped into ranges of about part_bytes
    blocks = RecordBlocks(store.open(key, version_id), chunk_bytes=min(chunk_bytes, part_bytes(model)),
                          max_bytes=model.max_file_mb * MB)
    ranges: list[dict[str, int]] = []
    try:
        for block in blocks:
            if ranges and ranges[-1]["end"] - ranges[-1]["start"] + len(block.data) <= part_bytes(model):
                ranges[-1]["end"] = block.offset + len(block.data)
            else:
                ranges.append({"index": len(ranges), "start": block.offset, "end": block.offset + len(block.data),
                               "first_line": block.first_line})
    except FileRejected:
        outcome.dataset_sha256 = blocks.drain()  # the report is named by the content's hash
        raise
    finally:
        blocks.close()
    outcome.dataset_sha256 = blocks.sha256
    name = run_name(blocks.sha256, key, version_id, etag)
    prefix = f"{layout.INGEST_RUNS}{model.name}/{name}/"
    header = reader.header
    job = {"model": model.name, "name": name, "prefix": prefix, "key": key, "version_id": version_id, "etag": etag,
           "size": size, "source": outcome.source, "sha256": blocks.sha256, "contract_version": contract.version,
           "chunk_bytes": chunk_bytes, "parts": len(ranges),
           "header": {"names": header.names, "raw": base64.b64encode(header.raw).decode(), "lines": header.lines}}
    fresh = not store.exists(prefix + JOB)  # a run of this very delivery may be under way: leave its files be
    if fresh:
        store.put_json(prefix + JOB, job)
        store.put_json(prefix + ITEMS, ranges)
    execution = start_map(name, {"job": {"bucket": store.bucket, "prefix": prefix, "items_key": prefix + ITEMS,
                                         "model": model.name, "max_concurrency": model.batch_max_concurrency}})
    outcome.status, outcome.parts, outcome.contract_version = "mapped", len(ranges), contract.version
    outcome.execution = execution or name
    if execution is None:
        outcome.reason = "this object version is being validated in parts or was already: nothing started again"
        if fresh:  # that run has ended (its work files were removed): remove what this one wrote
            store.delete([prefix + JOB, prefix + ITEMS])
    return outcome


def _header(job: dict[str, Any]) -> Header:
    value = job["header"]
    return Header(list(value["names"]), base64.b64decode(value["raw"]), int(value["lines"]))


def _range_reader(store: ObjectStore, job: dict[str, Any], part: dict[str, Any]) -> CsvReader:
    start = int(part["start"])
    return CsvReader(store.open(job["key"], job["version_id"], start=start, end=int(part["end"])), max_bytes=None,
                     chunk_bytes=int(job["chunk_bytes"]), header=None if start == 0 else _header(job), offset=start,
                     first_line=int(part["first_line"]))


def _part_prefix(job: dict[str, Any], index: int) -> str:
    return f"{job['prefix']}parts/{index:06d}/"


def text_hashes(frame: pd.DataFrame, contract: DataContract) -> np.ndarray:
    """A 64-bit hash of each row's text in the contract's columns, the same in every process (SipHash, fixed key)."""
    texts = [column_text(frame, spec.name) for spec in contract.columns]
    keys = texts[0].str.cat(texts[1:], sep="\x1f") if len(texts) > 1 else texts[0]
    return pd.util.hash_array(keys.to_numpy(dtype=object)).astype(np.uint64)


def _row_keys(frame: pd.DataFrame, bad: pd.DataFrame, contract: DataContract) -> tuple[np.ndarray, ...]:
    """(hashes, lines, kinds) of the rows a later part's row may duplicate: the curated ones and the quarantined ones
    that are neither ragged nor themselves duplicates. Curated rows keep their order (the Parquet's)."""
    lines = frame.index.to_numpy(dtype=np.int64)
    bad_lines = bad[LINE].to_numpy(dtype=np.int64)
    duplicates = bad_lines[bad[REASON].astype(str).str.contains("duplicate of line", regex=False).to_numpy()]
    skip = np.isin(lines, np.fromiter(row_errors(frame), dtype=np.int64)) | np.isin(lines, duplicates)
    keep = np.flatnonzero(~skip)
    kinds = np.where(np.isin(lines[keep], bad_lines), _BAD, _GOOD).astype(np.int8)
    return text_hashes(frame.iloc[keep], contract), lines[keep], kinds


def run_part(store: ObjectStore, job: dict[str, Any], part: dict[str, Any], work: Path) -> dict[str, Any]:
    """Validate one range; its outputs and summary under its own prefix. A whole-file rejection found here (columns
    not the contract's, an unparseable record) is recorded in the summary for the merge to apply."""
    index = int(part["index"])
    prefix = _part_prefix(job, index)
    contract = ContractStore(store).get(job["model"], int(job["contract_version"]))
    reader = _range_reader(store, job, part)
    validation = ChunkedValidation(contract, max_bad_row_fraction=1.0)  # the share of bad rows: the merge's verdict
    curated, quarantine = CuratedWriter(work / "data.parquet", contract), QuarantineWriter(work / "rows.csv")
    keys: list[tuple[np.ndarray, ...]] = []
    try:
        for frame, hashes in reader.hashed_chunks():
            if frame.empty:
                continue
            result = validation.chunk(frame, hashes)
            curated.write(result.good)
            quarantine.write(result.bad)
            keys.append(_row_keys(frame, result.bad, contract))
    except FileRejected as exc:
        store.put_json(prefix + "summary.json", {"index": index, "rejected": {"code": exc.code,
                                                                               "message": exc.message}})
        return {"index": index, "rejected": exc.code}
    finally:
        reader.close()
    if curated.rows:  # a part may hold no good row at all: then it has no Parquet file
        store.put_file(prefix + "data.parquet", curated.path, content_type=PARQUET, sha256=curated.close())
    if quarantine.rows:
        store.put_file(prefix + "rows.csv", quarantine.path, content_type="text/csv")
    buffer = io.BytesIO()
    columns = [np.concatenate([k[i] for k in keys]) if keys else np.zeros(0, dtype=dtype)
               for i, dtype in enumerate((np.uint64, np.int64, np.int8))]
    np.savez(buffer, hashes=columns[0], lines=columns[1], kinds=columns[2])
    store.put_bytes(prefix + "keys.npz", buffer.getvalue())
    summary = {"index": index, "rows": validation.rows, "ragged": reader.ragged, "bad": validation.bad,
               "curated": curated.rows, "quarantined": quarantine.rows,
               "problems": {label: list(v) for label, v in validation.problems.items()},
               "reasons": validation.reasons.most_common(TOP_REASONS), "new_categories": validation.categories()}
    store.put_json(prefix + "summary.json", summary)
    return {"index": index, "rows": validation.rows}


def _outcome(job: dict[str, Any]) -> IngestOutcome:
    return IngestOutcome(status="rejected", model=job["model"], source=job["source"], source_version=job["version_id"],
                         dataset_sha256=job["sha256"], execution=job["name"], parts=int(job["parts"]),
                         contract_version=int(job["contract_version"]))


def _remove_work(store: ObjectStore, job: dict[str, Any]) -> None:
    store.delete(list(store.keys(job["prefix"])))


def merge(store: ObjectStore, config: ProjectConfig, job: dict[str, Any], work: Path) -> IngestOutcome:
    """The parts into one curated dataset (or the whole file rejected); the work files removed either way."""
    outcome = _outcome(job)
    try:
        outcome = _merge(outcome, store, config.model(job["model"]), job, work)
    except FileRejected as exc:
        outcome = reject(outcome, store, exc, job["key"], job["etag"])
    # not on any other error: the step is retried, and its retry needs them
    _remove_work(store, job)
    return outcome


def abandon(store: ObjectStore, job: dict[str, Any], error: dict[str, Any]) -> IngestOutcome:
    cause = str(error.get("Cause") or error.get("Error") or "unknown error")[:2000]
    outcome = reject(_outcome(job), store, FileRejected(
        "ingest_failed", f"validating the file in parts failed: {error.get('Error', 'error')}: {cause}; upload it "
                         "again, or report the error if it persists"), job["key"], job["etag"])
    _remove_work(store, job)
    return outcome


def _merge(outcome: IngestOutcome, store: ObjectStore, model: ModelConfig, job: dict[str, Any],
           work: Path) -> IngestOutcome:
    n = int(job["parts"])
    missing = [i for i in range(n) if not store.exists(_part_prefix(job, i) + "summary.json")]
    if missing:
        # on AWS the Map fails when a part does (ToleratedFailurePercentage 0) and Abandon runs; say the same here
        raise FileRejected("ingest_failed", f"validating the file in parts failed: part(s) {missing} left no result; "
                                            "upload it again, or report the error if it persists")
    summaries = [store.get_json(_part_prefix(job, i) + "summary.json") for i in range(n)]
    for summary in summaries:
        if "rejected" in summary:
            raise FileRejected(summary["rejected"]["code"], summary["rejected"]["message"])
    contract = ContractStore(store).get(model.name, int(job["contract_version"]))
    # the reader's whole-file verdicts (no data row, mostly ragged rows), on the whole file's counts
    rows_in = sum(s["rows"] for s in summaries)
    whole_file_verdicts(job["header"]["names"], rows=rows_in, ragged=sum(s["ragged"] for s in summaries))

    # duplicates across parts, in file order
    seen = SeenRows()
    good_duplicates: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (positions in the part's Parquet, lines,
    bad_duplicates: list[dict[int, int]] = []  # quarantined line -> the earlier line   ... the earlier lines)
    for i in range(n):
        with np.load(io.BytesIO(store.get_bytes(_part_prefix(job, i) + "keys.npz"))) as keys:
            hashes, lines, kinds = keys["hashes"], keys["lines"], keys["kinds"]
        earlier = seen.first_lines(hashes)
        again = earlier > 0
        good = kinds == _GOOD
        position = np.cumsum(good) - 1
        hit = again & good
        good_duplicates.append((position[hit], lines[hit], earlier[hit]))
        bad_duplicates.append(dict(zip(lines[again & ~good].tolist(), earlier[again & ~good].tolist(), strict=True)))
        seen.add(hashes[~again], lines[~again])
    del seen

    # the parts' counts as one validation of the whole file
    verdict = ChunkedValidation(contract, max_bad_row_fraction=model.max_bad_row_fraction)
    verdict.rows = rows_in
    verdict.bad = sum(s["bad"] for s in summaries) + sum(len(d[0]) for d in good_duplicates)
    for summary in summaries:
        for label, (count, first) in summary["problems"].items():
            verdict.count(label, count, first)
        verdict.reasons.update(dict(summary["reasons"]))
        for column, values in summary["new_categories"].items():
            verdict.new_categories.setdefault(column, set()).update(values)
    for (_, lines, earlier), bad in zip(good_duplicates, bad_duplicates, strict=True):
        found = [*lines.tolist(), *bad]
        if found:
            verdict.count("duplicate row", len(found), min(found))
        verdict.reasons.update(f"duplicate of line {line}" for line in [*earlier.tolist(), *bad.values()])
    verdict.finish()  # too many bad rows over the whole file

    # a row of a part that repeats one of the same part names that row's line; when that row itself repeats an
    # earlier part's, one function would name the earlier line: so does the merge
    first_of: dict[int, int] = {}
    for (_, lines, earlier), bad in zip(good_duplicates, bad_duplicates, strict=True):
        first_of.update(zip(lines.tolist(), earlier.tolist(), strict=True))
        first_of.update(bad)
    curated = CuratedWriter(work / "data.parquet", contract)
    quarantine = QuarantineWriter(work / "rows.csv")
    # the ranges, read once, for the parts whose curated rows repeat an earlier part's (their text is re-read)
    items = store.get_json(job["prefix"] + ITEMS) if any(len(lines) for _, lines, _ in good_duplicates) else []
    for i in range(n):
        prefix = _part_prefix(job, i)
        positions, lines, earlier = good_duplicates[i]
        if summaries[i]["curated"]:
            drop = np.zeros(summaries[i]["curated"], dtype=bool)
            drop[positions] = True
            offset = 0
            parquet = pq.ParquetFile(io.BytesIO(store.get_bytes(prefix + "data.parquet")))
            for batch in parquet.iter_batches(batch_size=65_536):
                table = pa.Table.from_batches([batch])
                curated.write_table(table.filter(pa.array(~drop[offset:offset + table.num_rows])))
                offset += table.num_rows
        bad = _quarantined(store, prefix, summaries[i]["quarantined"], bad_duplicates[i])
        if len(lines):
            repeats = dict(zip(lines.tolist(), earlier.tolist(), strict=True))
            bad = pd.concat([bad, _reread(store, job, items[i], repeats)]).sort_values(LINE, kind="stable")
        if first_of and len(bad):
            bad[REASON] = bad[REASON].str.replace(
                _DUPLICATE_OF, lambda m: f"duplicate of line {first_of.get(int(m.group(1)), int(m.group(1)))}",
                regex=True)
        quarantine.write(bad)
    return publish(outcome, model, store, contract, rows_in=rows_in, curated=curated, quarantine=quarantine,
                   top_reasons=verdict.reasons.most_common(10), new_categories=verdict.categories())


_DUPLICATE_OF = r"duplicate of line (\d+)"


def _quarantined(store: ObjectStore, prefix: str, rows: int, duplicates: dict[int, int]) -> pd.DataFrame:
    """A part's quarantined rows as it wrote them (verbatim text), with a duplicate of an earlier part said so."""
    if not rows:
        return pd.DataFrame()
    bad = pd.read_csv(io.BytesIO(store.get_bytes(prefix + "rows.csv")), dtype=str, keep_default_na=False)
    bad[LINE] = bad[LINE].astype(np.int64)
    if duplicates:
        earlier = bad[LINE].map(duplicates)
        again = earlier.notna().to_numpy()
        bad.loc[again, REASON] = (bad.loc[again, REASON] + "; duplicate of line "
                                  + earlier[again].astype(np.int64).astype(str))
    return bad


def _reread(store: ObjectStore, job: dict[str, Any], part: dict[str, Any],
            duplicates: dict[int, int]) -> pd.DataFrame:
    """The verbatim text of a part's rows that repeat an earlier part's, re-read from its range."""
    reader = _range_reader(store, job, part)
    found = []
    try:
        for frame in reader.chunks():
            hit = frame.index.isin(list(duplicates))
            if hit.any():
                rows = pd.DataFrame({str(c): column_text(frame, c)[hit].to_numpy() for c in frame.columns},
                                    dtype="str")
                rows[LINE] = frame.index.to_numpy(dtype=np.int64)[hit]
                rows[REASON] = [f"duplicate of line {duplicates[line]}" for line in rows[LINE]]
                found.append(rows)
    finally:
        reader.close()
    return pd.concat(found) if found else pd.DataFrame()


def run_step(event: dict[str, Any], *, store: ObjectStore, config: ProjectConfig) -> dict[str, Any]:
    """One step of the ingest state machine (``part``, ``merge`` or ``abandon``): its output."""
    if not store.exists(event["job"]["prefix"] + JOB):
        # the merge or abandon step ran already (its answer was lost and the step retried): it removed the work files
        return {"status": "done", "execution": event["job"]["prefix"]}
    job = store.get_json(event["job"]["prefix"] + JOB)
    with tempfile.TemporaryDirectory(prefix="mlops-ingest-map-") as work:
        if event["step"] == "part":
            return run_part(store, job, event["part"], Path(work))
        if event["step"] == "merge":
            return merge(store, config, job, Path(work)).to_dict()
    if event["step"] == "abandon":
        return abandon(store, job, event.get("error") or {}).to_dict()
    raise ValueError(f"unknown ingest step {event['step']!r}")

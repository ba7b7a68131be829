"""Drift between two CSV files (``mlops drift --reference A.csv --current B.csv``), each read as ingest reads it.

Both files go through :class:`mlops.data.reading.CsvReader` and :class:`mlops.data.validation.ChunkedValidation`
chunk by chunk, so a file means here what it means to ingest: the same header and quoting rules, line numbers,
ragged lines, missing-value spellings and numbers. The column kinds are inferred from the reference's first chunk
(:func:`mlops.data.inference.infer_contract`, as ingest infers a model's first contract), then loosened: a drift check
compares distributions, so bounds, whole numbers, a closed category list, duplicate rows and missing values refuse
nothing here. Rows that ingest would still quarantine (a ragged line, text in a numeric column, an infinite number, a
spreadsheet formula) are left out of the comparison and counted in the report (``left_out``); a numeric column whose
text is more than inference tolerates (:func:`mlops.data.inference.numeric_enough`) is an error instead.

Memory is bounded whatever the files' sizes: a few chunks of each file at a time, the reference summarised by
:class:`mlops.data.baseline.StreamedBaseline` (a uniform sample of at most ``sample`` rows, exact counts and moments)
and the current file by :class:`mlops.drift.statistics.WindowDrift`'s accumulators. Each file is parsed a chunk
ahead in a thread of its own (pyarrow parses without the GIL) while the previous chunk is validated and counted.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from mlops.core.config import DriftConfig
from mlops.core.errors import FileRejected, MlopsError
from mlops.data.baseline import StreamedBaseline
from mlops.data.inference import infer_contract, numeric_enough
from mlops.data.reading import DEFAULT_CHUNK_BYTES, CsvReader
from mlops.data.schema import ColumnKind, ColumnSpec, DataContract
from mlops.data.validation import ChunkedValidation
from mlops.drift.report import build_report
from mlops.drift.statistics import WindowDrift

# The reference's reservoir bounds the KS test's power and the Wasserstein distance's precision: from a file on disk,
# keep far more than the 1000 rows a deployed baseline stores.
RESERVOIR = 20_000
# the reference rows summarised whole (quantile edges, bin counts); beyond, a uniform sample of this many
SAMPLE_ROWS = 100_000
NO_TARGET = "__mlops_no_target__"
_TEXT_PROBLEMS = {ColumnKind.NUMERIC: "not a number", ColumnKind.BOOLEAN: "not a boolean"}


def compare_files(reference: Path, current: Path, *, target: str | None = None,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES, reservoir: int = RESERVOIR,
                  sample: int = SAMPLE_ROWS) -> dict[str, Any]:
    """The drift report of ``current`` against a baseline built from ``reference``."""
    for path in (reference, current):
        if not path.is_file():
            raise MlopsError(f"{path}: no such file")
    with ExitStack() as stack:
        ref = stack.enter_context(_CsvFile(reference, chunk_bytes))
        cur = stack.enter_context(_CsvFile(current, chunk_bytes))
        ref_cols, cur_cols = ref.names, cur.names
        common = [c for c in ref_cols if c in set(cur_cols) and c != target]
        if not common:
            raise MlopsError(f"{reference} and {current} have no column in common "
                             f"(reference: {ref_cols[:10]}, current: {cur_cols[:10]})")

        frames = ref.frames()
        first = next((f for f in frames if not f.empty), None)
        if first is None:
            ref.finish(rows_required=False)  # a file mostly ragged says so
            raise MlopsError(f"{reference} has a header but no rows")
        try:
            contract = _loosened(infer_contract(_columns(first, common), NO_TARGET))
        except MlopsError as exc:
            raise MlopsError(f"{reference}: {exc}") from exc
        summary = StreamedBaseline(contract, reservoir=reservoir, sample=sample)
        ref_check = ChunkedValidation(contract)
        for frame in chain([first], frames):
            summary.update(ref_check.chunk(_columns(frame, common)).good.drop(columns=NO_TARGET))
        ref.finish()
        if not summary.rows:
            raise MlopsError(f"{reference}: none of its {ref_check.rows} rows can be compared: "
                             f"{_top(ref_check)}")
        _refuse_text(ref_check, contract, reference, None, summary.numbers)
        baseline = summary.result()

        check = WindowDrift(baseline, DriftConfig())
        cur_check = ChunkedValidation(contract)
        for frame in cur.frames():
            if frame.empty:
                continue
            good = cur_check.chunk(_columns(frame, common)).good
            check.update({name: good[name].to_numpy() for name in common}, len(good))
        cur.finish(rows_required=False)  # a header alone is a window without data: not enough data, not an error
        _refuse_text(cur_check, contract, current, reference, lambda name: check.numeric[name].n)

    result = check.result(with_concept=False)
    context = {"reference": str(reference), "current": str(current), "reference_rows": baseline["rows"],
               "ignored_columns": sorted((set(ref_cols) ^ set(cur_cols)) - {target}),
               "left_out": {"reference": _left_out(ref_check), "current": _left_out(cur_check)}}
    return build_report(result, context=context)


def _columns(frame: pd.DataFrame, common: list[str]) -> pd.DataFrame:
    # the selection keeps the reader's record of ragged lines (frame.attrs); the constant target is what a contract
    # needs and what nothing compares
    return frame[common].assign(**{NO_TARGET: "0"})


def _loosened(contract: DataContract) -> DataContract:
    """The inferred kinds, and nothing that refuses a value a distribution can hold."""
    columns = []
    for spec in contract.columns:
        if spec.name != contract.target:
            kind = ColumnKind.NUMERIC if spec.kind is ColumnKind.INTEGER else spec.kind
            spec = ColumnSpec(name=spec.name, kind=kind, nullable=True)  # a categorical one open (categories=None)
        columns.append(spec)
    return DataContract(target=contract.target, columns=columns, new_categories="accept", allow_duplicates=True)


def _refuse_text(validation: ChunkedValidation, contract: DataContract, path: Path, reference: Path | None,
                 numbers: Callable[[str], int]) -> None:
    """A numeric (or boolean) column holding more text than inference tolerates is not the column it was."""
    for spec in contract.feature_columns:
        problem = _TEXT_PROBLEMS.get(spec.kind)
        count, line = validation.problems.get(f"{spec.name}: {problem}", (0, 0)) if problem else (0, 0)
        if not count:
            continue
        good = int(numbers(spec.name))
        if numeric_enough(good, good + count):
            continue  # a few stray cells: their rows are left out, as ingest quarantines them
        where = f"in {reference}" if reference is not None else "in the first rows of the file"
        raise MlopsError(f"{path}: column {spec.name!r} is {spec.kind.value} {where} but holds text here "
                         f"({count} of {good + count} values, first on line {line})")


def _left_out(validation: ChunkedValidation) -> dict[str, Any]:
    return {"rows": validation.bad, "reasons": dict(validation.reasons.most_common(5))}


def _top(validation: ChunkedValidation) -> str:
    return "; ".join(f"{reason} ({count} rows)" for reason, count in validation.reasons.most_common(3))


class _CsvFile:
    """One file read by :class:`CsvReader` a chunk ahead, in a thread; its errors name the file."""

    def __init__(self, path: Path, chunk_bytes: int) -> None:
        self.path = path
        try:
            stream: BinaryIO = path.open("rb")
        except OSError as exc:
            raise MlopsError(f"{path}: cannot be read ({exc})") from exc
        self.reader = CsvReader(stream, max_bytes=None, chunk_bytes=chunk_bytes)
        self._chunks = _Ahead(self.reader.chunks())
        # the first chunk holds the header: its names are known once it is parsed
        self._first = self._next()
        assert self.reader.header is not None  # chunks() raises for a file without one
        self.names = list(self.reader.header.names)

    def __enter__(self) -> _CsvFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._chunks.close()
        self.reader.close()  # the stream, and the reader's hashing thread

    def _next(self) -> pd.DataFrame | None:
        try:
            return next(self._chunks, None)
        except FileRejected as exc:
            self.close()
            raise MlopsError(f"{self.path}: {exc.message}") from exc
        except OSError as exc:
            self.close()
            raise MlopsError(f"{self.path}: cannot be read ({exc})") from exc

    def frames(self) -> Iterator[pd.DataFrame]:
        first, self._first = self._first, None
        if first is not None:
            yield first
        while (frame := self._next()) is not None:
            yield frame

    def finish(self, *, rows_required: bool = True) -> None:
        """The whole-file verdicts (no data row, mostly ragged rows), once every chunk is read."""
        try:
            self.reader.finish()
        except FileRejected as exc:
            if exc.code == "header_only" and not rows_required:
                return
            raise MlopsError(f"{self.path}: {exc.message}") from exc


class _Ahead:
    """The items of ``source`` produced by a thread, at most ``depth`` ahead of the consumer."""

    _END = object()

    def __init__(self, source: Iterator[Any], depth: int = 1) -> None:
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(source,), name="csv-chunks", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put((True, item)):
                    return
            self._put((True, self._END))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((False, exc))

    def __iter__(self) -> _Ahead:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self._done = True
            raise item
        if item is self._END:
            self._done = True
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the chunk it is parsing) and wait for it."""
        self._stop.set()
        self._thread.join()
        self._done = True

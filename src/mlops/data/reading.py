"""The data contract of a model's input CSV, and the reader and validator that ``ingest`` runs on every file.

A file is either rejected whole (:class:`~mlops.core.errors.FileRejected` with a stable ``code``: it cannot be
read, or its columns are not the contract's, or too many of its rows are bad) or split row by row into
``good`` rows (typed, ready for training) and ``bad`` rows (kept verbatim with their line number and every
reason), so a user can fix exactly the lines that were refused. No row is ever dropped silently:
``rows_in`` always equals the number of data rows in the file.

Choices worth knowing:

- ``read_csv`` keeps every value as the raw text (validation must see ``"007"`` and ``"nan"`` as written)
  and indexes the frame by the file's line number (header = line 1), so reasons point at real lines even
  with blank lines or quoted values spanning several lines.
- Rows with the wrong number of fields are row-level errors, not file-level: one ragged line in a million
  should not cost the other rows. ``read_csv`` keeps such a row (fields cut or padded to the header) and
  records why in ``df.attrs``; ``validate`` quarantines it with that reason alone. When most rows are
  ragged the delimiter or quoting is wrong, and the file is rejected as ``unparseable``.
- Parsing is pyarrow's (fast, and it reports ragged rows one by one); the Python csv module is only used
  to number lines when a quoted value spans several lines.
- Lines holding only spaces or tabs count as blank lines (in files with more than one column).
- Header names are stripped of surrounding whitespace; columns are matched by exact name, in any order.
- In ``good``, integer columns are float64 like numeric ones (models consume floats, and a nullable
  integer column needs NaN), booleans are float64 0/1, and categoricals are pandas strings with NaN for
  an empty cell.
- The usual spellings of a missing value (NA, N/A, null, None, NaN, -, ?, #N/A; any case, surrounding
  whitespace ignored) mean exactly what an empty cell means, in every column: accepted (NaN in ``good``)
  when the column is nullable, quarantined as "missing value" otherwise. In a categorical column this
  holds too, unless the contract explicitly lists the spelling as a category (e.g. "NA" for North
  America, declared in mlops.toml); inference never makes one a category. ``inf``/``-inf``/``Infinity``
  are not missing values: they stay "not a finite number".

Inference (:func:`infer_contract`) from the first file:

- A column is numeric (integer when every number is written as a whole number) when all its non-missing
  values are finite numbers, or, with at least 20 numbers, when at least 95% are: a few stray cells
  ("abc", "1,5") then do not turn a continuous feature into a categorical one; ``validate`` quarantines
  those rows of the first file like any later bad row. Under 20 numbers the strict rule applies.
- A categorical feature with more distinct values than max(100, half its rows) is an identifier or free
  text, not a category set: it is inferred open (``categories=None``, any value accepted), so later files
  with new IDs are neither quarantined nor reported as new categories row by row.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops.core.errors import FileRejected

LINE = "_line"
REASON = "_reason"
RESERVED = frozenset({LINE, REASON})

# Row-level problems found while reading (wrong number of fields), keyed by line. A JSON string rather
# than a dict because pandas deep-copies ``attrs`` on nearly every operation, and copying a str is free.
_ROW_ERRORS_ATTR = "mlops_row_errors"

_BLANK_CHARS = " \t\r\n"
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
# numbers as most files write them, which Arrow's cast always parses (ASCII digits only)
_PLAIN_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# compared lower-cased and stripped; never "inf"/"infinity", which stay "not a finite number"
_MISSING_TOKENS = ("na", "n/a", "null", "none", "nan", "-", "?", "#n/a")
# inference: a mostly numeric column is numeric when this many of its values are numbers, at least
_NUMERIC_SHARE = 0.95
_MIN_NUMBERS_TOLERATED = 20
# inference: a categorical feature with more distinct values than this is open (IDs, free text)
_MAX_CATEGORIES = 100
_MAX_CATEGORY_SHARE = 0.5
# What spreadsheets execute when a cell starts with it (OWASP CSV injection); leading whitespace is
# stripped before the test, which covers the tab/CR-prefixed variants.
_FORMULA_PREFIXES = ("=", "+", "-", "@")
_MAX_TARGET_CLASSES = 20
_SHOWN_CATEGORIES = 10


class ColumnKind(StrEnum):
    NUMERIC = "numeric"
    INTEGER = "integer"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"


class ColumnSpec(BaseModel):
    """One column. ``categories=None`` on a categorical column means any value is accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: ColumnKind
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED:
            raise ValueError(f"{value!r} is reserved for quarantine reports; rename the column")
        return value

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_as_sorted_strings(cls, value: Any) -> Any:
        # mlops.toml may declare a 0/1 target as integers; values are always compared as text
        if isinstance(value, list | tuple | set):
            return sorted({str(v) for v in value})
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> ColumnSpec:
        numeric = self.kind in (ColumnKind.NUMERIC, ColumnKind.INTEGER)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"column {self.name!r}: min/max apply to numeric and integer columns only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is greater than max {self.max}")
        if self.categories is not None and self.kind is not ColumnKind.CATEGORICAL:
            raise ValueError(f"column {self.name!r}: categories apply to categorical columns only")
        return self


class DataContract(BaseModel):
    """What every file of one model must look like; versioned because accepted categories extend it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=1, ge=1)
    target: str
    columns: list[ColumnSpec] = Field(min_length=1)
    new_categories: Literal["accept", "quarantine"] = "accept"
    allow_duplicates: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> DataContract:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns declared twice: {dupes}")
        if self.target not in names:
            raise ValueError(f"the target {self.target!r} is not among the columns {names}")
        if self.column(self.target).nullable:
            raise ValueError(f"the target {self.target!r} cannot be nullable: a row without a label is unusable")
        return self

    def column(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"the data contract has no column {name!r}; it has {[c.name for c in self.columns]}")

    @property
    def feature_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.name != self.target]

    @property
    def numeric_features(self) -> list[str]:
        numeric = (ColumnKind.NUMERIC, ColumnKind.INTEGER, ColumnKind.BOOLEAN)
        return [c.name for c in self.feature_columns if c.kind in numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.feature_columns if c.kind is ColumnKind.CATEGORICAL]

    def with_categories(self, additions: dict[str, list[str]]) -> DataContract:
        """The next version, with ``additions`` merged into the categories; ``self`` if nothing is new."""
        columns = []
        changed = False
        for spec in self.columns:
            added = {str(v) for v in additions.get(spec.name, [])}
            if added and spec.kind is not ColumnKind.CATEGORICAL:
                raise ValueError(f"column {spec.name!r} is {spec.kind}, it has no categories to extend")
            # an open column (categories=None) already accepts everything: closing it would refuse data
            if spec.categories is not None and not added <= set(spec.categories):
                spec = spec.model_copy(update={"categories": sorted(added | set(spec.categories))})
                changed = True
            columns.append(spec)
        unknown = sorted(set(additions) - {c.name for c in self.columns})
        if unknown:
            raise KeyError(f"the data contract has no column(s) {unknown}")
        if not changed:
            return self
        return self.model_copy(update={"version": self.version + 1, "columns": columns})

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> DataContract:
        return cls.model_validate_json(text)


@dataclass
class ValidationResult:
    good: pd.DataFrame
    bad: pd.DataFrame
    new_categories: dict[str, list[str]]

    @property
    def rows_in(self) -> int:
        return len(self.good) + len(self.bad)


# --------------------------------------------------------------------------------------------- reading


def read_csv(data: bytes, *, max_bytes: int) -> pd.DataFrame:
    """Parse an uploaded file into an all-text frame indexed by line number (``_line``)."""
    if len(data) > max_bytes:
        raise FileRejected(
            "too_large",
            f"the file is {_mb(len(data))}, over the {_mb(max_bytes)} limit for one upload; "
            "split it into smaller files, each with the header row, and upload them separately.",
        )
    if not data:
        raise FileRejected("empty_file", "the file is empty (0 bytes); upload a CSV with a header row and data rows.")
    _reject_compressed(data)
    text = _decode(data)
    if not text.strip():
        raise FileRejected(
            "empty_file",
            f"the file holds only whitespace ({len(data)} bytes); upload a CSV with a header row and data rows.",
        )
    raw = data.removeprefix(codecs.BOM_UTF8)
    names = _header_names(text)
    return _parse(raw, text, names)


def _mb(n: int) -> str:
    mb = n / 2**20
    return f"{mb:.1f} MB" if mb >= 0.1 else f"{mb:.6f}".rstrip("0") + f" MB ({n:,} bytes)"


_COMPRESSED = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook is one too)"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
)


def _reject_compressed(data: bytes) -> None:
    kind = next((what for magic, what in _COMPRESSED if data.startswith(magic)), None)
    # "BZh" alone could begin a header name; a real bzip2 stream has a level digit and a block magic
    if data[:3] == b"BZh" and data[3:4].isdigit() and data[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        kind = "bzip2-compressed"
    if kind:
        raise FileRejected(
            "compressed",
            f"the file is {kind}, not a plain CSV; decompress it (or export it as CSV UTF-8) "
            "and upload the plain .csv file.",
        )


def _decode(data: bytes) -> str:
    resave = "save it as 'CSV UTF-8' (in Excel: File > Save As > CSV UTF-8) and upload it again."
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise FileRejected("encoding", f"the file is encoded as UTF-32, not UTF-8; {resave}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileRejected(
            "encoding",
            f"the file is encoded as UTF-16 (it starts with a UTF-16 byte order mark), not UTF-8; {resave}",
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        sample = data[:4096]
        nuls = sample.count(0)
        # ASCII text in UTF-16 has a NUL in every other byte, all on the same parity
        if nuls * 4 >= len(sample) and max(sample[0::2].count(0), sample[1::2].count(0)) >= 0.9 * nuls:
            raise FileRejected("encoding", f"the file looks like UTF-16 text without a byte order mark; {resave}")
        line = data.count(b"\n", 0, nul) + 1
        raise FileRejected(
            "encoding",
            f"the file contains NUL bytes (first on line {line}): it is a binary file (an Excel .xls "
            f"workbook, a parquet file, an image...) or UTF-16 text, not a UTF-8 CSV; {resave}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileRejected(
            "encoding",
            f"line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); the file "
            f"is probably in another encoding such as Windows-1252 or Latin-1; {resave}",
        ) from None
    return text.removeprefix("\ufeff")


def _header_names(text: str) -> list[str]:
    # a header longer than this is not a header; pyarrow's own reading of it is compared later anyway
    reader = csv.reader(io.StringIO(text[: 1 << 20], newline=""))
    try:
        header = next((record for record in reader if record), None)
    except csv.Error as exc:
        raise FileRejected("unparseable", f"line {reader.line_num}: {exc}; fix the header row.") from None
    if header is None:
        raise FileRejected("empty_file", "the file has no header row; upload a CSV with a header row and data rows.")
    line = reader.line_num
    if len(header) == 1:
        for char, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if char in header[0]:
                raise FileRejected(
                    "unparseable",
                    f"the header (line {line}) is a single column containing {name} characters: the file "
                    f"seems to be {name}-separated; save it comma-separated (CSV UTF-8) and upload it again.",
                )
    names = [h.strip() for h in header]
    nameless = [i + 1 for i, n in enumerate(names) if not n]
    if nameless:
        raise FileRejected(
            "unparseable",
            f"column(s) {nameless} of the header (line {line}) have no name (a trailing delimiter?); "
            "name every column or remove the empty ones.",
        )
    seen: dict[str, int] = {}
    for i, n in enumerate(names, start=1):
        if n in seen:
            raise FileRejected(
                "unparseable",
                f"the header (line {line}) names column {n!r} twice (columns {seen[n]} and {i}); "
                "column names must be unique.",
            )
        seen[n] = i
    return names


def _parse(raw: bytes, text: str, names: list[str]) -> pd.DataFrame:
    ncols = len(names)
    invalid: list[tuple[int | None, int, str]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(raw),
            # single-threaded: only then does pyarrow know the record number of a ragged row
            read_options=pacsv.ReadOptions(use_threads=False, autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={f"f{i}": pa.string() for i in range(ncols)},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        hint = " (a quote that is never closed?)" if "straddl" in str(exc) else ""
        raise FileRejected(
            "unparseable", f"the file cannot be parsed as CSV{hint}: {exc}; check its quoting."
        ) from None
    header = [str(v).strip() for v in table.slice(0, 1).to_pylist()[0].values()] if table.num_rows else []
    if table.num_columns != ncols or header != names:
        raise FileRejected(
            "unparseable", "the header row is quoted inconsistently; re-export the file as standard CSV."
        )
    frame = table.slice(1).to_pandas()
    frame.columns = names
    n_valid = len(frame)

    # Ragged records come back separately, numbered among records (header = 1, blank lines uncounted).
    # Whitespace-only lines are records of one field to pyarrow; they are blank lines to a human.
    n_records = n_valid + len(invalid)
    dropped = np.zeros(n_records, dtype=bool)
    ragged_pos: list[int] = []
    ragged_rows: list[list[str]] = []
    ragged_reasons: list[str] = []
    invalid_pos: list[int] = []
    for number, actual, row_text in invalid:
        if number is None:
            raise FileRejected("unparseable", "the file's rows could not be numbered; re-export it as CSV.")
        pos = number - 2
        invalid_pos.append(pos)
        if ncols > 1 and actual == 1 and not row_text.strip(_BLANK_CHARS):
            dropped[pos] = True
            continue
        fields = _split(row_text)
        ragged_pos.append(pos)
        ragged_rows.append((fields + [""] * ncols)[:ncols])
        ragged_reasons.append(_ragged_reason(fields, names))
    if ragged_pos:
        ok_pos = np.flatnonzero(~np.isin(np.arange(n_records), invalid_pos))
        ragged = pd.DataFrame(ragged_rows, columns=names, dtype="str", index=ragged_pos)
        frame = pd.concat([frame.set_axis(ok_pos), ragged]).sort_index()
    kept = n_records - int(dropped.sum())
    if kept == 0:
        raise FileRejected(
            "header_only",
            f"the file has a header ({', '.join(names)}) but no data rows; add rows below the header.",
        )
    if len(ragged_pos) * 2 > kept:
        raise FileRejected(
            "unparseable",
            f"{len(ragged_pos)} of {kept} data rows do not have the header's {ncols} fields; the file "
            "must be comma-separated, with values that contain commas quoted: check the delimiter "
            "and the quoting.",
        )

    lines = _record_lines(raw, text, ncols, kept, skipped_blank=bool(dropped.any()))
    frame.index = pd.Index(lines, name=LINE)
    if ragged_pos:
        # position among kept records = position among all records minus the dropped ones before it
        shift = np.cumsum(dropped)
        ragged_lines = [int(lines[p - shift[p]]) for p in ragged_pos]
        frame.attrs[_ROW_ERRORS_ATTR] = json.dumps(dict(zip(map(str, ragged_lines), ragged_reasons, strict=True)))
    return frame


def _split(row_text: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(row_text, newline="")), [])
    except csv.Error:
        return [row_text]


def _ragged_reason(fields: list[str], names: list[str]) -> str:
    n, ncols = len(fields), len(names)
    if n > ncols:
        extra = ", ".join(_show(v) for v in fields[ncols:])
        return f"the line has {n} fields but the header has {ncols} (extra: {extra})"
    fields_word = "field" if n == 1 else "fields"
    missing = ", ".join(names[n:])
    return f"the line has {n} {fields_word} but the header has {ncols} (missing: {missing})"


def _record_lines(raw: bytes, text: str, ncols: int, n_records: int, *, skipped_blank: bool) -> np.ndarray:
    """The 1-based line on which each data record starts."""
    lone_cr = raw.count(b"\r") != raw.count(b"\r\n")
    blank_line = b"\n\n" in raw or b"\n\r\n" in raw or raw.startswith((b"\n", b"\r\n"))
    if not (skipped_blank or lone_cr or blank_line):
        # no blank line anywhere: if lines and records match up, no record spans two lines
        n_lines = raw.count(b"\n") + (not raw.endswith(b"\n"))
        if n_lines - 1 == n_records:
            return np.arange(2, n_records + 2, dtype=np.int64)
    starts, has_content = _physical_lines(raw, whitespace_is_blank=ncols > 1)
    content = np.flatnonzero(has_content) + 1
    if len(content) - 1 == n_records:
        return content[1:]
    # A quoted value spans lines: only a real CSV scan knows where records start (slower, so not first).
    record_starts = _scan_record_starts(text, ncols)
    last = record_starts[-1]
    if raw.count(b'"', int(starts[last - 1])) % 2:
        raise FileRejected(
            "unparseable",
            f'line {last}: a quoted value starts here and its closing quote (") is missing; fix the quoting.',
        )
    if len(record_starts) - 1 != n_records:
        raise FileRejected(
            "unparseable", "the file's quoting is ambiguous (stray quote characters?); re-export it as CSV."
        )
    return np.asarray(record_starts[1:], dtype=np.int64)


def _physical_lines(raw: bytes, *, whitespace_is_blank: bool) -> tuple[np.ndarray, np.ndarray]:
    """Start offset of every line (split on LF, CRLF or lone CR like the parser) and whether it holds text."""
    a = np.frombuffer(raw, dtype=np.uint8)
    lf, cr = a == 10, a == 13
    ends = lf.copy()
    ends[:-1] |= cr[:-1] & ~lf[1:]
    ends[-1] |= cr[-1]
    starts = np.concatenate(([0], np.flatnonzero(ends) + 1))
    if starts[-1] == a.size:
        starts = starts[:-1]
    blank = lf | cr
    if whitespace_is_blank:
        blank |= (a == 32) | (a == 9)
    # every segment holds at least its terminator, so reduceat never sees an empty one
    return starts, np.logical_or.reduceat(~blank, starts)


def _scan_record_starts(text: str, ncols: int) -> list[int]:
    reader = csv.reader(io.StringIO(text, newline=""))
    starts: list[int] = []
    previous = 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not record or (ncols > 1 and len(record) == 1 and not record[0].strip(_BLANK_CHARS)):
                continue
            starts.append(start)
    except csv.Error as exc:
        raise FileRejected("unparseable", f"line {reader.line_num}: {exc}.") from None
    return starts


def _row_errors(df: pd.DataFrame) -> dict[int, str]:
    encoded = df.attrs.get(_ROW_ERRORS_ATTR)
    if not encoded or df.index.name != LINE:
        return {}
    return {int(line): reason for line, reason in json.loads(encoded).items()}


def _texts(df: pd.DataFrame, name: str) -> pd.Series:
    """A column as text with "" for missing, whatever dtype a hand-built frame used."""
    return df[name].astype("str").fillna("")


# ------------------------------------------------------------------------------------------- inference


def infer_contract(df: pd.DataFrame, target: str) -> DataContract:
    """A contract that the first accepted file satisfies, loose enough for later files to satisfy too."""
    if target not in df.columns:
        raise FileRejected(
            "missing_target",
            f"the target column {target!r} is not in the file "
            f"(its columns: {', '.join(map(str, df.columns))}); "
            "rename the column or fix the model's target in mlops.toml.",
        )
    reserved = sorted(RESERVED.intersection(map(str, df.columns)))
    if reserved:
        raise FileRejected(
            "unexpected_columns",
            f"column name(s) {reserved} are reserved for quarantine reports; rename them and upload again.",
        )
    structural = _row_errors(df)
    usable = ~df.index.isin(list(structural)) if structural else np.ones(len(df), dtype=bool)
    columns = []
    for name in df.columns:
        stripped = _texts(df, name)[usable].str.strip()
        missing = _missing(stripped)
        values = stripped[~missing]
        if name == target:
            if values.empty:
                raise FileRejected("missing_target", f"the target column {target!r} has no values.")
            columns.append(_infer_target(name, values))
        else:
            columns.append(_infer_feature(str(name), values, nullable=bool(missing.any()), n_rows=len(stripped)))
    return DataContract(target=target, columns=columns)


def _infer_target(name: str, values: pd.Series) -> ColumnSpec:
    """``values``: the non-missing cells, stripped. A target's classes are always listed, however many."""
    distinct = pd.Series(pd.unique(values), dtype="str")
    numbers = None if len(distinct) <= _MAX_TARGET_CLASSES else _mostly_numbers(values)
    if numbers is None:
        return ColumnSpec(name=name, kind=ColumnKind.CATEGORICAL, categories=_safe_categories(distinct))
    return ColumnSpec(name=name, kind=ColumnKind.NUMERIC, min=_lower_bound(numbers[np.isfinite(numbers)]))


def _infer_feature(name: str, values: pd.Series, *, nullable: bool, n_rows: int) -> ColumnSpec:
    """``values``: the non-missing cells, stripped; ``n_rows``: the rows inferred from, missing or not."""
    if values.empty:
        # nothing observed yet: a categorical column with no known category
        return ColumnSpec(name=name, kind=ColumnKind.CATEGORICAL, nullable=True, categories=[])
    numbers = _mostly_numbers(values)
    distinct = pd.Series(pd.unique(values), dtype="str")
    # "Yes"/"YES"/"yes"... at most a few spellings; more distinct values cannot be a boolean
    boolean = len(distinct) <= 4 * len(_TRUE + _FALSE) and set(distinct.str.lower()) <= {*_TRUE, *_FALSE}
    finite = np.isfinite(numbers) if numbers is not None else np.zeros(0, dtype=bool)
    # of the boolean spellings only 0 and 1 are numbers: a 0/1 column is an integer one, but 0/1 with a
    # few yes/no is a boolean one, not an integer column with stray cells
    if numbers is not None and (finite.all() or not boolean):
        integer = bool(values[finite].str.fullmatch(r"[+-]?\d+").all())
        return ColumnSpec(
            name=name,
            kind=ColumnKind.INTEGER if integer else ColumnKind.NUMERIC,
            nullable=nullable,
            min=_lower_bound(numbers[finite]),
        )
    if boolean:
        return ColumnSpec(name=name, kind=ColumnKind.BOOLEAN, nullable=nullable)
    if len(distinct) > max(_MAX_CATEGORIES, _MAX_CATEGORY_SHARE * n_rows):
        # IDs or free text: listing the values seen would flag every new one in every later file
        return ColumnSpec(name=name, kind=ColumnKind.CATEGORICAL, nullable=nullable, categories=None)
    return ColumnSpec(name=name, kind=ColumnKind.CATEGORICAL, nullable=nullable, categories=_safe_categories(distinct))


def _lower_bound(numbers: np.ndarray) -> float | None:
    # only the sign is kept: observed extremes would quarantine legitimate later data
    return 0.0 if (numbers >= 0).all() else None


def _mostly_numbers(values: pd.Series) -> np.ndarray | None:
    """The values as floats (NaN/inf where not a finite number) if they make a numeric column, else None.

    A numeric column: every value is a finite number, or at least ``_MIN_NUMBERS_TOLERATED`` are and they
    are at least ``_NUMERIC_SHARE`` of the values. ``values`` hold no empty cell nor missing-value token.
    """
    n = len(values)
    # a text column fails on its head: more non-numbers there than the share allows settles it, exactly,
    # and spares a slow full parse (pandas' fallback) of a large column of words
    head = values.iloc[: int((1 - _NUMERIC_SHARE) * n) + 1]
    if not np.isfinite(_to_float(head, np.zeros(len(head), dtype=bool))).any():
        return None
    parsed = _to_float(values, np.zeros(n, dtype=bool))
    finite = np.isfinite(parsed)
    n_numbers = int(finite.sum())
    if n_numbers == n:
        return parsed
    if n_numbers >= _MIN_NUMBERS_TOLERATED and n_numbers >= _NUMERIC_SHARE * n:
        return parsed
    return None


def _safe_categories(distinct: pd.Series) -> list[str]:
    # a formula in the first file must not become a category, or every later file would accept it
    return sorted(distinct[~_formula_like(distinct)].tolist())


def _formula_like(stripped: pd.Series) -> np.ndarray:
    candidates = stripped.str.startswith(_FORMULA_PREFIXES).to_numpy(dtype=bool, copy=True)
    if candidates.any():
        # "-1" or "+2.5" are numbers, not formulas
        numbers = pd.to_numeric(stripped[candidates], errors="coerce").to_numpy(dtype=float)
        candidates[np.flatnonzero(candidates)[np.isfinite(numbers)]] = False
    return candidates


# ------------------------------------------------------------------------------------------ validation


@dataclass
class _Problem:
    label: str  # the reason without the value: what the rejection message counts
    mask: np.ndarray
    reasons: Callable[[np.ndarray], list[str]]  # positions -> one reason per position


def validate(df: pd.DataFrame, contract: DataContract, *, max_bad_row_fraction: float = 1.0) -> ValidationResult:
    """Split a frame from :func:`read_csv` into typed good rows and verbatim bad rows."""
    _check_columns(df, contract)
    n = len(df)
    lines = df.index.to_numpy(dtype=np.int64) if df.index.name == LINE else np.arange(n, dtype=np.int64) + 2
    structural = _row_errors(df)
    is_structural = np.isin(lines, list(structural)) if structural else np.zeros(n, dtype=bool)

    texts = {spec.name: _texts(df, spec.name) for spec in contract.columns}
    problems: list[_Problem] = []
    typed: dict[str, Any] = {}
    unknown: dict[str, np.ndarray] = {}
    for spec in contract.columns:
        typed[spec.name], column_problems, unknown_mask = _check_column(
            spec, texts[spec.name], contract, is_target=spec.name == contract.target
        )
        for problem in column_problems:
            # a ragged row's values are shifted: only the field count is worth reporting
            problem.mask = problem.mask & ~is_structural
            problems.append(problem)
        if unknown_mask is not None:
            unknown[spec.name] = unknown_mask
    if not contract.allow_duplicates:
        problems.append(_duplicates(texts, lines, is_structural))
    if structural:
        problems.append(
            _Problem(
                "wrong number of fields",
                is_structural,
                lambda pos: [structural[int(line)] for line in lines[pos]],
            )
        )

    bad_mask = np.zeros(n, dtype=bool)
    for problem in problems:
        bad_mask |= problem.mask
    n_bad = int(bad_mask.sum())
    if n and n_bad / n > max_bad_row_fraction:
        raise FileRejected("too_many_bad_rows", _too_many_message(problems, lines, n_bad, n, max_bad_row_fraction))

    bad_pos = np.flatnonzero(bad_mask)
    reasons = np.full(len(bad_pos), "", dtype=object)
    for problem in problems:
        pos = np.flatnonzero(problem.mask)
        if not len(pos):
            continue
        at = np.searchsorted(bad_pos, pos)
        new = np.asarray(problem.reasons(pos), dtype=object)
        current = reasons[at]
        reasons[at] = np.where(current == "", new, current + "; " + new)

    bad = pd.DataFrame({str(c): _texts(df, c).iloc[bad_pos].to_numpy() for c in df.columns}, dtype="str")
    bad[LINE] = lines[bad_pos]
    bad[REASON] = pd.Series(reasons, dtype="str")
    good_pos = np.flatnonzero(~bad_mask)
    good = pd.DataFrame({name: _take(values, good_pos) for name, values in typed.items()})
    new_categories = {
        name: sorted(pd.unique(texts[name].str.strip()[mask & ~bad_mask]).tolist())
        for name, mask in unknown.items()
        if (mask & ~bad_mask).any()
    }
    return ValidationResult(good=good, bad=bad, new_categories=new_categories)


def _take(values: Any, positions: np.ndarray) -> Any:
    if isinstance(values, pd.Series):
        return values.iloc[positions].reset_index(drop=True)
    return values[positions]


def _check_columns(df: pd.DataFrame, contract: DataContract) -> None:
    names = [str(c) for c in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FileRejected("unparseable", f"the file names column(s) {dupes} more than once.")
    expected = [c.name for c in contract.columns]
    missing = [n for n in expected if n not in names]
    unexpected = [n for n in names if n not in expected]
    where = f"the data contract (version {contract.version})"
    if missing:
        also = (
            f"; it has column(s) the contract does not know: {', '.join(unexpected)} (renamed?)" if unexpected else ""
        )
        raise FileRejected(
            "missing_columns",
            f"the file lacks column(s) {', '.join(missing)} required by {where}{also}. "
            "Column names must match exactly (any order); add or rename them and upload again.",
        )
    if unexpected:
        raise FileRejected(
            "unexpected_columns",
            f"the file has column(s) {', '.join(unexpected)} that {where} does not declare; remove them, "
            "or declare them in the model's contract in mlops.toml.",
        )


def _check_column(
    spec: ColumnSpec, raw: pd.Series, contract: DataContract, *, is_target: bool
) -> tuple[Any, list[_Problem], np.ndarray | None]:
    """Typed values, the problems found, and (categorical, policy accept) the unknown-category mask."""
    name = spec.name
    stripped = raw.str.strip()
    missing = _missing(stripped)
    known = None
    if spec.kind is ColumnKind.CATEGORICAL:
        known = stripped.isin(spec.categories or []).to_numpy(dtype=bool)
        # a declared category wins over a missing-value spelling ("NA" for North America)
        missing &= ~known
    problems: list[_Problem] = []
    if is_target or not spec.nullable:
        what = "missing target value" if is_target else "missing value"
        problems.append(_Problem(f"{name}: {what}", missing, lambda pos: [f"{name}: {what}"] * len(pos)))

    def problem(label: str, mask: np.ndarray, describe: Callable[[str], str]) -> None:
        problems.append(
            _Problem(f"{name}: {label}", mask, lambda pos: [f"{name}: {describe(_show(v))}" for v in raw.iloc[pos]])
        )

    if known is not None:
        formula = ~missing & ~known & _formula_like(stripped)
        problem("looks like a spreadsheet formula", formula, lambda v: f"{v} looks like a spreadsheet formula")
        unknown = None
        if spec.categories is not None:
            unknown = ~missing & ~known & ~formula
            if contract.new_categories == "quarantine":
                hint = ""
                if len(spec.categories) <= _SHOWN_CATEGORIES:
                    hint = f" (known: {', '.join(spec.categories)})"
                problem("unknown category", unknown, lambda v: f"{v} is not a known category{hint}")
                unknown = None
        return stripped.where(~missing), problems, unknown

    if spec.kind is ColumnKind.BOOLEAN:
        lowered = stripped.str.lower()
        true = lowered.isin(_TRUE).to_numpy(dtype=bool)
        false = lowered.isin(_FALSE).to_numpy(dtype=bool)
        problem(
            "not a boolean",
            ~missing & ~true & ~false,
            lambda v: f"{v} is not a boolean (use true/false, yes/no or 1/0)",
        )
        return np.where(true, 1.0, np.where(false, 0.0, np.nan)), problems, None

    numbers = _to_float(stripped, missing)
    finite = np.isfinite(numbers)
    problem("not a number", ~missing & np.isnan(numbers), lambda v: f"{v} is not a number")
    problem("not a finite number", np.isinf(numbers), lambda v: f"{v} is not a finite number")
    if spec.kind is ColumnKind.INTEGER:
        fractional = np.zeros_like(finite)
        fractional[finite] = numbers[finite] != np.floor(numbers[finite])
        problem("not a whole number", fractional, lambda v: f"{v} is not a whole number")
        finite &= ~fractional
    if spec.min is not None:
        low = _fmt(spec.min)
        problem(
            f"below the minimum {low}",
            finite & (numbers < spec.min),
            lambda v: f"{v} is below the minimum {low}",
        )
    if spec.max is not None:
        high = _fmt(spec.max)
        problem(
            f"above the maximum {high}",
            finite & (numbers > spec.max),
            lambda v: f"{v} is above the maximum {high}",
        )
    return numbers, problems, None


def _missing(stripped: pd.Series) -> np.ndarray:
    """Empty cells and missing-value spellings (NA, n/a, null, None, NaN, -, ?, #N/A in any case)."""
    tokens = pc.is_in(pc.utf8_lower(_arrow(stripped)), value_set=pa.array(_MISSING_TOKENS, type=pa.large_string()))
    return (stripped == "").to_numpy(dtype=bool) | tokens.to_numpy(zero_copy_only=False)


def _to_float(stripped: pd.Series, missing: np.ndarray) -> np.ndarray:
    """Parse numbers; ``missing`` cells and unparseable text become NaN."""
    cells = _arrow(stripped.where(~missing))
    try:
        # ~20x faster than pd.to_numeric. Both accept the same spellings (checked on nan, inf, Infinity,
        # 1e400, .5, 5., +3, 0x10, 1_0, 1,5, unicode digits...), so which one ran never changes a verdict.
        parsed = pc.cast(cells, pa.float64())
    except pa.ArrowInvalid:
        pass
    else:
        return parsed.to_numpy(zero_copy_only=False)
    # Some cell is not a number: the plainly written numbers still go through Arrow, and only the other
    # cells (usually a few) through pandas, which turns what it cannot parse into NaN.
    plain = pc.fill_null(pc.match_substring_regex(cells, _PLAIN_NUMBER), False)
    numbers = np.full(len(stripped), np.nan)
    numbers[plain.to_numpy(zero_copy_only=False)] = pc.cast(pc.filter(cells, plain), pa.float64()).to_numpy(
        zero_copy_only=False
    )
    rest = np.flatnonzero(~plain.to_numpy(zero_copy_only=False) & ~missing)
    if rest.size:
        others = pd.to_numeric(stripped.iloc[rest], errors="coerce")
        numbers[rest] = others.to_numpy(dtype=float, na_value=np.nan)
    return numbers


def _duplicates(texts: dict[str, pd.Series], lines: np.ndarray, is_structural: np.ndarray) -> _Problem:
    n = len(lines)
    mask = np.zeros(n, dtype=bool)
    # ragged rows hold shifted values: they neither duplicate nor are duplicated
    candidates = np.flatnonzero(~is_structural)
    if not candidates.size:
        return _Problem("duplicate row", mask, lambda pos: [])
    subset = (lambda t: t.iloc[candidates]) if is_structural.any() else (lambda t: t)
    columns = [_arrow(subset(t)) for t in texts.values()]
    # one key per row, hashed once: ~10x faster than combining per-column factorizations
    key = (
        pc.binary_join_element_wise(*columns, pa.scalar("\x1f", pa.large_string())) if len(columns) > 1 else columns[0]
    )
    codes = key.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # codes are numbered in order of first appearance: a row is a first occurrence iff its code is new
    seen_before = np.maximum.accumulate(np.concatenate(([-1], codes[:-1])))
    first_of_code = np.flatnonzero(codes > seen_before)
    first = candidates[first_of_code[codes]]
    dup = np.flatnonzero(first != candidates)
    # the separator may occur inside a value: confirm each duplicate cell by cell
    for values in texts.values():
        same = values.iloc[candidates[dup]].to_numpy() == values.iloc[first[dup]].to_numpy()
        dup = dup[same]
    mask[candidates[dup]] = True
    first_line = np.zeros(n, dtype=np.int64)
    first_line[candidates] = lines[first]
    return _Problem("duplicate row", mask, lambda pos: [f"duplicate of line {line}" for line in first_line[pos]])


def _too_many_message(problems: list[_Problem], lines: np.ndarray, n_bad: int, n: int, limit: float) -> str:
    counts: dict[str, tuple[int, int]] = {}
    for problem in problems:
        hits = np.flatnonzero(problem.mask)
        if len(hits):
            count, first = counts.get(problem.label, (0, int(lines[hits[0]])))
            counts[problem.label] = (count + len(hits), min(first, int(lines[hits[0]])))
    top = sorted(counts.items(), key=lambda item: (-item[1][0], item[1][1]))[:3]
    common = "; ".join(
        f"{label} ({count} row{'' if count == 1 else 's'}, first on line {first})" for label, (count, first) in top
    )
    return (
        f"{n_bad} of {n} rows ({n_bad / n:.0%}) are bad, more than the {limit:.0%} allowed "
        f"(max_bad_row_fraction); most common problems: {common}. Fix the file and upload it again."
    )


def _arrow(texts: pd.Series) -> pa.Array:
    """One contiguous Arrow string array (NaN cells as nulls), whatever storage the Series uses."""
    array = pa.array(texts, type=pa.large_string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _fmt(number: float) -> str:
    return f"{number:g}"

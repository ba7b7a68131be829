"""Reading an uploaded file: the whole-file checks, then the CSV parsed into an all-text frame.

A file that cannot be read is rejected whole (:class:`~mlops.core.errors.FileRejected` with a stable ``code``): too
large, empty, compressed, not UTF-8, no usable header, not comma-separated, unparseable quoting. Any other file
becomes a frame that :func:`mlops.data.validation.validate` splits row by row.

Choices worth knowing:

- ``read_csv`` keeps every value as the raw text (validation must see ``"007"`` and ``"nan"`` as written)
  and indexes the frame by the file's line number (header = line 1), so reasons point at real lines even
  with blank lines or quoted values spanning several lines.
- Rows with the wrong number of fields are row-level errors, not file-level: one ragged line in a million
  should not cost the other rows. ``read_csv`` keeps such a row (fields cut or padded to the header) and
  records why in ``df.attrs`` (:func:`row_errors` reads it back); ``validate`` quarantines it with that reason
  alone. When most rows are ragged the delimiter or quoting is wrong, and the file is rejected as ``unparseable``.
- Parsing is pyarrow's (fast, and it reports ragged rows one by one); the Python csv module is only used
  to number lines when a quoted value spans several lines.
- Lines holding only spaces or tabs count as blank lines (in files with more than one column).
- Header names are stripped of surrounding whitespace.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mlops.core.errors import FileRejected
from mlops.data.cells import excerpt
from mlops.data.schema import LINE

# Row-level problems found while reading (wrong number of fields), keyed by line. A JSON string rather
# than a dict because pandas deep-copies ``attrs`` on nearly every operation, and copying a str is free.
_ROW_ERRORS_ATTR = "mlops_row_errors"

_BLANK_CHARS = " \t\r\n"


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
        extra = ", ".join(excerpt(v) for v in fields[ncols:])
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


def row_errors(df: pd.DataFrame) -> dict[int, str]:
    """The reasons ``read_csv`` gave, by line, for the rows it kept with the wrong number of fields."""
    encoded = df.attrs.get(_ROW_ERRORS_ATTR)
    if not encoded or df.index.name != LINE:
        return {}
    return {int(line): reason for line, reason in json.loads(encoded).items()}

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
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mlops.core.config import INGEST_CHUNK_MB
from mlops.core.errors import FileRejected
from mlops.data import row_hashes
from mlops.data.blocks import LINE_END, Block, RecordBlocks, terminators, too_large
from mlops.data.cells import excerpt
from mlops.data.lines import BLANK_CHARS, record_lines
from mlops.data.schema import LINE

# Row-level problems found while reading (wrong number of fields), keyed by line. A JSON string rather
# than a dict because pandas deep-copies ``attrs`` on nearly every operation, and copying a str is free.
_ROW_ERRORS_ATTR = "mlops_row_errors"

# a first chunk with at least this many rows, most of them ragged, rejects the file before the rest is read
# (a wrong delimiter); later chunks count toward the whole file's verdict (CsvReader.finish)
_EARLY_RAGGED_ROWS = 1000


# pyarrow's default allocator here (mimalloc) hands each chunk's memory back and pays page faults for the next one:
# the system allocator read a 104 MiB file 1.4x faster (bench/bench_ingest.py). An explicit choice is respected.
if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
    pa.set_memory_pool(pa.system_memory_pool())

# One chunk of a file in memory at a time: a few times this in RSS while it is parsed and validated, whatever the
# file's size (bench/bench_ingest.py measures it).
DEFAULT_CHUNK_BYTES = INGEST_CHUNK_MB << 20


def read_csv(data: bytes, *, max_bytes: int) -> pd.DataFrame:
    """Parse an uploaded file held in memory into one all-text frame indexed by line number (``_line``)."""
    if len(data) > max_bytes:
        raise FileRejected("too_large", too_large(len(data), max_bytes))
    reader = CsvReader(io.BytesIO(data), max_bytes=max_bytes, chunk_bytes=max(len(data), 1))
    frames = list(reader.chunks())
    reader.finish()
    # a file not ending on a line end is cut before its last record: two frames then
    return frames[0] if len(frames) == 1 else pd.concat(frames)


@dataclass(frozen=True)
class Header:
    """The header record as the file writes it: later chunks are parsed behind a copy of it."""

    names: list[str]
    raw: bytes  # the file's bytes up to the end of the header record, byte order mark removed
    lines: int  # the physical lines those bytes span (blank lines before the header included)


class CsvReader:
    """A CSV read from a binary stream chunk by chunk, each chunk an all-text frame indexed by the file's line
    numbers; whole-file verdicts that need every row (no data row at all, mostly ragged rows) come from
    :meth:`finish`, once the chunks are consumed.

    A part of a file (a byte range starting on a record boundary) is read with the file's ``header`` and the
    range's ``offset`` and ``first_line``.
    """

    def __init__(self, source: BinaryIO, *, max_bytes: int | None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 header: Header | None = None, offset: int = 0, first_line: int = 1) -> None:
        self.blocks = RecordBlocks(source, chunk_bytes=chunk_bytes, max_bytes=max_bytes, offset=offset,
                                   first_line=first_line)
        self.header = header
        self.rows = 0  # data rows (blank lines aside), ragged ones included
        self.ragged = 0

    @property
    def sha256(self) -> str:
        return self.blocks.sha256

    def close(self) -> None:
        """Stop reading: the stream closed, the hashing thread ended (what it read so far stays hashed)."""
        self.blocks.close()
        close = getattr(self.blocks.source, "close", None)
        if close is not None:
            close()

    def chunks(self) -> Iterator[pd.DataFrame]:
        for frame, _ in self.hashed_chunks():
            yield frame

    def hashed_chunks(self) -> Iterator[tuple[pd.DataFrame, np.ndarray | None]]:
        """The chunks, each with its rows' hashes (:mod:`mlops.data.row_hashes`) when its lines could give them
        cheaply, None otherwise."""
        for block in self.blocks:
            # once a chunk held ragged rows, the others are read single-threaded at once (see _parse)
            threads = not self.ragged
            if self.header is None:
                self.header, frame = _first_chunk(block.data, threads=threads)
                rows = block.data.removeprefix(codecs.BOM_UTF8)[len(self.header.raw):]
            else:
                frame = _later_chunk(block, self.header, threads=threads)
                rows = block.data
            ragged = len(row_errors(frame))
            self.rows += len(frame)
            self.ragged += ragged
            hashes = None if ragged else row_hashes.from_lines(rows, len(frame))
            del rows
            yield frame, hashes
            del frame, block, hashes  # not held while the next chunk is parsed: one chunk in memory at a time
            pa.default_memory_pool().release_unused()  # and what it freed goes back, not kept as fragments
        if self.header is None:
            raise FileRejected("empty_file",
                               "the file is empty (0 bytes); upload a CSV with a header row and data rows.")

    def finish(self) -> None:
        assert self.header is not None
        whole_file_verdicts(self.header.names, rows=self.rows, ragged=self.ragged)


def whole_file_verdicts(names: list[str], *, rows: int, ragged: int) -> None:
    """Refuse a file (or the parts of one, counted together) with no data row, or with mostly ragged rows."""
    if rows == 0:
        raise FileRejected(
            "header_only",
            f"the file has a header ({', '.join(names)}) but no data rows; add rows below the header.",
        )
    if ragged * 2 > rows:
        raise FileRejected(
            "unparseable",
            f"{ragged} of {rows} data rows do not have the header's {len(names)} fields; the file "
            "must be comma-separated, with values that contain commas quoted: check the delimiter "
            "and the quoting.",
        )


def _first_chunk(data: bytes, *, threads: bool = True) -> tuple[Header, pd.DataFrame]:
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
    names, header_lines = _header_names(text)
    ends = [m.end() for _, m in zip(range(header_lines), LINE_END.finditer(raw), strict=False)]
    header = Header(names, raw[: ends[-1]] if len(ends) == header_lines else raw, header_lines)
    return header, _parse(raw, text, names, line_shift=0, threads=threads)


def _later_chunk(block: Block, header: Header, *, threads: bool = True) -> pd.DataFrame:
    text = header.raw.decode("utf-8") + _decode(block.data, offset=block.offset, first_line=block.first_line)
    # the chunk is parsed behind the header's bytes, so its lines count from the header's; shift them back
    return _parse(header.raw + block.data, text, header.names, line_shift=block.first_line - 1 - header.lines,
                  threads=threads)


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


def _decode(data: bytes, *, offset: int = 0, first_line: int = 1) -> str:
    """``data`` as text; ``offset`` and ``first_line`` place it in the file, for the messages."""
    resave = "save it as 'CSV UTF-8' (in Excel: File > Save As > CSV UTF-8) and upload it again."
    if offset == 0 and data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise FileRejected("encoding", f"the file is encoded as UTF-32, not UTF-8; {resave}")
    if offset == 0 and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileRejected(
            "encoding",
            f"the file is encoded as UTF-16 (it starts with a UTF-16 byte order mark), not UTF-8; {resave}",
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        sample = data[:4096]
        nuls = sample.count(0)
        # ASCII text in UTF-16 has a NUL in every other byte, all on the same parity
        utf16 = max(sample[0::2].count(0), sample[1::2].count(0)) >= 0.9 * nuls
        if offset == 0 and nuls * 4 >= len(sample) and utf16:
            raise FileRejected("encoding", f"the file looks like UTF-16 text without a byte order mark; {resave}")
        line = first_line + terminators(data[:nul])
        raise FileRejected(
            "encoding",
            f"the file contains NUL bytes (first on line {line}): it is a binary file (an Excel .xls "
            f"workbook, a parquet file, an image...) or UTF-16 text, not a UTF-8 CSV; {resave}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + terminators(data[: exc.start])
        raise FileRejected(
            "encoding",
            f"line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {offset + exc.start}); the file "
            f"is probably in another encoding such as Windows-1252 or Latin-1; {resave}",
        ) from None
    return text.removeprefix("\ufeff") if offset == 0 else text


def _header_names(text: str) -> tuple[list[str], int]:
    """The header's column names, and the physical line on which the header record ends."""
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
    return names, line


def _parse(raw: bytes, text: str, names: list[str], *, line_shift: int, threads: bool = True) -> pd.DataFrame:
    """One chunk (the header's bytes, then whole records) as an all-text frame indexed by the file's lines."""
    ncols = len(names)
    invalid: list[tuple[int | None, int, str]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        table = _read_text_table(raw, ncols, on_invalid, threads=threads)
        if invalid and threads:
            # only single-threaded does pyarrow know the record number of a ragged row: read the chunk again
            invalid.clear()
            table = _read_text_table(raw, ncols, on_invalid, threads=False)
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
        if ncols > 1 and actual == 1 and not row_text.strip(BLANK_CHARS):
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
        return pd.DataFrame({name: pd.Series([], dtype="str") for name in names}).set_axis(
            pd.Index([], dtype=np.int64, name=LINE))
    if line_shift == 0 and len(ragged_pos) * 2 > kept and kept >= _EARLY_RAGGED_ROWS:
        # a wrong delimiter shows at once: no need to read the rest of a large file to say so
        raise FileRejected(
            "unparseable",
            f"{len(ragged_pos)} of {kept} data rows (from line {line_shift + 2}) do not have the header's {ncols} "
            "fields; the file must be comma-separated, with values that contain commas quoted: check the "
            "delimiter and the quoting.",
        )

    lines = record_lines(raw, text, ncols, kept, skipped_blank=bool(dropped.any()), line_shift=line_shift)
    frame.index = pd.Index(lines, name=LINE)
    if ragged_pos:
        # position among kept records = position among all records minus the dropped ones before it
        shift = np.cumsum(dropped)
        ragged_lines = [int(lines[p - shift[p]]) for p in ragged_pos]
        frame.attrs[_ROW_ERRORS_ATTR] = json.dumps(dict(zip(map(str, ragged_lines), ragged_reasons, strict=True)))
    return frame


def _read_text_table(raw: bytes, ncols: int, on_invalid: Any, *, threads: bool) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(raw),
        read_options=pacsv.ReadOptions(use_threads=threads, autogenerate_column_names=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={f"f{i}": pa.large_string() for i in range(ncols)},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


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


def row_errors(df: pd.DataFrame) -> dict[int, str]:
    """The reasons ``read_csv`` gave, by line, for the rows it kept with the wrong number of fields."""
    encoded = df.attrs.get(_ROW_ERRORS_ATTR)
    if not encoded or df.index.name != LINE:
        return {}
    return {int(line): reason for line, reason in json.loads(encoded).items()}

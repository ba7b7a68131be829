"""Reading an S3 object in bounded chunks, and writing the scored rows, for batch inference (``mlops.batch.run``).

Memory stays flat whatever the object's size: a CSV object is streamed and cut every ``chunk_rows`` rows; a
Parquet object is read one row group at a time through ranged GETs (its footer says where each group is).
Output goes to a local file, chunk by chunk, and is uploaded once complete (a managed, multipart upload).

A chunk whose read fails can be read again: the CSV reader restarts the stream at the byte where the chunk
began (a ranged GET), the Parquet reader reads the row group again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STREAM_BYTES = 1 << 20  # what one read of the S3 stream asks for


@dataclass
class Chunk:
    first_row: int  # 1-based number of its first data row within the object (the line after a CSV's header)
    records: list[dict[str, Any]]  # column -> value: strings from a CSV, typed values from Parquet
    numbers: list[int]  # each record's row number
    bad: dict[int, str]  # row number -> why the row could not be read (a CSV line with the wrong field count)
    table: pa.Table | None = None  # the Parquet rows as read, to write them back with their types

    @property
    def size(self) -> int:
        return len(self.records) + len(self.bad)


class _Lines:
    """The lines of a byte stream, decoded, with their line endings, counting the bytes handed out: csv.reader
    pulls one line at a time and never reads ahead, so after a record ``consumed`` is where the next one starts."""

    def __init__(self, stream: Iterator[bytes], start: int) -> None:
        self.stream = stream
        self.consumed = start
        self._pending = b""

    def __iter__(self) -> Iterator[str]:
        for block in self.stream:
            self._pending += block
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                yield self._take(line + b"\n")
        if self._pending:
            line, self._pending = self._pending, b""
            yield self._take(line)

    def _take(self, raw: bytes) -> str:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the bytes at offset {self.consumed + exc.start} are not UTF-8; save the file as "
                             "UTF-8") from exc
        self.consumed += len(raw)
        return text


class CsvReader:
    """``next_chunk()`` reads at most ``chunk_rows`` rows; ``commit()`` moves past them, ``restart()`` makes the
    next read start again from the chunk's first byte (after a failure)."""

    def __init__(self, s3: Any, bucket: str, key: str, chunk_rows: int) -> None:
        self.s3, self.bucket, self.key, self.chunk_rows = s3, bucket, key, chunk_rows
        self.columns: list[str] = []
        self._offset = 0  # the byte where the next chunk starts
        self._row = 1  # the number of the next chunk's first row
        self._lines: _Lines | None = None
        self._reader: Iterator[list[str]] = iter(())
        self._open()
        header = next(self._reader, None)
        if header is not None:
            self.columns = [c.removeprefix("\ufeff") if i == 0 else c for i, c in enumerate(header)]
        self._offset = self._lines.consumed if self._lines else 0
        self._read_to = (self._offset, self._row)

    def _open(self) -> None:
        extra = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        body = self.s3.get_object(Bucket=self.bucket, Key=self.key, **extra)["Body"]
        self._lines = _Lines(body.iter_chunks(STREAM_BYTES), self._offset)
        self._reader = csv.reader(iter(self._lines))

    @property
    def next_row(self) -> int:
        return self._row

    def restart(self) -> None:
        """Read the current chunk again, from its first byte."""
        self._open()

    def next_chunk(self) -> Chunk | None:
        records: list[dict[str, Any]] = []
        numbers: list[int] = []
        bad: dict[int, str] = {}
        first = row = self._row
        for fields in self._reader:
            if len(fields) == len(self.columns):
                records.append(dict(zip(self.columns, fields, strict=True)))
                numbers.append(row)
            elif fields:  # a blank line is no row
                bad[row] = f"the row has {len(fields)} fields, the header has {len(self.columns)}"
            else:
                continue
            row += 1
            if row - self._row >= self.chunk_rows:
                break
        if row == first:
            return None
        assert self._lines is not None
        self._read_to = (self._lines.consumed, row)
        return Chunk(first_row=first, records=records, numbers=numbers, bad=bad)

    def commit(self) -> None:
        self._offset, self._row = self._read_to


class _RangeFile(io.RawIOBase):
    """A seekable, read-only view of an S3 object through ranged GETs, for pyarrow's Parquet reader."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int) -> None:
        self.s3, self.bucket, self.key, self.size = s3, bucket, key, size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        data: bytes = self.s3.get_object(Bucket=self.bucket, Key=self.key,
                                         Range=f"bytes={self.position}-{end - 1}")["Body"].read()
        self.position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class ParquetReader:
    """One chunk per row group (the unit a Parquet writer bounds), read again on ``restart()``."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int) -> None:
        self.file = pq.ParquetFile(_RangeFile(s3, bucket, key, size))
        self.columns = list(self.file.schema_arrow.names)
        self.schema = self.file.schema_arrow
        self._group = 0
        self._row = 1

    @property
    def next_row(self) -> int:
        return self._row

    def restart(self) -> None:
        """Nothing to rewind: the next read is the row group that failed."""

    def group_rows(self) -> int:
        """How many rows the current row group holds (from the footer, without reading it)."""
        return int(self.file.metadata.row_group(self._group).num_rows)

    def commit(self) -> None:
        """Move past the current row group, read or given up on."""
        self._row += self.group_rows()
        self._group += 1

    def next_chunk(self) -> Chunk | None:
        if self._group >= self.file.num_row_groups:
            return None
        table = self.file.read_row_group(self._group)
        return Chunk(first_row=self._row, records=table.to_pylist(),
                     numbers=list(range(self._row, self._row + table.num_rows)), bad={}, table=table)


class CsvWriter:
    def __init__(self, path: Any, columns: list[str]) -> None:
        self.file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.writer = csv.writer(self.file)
        self.writer.writerow(columns)

    def write(self, chunk: Chunk, keep: list[int], added: dict[str, list[Any]]) -> None:
        """The chunk's records at positions ``keep``, each followed by its added columns."""
        names = list(added)
        for i, position in enumerate(keep):
            self.writer.writerow([*chunk.records[position].values(), *(added[n][i] for n in names)])

    def close(self) -> None:
        self.file.close()


class ParquetWriter:
    """The input's columns with their types, then the added ones; one row group per chunk."""

    def __init__(self, path: Any, schema: pa.Schema, added: dict[str, pa.DataType]) -> None:
        self.schema = schema
        for name, kind in added.items():
            self.schema = self.schema.append(pa.field(name, kind))
        self.writer = pq.ParquetWriter(path, self.schema)

    def write(self, chunk: Chunk, keep: list[int], added: dict[str, list[Any]]) -> None:
        assert chunk.table is not None
        table = chunk.table.take(pa.array(keep, type=pa.int64()))
        for name, values in added.items():
            table = table.append_column(self.schema.field(name), pa.array(values, type=self.schema.field(name).type))
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()

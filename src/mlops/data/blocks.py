"""A byte stream cut into blocks that end on CSV record boundaries, hashed as it is read: what lets ingest read a
file of any size a chunk at a time (:class:`mlops.data.reading.CsvReader` parses the blocks), and lets the ingest
state machine cut a large file into byte ranges that each start on a record (mlops.data.ingest_map)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from mlops.core.errors import FileRejected

# A record that does not end within this many chunks is a quote that never closes, not a value.
_MAX_RECORD_CHUNKS = 4
_MAX_RECORD_BYTES = 1 << 20
_READ_BYTES = 4 << 20


def too_large(size: int, max_bytes: int, *, at_least: bool = False) -> str:
    return (
        f"the file is {'over ' if at_least else ''}{mb(size)}, over the {mb(max_bytes)} limit for one upload "
        "(the model's max_file_mb); split it into smaller files, each with the header row, and upload them "
        "separately, or raise max_file_mb in mlops.toml."
    )


def mb(n: int) -> str:
    mb = n / 2**20
    return f"{mb:.1f} MB" if mb >= 0.1 else f"{mb:.6f}".rstrip("0") + f" MB ({n:,} bytes)"


@dataclass(frozen=True)
class Block:
    data: bytes
    offset: int  # of its first byte in the file
    first_line: int  # the file's physical line its first byte is on


class RecordBlocks:
    """A byte stream cut into blocks of about ``chunk_bytes`` that end on a record boundary, hashed as it is read.

    A block ends after a line terminator outside quoted values: the count of quote characters before it is even
    (exact for standard CSV, where a quote inside a value is doubled). A stray quote in the middle of a field makes
    the count lie; the block is then cut where Python's csv reader, which reads such quotes as pyarrow does, says a
    record starts.
    """

    def __init__(self, source: BinaryIO, *, chunk_bytes: int, max_bytes: int | None = None,
                 offset: int = 0, first_line: int = 1) -> None:
        self.source, self.chunk_bytes, self.max_bytes = source, max(chunk_bytes, 1), max_bytes
        self.offset, self.first_line = offset, first_line
        self.bytes_read = 0
        self._sha = hashlib.sha256()
        # hashing runs beside parsing (hashlib lets go of the GIL): one thread, so the parts are hashed in order
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._hashed: Future[None] | None = None

    @property
    def sha256(self) -> str:
        if self._hashed is not None:
            self._hashed.result()
        return self._sha.hexdigest()

    def drain(self) -> str:
        """Read (and hash) the rest of the stream unparsed; the sha256 of the whole."""
        while self._read(_READ_BYTES):
            pass
        self.close()
        return self.sha256

    def close(self) -> None:
        self._hasher.shutdown(wait=True)

    def _read(self, n: int) -> bytes:
        data = self.source.read(n)
        if data:
            self._hashed = self._hasher.submit(self._sha.update, data)
            self.bytes_read += len(data)
            if self.max_bytes is not None and self.bytes_read > self.max_bytes:
                raise FileRejected("too_large", too_large(self.bytes_read, self.max_bytes, at_least=True))
        return data

    def __iter__(self) -> Iterator[Block]:
        pending: list[bytes] = []
        size, eof, want = 0, False, self.chunk_bytes
        offset, line = self.offset, self.first_line
        while True:
            while not eof and size < want:
                part = self._read(min(_READ_BYTES, want - size))
                if not part:
                    eof = True
                    self.close()
                pending.append(part)
                size += len(part)
            buffer = b"".join(pending)
            if not buffer:
                return
            cut = len(buffer) if eof else _record_cut(buffer)
            if cut is None:
                if len(buffer) >= max(_MAX_RECORD_CHUNKS * self.chunk_bytes, _MAX_RECORD_BYTES):
                    raise FileRejected(
                        "unparseable",
                        f"line {line}: a record runs over {mb(len(buffer))} (a quoted value whose closing "
                        'quote (") is missing?); fix the quoting.',
                    )
                pending, want = [buffer], 2 * size  # doubling: a long record is rescanned a few times, not per chunk
                continue
            block = buffer[:cut]
            pending, size, want = [buffer[cut:]], len(buffer) - cut, self.chunk_bytes
            del buffer  # while the block is parsed, only it and the rest of the buffer are held
            offset, line, start, first = offset + len(block), line + terminators(block), offset, line
            yield Block(block, start, first)
            del block
            if eof and not size:
                return


def terminators(data: bytes) -> int:
    """Line terminators as the parser counts them: LF, CRLF or a lone CR."""
    # `in` is a memchr: most files hold no CR, and counting a two-byte pattern is slow
    return data.count(b"\n") + (data.count(b"\r") - data.count(b"\r\n") if b"\r" in data else 0)


def _record_cut(buffer: bytes) -> int | None:
    """Where the last complete record of ``buffer`` ends (``buffer`` starts a record), or None: none ends in it."""
    newline = b"\n" if b"\n" in buffer else b"\r"
    end = len(buffer) if newline == b"\n" else len(buffer) - 1  # a CR last might be half of a CRLF
    pos = buffer.rfind(newline, 0, end)
    if b'"' not in buffer:
        return pos + 1 if pos >= 0 else None
    quotes = buffer.count(b'"', 0, pos) if pos >= 0 else 0
    tries = 0
    while pos >= 0 and tries < 64:
        if quotes % 2 == 0:
            return pos + 1
        previous = buffer.rfind(newline, 0, pos)
        quotes -= buffer.count(b'"', previous + 1, pos) if previous >= 0 else quotes
        pos, tries = previous, tries + 1
    return _scanned_cut(buffer) if pos >= 0 or tries else None


def _scanned_cut(buffer: bytes) -> int | None:
    """Where the last record the csv reader finds in ``buffer`` starts (it may be cut short), or None."""
    reader = csv.reader(io.StringIO(buffer.decode("utf-8", errors="replace"), newline=""))
    before_last = after = 0  # the physical line on which the last but one, and the last, record ends
    try:
        for _record in reader:
            before_last, after = after, reader.line_num
        complete = before_last
    except csv.Error:
        complete = after  # the record that fails is the last one, cut short by the buffer's end
    if complete == 0:
        return None
    for seen, match in enumerate(LINE_END.finditer(buffer), start=1):
        if seen == complete:
            return match.end()
    return None


LINE_END = re.compile(rb"\r\n|\r|\n")

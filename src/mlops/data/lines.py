"""Which line of the file each record of a chunk starts on, so that every quarantined row and every message names
the line a person sees in an editor, even with blank lines, CRLF or lone CR, and quoted values spanning lines.
Cheapest first: counting lines, then positions of line ends and quotes, and only then a real CSV scan."""

from __future__ import annotations

import csv
import io

import numpy as np

from mlops.core.errors import FileRejected

BLANK_CHARS = " \t\r\n"


def record_lines(raw: bytes, text: str, ncols: int, n_records: int, *, skipped_blank: bool,
                  line_shift: int) -> np.ndarray:
    """The file's 1-based line on which each data record of the chunk starts."""
    lone_cr = b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n")
    quoted = b'"' in raw
    if not (quoted or skipped_blank or lone_cr):
        # without a quote no record spans lines: equal counts of lines and records rule out a blank line too
        n_lines = raw.count(b"\n") + (not raw.endswith(b"\n"))
        if n_lines - 1 == n_records:
            return np.arange(2, n_records + 2, dtype=np.int64) + line_shift
    if quoted and not (skipped_blank or lone_cr):
        record_starts_at = _quoted_record_starts(raw)
        if record_starts_at is not None and len(record_starts_at) - 1 == n_records:
            return record_starts_at[1:] + line_shift
    starts, has_content = _physical_lines(raw, whitespace_is_blank=ncols > 1)
    content = np.flatnonzero(has_content) + 1
    if len(content) - 1 == n_records:
        return content[1:] + line_shift
    quotes = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 34) if quoted else None
    if quotes is not None and len(quotes) % 2 == 0:
        # A quoted value spans lines. A record starts on a line with text that begins outside quotes: after an even
        # number of quote characters (exact unless a stray quote sits inside a field, which the count then shows).
        # An odd count overall is a quote left open: the scan below says where.
        outside = np.searchsorted(quotes, starts) % 2 == 0
        record_starts_at = np.flatnonzero(outside & has_content) + 1
        if len(record_starts_at) - 1 == n_records:
            return record_starts_at[1:] + line_shift
    # Only a real CSV scan knows where records start (slower, so not first).
    record_starts = _scan_record_starts(text, ncols, line_shift)
    last = record_starts[-1]
    if raw.count(b'"', int(starts[last - 1])) % 2:
        raise FileRejected(
            "unparseable",
            f'line {last + line_shift}: a quoted value starts here and its closing quote (") is missing; '
            "fix the quoting.",
        )
    if len(record_starts) - 1 != n_records:
        raise FileRejected(
            "unparseable", "the file's quoting is ambiguous (stray quote characters?); re-export it as CSV."
        )
    return np.asarray(record_starts[1:], dtype=np.int64) + line_shift


def _quoted_record_starts(raw: bytes) -> np.ndarray | None:
    """The lines on which records start, for a chunk with quoted values, no lone CR and no whitespace-only record:
    the non-empty lines that begin outside quotes (after an even number of quote characters). None when the count of
    quotes is odd (a quote left open: the careful scan says where). Works on positions, not on a mask per byte."""
    a = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(a == 34)
    if len(quotes) % 2:
        return None
    ends = np.flatnonzero(a == 10)
    starts = np.concatenate(([0], ends + 1))
    if starts[-1] == a.size:
        starts = starts[:-1]
    line_end = np.append(ends, a.size)[: len(starts)]
    length = line_end - starts
    has_cr = np.zeros(len(starts), dtype=bool)
    filled = np.flatnonzero(length > 0)
    has_cr[filled] = a[line_end[filled] - 1] == 13
    outside = np.searchsorted(quotes, starts) % 2 == 0
    return np.flatnonzero(outside & (length - has_cr > 0)) + 1


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


def _scan_record_starts(text: str, ncols: int, line_shift: int) -> list[int]:
    reader = csv.reader(io.StringIO(text, newline=""))
    starts: list[int] = []
    previous = 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not record or (ncols > 1 and len(record) == 1 and not record[0].strip(BLANK_CHARS)):
                continue
            starts.append(start)
    except csv.Error as exc:
        raise FileRejected("unparseable", f"line {reader.line_num + line_shift}: {exc}.") from None
    return starts

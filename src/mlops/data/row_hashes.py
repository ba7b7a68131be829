"""One 64-bit hash per data row: the key under which a row is matched with the rows of earlier chunks
(:class:`mlops.data.seen_rows.SeenRows`).

A row's key is its cells joined by the unit separator (0x1F), as bytes: for a line written plainly (no quote, no
carriage return) that is the line's bytes with each comma replaced. So a chunk of plain lines is hashed straight
from the file's bytes, without building one string per row from the parsed columns (5-10x faster on numeric and
categorical files), and any other chunk from its cells, with the same result for the same row. (Two rows whose
cells hold the separator itself could share a key; within a chunk, rows are confirmed cell by cell anyway.)

Python's ``hash`` (SipHash) is the hash: the same within one process, which is all one file read by one function
needs. Rows hashed in different processes (the Distributed Map's parts) use :func:`mlops.data.ingest_map.text_hashes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SEPARATOR = b"\x1f"


def from_lines(data: bytes, rows: int) -> np.ndarray | None:
    """The hashes of ``rows`` rows written one per line in ``data``; None when the lines are not plainly the rows
    (a quote, a carriage return, a blank line, a count that differs): their cells must be hashed instead."""
    if b'"' in data or b"\r" in data:
        return None
    lines = data.replace(b",", _SEPARATOR).split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the line end of the last row
    if len(lines) != rows or (rows and b"" in lines):
        return None
    return _hashes(lines, rows)


def from_cells(columns: list[pa.Array]) -> np.ndarray:
    """The hashes of rows given as text columns in the file's column order (the same as :func:`from_lines` gives
    for a row written plainly)."""
    key = pc.binary_join_element_wise(*columns, pa.scalar(_SEPARATOR.decode(), pa.large_string()))
    return _hashes(key.cast(pa.large_binary()).to_numpy(zero_copy_only=False), len(key))


def _hashes(keys: Iterable[Any], count: int) -> np.ndarray:
    return np.fromiter(map(hash, keys), dtype=np.int64, count=count).view(np.uint64)

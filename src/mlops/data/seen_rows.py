"""The rows of a file's earlier chunks (or parts), as 64-bit hashes with the line each was first seen on: how a
duplicate of a row read long before is found in bounded memory (16 bytes a row)."""

from __future__ import annotations

import numpy as np


class SeenRows:
    """The rows of earlier chunks, as 64-bit hashes of their text with the line each first appeared on.

    Sorted runs merged as they grow (a log-structured set): adding a chunk and looking one up cost
    O(rows of the chunk x log), and memory is 16 bytes a row whatever the rows hold. Within a chunk, duplicates
    are confirmed cell by cell; across chunks two rows are the same when their hashes are (Python's 64-bit
    SipHash of the joined cells: a false match among a billion distinct rows has odds of about 1 in 40).
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes + lines.nbytes for h, lines in self._runs)

    def first_lines(self, hashes: np.ndarray) -> np.ndarray:
        """The line each hash was first seen on, 0 where it was not."""
        found = np.zeros(len(hashes), dtype=np.int64)
        for run, lines in self._runs:
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            hit = (run[at] == hashes) & (found == 0)
            found[hit] = lines[at[hit]]
        return found

    def add(self, hashes: np.ndarray, lines: np.ndarray) -> None:
        if not len(hashes):
            return
        order = np.argsort(hashes, kind="stable")
        self._runs.append((hashes[order], lines[order]))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (h1, l1), (h2, l2) = self._runs.pop(-2), self._runs.pop()
            merged = np.concatenate((h1, h2))
            order = np.argsort(merged, kind="stable")
            self._runs.append((merged[order], np.concatenate((l1, l2))[order]))

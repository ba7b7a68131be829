"""Validating a frame from :func:`mlops.data.reading.read_csv` against a data contract, row by row.

A file is rejected whole (:class:`~mlops.core.errors.FileRejected` with a stable ``code``) when its columns
are not the contract's or too many of its rows are bad; otherwise it is split row by row into ``good`` rows
(typed, ready for training) and ``bad`` rows (kept verbatim with their line number and every reason), so a
user can fix exactly the lines that were refused. No row is ever dropped silently: ``rows_in`` always equals
the number of data rows in the file.

Choices worth knowing:

- Columns are matched by exact name, in any order.
- In ``good``, integer columns are float64 like numeric ones (models consume floats, and a nullable
  integer column needs NaN), booleans are float64 0/1, and categoricals are pandas strings with NaN for
  an empty cell.
- A missing value (an empty cell or one of its usual spellings, see :mod:`mlops.data.cells`) is accepted
  (NaN in ``good``) when the column is nullable, quarantined as "missing value" otherwise. In a categorical
  column this holds too, unless the contract explicitly lists the spelling as a category (e.g. "NA" for
  North America, declared in mlops.toml).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops.core.errors import FileRejected
from mlops.data.cells import (
    FALSE_SPELLINGS,
    TRUE_SPELLINGS,
    as_arrow,
    column_text,
    excerpt,
    formula_like,
    missing_cells,
    plain_numbers,
    to_float,
)
from mlops.data.reading import row_errors
from mlops.data.row_hashes import from_cells
from mlops.data.schema import LINE, REASON, ColumnKind, ColumnSpec, DataContract
from mlops.data.seen_rows import SeenRows

_SHOWN_CATEGORIES = 10


@dataclass
class ValidationResult:
    good: pd.DataFrame
    bad: pd.DataFrame
    new_categories: dict[str, list[str]]

    @property
    def rows_in(self) -> int:
        return len(self.good) + len(self.bad)


@dataclass
class _Problem:
    label: str  # the reason without the value: what the rejection message counts
    mask: np.ndarray
    reasons: Callable[[np.ndarray], list[str]]  # positions -> one reason per position


def validate(df: pd.DataFrame, contract: DataContract, *, max_bad_row_fraction: float = 1.0) -> ValidationResult:
    """Split a frame from :func:`read_csv` into typed good rows and verbatim bad rows."""
    validation = ChunkedValidation(contract, max_bad_row_fraction=max_bad_row_fraction)
    result = validation.chunk(df)
    validation.finish()
    return result


class ChunkedValidation:
    """A file validated chunk by chunk (frames from :class:`mlops.data.reading.CsvReader`), with what must hold
    over the whole file: duplicates across chunks, the share of bad rows (:meth:`finish`), new categories."""

    def __init__(self, contract: DataContract, *, max_bad_row_fraction: float = 1.0) -> None:
        self.contract, self.max_bad_row_fraction = contract, max_bad_row_fraction
        self.seen = None if contract.allow_duplicates else SeenRows()
        self.rows = self.bad = 0
        self.problems: dict[str, tuple[int, int]] = {}  # label -> (rows, first line)
        self.reasons: Counter[str] = Counter()
        self.new_categories: dict[str, set[str]] = {}

    def chunk(self, df: pd.DataFrame, hashes: np.ndarray | None = None) -> ValidationResult:
        """Judge one chunk; ``hashes``, its rows' hashes when the reader has them (:mod:`mlops.data.row_hashes`)."""
        _check_columns(df, self.contract)
        result, problems, lines = _validate_chunk(df, self.contract, self.seen, hashes)
        n_bad = len(result.bad)
        self.rows += len(df)
        self.bad += n_bad
        for problem in problems:
            hits = np.flatnonzero(problem.mask)
            if len(hits):
                self.count(problem.label, len(hits), int(lines[hits[0]]))
        if n_bad and self.rows and self.bad / self.rows > self.max_bad_row_fraction and self.rows >= _EARLY_ROWS:
            self.finish()  # a file bad from its first chunks is refused before the rest is read
        if n_bad:
            # rows share their reasons: each distinct list of reasons is split once
            for reasons, count in Counter(result.bad[REASON].tolist()).items():
                for reason in str(reasons).split("; "):
                    self.reasons[reason] += count
        for name, values in result.new_categories.items():
            self.new_categories.setdefault(name, set()).update(values)
        return result

    def count(self, label: str, rows: int, first_line: int) -> None:
        """``rows`` more rows with the problem ``label``, the first of them on ``first_line``."""
        total, at = self.problems.get(label, (0, first_line))
        self.problems[label] = (total + rows, min(at, first_line))

    def finish(self) -> None:
        """Refuse the file when more of its rows are bad than the contract allows."""
        n, n_bad = self.rows, self.bad
        if n and n_bad / n > self.max_bad_row_fraction:
            raise FileRejected("too_many_bad_rows", _too_many_message(self.problems, n_bad, n,
                                                                      self.max_bad_row_fraction))

    def categories(self) -> dict[str, list[str]]:
        return {name: sorted(values) for name, values in self.new_categories.items()}


# a file with this many rows read, and already more bad ones than allowed, is refused without reading further
_EARLY_ROWS = 1_000_000


def _validate_chunk(df: pd.DataFrame, contract: DataContract, seen: SeenRows | None,
                    hashes: np.ndarray | None) -> tuple[ValidationResult, list[_Problem], np.ndarray]:
    n = len(df)
    lines = df.index.to_numpy(dtype=np.int64) if df.index.name == LINE else np.arange(n, dtype=np.int64) + 2
    structural = row_errors(df)
    is_structural = np.isin(lines, list(structural)) if structural else np.zeros(n, dtype=bool)

    texts = {spec.name: column_text(df, spec.name) for spec in contract.columns}
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
        file_order = {str(name): texts[str(name)] for name in df.columns}
        problems.append(_duplicates(file_order, lines, is_structural, seen, hashes))
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

    bad = pd.DataFrame({str(c): _take(texts[c] if c in texts else column_text(df, c), bad_pos).to_numpy()
                        for c in df.columns}, dtype="str")
    bad[LINE] = lines[bad_pos]
    bad[REASON] = pd.Series(reasons, dtype="str")
    if len(bad_pos):
        good_pos = np.flatnonzero(~bad_mask)
        good = pd.DataFrame({name: _take(values, good_pos) for name, values in typed.items()})
    else:  # every row is good: the typed columns as they are, no copy
        good = pd.DataFrame({name: values.reset_index(drop=True) if isinstance(values, pd.Series) else values
                             for name, values in typed.items()})
    new_categories = {
        name: sorted(pd.unique(texts[name].str.strip()[mask & ~bad_mask]).tolist())
        for name, mask in unknown.items()
        if (mask & ~bad_mask).any()
    }
    return ValidationResult(good=good, bad=bad, new_categories=new_categories), problems, lines


def _take(values: Any, positions: np.ndarray) -> Any:
    if isinstance(values, pd.Series):
        if not len(positions):
            return values.iloc[:0].reset_index(drop=True)  # pandas' take of nothing from Arrow costs as much as some
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
    if spec.kind in (ColumnKind.NUMERIC, ColumnKind.INTEGER):
        plain = plain_numbers(raw)
        if plain is not None:
            return _check_numbers(spec, raw, plain, np.zeros(len(raw), dtype=bool), is_target=is_target)
    # A column of few distinct texts (categories, booleans) is judged value by value, not row by row
    values, expand = _distinct(raw) if spec.kind in (ColumnKind.CATEGORICAL, ColumnKind.BOOLEAN) else (raw, None)
    stripped = values.str.strip()
    missing = missing_cells(stripped)
    known = None
    if spec.kind is ColumnKind.CATEGORICAL:
        known = stripped.isin(spec.categories or []).to_numpy(dtype=bool)
        # a declared category wins over a missing-value spelling ("NA" for North America)
        missing &= ~known
    row_missing = missing if expand is None else missing[expand]
    problems: list[_Problem] = []
    if is_target or not spec.nullable:
        what = "missing target value" if is_target else "missing value"
        problems.append(_Problem(f"{name}: {what}", row_missing, lambda pos: [f"{name}: {what}"] * len(pos)))

    def problem(label: str, mask: np.ndarray, describe: Callable[[str], str]) -> None:
        rows = mask if expand is None else mask[expand]
        problems.append(
            _Problem(f"{name}: {label}", rows, lambda pos: [f"{name}: {describe(excerpt(v))}" for v in raw.iloc[pos]])
        )

    if known is not None:
        formula = ~missing & ~known & formula_like(stripped)
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
        typed = stripped.where(~missing)
        if expand is None:
            return typed, problems, unknown
        rows = pa.array(typed, type=pa.large_string(), from_pandas=True).take(pa.array(expand))
        return pa.chunked_array([rows]).to_pandas(), problems, None if unknown is None else unknown[expand]

    if spec.kind is ColumnKind.BOOLEAN:
        lowered = stripped.str.lower()
        true = lowered.isin(TRUE_SPELLINGS).to_numpy(dtype=bool)
        false = lowered.isin(FALSE_SPELLINGS).to_numpy(dtype=bool)
        problem(
            "not a boolean",
            ~missing & ~true & ~false,
            lambda v: f"{v} is not a boolean (use true/false, yes/no or 1/0)",
        )
        flags = np.where(true, 1.0, np.where(false, 0.0, np.nan))
        return (flags if expand is None else flags[expand]), problems, None

    return _check_numbers(spec, raw, to_float(stripped, missing), missing, problems=problems, is_target=is_target)


def _distinct(raw: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """The column's distinct texts and, for each row, the position of its text among them; the column itself and
    None when most texts are distinct (IDs, free text), where encoding would only cost."""
    encoded = as_arrow(raw).dictionary_encode()
    if 4 * len(encoded.dictionary) > len(raw):
        return raw, None
    return (pd.Series(encoded.dictionary.to_pylist(), dtype="str"),
            encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp))


def _check_numbers(spec: ColumnSpec, raw: pd.Series, numbers: np.ndarray, missing: np.ndarray, *, is_target: bool,
                   problems: list[_Problem] | None = None) -> tuple[Any, list[_Problem], None]:
    name = spec.name
    if problems is None:
        problems = []
        if is_target or not spec.nullable:
            what = "missing target value" if is_target else "missing value"
            problems.append(_Problem(f"{name}: {what}", missing, lambda pos: [f"{name}: {what}"] * len(pos)))

    def problem(label: str, mask: np.ndarray, describe: Callable[[str], str]) -> None:
        problems.append(
            _Problem(f"{name}: {label}", mask, lambda pos: [f"{name}: {describe(excerpt(v))}" for v in raw.iloc[pos]])
        )

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


def _duplicates(texts: dict[str, pd.Series], lines: np.ndarray, is_structural: np.ndarray,
                seen: SeenRows | None = None, row_hashes: np.ndarray | None = None) -> _Problem:
    n = len(lines)
    mask = np.zeros(n, dtype=bool)
    # ragged rows hold shifted values: they neither duplicate nor are duplicated
    candidates = np.flatnonzero(~is_structural)
    if not candidates.size:
        return _Problem("duplicate row", mask, lambda pos: [])
    if row_hashes is not None:
        hashes = row_hashes[candidates]
    else:
        subset = (lambda t: t.iloc[candidates]) if is_structural.any() else (lambda t: t)
        hashes = from_cells([as_arrow(subset(t)) for t in texts.values()])
    _, first_of_code, codes = np.unique(hashes, return_index=True, return_inverse=True)
    first = candidates[first_of_code[codes]]
    dup = np.flatnonzero(first != candidates)
    # equal hashes are confirmed cell by cell (the separator may also occur inside a value)
    for values in texts.values():
        if not len(dup):
            break
        same = values.iloc[candidates[dup]].to_numpy() == values.iloc[first[dup]].to_numpy()
        dup = dup[same]
    mask[candidates[dup]] = True
    first_line = np.zeros(n, dtype=np.int64)
    first_line[candidates] = lines[first]
    if seen is not None:
        # a row first seen in this chunk may repeat a row of an earlier chunk
        earlier = seen.first_lines(hashes[first_of_code])
        if (earlier > 0).any():
            row_earlier = earlier[codes]
            again = np.flatnonzero(row_earlier > 0)
            mask[candidates[again]] = True
            first_line[candidates[again]] = row_earlier[again]
        fresh = np.flatnonzero(earlier == 0)
        seen.add(hashes[first_of_code[fresh]], lines[candidates[first_of_code[fresh]]])
    return _Problem("duplicate row", mask, lambda pos: [f"duplicate of line {line}" for line in first_line[pos]])


def _too_many_message(counts: dict[str, tuple[int, int]], n_bad: int, n: int, limit: float) -> str:
    top = sorted(counts.items(), key=lambda item: (-item[1][0], item[1][1]))[:3]
    common = "; ".join(
        f"{label} ({count} row{'' if count == 1 else 's'}, first on line {first})" for label, (count, first) in top
    )
    return (
        f"{n_bad} of {n} rows ({n_bad / n:.0%}) are bad, more than the {limit:.0%} allowed "
        f"(max_bad_row_fraction); most common problems: {common}. Fix the file and upload it again."
    )


def _fmt(number: float) -> str:
    return f"{number:g}"

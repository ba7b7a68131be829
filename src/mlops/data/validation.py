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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops.core.errors import FileRejected
from mlops.data.cells import (
    FALSE_SPELLINGS,
    TRUE_SPELLINGS,
    as_arrow,
    column_text,
    excerpt,
    formula_like,
    missing_cells,
    to_float,
)
from mlops.data.reading import row_errors
from mlops.data.schema import LINE, REASON, ColumnKind, ColumnSpec, DataContract

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
    _check_columns(df, contract)
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

    bad = pd.DataFrame({str(c): column_text(df, c).iloc[bad_pos].to_numpy() for c in df.columns}, dtype="str")
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
    missing = missing_cells(stripped)
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
            _Problem(f"{name}: {label}", mask, lambda pos: [f"{name}: {describe(excerpt(v))}" for v in raw.iloc[pos]])
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
        return stripped.where(~missing), problems, unknown

    if spec.kind is ColumnKind.BOOLEAN:
        lowered = stripped.str.lower()
        true = lowered.isin(TRUE_SPELLINGS).to_numpy(dtype=bool)
        false = lowered.isin(FALSE_SPELLINGS).to_numpy(dtype=bool)
        problem(
            "not a boolean",
            ~missing & ~true & ~false,
            lambda v: f"{v} is not a boolean (use true/false, yes/no or 1/0)",
        )
        return np.where(true, 1.0, np.where(false, 0.0, np.nan)), problems, None

    numbers = to_float(stripped, missing)
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


def _duplicates(texts: dict[str, pd.Series], lines: np.ndarray, is_structural: np.ndarray) -> _Problem:
    n = len(lines)
    mask = np.zeros(n, dtype=bool)
    # ragged rows hold shifted values: they neither duplicate nor are duplicated
    candidates = np.flatnonzero(~is_structural)
    if not candidates.size:
        return _Problem("duplicate row", mask, lambda pos: [])
    subset = (lambda t: t.iloc[candidates]) if is_structural.any() else (lambda t: t)
    columns = [as_arrow(subset(t)) for t in texts.values()]
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


def _fmt(number: float) -> str:
    return f"{number:g}"

"""Inferring a data contract from a model's first file, when mlops.toml declares none.

The contract is one that the first accepted file satisfies, loose enough for later files to satisfy too:

- A column is numeric (integer when every number is written as a whole number) when all its non-missing
  values are finite numbers, or, with at least 20 numbers, when at least 95% are: a few stray cells
  ("abc", "1,5") then do not turn a continuous feature into a categorical one; ``validate`` quarantines
  those rows of the first file like any later bad row. Under 20 numbers the strict rule applies.
- A categorical feature with more distinct values than max(100, half its rows) is an identifier or free
  text, not a category set: it is inferred open (``categories=None``, any value accepted), so later files
  with new IDs are neither quarantined nor reported as new categories row by row.
- A missing-value spelling (NA, null, ...) never becomes a category, nor does a spreadsheet formula.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.core.errors import FileRejected
from mlops.data.cells import FALSE_SPELLINGS, TRUE_SPELLINGS, column_text, formula_like, missing_cells, to_float
from mlops.data.reading import row_errors
from mlops.data.schema import RESERVED, ColumnKind, ColumnSpec, DataContract

# a mostly numeric column is numeric when this many of its values are numbers, at least
_NUMERIC_SHARE = 0.95
_MIN_NUMBERS_TOLERATED = 20
# a categorical feature with more distinct values than this is open (IDs, free text)
_MAX_CATEGORIES = 100
_MAX_CATEGORY_SHARE = 0.5
_MAX_TARGET_CLASSES = 20


def infer_contract(df: pd.DataFrame, target: str | None) -> DataContract:
    """A contract that the first accepted file satisfies, loose enough for later files to satisfy too. Without a
    ``target`` (a clustering model) every column is a feature."""
    if target is not None and target not in df.columns:
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
    structural = row_errors(df)
    usable = ~df.index.isin(list(structural)) if structural else np.ones(len(df), dtype=bool)
    columns = []
    for name in df.columns:
        stripped = column_text(df, name)[usable].str.strip()
        missing = missing_cells(stripped)
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
    finite = np.isfinite(numbers) if numbers is not None else np.zeros(0, dtype=bool)
    all_numbers = numbers is not None and bool(finite.all())
    # (a column of numbers only is numeric whatever its distinct values: they are not counted then)
    distinct = pd.Series([], dtype="str") if all_numbers else pd.Series(pd.unique(values), dtype="str")
    # "Yes"/"YES"/"yes"... at most a few spellings; more distinct values cannot be a boolean
    spellings = (*TRUE_SPELLINGS, *FALSE_SPELLINGS)
    boolean = not all_numbers and len(distinct) <= 4 * len(spellings) and set(distinct.str.lower()) <= set(spellings)
    # of the boolean spellings only 0 and 1 are numbers: a 0/1 column is an integer one, but 0/1 with a
    # few yes/no is a boolean one, not an integer column with stray cells
    if numbers is not None and (all_numbers or not boolean):
        whole = numbers[finite]
        # a number with a fraction is not written as an integer: the pattern only runs on whole numbers
        integer = bool((whole == np.floor(whole)).all()) and bool(values[finite].str.fullmatch(r"[+-]?\d+").all())
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
    if not np.isfinite(to_float(head, np.zeros(len(head), dtype=bool))).any():
        return None
    parsed = to_float(values, np.zeros(n, dtype=bool))
    finite = np.isfinite(parsed)
    return parsed if numeric_enough(int(finite.sum()), n) else None


def numeric_enough(numbers: int, values: int) -> bool:
    """Whether ``numbers`` finite numbers among ``values`` non-missing cells make a numeric column: all of them, or
    at least ``_MIN_NUMBERS_TOLERATED`` that are at least ``_NUMERIC_SHARE`` of the values."""
    return numbers == values or (numbers >= _MIN_NUMBERS_TOLERATED and numbers >= _NUMERIC_SHARE * values)


def _safe_categories(distinct: pd.Series) -> list[str]:
    # a formula in the first file must not become a category, or every later file would accept it
    return sorted(distinct[~formula_like(distinct)].tolist())

"""The data contract of a model's input CSV: its columns, what each one accepts, and its versions.

A contract is declared in mlops.toml or inferred from a model's first file (:mod:`mlops.data.inference`), kept as
JSON, one immutable object per version (:class:`mlops.data.ingest.ContractStore`), and versioned because accepted
categories extend it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops.core import layout

# the line-number index of a frame that read_csv returns, and the reason column of quarantined rows: a data column
# cannot take these names, or a quarantine report would overwrite it
LINE = "_line"
REASON = "_reason"
RESERVED = frozenset({LINE, REASON})


class ColumnKind(StrEnum):
    NUMERIC = "numeric"
    INTEGER = "integer"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"


class ColumnSpec(BaseModel):
    """One column. ``categories=None`` on a categorical column means any value is accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: ColumnKind
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED:
            raise ValueError(f"{value!r} is reserved for quarantine reports; rename the column")
        return value

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_as_sorted_strings(cls, value: Any) -> Any:
        # mlops.toml may declare a 0/1 target as integers; values are always compared as text
        if isinstance(value, list | tuple | set):
            return sorted({str(v) for v in value})
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> ColumnSpec:
        numeric = self.kind in (ColumnKind.NUMERIC, ColumnKind.INTEGER)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"column {self.name!r}: min/max apply to numeric and integer columns only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is greater than max {self.max}")
        if self.categories is not None and self.kind is not ColumnKind.CATEGORICAL:
            raise ValueError(f"column {self.name!r}: categories apply to categorical columns only")
        return self


class DataContract(BaseModel):
    """What every file of one model must look like; versioned because accepted categories extend it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=1, ge=1)
    # None: a model without a target (a clustering), whose every column is a feature
    target: str | None = None
    columns: list[ColumnSpec] = Field(min_length=1)
    new_categories: Literal["accept", "quarantine"] = "accept"
    allow_duplicates: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> DataContract:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns declared twice: {dupes}")
        if self.target is None:
            return self
        if self.target not in names:
            raise ValueError(f"the target {self.target!r} is not among the columns {names}")
        if self.column(self.target).nullable:
            raise ValueError(f"the target {self.target!r} cannot be nullable: a row without a label is unusable")
        return self

    def column(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"the data contract has no column {name!r}; it has {[c.name for c in self.columns]}")

    @property
    def feature_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.name != self.target]

    @property
    def numeric_features(self) -> list[str]:
        numeric = (ColumnKind.NUMERIC, ColumnKind.INTEGER, ColumnKind.BOOLEAN)
        return [c.name for c in self.feature_columns if c.kind in numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.feature_columns if c.kind is ColumnKind.CATEGORICAL]

    def with_categories(self, additions: dict[str, list[str]]) -> DataContract:
        """The next version, with ``additions`` merged into the categories; ``self`` if nothing is new."""
        columns = []
        changed = False
        for spec in self.columns:
            added = {str(v) for v in additions.get(spec.name, [])}
            if added and spec.kind is not ColumnKind.CATEGORICAL:
                raise ValueError(f"column {spec.name!r} is {spec.kind}, it has no categories to extend")
            # an open column (categories=None) already accepts everything: closing it would refuse data
            if spec.categories is not None and not added <= set(spec.categories):
                spec = spec.model_copy(update={"categories": sorted(added | set(spec.categories))})
                changed = True
            columns.append(spec)
        unknown = sorted(set(additions) - {c.name for c in self.columns})
        if unknown:
            raise KeyError(f"the data contract has no column(s) {unknown}")
        if not changed:
            return self
        return self.model_copy(update={"version": self.version + 1, "columns": columns})

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> DataContract:
        return cls.model_validate_json(text)


def contract_key(model: str, version: int) -> str:
    """Where a model's data contract ``version`` is kept (:class:`mlops.data.ingest.ContractStore`)."""
    return f"{layout.CONTRACTS}{model}/v{version:06d}.json"

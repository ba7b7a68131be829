"""The drift baseline: what the training data (and the model's predictions on it) looked like.

Written next to ``model.onnx`` at registration and read by ``drift_check``, which compares captured
serving inputs against it. It is plain JSON (no pickles, no numpy types)::

    {
      "format": "mlops.data.baseline/1",
      "rows": 455,                      # training rows summarised
      "seed": 42,
      "bins": 10,                       # requested quantile bins per numeric feature
      "target": "label",
      "features": {
        "<numeric name>": {
          "kind": "numeric",            # also integer and boolean columns (0/1 floats)
          "edges": [e0, e1, ..., ek],   # unique training quantiles, e0 = min, ek = max
          "shares": [s1, ..., sk],      # share of non-missing rows per bin; sums to 1
          "counts": [c1, ..., ck],
          "mean": m, "std": s, "min": e0, "max": ek,
          "missing_share": 0.0          # share of all rows that were missing
        },
        "<categorical name>": {
          "kind": "categorical",
          "shares": {"a": 0.6, "b": 0.4, "__other__": 0.0},   # over non-missing rows; sums to 1
          "counts": {"a": 273, ...},
          "missing_share": 0.0          # "" (the validated form of a missing category) counts as missing
        }
      },
      "reservoir": {"size": 455, "records": [{"<feature>": v, ..., "<target>": y}, ...]},
      "predictions": null | {"kind": "classes", "shares": {"0": 0.37, "1": 0.63}, "counts": {...}}
                          | {"kind": "numeric", ... same fields as a numeric feature ...},
      "metrics": null | {...}           # the offline metrics the model was registered with
    }

Bins are right-closed and the outer ones open: value ``x`` falls in bin ``i`` where
``i = searchsorted(edges[1:-1], x, side="left")``, so ``x <= e1`` is bin 0 and ``x > e(k-1)`` is the
last bin, whatever the serving range. A feature with a single distinct value has ``edges == [v]`` and
one bin. Use :func:`bin_counts` to bin serving data exactly as the baseline did.

Categoricals keep the :data:`MAX_CATEGORIES` most frequent values; the rest of the mass is ``__other__``
(values unseen in training belong there at serving time too). Shares of an all-missing feature are
empty. Missing numeric values are None in reservoir records (JSON has no NaN).

:func:`build_baseline` summarises a frame held whole; :class:`StreamedBaseline` gives the same from chunks in bounded
memory (``mlops drift`` on files of any size).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from mlops.data.schema import DataContract

FORMAT = "mlops.data.baseline/1"
OTHER = "__other__"
MAX_CATEGORIES = 100


def bin_counts(edges: Sequence[float], values: np.ndarray | Sequence[float]) -> list[int]:
    """Counts of non-missing ``values`` per baseline bin (see the module docstring for the convention)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n_bins = max(len(edges) - 1, 1)
    idx = np.searchsorted(np.asarray(edges[1:-1], dtype=np.float64), x, side="left")
    return np.bincount(idx, minlength=n_bins).astype(int).tolist()


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return []
    qs = np.quantile(x, np.linspace(0.0, 1.0, bins + 1))
    return [float(v) for v in np.unique(qs)]


def numeric_summary(values: np.ndarray, bins: int) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    present = x[~np.isnan(x)]
    edges = quantile_edges(present, bins)
    counts = bin_counts(edges, present) if edges else []
    total = sum(counts)
    return {
        "kind": "numeric",
        "edges": edges,
        "shares": [c / total for c in counts] if total else [],
        "counts": counts,
        "mean": float(present.mean()) if present.size else None,
        "std": float(present.std()) if present.size else None,
        "min": float(present.min()) if present.size else None,
        "max": float(present.max()) if present.size else None,
        "missing_share": float((n - present.size) / n) if n else 0.0,
    }


def categorical_summary(values: Sequence[Any] | np.ndarray, max_categories: int = MAX_CATEGORIES) -> dict[str, Any]:
    items = [_category(v) for v in (values.tolist() if isinstance(values, np.ndarray) else values)]
    present = [v for v in items if v != ""]
    return _categorical_from_counts(Counter(present), missing=len(items) - len(present),
                                    max_categories=max_categories)


def _categorical_from_counts(counts: Mapping[str, int], *, missing: int, other: int = 0,
                             max_categories: int = MAX_CATEGORIES) -> dict[str, Any]:
    """``counts`` of the present values, ``missing`` values, and ``other`` values counted as ``__other__`` already."""
    # most frequent first; ties by name so the kept set is deterministic
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:max_categories])
    kept[OTHER] = other + sum(c for _, c in ranked[max_categories:])
    total = sum(counts.values()) + other
    return {
        "kind": "categorical",
        "shares": {k: c / total for k, c in kept.items()} if total else {},
        "counts": kept,
        "missing_share": float(missing / (total + missing)) if total + missing else 0.0,
    }


def _category(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def reservoir_sample(df: pd.DataFrame, columns: Sequence[str], size: int, seed: int) -> list[dict[str, Any]]:
    """At most ``size`` rows drawn uniformly without replacement, in their original order."""
    n = len(df)
    k = min(size, n)
    if k <= 0:
        return []
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(n, size=k, replace=False))
    sub = df.iloc[picks][list(columns)]
    # column by column (a float column in one numpy call), then zipped into records: ~20x faster than cell by cell
    values = [_json_values(sub.iloc[:, i]) for i in range(sub.shape[1])]
    names = list(sub.columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _json_values(column: pd.Series) -> list[Any]:
    """``[_json_value(v) for v in column]``, with a float column's values converted in one go."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind == "f":
        x = column.to_numpy(dtype=np.float64)
        out: list[Any] = x.tolist()
        for i in np.flatnonzero(~np.isfinite(x)).tolist():
            out[i] = None
        return out
    return [_json_value(v) for v in column.tolist()]


def prediction_summary(
    predictions: Sequence[Any] | np.ndarray, *, classes: Sequence[str] | None = None, bins: int = 10
) -> dict[str, Any]:
    """Class shares for labels (``classes`` given, or non-numeric predictions); quantile bins for values."""
    arr = np.asarray(predictions)
    if classes is None and arr.dtype.kind in "fiu":
        return numeric_summary(arr.astype(np.float64), bins)
    labels = [str(v) for v in arr.ravel().tolist()]
    names = [str(c) for c in classes] if classes is not None else sorted(set(labels))
    counts = {c: 0 for c in names}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    total = len(labels)
    return {
        "kind": "classes",
        "shares": {k: v / total for k, v in counts.items()} if total else {},
        "counts": counts,
    }


def build_baseline(
    train_df: pd.DataFrame,
    contract: DataContract,
    *,
    predictions: Sequence[Any] | np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    metrics: dict[str, Any] | None = None,
    bins: int = 10,
    reservoir: int = 1000,
    seed: int = 42,
) -> dict[str, Any]:
    if bins < 1:
        raise ValueError("bins must be >= 1")
    features: dict[str, Any] = {}
    for name in contract.numeric_features:
        values = np.asarray(train_df[name].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        features[name] = numeric_summary(values, bins)
    for name in contract.categorical_features:
        features[name] = categorical_summary(train_df[name].tolist())
    columns = [c.name for c in contract.feature_columns]
    if contract.target is not None and contract.target in train_df.columns:
        columns.append(contract.target)
    return {
        "format": FORMAT,
        "rows": len(train_df),
        "seed": seed,
        "bins": bins,
        "target": contract.target,
        "features": features,
        "reservoir": {
            "size": min(reservoir, len(train_df)),
            "records": reservoir_sample(train_df, columns, reservoir, seed),
        },
        "predictions": None if predictions is None else prediction_summary(predictions, classes=classes, bins=bins),
        "metrics": metrics,
    }


# distinct values of one categorical feature counted exactly by StreamedBaseline; values first seen later count in
# __other__ (an identifier column must not grow without bound)
MAX_TRACKED_CATEGORIES = 100_000


class _Moments:
    """Count, mean, sum of squared deviations (merged chunk by chunk, Chan et al.), extremes and missing values."""

    def __init__(self) -> None:
        self.n = self.missing = 0
        self.mean = self.m2 = 0.0
        self.min, self.max = math.inf, -math.inf

    def update(self, values: np.ndarray) -> None:
        present = values[~np.isnan(values)]
        self.missing += values.size - present.size
        k = present.size
        if not k:
            return
        mean = float(present.mean())
        m2 = float(((present - mean) ** 2).sum())
        n = self.n + k
        delta = mean - self.mean
        self.mean += delta * k / n
        self.m2 += m2 + delta * delta * self.n * k / n
        self.n = n
        self.min, self.max = min(self.min, float(present.min())), max(self.max, float(present.max()))


class StreamedBaseline:
    """:func:`build_baseline` over a stream of typed chunks (validated ``good`` frames), in bounded memory.

    A uniform sample of at most ``sample`` rows is kept (the rows with the smallest of one random key each, so the
    sample is uniform without replacement whatever the stream's length). With no more rows than that, the result is
    :func:`build_baseline`'s on the whole data. With more, the row count and each feature's missing share, mean,
    standard deviation, extremes (the outer bin edges) and category counts stay exact over every row, while the inner
    quantile edges, the bin counts and the reservoir come from the sample (``counts`` then sum to the sample's
    values, not the data's).
    """

    def __init__(self, contract: DataContract, *, bins: int = 10, reservoir: int = 1000, seed: int = 42,
                 sample: int = 100_000) -> None:
        self.contract, self.bins, self.reservoir, self.seed = contract, bins, reservoir, seed
        self.sample_size = max(sample, reservoir, 1)
        self.rows = 0
        self._rng = np.random.default_rng(seed)
        self._sample: pd.DataFrame | None = None
        self._keys = np.empty(0)
        self._positions = np.empty(0, dtype=np.int64)
        self._numeric = {name: _Moments() for name in contract.numeric_features}
        self._counts: dict[str, Counter[str]] = {name: Counter() for name in contract.categorical_features}
        self._lumped = dict.fromkeys(contract.categorical_features, 0)
        self._missing = dict.fromkeys(contract.categorical_features, 0)

    def numbers(self, name: str) -> int:
        """The values of numeric feature ``name`` seen so far, missing ones aside."""
        return self._numeric[name].n

    def update(self, frame: pd.DataFrame) -> None:
        import pandas as pd

        n = len(frame)
        if not n:
            return
        for name, moments in self._numeric.items():
            moments.update(np.asarray(frame[name].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64))
        for name, counts in self._counts.items():
            column = frame[name]
            present = column.value_counts(dropna=True)
            blank = int(present.get("", 0))
            self._missing[name] += n - int(present.sum()) + blank
            for value, count in present.items():
                key = str(value)
                if key == "":
                    continue
                if key in counts or len(counts) < MAX_TRACKED_CATEGORIES:
                    counts[key] += int(count)
                else:
                    self._lumped[name] += int(count)
        keys = self._rng.random(n)
        positions = np.arange(self.rows, self.rows + n, dtype=np.int64)
        self.rows += n
        if self._sample is not None and len(self._keys) >= self.sample_size:
            # full: only rows whose key beats the largest kept one can enter
            take = np.flatnonzero(keys < self._keys.max())
            if not take.size:
                return
            frame, keys, positions = frame.iloc[take], keys[take], positions[take]
        joined = frame.reset_index(drop=True) if self._sample is None else pd.concat(
            [self._sample, frame], ignore_index=True)
        keys = np.concatenate((self._keys, keys))
        positions = np.concatenate((self._positions, positions))
        if len(keys) > self.sample_size:
            keep = np.sort(np.argpartition(keys, self.sample_size - 1)[: self.sample_size])
            joined, keys, positions = joined.iloc[keep].reset_index(drop=True), keys[keep], positions[keep]
        self._sample, self._keys, self._positions = joined, keys, positions

    def result(self, *, predictions: Sequence[Any] | np.ndarray | None = None, classes: Sequence[str] | None = None,
               metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        import pandas as pd

        if self._sample is None:
            sample = pd.DataFrame({c.name: pd.Series([], dtype="float64") for c in self.contract.columns})
        else:
            sample = self._sample.iloc[np.argsort(self._positions, kind="stable")].reset_index(drop=True)
        out = build_baseline(sample, self.contract, predictions=predictions, classes=classes, metrics=metrics,
                             bins=self.bins, reservoir=self.reservoir, seed=self.seed)
        if self.rows <= len(sample):
            return out  # every row is in the sample: exactly build_baseline's
        out["rows"] = self.rows
        for name, m in self._numeric.items():
            summary = out["features"][name]
            total = m.n + m.missing
            summary["missing_share"] = float(m.missing / total) if total else 0.0
            if not m.n:
                continue
            summary.update(mean=m.mean, std=math.sqrt(m.m2 / m.n), min=m.min, max=m.max)
            edges = summary["edges"]
            if not edges:  # the sample holds none of the few values: one bin over their range
                summary.update(edges=sorted({m.min, m.max}), counts=[m.n], shares=[1.0])
            elif len(edges) == 1:  # one value in the sample: still one bin, over the data's range
                summary["edges"] = [m.min, m.max] if m.min < m.max else [m.min]
            else:
                summary["edges"] = [m.min, *edges[1:-1], m.max]  # bins only depend on the inner edges
        for name, counts in self._counts.items():
            out["features"][name] = _categorical_from_counts(counts, missing=self._missing[name],
                                                             other=self._lumped[name])
        return out

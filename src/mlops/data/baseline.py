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
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
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
    # most frequent first; ties by name so the kept set is deterministic
    ranked = sorted(Counter(present).items(), key=lambda kv: (-kv[1], kv[0]))
    counts = dict(ranked[:max_categories])
    rest = sum(c for _, c in ranked[max_categories:])
    counts[OTHER] = rest
    total = len(present)
    return {
        "kind": "categorical",
        "shares": {k: c / total for k, c in counts.items()} if total else {},
        "counts": counts,
        "missing_share": float((len(items) - total) / len(items)) if items else 0.0,
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
    return [
        {c: _json_value(v) for c, v in zip(sub.columns, row, strict=True)}
        for row in sub.itertuples(index=False, name=None)
    ]


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
    if contract.target in train_df.columns:
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

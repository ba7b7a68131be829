"""Clustering (``task = "clustering"``, family ``kmeans``): what differs from a model that learns a target.

* The rows: there is no target, so no row is dropped for a missing label, every column is a feature and the split is
  not stratified; a k-means needs at least as many training rows as clusters (:func:`check_rows`).
* The metrics (:func:`clustering_metrics`): with no labels to score predictions against, a clustering is measured by
  how well its clusters are separated on the held-out rows: the silhouette (in [-1, 1], on a seeded sample of at most
  :data:`SILHOUETTE_MAX_ROWS` rows, since its cost grows with the square of the rows), the Calinski-Harabasz index and
  the Davies-Bouldin index, negated (``neg_davies_bouldin``, lower is better) as every metric the gate compares is
  higher-is-better. They are computed in one space for every model (:func:`evaluation_space`): the rows' numeric
  features imputed with their median and standardised with their own mean and deviation, the categoricals one-hot.
  A candidate and the champion, whose scalers were fitted on different data, are then judged on the same rows in the
  same geometry; only their cluster ids differ.
* The export's parity gate (:func:`cluster_parity`): skl2onnx's k-means graph answers a cluster id (the arg min
  of the squared distances, int64) and the Euclidean distance to every centre (double). The distances are held to the
  tolerance a regression's values are (relative beyond 1, absolute below). The ids must be equal on every row but
  where scikit-learn's distances to the two centres chosen differ by no more than that tolerance: a tie decided by
  rounding, where either id is as right, counted apart as a classifier's tied labels are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.core.errors import InvalidDataset, ParityError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from mlops.data.schema import DataContract
    from mlops.serving.onnx_model import Prediction

# the silhouette of more rows is that of a seeded sample of this many (about a second on one core)
SILHOUETTE_MAX_ROWS = 5_000


def cluster_ids(pipeline: Pipeline) -> list[str]:
    """The fitted model's cluster ids as the graph answers them, as text: "0" .. "k-1"."""
    return [str(i) for i in range(len(pipeline.steps[-1][1].cluster_centers_))]


def check_rows(pipeline: Pipeline, rows: int) -> None:
    """A k-means cannot make more clusters than it has rows: said before fitting, as a dataset problem."""
    clusters = getattr(pipeline.steps[-1][1], "n_clusters", None)
    if isinstance(clusters, int) and rows < clusters:
        raise InvalidDataset(f"the training split has {rows} rows, fewer than the {clusters} clusters asked for "
                             "(params.n_clusters): provide more rows or ask for fewer clusters")


def evaluation_space(df: pd.DataFrame, contract: DataContract) -> np.ndarray:
    """The rows as the metrics see them, whatever model clustered them: numeric features imputed with the rows' median
    and standardised with their mean and deviation (a constant column is all zeros), categoricals one-hot."""
    import pandas as pd

    blocks = []
    for name in contract.numeric_features:
        x = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        present = np.isfinite(x)
        x = np.where(present, x, float(np.median(x[present])) if present.any() else 0.0)
        sd = float(x.std())
        blocks.append(((x - x.mean()) / sd if sd > 0 else np.zeros_like(x)).reshape(-1, 1))
    for name in contract.categorical_features:
        values = np.asarray(["" if pd.isna(v) else str(v) for v in df[name].tolist()], dtype=object)
        categories = np.asarray(sorted(set(values.tolist())), dtype=object)
        blocks.append((values.reshape(-1, 1) == categories.reshape(1, -1)).astype(np.float64))
    return np.hstack(blocks) if blocks else np.zeros((len(df), 0))


def _finite(value: Any) -> float | None:
    out = float(value)
    return out if math.isfinite(out) else None


def clustering_metrics(space: np.ndarray, labels: Sequence[Any] | np.ndarray, *, seed: int = 42) -> dict[str, Any]:
    """silhouette, calinski_harabasz and neg_davies_bouldin (davies_bouldin too, as computed) of the cluster ids
    ``labels`` of the rows of ``space``, with how many clusters the rows fell in and how many rows each got. The
    scores are None where they are undefined: fewer than two clusters found, or as many clusters as rows."""
    from sklearn import metrics

    ids = np.asarray([str(v) for v in labels], dtype=object)
    found, counts = np.unique(ids, return_counts=True) if len(ids) else (np.asarray([]), np.asarray([]))
    sizes = sorted(zip(found.tolist(), counts.tolist(), strict=True), key=lambda kv: (len(kv[0]), kv[0]))
    out: dict[str, Any] = {"silhouette": None, "calinski_harabasz": None, "neg_davies_bouldin": None,
                           "davies_bouldin": None, "clusters_found": len(found),
                           "cluster_sizes": {k: int(v) for k, v in sizes}, "rows": len(ids)}
    if not 2 <= len(found) <= len(ids) - 1:
        return out
    sample = len(ids) if len(ids) <= SILHOUETTE_MAX_ROWS else SILHOUETTE_MAX_ROWS
    try:
        out["silhouette"] = _finite(metrics.silhouette_score(
            space, ids, sample_size=sample if sample < len(ids) else None, random_state=seed))
    except ValueError:  # the sample drew the rows of a single cluster
        out["silhouette"] = None
    out["calinski_harabasz"] = _finite(metrics.calinski_harabasz_score(space, ids))
    davies_bouldin = _finite(metrics.davies_bouldin_score(space, ids))
    out["davies_bouldin"] = davies_bouldin
    out["neg_davies_bouldin"] = None if davies_bouldin is None else -davies_bouldin
    return out


def _worst(diffs: np.ndarray) -> float:
    if diffs.size == 0:
        return 0.0
    return math.inf if np.isnan(diffs).any() else float(diffs.max())


def cluster_parity(distances: Any, ids: Any, onnx: Prediction, tol: float) -> tuple[float, float, int, int]:
    """scikit-learn's ``distances`` (``transform``) and cluster ``ids`` (``predict``) against the graph's answer for
    the same rows (module docstring: the rule): (max |d_sklearn - d_onnx|, the same relative beyond 1, differing ids,
    differing ids that are ties). Raises ParityError when they disagree."""
    skl_distances = np.asarray(distances, dtype=np.float64)
    skl_ids = np.asarray(ids).astype(np.int64)
    rows = len(skl_ids)
    if onnx.distances is None:
        raise ParityError("the ONNX graph of the clustering answers no distances to its clusters")
    abs_diff = np.abs(skl_distances - onnx.distances)
    scale = np.maximum(np.abs(skl_distances), 1.0)
    diff, rel = _worst(abs_diff), _worst(abs_diff / scale)
    onnx_ids = onnx.labels.astype(np.int64)
    differ = np.flatnonzero(skl_ids != onnx_ids)
    chosen, other = skl_distances[differ, skl_ids[differ]], skl_distances[differ, onnx_ids[differ]]
    ties = int(np.sum(np.abs(chosen - other) <= tol * np.maximum(np.abs(chosen), 1.0)))
    mismatches = int(differ.size) - ties
    if rel > tol or mismatches:
        raise ParityError(
            f"ONNX export disagrees with scikit-learn on {rows} test rows: max |d_sklearn - d_onnx| = {diff:.3g} "
            f"(relative {rel:.3g}, tolerance {tol:g}) in the distances to the clusters, {mismatches} cluster ids "
            "differ")
    return diff, rel, mismatches, ties

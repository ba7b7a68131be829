"""Offline evaluation of an exported model: quality metrics on the held-out split and serving latency.

Everything is measured on the ONNX model, not on the scikit-learn pipeline: that is what serves, and
the gate must judge what will run. Every returned value is a plain float/int/str/list/dict (the result
goes straight into JSON manifests and Step Functions payloads); an undefined metric (ROC AUC when the
test split holds a single class) is ``None`` rather than NaN, which JSON cannot carry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.core.tasks import Task
from mlops.serving.onnx_model import OnnxModel

if TYPE_CHECKING:
    import pandas as pd

    from mlops.data.schema import DataContract

WARMUP_RUNS = 20
BATCH_RUNS = 3


def _float(value: Any) -> float | None:
    out = float(value)
    return out if math.isfinite(out) else None


def classification_metrics(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    proba: np.ndarray | None,
    classes: Sequence[str],
) -> dict[str, Any]:
    """accuracy, precision, recall, f1 (binary: positive class = ``classes[1]``; otherwise macro), roc_auc
    (binary: ``proba[:, 1]``; otherwise macro one-vs-rest), confusion_matrix (rows = truth, columns =
    prediction, both in ``classes`` order)."""
    from sklearn import metrics

    labels = [str(c) for c in classes]
    yt = np.asarray([str(v) for v in y_true], dtype=object)
    yp = np.asarray([str(v) for v in y_pred], dtype=object)
    binary = len(labels) == 2
    avg: dict[str, Any] = {"average": "binary", "pos_label": labels[1]} if binary else {"average": "macro"}
    out: dict[str, Any] = {
        "accuracy": float(metrics.accuracy_score(yt, yp)),
        "precision": float(metrics.precision_score(yt, yp, labels=labels, zero_division=0, **avg)),
        "recall": float(metrics.recall_score(yt, yp, labels=labels, zero_division=0, **avg)),
        "f1": float(metrics.f1_score(yt, yp, labels=labels, zero_division=0, **avg)),
        "roc_auc": None,
        "confusion_matrix": metrics.confusion_matrix(yt, yp, labels=labels).astype(int).tolist(),
        "labels": labels,
        "rows": len(yt),
    }
    present = set(yt.tolist())
    # ROC AUC needs both outcomes (binary) / every class (multiclass OvR) in the truth.
    if proba is not None and len(yt) and present >= set(labels):
        p = np.asarray(proba, dtype=np.float64)
        if binary:
            out["roc_auc"] = _float(metrics.roc_auc_score(yt == labels[1], p[:, 1]))
        else:
            out["roc_auc"] = _float(metrics.roc_auc_score(yt, p, multi_class="ovr", average="macro", labels=labels))
    return out


def regression_metrics(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> dict[str, Any]:
    from sklearn import metrics

    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    rmse = float(math.sqrt(metrics.mean_squared_error(yt, yp)))
    mae = float(metrics.mean_absolute_error(yt, yp))
    # r2 is undefined for a constant truth (sklearn returns NaN/-inf depending on the version).
    r2 = _float(metrics.r2_score(yt, yp)) if len(yt) >= 2 and np.ptp(yt) > 0 else None
    return {"r2": r2, "neg_rmse": -rmse, "neg_mae": -mae, "rmse": rmse, "mae": mae, "rows": len(yt)}


def latency(
    model: OnnxModel,
    records: Sequence[Mapping[str, Any]],
    *,
    repeats: int = 200,
    seed: int = 42,
) -> dict[str, Any]:
    """Single-row latency in ms (feeds built from a record, as the server does) over ``repeats`` runs on
    seeded random rows after a warm-up, and batch throughput over all ``records``."""
    if not records:
        raise ValueError("latency needs at least one record")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(records), size=max(repeats, 1))
    for i in range(min(WARMUP_RUNS, len(picks))):
        model.predict_records([records[int(picks[i])]])
    timings = np.empty(len(picks), dtype=np.float64)
    for j, i in enumerate(picks):
        row = [records[int(i)]]
        start = time.perf_counter()
        model.predict_records(row)
        timings[j] = time.perf_counter() - start
    ms = timings * 1000.0
    batch = list(records)
    best = math.inf
    for _ in range(BATCH_RUNS):
        start = time.perf_counter()
        model.predict_records(batch)
        best = min(best, time.perf_counter() - start)
    return {
        "mean": float(ms.mean()),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "repeats": len(ms),
        "batch_rows": len(batch),
        # best of a few runs: throughput is a capacity figure, the noise of a shared CI box is not
        "rows_per_s": float(len(batch) / best) if best > 0 else None,
    }


def records_of(df: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Row records with plain Python values (NaN stays NaN: the feed builder maps it to missing)."""
    sub = df[list(columns)]
    return [
        {c: (v.item() if isinstance(v, np.generic) else v) for c, v in zip(sub.columns, row, strict=True)}
        for row in sub.itertuples(index=False, name=None)
    ]


def evaluate(
    model: OnnxModel,
    test_df: pd.DataFrame,
    contract: DataContract,
    task: Task | str,
    *,
    repeats: int = 200,
    seed: int = 42,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``test_df`` (which holds the target as trained on) plus its latency. A clustering's
    metrics are its clusters' separation on these rows (``mlops.training.clustering``; its silhouette sample drawn
    with ``seed``, so a candidate and the champion are measured on the same rows)."""
    task = Task(task)
    target = contract.target
    features = [c.name for c in contract.feature_columns]
    records = records_of(test_df, features)
    start = time.perf_counter()
    pred = model.predict_records(records)
    if task.is_classification:
        from mlops.training.train import label_strings

        classes = model.classes or sorted({str(v) for v in pred.labels})
        metrics = classification_metrics(
            label_strings(test_df[target]).tolist(), pred.labels, pred.probabilities, classes
        )
    elif task is Task.CLUSTERING:
        from mlops.training.clustering import clustering_metrics, evaluation_space

        metrics = clustering_metrics(evaluation_space(test_df, contract), pred.labels, seed=seed)
    else:
        metrics = regression_metrics(test_df[target].to_numpy(dtype=np.float64), pred.values)
    scoring_seconds = time.perf_counter() - start
    lat = latency(model, records, repeats=repeats, seed=seed)
    return {
        "task": task.value,
        "rows": len(records),
        "metrics": metrics,
        "latency_ms": {k: lat[k] for k in ("mean", "p50", "p95", "p99")},
        "throughput_rows_per_s": lat["rows_per_s"],
        "latency": lat,
        "scoring_seconds": scoring_seconds,
    }

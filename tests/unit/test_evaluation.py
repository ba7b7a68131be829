"""Evaluation metrics (checked against sklearn.metrics on hand-made examples) and latency."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer

from mlops.core.config import ModelConfig
from mlops.core.tasks import Task
from mlops.data.inference import infer_contract
from mlops.serving.onnx_model import OnnxModel
from mlops.training.evaluation import classification_metrics, evaluate, latency, records_of, regression_metrics
from mlops.training.onnx_export import to_onnx
from mlops.training.train import train


def test_binary_metrics_match_sklearn() -> None:
    y_true = ["no", "yes", "yes", "no", "yes", "no", "yes", "yes"]
    y_pred = ["no", "yes", "no", "no", "yes", "yes", "yes", "yes"]
    p_yes = np.array([0.1, 0.9, 0.4, 0.2, 0.8, 0.6, 0.7, 0.55])
    proba = np.column_stack([1 - p_yes, p_yes])
    out = classification_metrics(y_true, y_pred, proba, ["no", "yes"])
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred)) == pytest.approx(0.75)
    assert out["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, pos_label="yes")) == 0.8
    assert out["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label="yes")) == 0.8
    assert out["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, pos_label="yes"))
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score([t == "yes" for t in y_true], p_yes))
    assert out["confusion_matrix"] == [[2, 1], [1, 4]]  # rows truth no/yes, columns predicted no/yes
    json.dumps(out, allow_nan=False)


def test_positive_class_is_the_second_class() -> None:
    y_true, y_pred = ["a", "a", "b", "b"], ["a", "b", "b", "b"]
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    out = classification_metrics(y_true, y_pred, proba, ["a", "b"])
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == 1.0


def test_multiclass_metrics_are_macro_and_match_sklearn() -> None:
    y_true = ["a", "b", "c", "a", "b", "c", "a", "c"]
    y_pred = ["a", "c", "c", "a", "b", "b", "b", "c"]
    proba = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.2, 0.3, 0.5],
            [0.1, 0.2, 0.7],
            [0.6, 0.3, 0.1],
            [0.2, 0.6, 0.2],
            [0.1, 0.5, 0.4],
            [0.3, 0.4, 0.3],
            [0.2, 0.2, 0.6],
        ]
    )
    out = classification_metrics(y_true, y_pred, proba, ["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        assert out[name] == pytest.approx(fn(y_true, y_pred, average="macro"))
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro"))
    assert out["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=["a", "b", "c"]).tolist()


def test_undefined_roc_auc_is_none_not_nan() -> None:
    out = classification_metrics(["a", "a"], ["a", "b"], np.array([[0.9, 0.1], [0.4, 0.6]]), ["a", "b"])
    assert out["roc_auc"] is None
    json.dumps(out, allow_nan=False)


def test_regression_metrics_match_sklearn() -> None:
    y_true, y_pred = [3.0, -0.5, 2.0, 7.0], [2.5, 0.0, 2.0, 8.0]
    out = regression_metrics(y_true, y_pred)
    assert out["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))
    assert out["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y_true, y_pred))) == -out["neg_rmse"]
    assert out["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred)) == -out["neg_mae"] == 0.5
    assert regression_metrics([1.0, 1.0], [1.0, 2.0])["r2"] is None


@pytest.fixture(scope="module")
def trained() -> tuple:
    df = load_breast_cancer(as_frame=True).frame
    df["target"] = df["target"].astype(str)
    contract = infer_contract(df, "target")
    result = train(df, contract, ModelConfig(name="unit", target="target", task=Task.BINARY))
    return result, contract, OnnxModel(to_onnx(result.pipeline, contract, Task.BINARY))


def test_latency_summary(trained: tuple) -> None:
    result, contract, model = trained
    records = records_of(result.test_df, [c.name for c in contract.feature_columns])
    out = latency(model, records, repeats=50, seed=1)
    assert out["repeats"] == 50
    assert out["batch_rows"] == len(records)
    assert 0 < out["p50"] <= out["p95"] <= out["p99"]
    assert out["mean"] > 0
    assert out["rows_per_s"] > 0
    assert all(type(v) in (int, float) for v in out.values())


def test_evaluate_is_json_serialisable_and_meets_the_bar(trained: tuple) -> None:
    result, contract, model = trained
    out = evaluate(model, result.test_df, contract, Task.BINARY, repeats=30)
    json.dumps(out, allow_nan=False)
    assert out["metrics"]["accuracy"] >= 0.93
    assert out["metrics"]["roc_auc"] > 0.97
    assert set(out["latency_ms"]) == {"mean", "p50", "p95", "p99"}
    assert out["throughput_rows_per_s"] > 0
    assert sum(map(sum, out["metrics"]["confusion_matrix"])) == len(result.test_df) == out["rows"]


def test_evaluate_regression() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    df["y"] = 2 * df["a"] - df["b"] + rng.normal(scale=0.1, size=200)
    contract = infer_contract(df, "y")
    cfg = ModelConfig(name="unit", target="y", task=Task.REGRESSION, family="linear_regression", primary_metric="r2")
    result = train(df, contract, cfg)
    out = evaluate(
        OnnxModel(to_onnx(result.pipeline, contract, Task.REGRESSION)),
        result.test_df,
        contract,
        Task.REGRESSION,
        repeats=10,
    )
    assert out["metrics"]["r2"] > 0.99
    json.dumps(out, allow_nan=False)

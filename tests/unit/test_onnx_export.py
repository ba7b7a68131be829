"""ONNX export: parity with scikit-learn for every family, graph inputs, metadata, serving helpers."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from mlops.core.config import ModelConfig
from mlops.core.errors import ParityError
from mlops.core.tasks import Task
from mlops.data.inference import infer_contract
from mlops.serving.onnx_model import FeedError, InputSpec, OnnxModel, Prediction, feeds_from_records
from mlops.training.onnx_export import (
    PARITY_TOL,
    TARGET_OPSET,
    XGBOOST_PARITY_TOL,
    check_parity,
    onnx_opset,
    parity_tolerance,
    to_onnx,
)
from mlops.training.train import TrainResult, feature_frame, train

CLASSIFIERS = ["logistic_regression", "random_forest", "hist_gradient_boosting", "xgboost", "lightgbm"]
REGRESSORS = ["linear_regression", "random_forest", "hist_gradient_boosting", "xgboost", "lightgbm"]
DATASETS = {"breast_cancer": (load_breast_cancer, Task.BINARY), "wine": (load_wine, Task.MULTICLASS)}


def _frame(loader: Any, as_str: bool = True) -> pd.DataFrame:
    df = loader(as_frame=True).frame
    if as_str:
        df["target"] = df["target"].astype(str)
    return df


def _fit(df: pd.DataFrame, target: str, task: Task, family: str, **kw: Any) -> tuple[TrainResult, Any, bytes]:
    contract = infer_contract(df, target)
    metric = "accuracy" if task.is_classification else "r2"
    cfg = ModelConfig(name="unit", target=target, task=task, family=family, primary_metric=metric, **kw)
    result = train(df, contract, cfg)
    return result, contract, to_onnx(result.pipeline, contract, task)


def _proba(pred: Prediction) -> np.ndarray:
    assert pred.probabilities is not None
    return pred.probabilities


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {name: _frame(loader) for name, (loader, _) in DATASETS.items()}


@pytest.fixture(scope="module")
def classifiers(frames: dict[str, pd.DataFrame]) -> dict[tuple[str, str], tuple[TrainResult, Any, bytes]]:
    return {
        (name, family): _fit(frames[name], "target", DATASETS[name][1], family)
        for name in DATASETS
        for family in CLASSIFIERS
    }


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 300
    color = rng.choice(["red", "green", "blue"], size=n)
    size = rng.choice(["S", "M", "L"], size=n)
    x = rng.normal(size=n)
    z = rng.uniform(0, 10, size=n)
    y = np.where((color == "red") | (x > 0.8) | (size == "L") & (z > 6), "yes", "no")
    x[::13] = np.nan
    color[::29] = ""
    return pd.DataFrame({"x": x, "z": z, "color": color, "size": size, "label": y})


@pytest.mark.parametrize("family", CLASSIFIERS)
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_parity_within_1e_5(classifiers: dict, dataset: str, family: str) -> None:
    result, contract, data = classifiers[(dataset, family)]
    report = check_parity(result.pipeline, data, result.test_df, contract, DATASETS[dataset][1], tol=1e-5)
    assert report.max_abs_diff <= 1e-5
    assert report.label_mismatches == 0
    assert report.rows == len(result.test_df)
    # the whole data set, not only the held-out rows: training rows sit exactly on tree thresholds' sides
    full = pd.concat([result.train_df, result.test_df])
    assert check_parity(result.pipeline, data, full, contract, DATASETS[dataset][1]).max_abs_diff <= 1e-5


@pytest.mark.parametrize("family", REGRESSORS)
def test_regression_parity(family: str) -> None:
    df = _frame(load_diabetes, as_str=False)
    result, contract, data = _fit(df, "target", Task.REGRESSION, family)
    report = check_parity(result.pipeline, data, result.test_df, contract, Task.REGRESSION)
    assert report.tolerance == (XGBOOST_PARITY_TOL if family == "xgboost" else PARITY_TOL)
    assert report.label_mismatches == 0
    assert report.max_rel_diff is not None
    assert report.max_rel_diff <= 1e-5
    pred = OnnxModel(data).predict(result.test_df)
    assert pred.probabilities is None
    assert pred.values.dtype == np.float64


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_xgboost_and_lightgbm_trees_compare_as_their_library_does(classifiers: dict, family: str) -> None:
    """One double-precision v3 tree node; XGBoost's input rounded to float32 first, as XGBoost rounds every feature
    before comparing it with its float32 thresholds (comparing the doubles parts by up to 0.29 in probability)."""
    _, _, data = classifiers[("wine", family)]
    graph = onnx.load_from_string(data).graph
    [tree] = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    attributes = {a.name for a in tree.attribute}
    assert {"nodes_values_as_tensor", "class_weights_as_tensor"} <= attributes
    assert not {"nodes_values", "class_weights"} & attributes
    producers = {out: node for node in graph.node for out in node.output}
    chain = []
    node = producers.get(tree.input[0])
    while node is not None and node.op_type == "Cast":
        chain.append(next(a.i for a in node.attribute if a.name == "to"))
        node = producers.get(node.input[0])
    rounded = [onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT]  # nearest first: back to double, from float
    assert chain == (rounded if family == "xgboost" else [])
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE for i in graph.input)


def test_xgboost_is_held_to_its_float32_tolerance() -> None:
    """XGBoost sums its leaves in float32, the graph in double: they part by rounding that grows with the trees
    (XGBOOST_PARITY_TOL says how much was measured; this is the synthetic case it quotes for 1,000 trees)."""
    rng = np.random.default_rng(1)
    n = 2000
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(size=n), "c": rng.choice(["p", "q", "r"], size=n)})
    # a target of magnitude 1e5 that crosses zero: float32 resolves it to ~0.03
    df["y"] = 1e5 * (3 + df.a + 2 * df.b**2 + (df.c == "p")) + rng.normal(size=n) * 1e4
    result, contract, data = _fit(df, "y", Task.REGRESSION, "xgboost", params={"n_estimators": 1000})
    assert parity_tolerance(result.pipeline) == XGBOOST_PARITY_TOL == 1e-4
    report = check_parity(result.pipeline, data, pd.concat([result.train_df, result.test_df]), contract,
                          Task.REGRESSION)
    assert report.tolerance == XGBOOST_PARITY_TOL
    assert report.max_rel_diff is not None
    assert 1e-7 < report.max_rel_diff < 1e-5  # measured 8.3e-6: a tenth of the tolerance
    assert report.label_mismatches == 0


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_an_xgboost_or_lightgbm_model_is_served_by_onnxruntime_alone(classifiers: dict, family: str,
                                                                      tmp_path: Any) -> None:
    """What infer holds (onnxruntime + numpy): the model answers with XGBoost, LightGBM, onnxmltools and the
    scientific stack unimportable."""
    result, _, data = classifiers[("breast_cancer", family)]
    (tmp_path / "model.onnx").write_bytes(data)
    rows = result.test_df.drop(columns="target").head(5)
    rows.to_json(tmp_path / "rows.json", orient="records")
    code = (
        "import importlib.abc, json, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in {'xgboost', 'lightgbm', 'onnxmltools', 'sklearn', 'skl2onnx', 'pandas',"
        " 'scipy'}:\n"
        "            raise ImportError(f'{name} is not in the infer layer')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mlops.serving.onnx_model import OnnxModel\n"
        f"model = OnnxModel(open({str(tmp_path / 'model.onnx')!r}, 'rb').read())\n"
        f"pred = model.predict_records(json.load(open({str(tmp_path / 'rows.json')!r})))\n"
        "print(json.dumps({'labels': pred.labels.tolist(), 'p': pred.probabilities.tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    served = json.loads(out.stdout)
    expected = result.pipeline.predict_proba(rows)
    assert served["labels"] == result.pipeline.predict(rows).tolist()
    assert np.abs(np.asarray(served["p"]) - expected).max() <= parity_tolerance(result.pipeline)


@pytest.mark.parametrize(
    ("family", "objective"),
    [("xgboost", "reg:absoluteerror"), ("xgboost", "reg:pseudohubererror"), ("lightgbm", "regression_l1"),
     ("lightgbm", "huber")],
)
def test_every_objective_the_catalog_allows_exports_with_parity(family: str, objective: str) -> None:
    from mlops.core.families import FAMILIES

    assert objective in FAMILIES[family].objectives[Task.REGRESSION]
    df = _frame(load_diabetes, as_str=False)
    result, contract, data = _fit(df, "target", Task.REGRESSION, family, params={"objective": objective})
    full = pd.concat([result.train_df, result.test_df])
    assert check_parity(result.pipeline, data, full, contract, Task.REGRESSION).label_mismatches == 0


def test_parity_error_reports_the_numbers(classifiers: dict) -> None:
    lr, contract, _ = classifiers[("breast_cancer", "logistic_regression")]
    _, _, rf_bytes = classifiers[("breast_cancer", "random_forest")]
    with pytest.raises(ParityError, match=r"max \|p_sklearn - p_onnx\| = [0-9.e-]+ \(tolerance 1e-05\)"):
        check_parity(lr.pipeline, rf_bytes, lr.test_df, contract, Task.BINARY)


def test_one_input_per_column_named_like_the_column(classifiers: dict, frames: dict) -> None:
    _, _contract, data = classifiers[("wine", "random_forest")]
    model = OnnxModel(data)
    features = [c for c in frames["wine"].columns if c != "target"]
    assert model.input_names == features  # includes "od280/od315_of_diluted_wines"
    assert {i.kind for i in model.inputs} == {"numeric"}
    graph = onnx.load_from_string(data).graph
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE for i in graph.input)
    assert [list(d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim)[1] for i in graph.input] == [1] * 13


def test_metadata_carries_classes_task_and_opset(classifiers: dict) -> None:
    _, _, data = classifiers[("wine", "hist_gradient_boosting")]
    model = OnnxModel(data)
    assert model.classes == ["0", "1", "2"]
    assert model.task == "multiclass"
    assert model.target == "target"
    opset = onnx_opset(data)
    assert json.loads(model.metadata["onnx_opset"]) == opset
    assert opset["ai.onnx.ml"] == TARGET_OPSET["ai.onnx.ml"] == 3  # the double tree-ensemble attributes
    assert opset["ai.onnx"] <= TARGET_OPSET[""]
    pred = model.predict(pd.DataFrame({n: [0.0] for n in model.input_names}))
    assert pred.labels.dtype.kind == "U"
    assert pred.labels[0] in model.classes
    assert pred.probabilities is not None
    assert pred.probabilities.shape == (1, 3)
    assert pred.probabilities.sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_categoricals_unseen_categories_and_missing_values(mixed: pd.DataFrame, family: str) -> None:
    result, contract, data = _fit(mixed, "label", Task.BINARY, family)
    model = OnnxModel(data)
    assert {i.name: i.kind for i in model.inputs} == {
        "x": "numeric",
        "z": "numeric",
        "color": "categorical",
        "size": "categorical",
    }
    check_parity(result.pipeline, data, result.test_df, contract, Task.BINARY)
    odd = pd.DataFrame(
        {
            "x": [np.nan, 0.1, 5.0],
            "z": [1.0, np.nan, 2.0],
            "color": ["purple", "", "red"],
            "size": ["XXL", "S", ""],
            "label": ["no", "no", "no"],
        }
    )
    report = check_parity(result.pipeline, data, odd, contract, Task.BINARY)
    assert report.rows == 3
    records: list[dict[str, Any]] = [
        {"x": None, "z": 1.0, "color": "purple", "size": "XXL"},
        {"z": "2.5", "color": None},
    ]
    pred = model.predict_records(records)
    assert pred.probabilities is not None
    assert np.isfinite(pred.probabilities).all()
    expected = result.pipeline.predict_proba(feature_frame(pd.DataFrame(records), contract))
    assert np.abs(pred.probabilities - expected).max() <= 1e-5


def test_same_seed_same_predictions(mixed: pd.DataFrame) -> None:
    a, _, data_a = _fit(mixed, "label", Task.BINARY, "random_forest", seed=5)
    b, _, data_b = _fit(mixed, "label", Task.BINARY, "random_forest", seed=5)
    pa, pb = OnnxModel(data_a).predict(a.test_df), OnnxModel(data_b).predict(a.test_df)
    assert np.array_equal(_proba(pa), _proba(pb))
    assert np.array_equal(pa.labels, pb.labels)
    assert a.test_df.index.equals(b.test_df.index)
    _, _, data_c = _fit(mixed, "label", Task.BINARY, "random_forest", seed=6)
    assert not np.array_equal(_proba(OnnxModel(data_c).predict(a.test_df)), _proba(pa))


def test_feeds_from_records_shapes_and_dtypes() -> None:
    inputs = [InputSpec("n", "numeric", "tensor(double)"), InputSpec("c", "categorical", "tensor(string)")]
    feeds = feeds_from_records([{"n": 1, "c": "a"}, {"n": None, "c": None}, {"n": True}, {}], inputs)
    assert feeds["n"].shape == (4, 1)
    assert feeds["n"].dtype == np.float64
    assert feeds["n"][0, 0] == 1.0
    assert np.isnan(feeds["n"][1, 0])
    assert feeds["n"][2, 0] == 1.0
    assert feeds["c"].shape == (4, 1)
    assert feeds["c"].dtype == object
    assert feeds["c"].ravel().tolist() == ["a", "", "", ""]
    with pytest.raises(FeedError, match="column 'n' expects a number"):
        feeds_from_records([{"n": "abc"}], inputs)


def test_predict_accepts_records_a_record_columns_and_frames(classifiers: dict) -> None:
    result, _, data = classifiers[("breast_cancer", "logistic_regression")]
    model = OnnxModel(data)
    rows = result.test_df.head(3)
    records = rows.drop(columns="target").to_dict("records")
    by_frame = _proba(model.predict(rows))
    assert np.array_equal(_proba(model.predict(records)), by_frame)
    columns = {k: rows[k].tolist() for k in model.input_names}
    assert np.array_equal(_proba(model.predict(columns)), by_frame)
    assert np.array_equal(_proba(model.predict(records[0])), by_frame[:1])


def test_serving_module_imports_neither_sklearn_nor_pandas() -> None:
    code = (
        "import sys, mlops.serving.onnx_model as m; "
        "print(sorted(k for k in ('sklearn', 'pandas', 'skl2onnx', 'onnx') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

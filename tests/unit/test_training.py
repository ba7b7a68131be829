"""Training: pipeline shape, split rules, dataset rejections, label handling; the offline runner
(mlops.training.offline) and the manifest it writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_wine

from mlops.core.config import ModelConfig
from mlops.core.errors import ConfigError, FileRejected, InvalidDataset
from mlops.core.tasks import Task
from mlops.data.inference import infer_contract
from mlops.registry import manifest as manifest_mod
from mlops.serving.onnx_model import OnnxModel
from mlops.training.offline import compare_families, run_training
from mlops.training.train import (
    MIN_ROWS,
    build_pipeline,
    feature_frame,
    infer_task,
    label_strings,
    split,
    train,
)


def _frame(loader: Any) -> pd.DataFrame:
    df = loader(as_frame=True).frame
    df["target"] = df["target"].astype(str)
    return df


@pytest.fixture(scope="module")
def breast_cancer() -> pd.DataFrame:
    return _frame(load_breast_cancer)


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return _frame(load_wine)


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    color = rng.choice(["red", "green", "blue"], size=n)
    x = rng.normal(size=n)
    y = np.where((color == "red") | (x > 0.5), "yes", "no")
    x[::17] = np.nan
    color[::23] = ""
    return pd.DataFrame({"x": x, "color": color, "label": y})


def _config(task: str, family: str = "logistic_regression", **kw: Any) -> ModelConfig:
    return ModelConfig(name="unit", target=kw.pop("target", "target"), task=Task(task), family=family, **kw)


def test_pipeline_steps(mixed: pd.DataFrame) -> None:
    contract = infer_contract(mixed, "label")
    pipe = build_pipeline(contract, "random_forest", {"n_estimators": 3}, Task.BINARY, seed=1)
    pre = pipe.named_steps["pre"]
    kinds = {name: cols for name, _, cols in pre.transformers}
    assert kinds == {"num": ["x"], "cat": ["color"]}
    num = pre.transformers[0][1]
    assert [n for n, _ in num.steps] == ["impute", "scale"]
    assert num.named_steps["impute"].strategy == "median"
    assert pre.transformers[1][1].handle_unknown == "ignore"
    assert pipe.named_steps["model"].n_estimators == 3


def test_train_breast_cancer_logistic_regression(breast_cancer: pd.DataFrame) -> None:
    result = train(breast_cancer, infer_contract(breast_cancer, "target"), _config("binary"))
    assert result.classes == ["0", "1"]
    assert len(result.train_df) + len(result.test_df) == len(breast_cancer)
    assert result.test_df["target"].map(type).eq(str).all()
    accuracy = (
        result.pipeline.predict(feature_frame(result.test_df, infer_contract(breast_cancer, "target")))
        == result.test_df["target"]
    ).mean()
    assert accuracy >= 0.93
    assert result.params["max_iter"] == 1000
    assert result.params["random_state"] == 42
    assert result.fit_seconds > 0


def test_split_is_deterministic_and_stratified(wine: pd.DataFrame) -> None:
    a_train, a_test = split(wine, "target", 0.2, seed=3, stratify=True)
    b_train, b_test = split(wine, "target", 0.2, seed=3, stratify=True)
    assert a_test.index.tolist() == b_test.index.tolist()
    assert a_train.index.tolist() == b_train.index.tolist()
    assert set(a_test["target"]) == set(wine["target"])
    _, c_test = split(wine, "target", 0.2, seed=4, stratify=True)
    assert c_test.index.tolist() != a_test.index.tolist()


def test_rejects_too_few_rows(breast_cancer: pd.DataFrame) -> None:
    small = breast_cancer.groupby("target").head((MIN_ROWS - 1) // 2)
    with pytest.raises(InvalidDataset, match=f"at least {MIN_ROWS}"):
        train(small, infer_contract(breast_cancer, "target"), _config("binary"))


def test_rejects_single_class(breast_cancer: pd.DataFrame) -> None:
    one = breast_cancer[breast_cancer["target"] == "1"]
    with pytest.raises(InvalidDataset, match="single class"):
        train(one, infer_contract(breast_cancer, "target"), _config("binary"))


def test_rejects_binary_with_three_classes(wine: pd.DataFrame) -> None:
    with pytest.raises(InvalidDataset, match="task is binary but target 'target' has 3 classes"):
        train(wine, infer_contract(wine, "target"), _config("binary"))


def test_rejects_class_with_one_row(wine: pd.DataFrame) -> None:
    rare = pd.concat([wine[wine["target"] != "2"], wine[wine["target"] == "2"].head(1)])
    with pytest.raises(InvalidDataset, match=r"too rare in 'target': \{'2': 1\}"):
        train(rare, infer_contract(wine, "target"), _config("multiclass"))


def test_rejects_test_split_too_small_for_classes(wine: pd.DataFrame) -> None:
    few = wine.groupby("target").head(8)  # 24 rows; 5% test = 2 rows < 3 classes
    with pytest.raises(InvalidDataset, match="cannot split"):
        train(few, infer_contract(wine, "target"), _config("multiclass", test_size=0.05))


def test_family_that_does_not_fit_the_task() -> None:
    # refused where it is declared (mlops.toml loads), not after a deploy at the first training run
    with pytest.raises(ValueError, match=r"'linear_regression' cannot be trained for a binary model"):
        _config("binary", family="linear_regression")


def test_invalid_param_values_are_config_errors(breast_cancer: pd.DataFrame) -> None:
    contract = infer_contract(breast_cancer, "target")
    with pytest.raises(ConfigError, match="n_estimators"):
        train(breast_cancer, contract, _config("binary", family="random_forest", params={"n_estimators": 0}))
    with pytest.raises(ConfigError, match="invalid params"):
        train(breast_cancer, contract, _config("binary", params={"trees": 3}))


def test_missing_targets_are_dropped_and_counted(mixed: pd.DataFrame) -> None:
    df = mixed.copy()
    df.loc[df.index[:5], "label"] = None
    result = train(df, infer_contract(mixed, "label"), _config("binary", target="label"))
    assert result.dropped_rows == 5
    assert len(result.train_df) + len(result.test_df) == len(df) - 5


def test_feature_frame_dtypes(mixed: pd.DataFrame) -> None:
    df = mixed.copy()
    df["color"] = df["color"].replace("", None)
    X = feature_frame(df, infer_contract(mixed, "label"))
    assert X["x"].dtype == np.float64
    assert X["color"].dtype == object
    assert all(isinstance(v, str) for v in X["color"])
    assert (X["color"] == "").sum() == (mixed["color"] == "").sum()


def test_label_strings_and_task_inference() -> None:
    assert label_strings([0.0, 1.0, 2.5, "a", True]).tolist() == ["0", "1", "2.5", "a", "1"]
    assert infer_task(pd.Series(np.arange(100, dtype=float))) is Task.REGRESSION
    assert infer_task(pd.Series([0.0, 1.0] * 30)) is Task.BINARY
    assert infer_task(pd.Series(["a", "b", "c"] * 10)) is Task.MULTICLASS
    assert infer_task(pd.Series([1.0, 2.0, 3.0] * 10)) is Task.MULTICLASS


def test_numeric_labels_become_clean_strings(breast_cancer: pd.DataFrame) -> None:
    df = breast_cancer.copy()
    df["target"] = df["target"].astype(float)
    result = train(df, infer_contract(breast_cancer, "target"), _config("binary"))
    assert result.classes == ["0", "1"]


def test_regression_target(mixed: pd.DataFrame) -> None:
    df = mixed.drop(columns="label").assign(y=lambda d: d["x"].fillna(0) * 3 + 1)
    result = train(
        df,
        infer_contract(df, "y"),
        _config("regression", family="linear_regression", target="y", primary_metric="r2"),
    )
    assert result.classes == []
    assert result.test_df["y"].dtype == np.float64


# -- offline training (mlops.training.offline) and the manifest it writes --------------------------------------


@pytest.fixture
def code_version(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(manifest_mod.CODE_VERSION_ENV, "test-1.2.3")
    manifest_mod.code_version.cache_clear()
    yield "test-1.2.3"
    manifest_mod.code_version.cache_clear()


@pytest.fixture
def bc_csv(tmp_path: Path, breast_cancer: pd.DataFrame) -> Path:
    path = tmp_path / "bc.csv"
    text = breast_cancer.to_csv(index=False)
    lines = text.splitlines()
    # one duplicated row and one ragged row: both must be quarantined and counted, not trained on
    lines += [lines[1], "1.0,2.0,3.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_training_end_to_end(bc_csv: Path, tmp_path: Path, code_version: str) -> None:
    messages: list[str] = []
    out = run_training(bc_csv, "target", out_dir=tmp_path / "out", progress=messages.append, seed=1)
    json.dumps(out, allow_nan=False)
    assert out["rows"]["in"] == 571
    assert out["rows"]["quarantined"] == 2
    assert out["rows"]["used"] == 569
    assert set(out["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"}
    assert out["metrics"]["accuracy"] >= 0.93
    assert out["parity_max_abs_diff"] <= 1e-5
    assert set(out["latency_ms"]) == {"mean", "p50", "p95", "p99"}
    assert out["throughput_rows_per_s"] > 0
    man = out["manifest"]
    assert man["dataset"]["sha256"] == manifest_mod.sha256_bytes(bc_csv.read_bytes()) == man["dataset_sha256"]
    assert man["code_version"] == code_version
    assert man["family"] == "logistic_regression"
    assert man["task"] == "binary"
    assert man["seed"] == 1
    assert man["classes"] == ["0", "1"]
    assert len(man["features"]) == 30
    assert set(man["libraries"]) == {"sklearn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "xgboost",
                                     "lightgbm", "onnxmltools"}
    assert man["libraries"]["xgboost"] == "3.2.0"  # the xgboost-cpu wheel's version
    assert man["onnx"]["opset"]["ai.onnx"] >= 13
    assert man["version"] is None
    assert set(man["timings"]) == {"fit_seconds", "export_seconds", "evaluate_seconds"}
    art = out["artefacts"]
    data = Path(art["model"]).read_bytes()
    assert manifest_mod.sha256_bytes(data) == man["onnx"]["sha256"]
    assert json.loads(Path(art["manifest"]).read_text()) == man
    assert json.loads(Path(art["baseline"]).read_text())["rows"] == out["rows"]["train"]
    assert OnnxModel(data).classes == ["0", "1"]
    assert any("fitting logistic_regression" in m for m in messages)


def test_run_training_infers_regression(tmp_path: Path, code_version: str) -> None:
    from sklearn.datasets import load_diabetes

    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    out = run_training(path, "target", family="linear_regression")
    assert out["manifest"]["task"] == "regression"
    assert out["metrics"]["r2"] > 0.3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": "nope"}, InvalidDataset, "target column 'nope' is not in bc.csv"),
        ({"family": "svm"}, ConfigError, "unknown model family 'svm'"),
        ({"family": "linear_regression"}, ConfigError, "cannot be trained for a binary target"),
        ({"task": "ranking"}, ConfigError, "unknown task 'ranking'"),
        ({"params": {"C": -1.0}}, ConfigError, "invalid model params"),
    ],
)
def test_run_training_errors_are_clear(bc_csv: Path, kwargs: dict, error: type, match: str) -> None:
    args = {"target": "target", **kwargs}
    with pytest.raises(error, match=match):
        run_training(bc_csv, args.pop("target"), **args)


def test_regression_on_text_labels_is_refused(tmp_path: Path, mixed: pd.DataFrame) -> None:
    path = tmp_path / "mixed.csv"
    mixed.to_csv(path, index=False)
    with pytest.raises(InvalidDataset, match="regression target 'label' has non-numeric values"):
        run_training(path, "label", task="regression", family="random_forest")


def test_run_training_rejects_missing_empty_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="does not exist"):
        run_training(tmp_path / "absent.csv", "y")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(FileRejected, match="empty"):
        run_training(tmp_path / "empty.csv", "y")
    (tmp_path / "blob.csv").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(FileRejected, match="gzip"):
        run_training(tmp_path / "blob.csv", "y")


def test_compare_families_uses_one_split(tmp_path: Path, wine: pd.DataFrame, code_version: str) -> None:
    path = tmp_path / "wine.csv"
    wine.to_csv(path, index=False)
    entries = compare_families(
        path,
        "target",
        ["logistic_regression", "random_forest"],
        params={"random_forest": {"n_estimators": 20}},
    )
    json.dumps(entries, allow_nan=False)
    with pytest.raises(ConfigError, match="map a family name to its params"):
        compare_families(path, "target", params={"C": 1.0})  # type: ignore[dict-item]
    assert [e["family"] for e in entries] == ["logistic_regression", "random_forest"]
    assert entries[0]["rows"] == entries[1]["rows"] == {"train": 142, "test": 36}
    assert entries[1]["params"]["n_estimators"] == 20
    for e in entries:
        assert e["parity_max_abs_diff"] <= 1e-5
        assert e["onnx_bytes"] > 0
        assert e["fit_seconds"] > 0
        assert set(e["latency_ms"]) == {"p50", "p95"}
        assert e["metrics"]["accuracy"] > 0.9


def test_manifest_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(manifest_mod.CODE_VERSION_ENV, raising=False)
    monkeypatch.setattr(manifest_mod.shutil, "which", lambda _: None)  # no git: the package version
    manifest_mod.code_version.cache_clear()
    try:
        assert manifest_mod.code_version() == manifest_mod.package_version()
    finally:
        manifest_mod.code_version.cache_clear()
    assert manifest_mod.sha256_bytes(b"abc").startswith("ba7816bf")
    assert manifest_mod.library_versions()["sklearn"] == "1.9.1"
    with pytest.raises(ValueError, match="sha256"):
        manifest_mod.build_manifest(
            model="m", family="f", task="binary", params={}, seed=1, onnx_bytes=b"", dataset={"uri": "s3://x"}
        )


def _airquality(n: int = 150, seed: int = 3) -> pd.DataFrame:
    """Shaped like R's airquality: a numeric target with many distinct values, some of them missing."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"solar": rng.uniform(0, 330, n).round(), "wind": rng.uniform(2, 20, n).round(1),
                       "temp": rng.integers(56, 97, n), "month": rng.integers(5, 10, n)})
    df["ozone"] = (0.05 * df["solar"] - 3 * df["wind"] + 1.8 * df["temp"] - 70 + rng.normal(0, 10, n)).round()
    df.loc[::15, "ozone"] = np.nan
    return df


@pytest.mark.parametrize(
    ("dataset", "target", "task", "family"),
    [
        ("airquality", "ozone", "regression", "linear_regression"),
        ("breast_cancer", "target", "binary", "logistic_regression"),
        ("wine", "target", "multiclass", "logistic_regression"),
    ],
)
def test_run_training_without_a_family_trains_the_tasks_default(
    request: pytest.FixtureRequest, tmp_path: Path, dataset: str, target: str, task: str, family: str
) -> None:
    from mlops.core.families import DEFAULT_FAMILIES

    frame = _airquality() if dataset == "airquality" else request.getfixturevalue(dataset)
    path = tmp_path / f"{dataset}.csv"
    frame.to_csv(path, index=False)
    messages: list[str] = []
    out = run_training(path, target, progress=messages.append)
    assert (out["task"], out["family"], out["family_auto"]) == (task, family, True)
    assert family == DEFAULT_FAMILIES[Task(task)]
    assert out["manifest"]["family"] == family
    assert f"family {family}: the default for a {task} target" in messages
    named = run_training(path, target, family="random_forest", params={"n_estimators": 5})
    assert (named["family"], named["family_auto"]) == ("random_forest", False)


def test_a_named_family_that_cannot_do_the_inferred_task_says_where_the_task_came_from(tmp_path: Path) -> None:
    path = tmp_path / "airquality.csv"
    _airquality().to_csv(path, index=False)
    with pytest.raises(ConfigError) as inferred:
        run_training(path, "ozone", family="logistic_regression")
    message = str(inferred.value)
    assert "model family 'logistic_regression' cannot be trained for a regression target" in message
    assert "inferred from 'ozone', a numeric column with more than 20 distinct values" in message
    assert "['hist_gradient_boosting', 'lightgbm', 'linear_regression', 'random_forest', 'xgboost']" in message
    assert message.endswith("or name no family to train linear_regression")
    with pytest.raises(ConfigError) as given:
        run_training(path, "ozone", family="logistic_regression", task="regression")
    assert "inferred" not in str(given.value)  # the user gave the task: only the family can be wrong
    with pytest.raises(ConfigError, match=r"inferred from 'ozone'.*families for regression: \[[^]]+\]$"):
        compare_families(path, "ozone", ["logistic_regression"])
    with pytest.raises(ConfigError, match="linear_regression is the default for a regression target: name the family"):
        run_training(path, "ozone", params={"C": 0.5})


def test_compare_families_marks_the_family_run_training_defaults_to(tmp_path: Path) -> None:
    path = tmp_path / "airquality.csv"
    _airquality().to_csv(path, index=False)
    entries = compare_families(path, "ozone", params={"random_forest": {"n_estimators": 5},
                                                      "hist_gradient_boosting": {"max_iter": 5},
                                                      "xgboost": {"n_estimators": 5}, "lightgbm": {"n_estimators": 5}})
    assert {e["family"]: e["default_for_task"] for e in entries} == {
        "linear_regression": True, "random_forest": False, "hist_gradient_boosting": False, "xgboost": False,
        "lightgbm": False}
    # every family exported and passed its parity gate (an entry with "error" would have no metrics)
    assert all("error" not in e and e["parity_max_abs_diff"] is not None for e in entries), entries


def test_a_file_is_read_chunk_by_chunk_as_ingest_reads_it(tmp_path: Path) -> None:
    from mlops.training.offline import load_dataset

    rng = np.random.default_rng(8)
    n = 3000
    color = rng.choice(["red", "green"], size=n).astype(object)
    color[-200:] = "blue"  # a category only the last chunks hold
    x = rng.normal(size=n)
    frame = pd.DataFrame({"x": x, "color": color, "label": np.where(x > 0, "yes", "no")})
    lines = frame.to_csv(index=False).splitlines()
    lines += [lines[5], "0.5,red"]  # a duplicate of a row many chunks earlier, and a ragged row
    path = tmp_path / "chunked.csv"
    path.write_text("\n".join(lines) + "\n")
    whole = load_dataset(path, "label")
    chunked = load_dataset(path, "label", chunk_bytes=4096)  # ~25 chunks
    for ds in (whole, chunked):
        assert ds.rows == {"in": n + 2, "used": n, "quarantined": 2}
        assert ds.contract.column("color").categories == ["blue", "green", "red"]
        assert ds.contract.version == 1
        assert ds.sha256 == manifest_mod.sha256_bytes(path.read_bytes())
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)

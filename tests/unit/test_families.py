"""Model families: the catalog (tasks, defaults, no scikit-learn) and the estimators built from it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlops.core.config import ModelConfig
from mlops.core.families import FAMILIES, get_family
from mlops.core.tasks import Task
from mlops.training.estimators import build_estimator


def test_the_seven_families_and_their_tasks() -> None:
    assert set(FAMILIES) == {
        "logistic_regression",
        "linear_regression",
        "random_forest",
        "hist_gradient_boosting",
        "xgboost",
        "lightgbm",
        "kmeans",
    }
    supervised = {Task.BINARY, Task.MULTICLASS, Task.REGRESSION}
    assert FAMILIES["logistic_regression"].tasks == {Task.BINARY, Task.MULTICLASS}
    assert FAMILIES["linear_regression"].tasks == {Task.REGRESSION}
    assert FAMILIES["random_forest"].tasks == supervised
    assert FAMILIES["hist_gradient_boosting"].tasks == supervised
    assert FAMILIES["xgboost"].tasks == supervised
    assert FAMILIES["lightgbm"].tasks == supervised
    # a clustering has no target: k-means is its one family, and it clusters only
    assert FAMILIES["kmeans"].tasks == {Task.CLUSTERING}


@pytest.mark.parametrize(
    ("family", "task", "estimator"),
    [
        ("logistic_regression", Task.BINARY, "LogisticRegression"),
        ("logistic_regression", Task.MULTICLASS, "LogisticRegression"),
        ("linear_regression", Task.REGRESSION, "Ridge"),
        ("random_forest", Task.BINARY, "RandomForestClassifier"),
        ("random_forest", Task.REGRESSION, "RandomForestRegressor"),
        ("hist_gradient_boosting", Task.MULTICLASS, "HistGradientBoostingClassifier"),
        ("hist_gradient_boosting", Task.REGRESSION, "HistGradientBoostingRegressor"),
        ("xgboost", Task.BINARY, "XGBLabelClassifier"),
        ("xgboost", Task.MULTICLASS, "XGBLabelClassifier"),
        ("xgboost", Task.REGRESSION, "XGBRegressor"),
        ("lightgbm", Task.BINARY, "LGBMClassifier"),
        ("lightgbm", Task.REGRESSION, "LGBMRegressor"),
        ("kmeans", Task.CLUSTERING, "KMeans"),
    ],
)
def test_factory_builds_the_estimator_with_seed_and_defaults(family: str, task: Task, estimator: str) -> None:
    est = build_estimator(family, task, None, seed=7)
    assert type(est).__name__ == estimator
    assert est.get_params()["random_state"] == 7
    for key, value in FAMILIES[family].defaults.items():
        assert est.get_params()[key] == value


def test_user_params_override_defaults() -> None:
    est = build_estimator("random_forest", Task.BINARY, {"n_estimators": 5}, seed=0)
    assert est.n_estimators == 5
    assert est.max_depth == FAMILIES["random_forest"].defaults["max_depth"]
    assert FAMILIES["random_forest"].effective_params({"n_estimators": 5})["n_estimators"] == 5


def test_defaults_keep_models_small_and_converging() -> None:
    assert FAMILIES["logistic_regression"].defaults["max_iter"] >= 1000
    rf = FAMILIES["random_forest"].defaults
    assert rf["n_estimators"] <= 200
    assert rf["max_depth"] is not None


def test_unsupported_task_and_unknown_params_are_clear() -> None:
    with pytest.raises(ValueError, match="does not support task 'regression'"):
        build_estimator("logistic_regression", Task.REGRESSION, None, 0)
    with pytest.raises(ValueError, match="invalid params for model family 'linear_regression'"):
        build_estimator("linear_regression", Task.REGRESSION, {"n_trees": 3}, 0)
    with pytest.raises(ValueError, match="unknown model family 'svm'"):
        get_family("svm")


def test_xgboost_and_lightgbm_params_are_their_scikit_learn_apis_and_what_the_export_reproduces() -> None:
    # both libraries take **kwargs and would only warn about a misspelt name: refused here, with the names they take
    with pytest.raises(ValueError, match=r"'xgboost': XGBLabelClassifier does not take \['n_trees'\]; its params are "
                                         r"\[.*'max_depth'.*\]"):
        build_estimator("xgboost", Task.BINARY, {"n_trees": 3}, 0)
    with pytest.raises(ValueError, match=r"'lightgbm': LGBMRegressor does not take \['min_data_in_leaf'\]"):
        build_estimator("lightgbm", Task.REGRESSION, {"min_data_in_leaf": 3}, 0)
    # values the ONNX export does not reproduce, or that the platform does otherwise (one-hot before the estimator)
    with pytest.raises(ValueError, match=r"booster = 'dart' is not one of \['gbtree'\] for xgboost"):
        build_estimator("xgboost", Task.BINARY, {"booster": "dart"}, 0)
    with pytest.raises(ValueError, match=r"enable_categorical = True is not one of \[False\]"):
        build_estimator("xgboost", Task.REGRESSION, {"enable_categorical": True}, 0)
    with pytest.raises(ValueError, match=r"objective = 'multi:softmax' is not a multiclass objective xgboost models "
                                         r"are exported with; use one of \['multi:softprob'\]"):
        build_estimator("xgboost", Task.MULTICLASS, {"objective": "multi:softmax"}, 0)
    with pytest.raises(ValueError, match=r"boosting_type = 'rf' is not one of \['gbdt'\] for lightgbm"):
        build_estimator("lightgbm", Task.BINARY, {"boosting_type": "rf"}, 0)
    est = build_estimator("lightgbm", Task.REGRESSION, {"objective": "huber", "num_leaves": 7}, 3)
    assert (est.objective, est.num_leaves, est.n_jobs, est.random_state) == ("huber", 7, 1, 3)


def test_xgboost_classifies_with_the_platforms_string_labels() -> None:
    import numpy as np

    X = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.array(["no", "yes"] * 10, dtype=object)
    y[:5] = "maybe"
    est = build_estimator("xgboost", Task.MULTICLASS, {"n_estimators": 3}, 0).fit(X, y)
    assert est.classes_.tolist() == ["maybe", "no", "yes"]
    assert set(est.predict(X).tolist()) <= {"maybe", "no", "yes"}
    assert est.predict_proba(X).shape == (20, 3)
    est.fit(X, np.char.upper(y.astype(str)))  # a refit forgets the earlier labels
    assert est.classes_.tolist() == ["MAYBE", "NO", "YES"]


def test_config_validation_uses_the_registry() -> None:
    assert ModelConfig(name="abc", target="y", family="random_forest").family == "random_forest"
    with pytest.raises(ValueError, match="unknown model family"):
        ModelConfig(name="abc", target="y", family="svm")


def test_importing_families_does_not_import_sklearn() -> None:
    # mlops.core.config imports FAMILIES while validating mlops.toml, also in handlers that never train.
    code = ("import sys, mlops.core.families, mlops.training.estimators; "
            "print(sorted({'sklearn', 'xgboost', 'lightgbm'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_task_has_a_default_family_that_can_train_it() -> None:
    from mlops.core.families import DEFAULT_FAMILIES, default_family, families_for

    assert dict(DEFAULT_FAMILIES) == {
        Task.BINARY: "logistic_regression",
        Task.MULTICLASS: "logistic_regression",
        Task.REGRESSION: "linear_regression",
        Task.CLUSTERING: "kmeans",
    }
    for task in Task:
        assert default_family(task).supports(task), task
        assert default_family(task.value).name in families_for(task)
    assert families_for("regression") == ["hist_gradient_boosting", "lightgbm", "linear_regression", "random_forest",
                                          "xgboost"]

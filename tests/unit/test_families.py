"""Model families: the catalog (tasks, defaults, no scikit-learn) and the estimators built from it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlops.core.config import ModelConfig
from mlops.core.families import FAMILIES, get_family
from mlops.core.tasks import Task
from mlops.training.estimators import build_estimator


def test_the_four_families_and_their_tasks() -> None:
    assert set(FAMILIES) == {
        "logistic_regression",
        "linear_regression",
        "random_forest",
        "hist_gradient_boosting",
    }
    assert FAMILIES["logistic_regression"].tasks == {Task.BINARY, Task.MULTICLASS}
    assert FAMILIES["linear_regression"].tasks == {Task.REGRESSION}
    assert FAMILIES["random_forest"].tasks == set(Task)
    assert FAMILIES["hist_gradient_boosting"].tasks == set(Task)


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


def test_config_validation_uses_the_registry() -> None:
    assert ModelConfig(name="abc", target="y", family="random_forest").family == "random_forest"
    with pytest.raises(ValueError, match="unknown model family"):
        ModelConfig(name="abc", target="y", family="svm")


def test_importing_families_does_not_import_sklearn() -> None:
    # mlops.core.config imports FAMILIES while validating mlops.toml, also in handlers that never train.
    code = "import sys, mlops.core.families; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_task_has_a_default_family_that_can_train_it() -> None:
    from mlops.core.families import DEFAULT_FAMILIES, default_family, families_for

    assert dict(DEFAULT_FAMILIES) == {
        Task.BINARY: "logistic_regression",
        Task.MULTICLASS: "logistic_regression",
        Task.REGRESSION: "linear_regression",
    }
    for task in Task:
        assert default_family(task).supports(task), task
        assert default_family(task.value).name in families_for(task)
    assert families_for("regression") == ["hist_gradient_boosting", "linear_regression", "random_forest"]

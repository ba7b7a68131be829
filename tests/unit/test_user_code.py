"""A family of the project's own code (`family = "package.module:build"`, mlops.training.user_code): what the
configuration accepts, what a user sees when the code is not where it should be or does not build a model, how an
estimator and a whole Pipeline are trained, and an export that names the step it cannot convert."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import ModelConfig
from mlops.core.errors import ConfigError, ExportError
from mlops.data.schema import DataContract
from mlops.training.onnx_export import export_checked
from mlops.training.train import train

CONTRACT = DataContract.model_validate({"version": 1, "target": "y", "columns": [
    {"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"},
    {"name": "color", "kind": "categorical", "categories": ["red", "blue"]},
    {"name": "y", "kind": "categorical", "categories": ["0", "1"]}]})


def _frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "blue"], size=n)
    y = np.where(a + (color == "red") > 0.5, "1", "0")
    return pd.DataFrame({"a": a, "b": b, "color": color, "y": y})


def _package(tmp_path: Path, body: str) -> str:
    """A package of its own name (modules are cached per process) holding ``body`` as its module ``model``."""
    name = f"team_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "model.py").write_text(textwrap.dedent(body))
    return name


def _config(family: str, code: str | None = "src", **extra: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "team", "target": "y", "family": family, "code": code, **extra})


def _trained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str) -> tuple[ModelConfig, object]:
    (tmp_path / "src").mkdir()
    name = _package(tmp_path / "src", body)
    (tmp_path / "mlops.toml").write_text("")
    monkeypatch.setenv("MLOPS_CONFIG", str(tmp_path / "mlops.toml"))
    config = _config(f"{name}.model:build")
    return config, train(_frame(), CONTRACT, config)


def test_the_configuration_takes_a_build_function_with_the_directory_of_its_code() -> None:
    assert _config("team.features:build").code == "src"
    with pytest.raises(ValueError, match=r"say where its package is with code = "):
        _config("team.features:build", code=None)
    with pytest.raises(ValueError, match=r"is for a family of your own code"):
        _config("random_forest")
    with pytest.raises(ValueError, match=r"a subdirectory of the project"):
        _config("team.features:build", code="../elsewhere")
    with pytest.raises(ValueError, match=r'name a build function of your own code as "package.module:function"'):
        _config("team.features.build")


def test_a_returned_estimator_gets_the_platforms_preprocessing(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    config, result = _trained(monkeypatch, tmp_path, """
        from sklearn.linear_model import LogisticRegression

        def build(params, seed):
            return LogisticRegression(C=params.get("C", 1.0), random_state=seed)
        """)
    pipeline = result.pipeline  # type: ignore[attr-defined]
    assert [name for name, _ in pipeline.steps] == ["pre", "model"]
    assert result.params["random_state"] == config.seed  # type: ignore[attr-defined]
    _, parity = export_checked(pipeline, CONTRACT, "binary", result.test_df)  # type: ignore[attr-defined]
    assert parity.label_mismatches == 0


def test_a_returned_pipeline_is_the_whole_model_fed_the_columns_by_name(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    _, result = _trained(monkeypatch, tmp_path, """
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder
        from sklearn.tree import DecisionTreeClassifier

        def build(numeric, categorical, seed):
            assert (numeric, categorical) == (["a", "b"], ["color"])
            columns = ColumnTransformer([("n", "passthrough", numeric), ("c", OneHotEncoder(), categorical)])
            return Pipeline([("columns", columns), ("tree", DecisionTreeClassifier(max_depth=3, random_state=seed))])
        """)
    pipeline = result.pipeline  # type: ignore[attr-defined]
    assert [name for name, _ in pipeline.steps] == ["columns", "tree"]
    assert result.params["max_depth"] == 3  # type: ignore[attr-defined]


def test_a_step_without_a_converter_is_named_with_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, result = _trained(monkeypatch, tmp_path, """
        import numpy as np
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

        def build(numeric, categorical):
            logs = Pipeline([("signed_log", FunctionTransformer(lambda x: np.sign(x) * np.log1p(np.abs(x))))])
            columns = ColumnTransformer([("numbers", logs, numeric), ("colors", OneHotEncoder(), categorical)])
            return Pipeline([("features", columns), ("model", LogisticRegression())])
        """)
    with pytest.raises(ExportError) as caught:
        export_checked(result.pipeline, CONTRACT, "binary", result.test_df)  # type: ignore[attr-defined]
    message = str(caught.value)
    assert "step 'features/numbers/signed_log' (sklearn.preprocessing._function_transformer.FunctionTransformer)" \
        in message
    assert "skl2onnx.update_registered_converter" in message


@pytest.mark.parametrize(("body", "expected"), [
    ("def other():\n    pass\n", r"has no function 'build'"),
    ("import not_a_dependency_anywhere\n", r"importing .* failed: No module named 'not_a_dependency_anywhere'"),
    ("raise RuntimeError('needs a GPU')\n", r"importing .* raised RuntimeError: needs a GPU"),
    ("def build(numeric, threshold):\n    pass\n", r"requires \['threshold'\], which the platform does not pass"),
    ("def build():\n    return {'C': 1}\n", r"returned dict, not an unfitted scikit-learn estimator or Pipeline"),
    ("def build(params):\n    return params['depth']\n", r"build\(params\) raised KeyError: 'depth'"),
])
def test_code_that_does_not_build_a_model_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                      body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        _trained(monkeypatch, tmp_path, body)


def test_code_that_is_not_there_is_refused_with_where_it_was_looked_for(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    (tmp_path / "mlops.toml").write_text("")
    monkeypatch.setenv("MLOPS_CONFIG", str(tmp_path / "mlops.toml"))
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'src'} is not a directory"):
        train(_frame(), CONTRACT, _config("team.model:build"))
    (tmp_path / "src").mkdir()
    with pytest.raises(ConfigError, match=r"cannot import 'nowhere_pkg.model'.*an __init__.py"):
        train(_frame(), CONTRACT, _config("nowhere_pkg.model:build"))


@pytest.fixture(autouse=True)
def _own_sys_path() -> Iterator[None]:
    before = list(sys.path)
    yield
    sys.path[:] = before


def test_two_models_with_packages_of_one_name_each_get_their_own(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """A warm train function builds one model, then another whose code holds a package of the same name."""
    from mlops.training import user_code

    for team, depth in (("one", 2), ("two", 5)):
        (tmp_path / team / "shared_name").mkdir(parents=True)
        (tmp_path / team / "shared_name" / "__init__.py").write_text("")
        (tmp_path / team / "shared_name" / "model.py").write_text(
            f"from sklearn.tree import DecisionTreeClassifier\n\ndef build():\n"
            f"    return DecisionTreeClassifier(max_depth={depth})\n")
    depths = [user_code.build("shared_name.model:build", tmp_path / team, task="binary", params={}, seed=1,
                              numeric=[], categorical=[]).max_depth for team in ("one", "two", "one")]
    assert depths == [2, 5, 2]


def test_the_projects_own_directory_is_no_code_directory() -> None:
    with pytest.raises(ValueError, match=r"must be a subdirectory of the project"):
        _config("team.features:build", code=".")


def test_xgboost_and_lightgbm_may_end_a_users_pipeline_and_a_plain_xgb_classifier_is_pointed_to_the_right_one(
) -> None:
    from lightgbm import LGBMClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    frame = _frame()
    labels = (frame["y"] == "1").astype(int)
    for estimator, converts in ((LGBMClassifier(n_estimators=5, verbose=-1), True),
                                (XGBClassifier(n_estimators=5), False)):
        pipeline = Pipeline([("columns", ColumnTransformer([("n", "passthrough", ["a", "b"])])),
                             ("model", estimator)]).fit(frame, labels)
        if converts:
            _, parity = export_checked(pipeline, CONTRACT, "binary", frame.assign(y=labels))
            assert parity.label_mismatches == 0
        else:
            with pytest.raises(ExportError, match=r"converted as .*XGBLabelClassifier"):
                export_checked(pipeline, CONTRACT, "binary", frame.assign(y=labels))

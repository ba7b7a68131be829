"""The xgboost and lightgbm families end to end on the local cloud: an upload under incoming/ is trained by the real
pipeline (ingest, train with the parity gate, evaluate, register), deployed behind the model's `live` alias, and
answers through the local gateway from its ONNX graph, with onnxruntime, as every family's model does.

One cloud for the module, small data and few trees: an XGBoost classifier on data with a categorical column, an
XGBoost regressor, a LightGBM multiclass classifier and a LightGBM regressor."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clouds import served_cloud
from project_configs import PROJECT

from mlops.local.embedded import EmbeddedCloud
from mlops.serving.onnx_model import OnnxModel
from mlops.training.onnx_export import PARITY_TOL, XGBOOST_PARITY_TOL

CONFIG = PROJECT + """
[[model]]
name = "xgb-churn"
target = "churned"
task = "binary"
family = "xgboost"
params = { n_estimators = 20, max_depth = 3 }
thresholds = { accuracy = 0.85 }
primary_metric = "accuracy"

[[model]]
name = "xgb-diabetes"
target = "target"
task = "regression"
family = "xgboost"
params = { n_estimators = 30, max_depth = 3 }
thresholds = { r2 = 0.2 }
primary_metric = "r2"

[[model]]
name = "lgbm-wine"
target = "target"
task = "multiclass"
family = "lightgbm"
params = { n_estimators = 20, min_child_samples = 5 }
test_size = 0.3
thresholds = { accuracy = 0.85 }
primary_metric = "accuracy"

[[model]]
name = "lgbm-diabetes"
target = "target"
task = "regression"
family = "lightgbm"
params = { n_estimators = 30, num_leaves = 7 }
thresholds = { r2 = 0.2 }
primary_metric = "r2"
"""
# model -> its family, as CONFIG declares it
FAMILY = {model["name"]: model["family"] for model in tomllib.loads(CONFIG)["model"]}


def churn() -> pd.DataFrame:
    """Customers who churn when their plan is "basic" and they call support often, or are new and unhappy."""
    rng = np.random.default_rng(7)
    n = 400
    plan = rng.choice(["basic", "pro", "team"], size=n)
    calls = rng.poisson(3, size=n).astype(float)
    tenure = rng.uniform(0, 60, size=n).round(1)
    score = rng.normal(7, 2, size=n).round(2)
    churned = ((plan == "basic") & (calls >= 4)) | ((tenure < 6) & (score < 6))
    return pd.DataFrame({"plan": plan, "support_calls": calls, "tenure_months": tenure, "satisfaction": score,
                         "churned": np.where(churned, "yes", "no")})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, wine_csv: bytes) -> Iterator[EmbeddedCloud]:
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes(as_frame=True).frame.to_csv(index=False).encode()
    uploads = {"xgb-churn": churn().to_csv(index=False).encode(), "xgb-diabetes": diabetes, "lgbm-wine": wine_csv,
               "lgbm-diabetes": diabetes}
    with served_cloud(tmp_path_factory.mktemp("boosting") / "mlops.toml", uploads, config_text=CONFIG) as cloud:
        yield cloud


def _registered(cloud: EmbeddedCloud, model: str) -> tuple[dict[str, Any], OnnxModel]:
    """Version 1's manifest and its ONNX model, as register stored them."""
    version = cloud.registry.version(model, 1)
    assert version is not None
    manifest = cloud.models.get_json(version.manifest_uri[5:].split("/", 1)[1])
    onnx = OnnxModel(cloud.models.get_bytes(version.model_uri[5:].split("/", 1)[1]))
    return manifest, onnx


def _rows(model: str) -> list[dict[str, Any]]:
    if model == "xgb-churn":
        return [{"plan": "basic", "support_calls": 6.0, "tenure_months": 30.0, "satisfaction": 7.5},
                {"plan": "team", "support_calls": 1.0, "tenure_months": 40.0, "satisfaction": 8.0}]
    from sklearn import datasets

    frame = getattr(datasets, f"load_{model.split('-')[1]}")(as_frame=True).frame
    return [{k: float(v) for k, v in row.items()} for row in frame.drop(columns="target").head(2).to_dict("records")]


@pytest.mark.parametrize("model", list(FAMILY))
def test_the_family_trains_registers_and_serves_through_the_gateway(served: EmbeddedCloud, model: str) -> None:
    manifest, onnx = _registered(served, model)
    assert manifest["family"] == FAMILY[model]
    # held to its parity gate: XGBoost's float32 sums to their own tolerance, LightGBM to every family's
    tolerance = XGBOOST_PARITY_TOL if FAMILY[model] == "xgboost" else PARITY_TOL
    assert manifest["parity_tolerance"] == tolerance
    assert manifest["parity_max_abs_diff"] <= (tolerance if onnx.task != "regression" else 1e-2)
    assert manifest["libraries"][FAMILY[model]] is not None

    rows = _rows(model)
    status, answer = served.api("POST", f"/models/{model}/predict", {"instances": rows})
    assert status == 200, answer
    predictions = answer["predictions"]
    assert [(p["model_version"], p["variant"]) for p in predictions] == [(1, "champion")] * 2
    # the registered graph's answer, computed here by onnxruntime: what infer served
    local = onnx.predict_records(rows)
    if onnx.task == "regression":
        assert [p["prediction"] for p in predictions] == pytest.approx(local.values.tolist(), rel=1e-12)
        assert all(p.get("probabilities") is None for p in predictions)
    else:
        assert [p["prediction"] for p in predictions] == local.labels.tolist()
        assert local.probabilities is not None
        for answered, expected in zip(predictions, local.probabilities, strict=True):
            assert [answered["probabilities"][c] for c in onnx.classes] == pytest.approx(expected.tolist(), abs=1e-12)

    status, described = served.api("GET", f"/models/{model}")
    assert status == 200, described
    assert described["champion"]["version"] == 1


def test_what_the_models_answer_is_what_they_learnt(served: EmbeddedCloud) -> None:
    """The categorical column reaches XGBoost one-hot encoded, through the graph: a basic plan with many support
    calls churns, a team plan with few does not; wine's first row is class 0."""
    status, answer = served.api("POST", "/models/xgb-churn/predict", {"instances": _rows("xgb-churn")})
    assert status == 200, answer
    assert [p["prediction"] for p in answer["predictions"]] == ["yes", "no"]
    status, answer = served.predict("lgbm-wine", _rows("lgbm-wine")[0])
    assert (status, answer["prediction"]) == (200, "0"), answer
    status, answer = served.predict("xgb-churn", {**_rows("xgb-churn")[0], "plan": "enterprise"})
    assert status == 422, "a category the contract does not know is refused, as for every family"

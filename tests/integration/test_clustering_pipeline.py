"""A clustering end to end on the local cloud: a CSV without a target is ingested (every column a feature), the real
pipeline trains a k-means behind the platform's preprocessing, holds its ONNX graph to the parity gate, measures its
clusters' separation and registers it; it answers a cluster id through the local gateway; feedback is refused; a
second dataset's model is canaried and its rollout decides on the guardrails alone; drift_check checks the features
and the predicted clusters and says plainly that concept drift is not measured.

One cloud for the module, small data: three groups of customers (spend, visits, channel)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clouds import served_cloud
from project_configs import PROJECT

from mlops.core.config import load_config
from mlops.data.schema import DataContract
from mlops.local.embedded import EmbeddedCloud
from mlops.release.deploy import ServingDeployer
from mlops.release.overview import model_status, render_text
from mlops.release.status import ab_status, render_html, render_table
from mlops.serving.onnx_model import OnnxModel
from mlops.training.onnx_export import PARITY_TOL

MODEL = "segments"
CONFIG = PROJECT + f"""
[[model]]
name = "{MODEL}"
task = "clustering"
params = {{ n_clusters = 3 }}
test_size = 0.25
thresholds = {{ silhouette = 0.3 }}
champion_margin = 0.1
canary_weight = 0.5
rollout_interval_seconds = 1
guardrail_min_requests = 20
guardrail_min_hours = 0
guardrail_max_p95_ratio = 20.0

[model.drift]
min_samples = 50
"""
# the groups' centres: (spend, visits, the channel most of them use)
CENTRES = [(20.0, 2.0, "store"), (80.0, 3.0, "web"), (50.0, 12.0, "app")]


def customers(seed: int, n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, len(CENTRES), size=n)
    spend = np.array([c[0] for c in CENTRES])[group] + rng.normal(0, 4, n)
    visits = np.array([c[1] for c in CENTRES])[group] + rng.normal(0, 1, n)
    usual = np.array([c[2] for c in CENTRES], dtype=object)[group]
    channel = np.where(rng.random(n) < 0.9, usual, rng.choice(["store", "web", "app"], size=n))
    return pd.DataFrame({"spend": spend.round(2), "visits": visits.round(2), "channel": channel})


def centre_rows() -> list[dict[str, Any]]:
    return [{"spend": spend, "visits": visits, "channel": channel} for spend, visits, channel in CENTRES]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    uploads = {MODEL: customers(1).to_csv(index=False).encode()}
    with served_cloud(tmp_path_factory.mktemp("clustering") / "mlops.toml", uploads, config_text=CONFIG) as cloud:
        yield cloud


def _registered(cloud: EmbeddedCloud, version: int) -> tuple[dict[str, Any], OnnxModel]:
    record = cloud.registry.version(MODEL, version)
    assert record is not None
    manifest = cloud.models.get_json(record.manifest_uri[5:].split("/", 1)[1])
    return manifest, OnnxModel(cloud.models.get_bytes(record.model_uri[5:].split("/", 1)[1]))


def test_a_csv_without_a_target_trains_a_kmeans_held_to_its_parity_gate(served: EmbeddedCloud) -> None:
    manifest, onnx = _registered(served, 1)
    assert (manifest["family"], manifest["task"]) == ("kmeans", "clustering")
    assert manifest["params"]["n_clusters"] == 3
    assert manifest["parity_tolerance"] == PARITY_TOL
    assert manifest["parity_max_abs_diff"] <= PARITY_TOL
    assert manifest["classes"] == ["0", "1", "2"]  # the cluster ids
    metrics = manifest["metrics"]
    assert metrics["silhouette"] > 0.3
    assert metrics["calinski_harabasz"] > 0
    assert metrics["neg_davies_bouldin"] == -metrics["davies_bouldin"]
    assert metrics["clusters_found"] == 3
    # the contract ingest inferred: no target, every column a feature
    contract = DataContract.from_json(served.models.get_bytes(
        manifest["contract"]["uri"][5:].split("/", 1)[1]).decode())
    assert contract.target is None
    assert [c.name for c in contract.feature_columns] == ["spend", "visits", "channel"]
    assert onnx.task == "clustering"
    assert onnx.input_names == ["spend", "visits", "channel"]


def test_a_prediction_is_a_cluster_id_with_the_distances(served: EmbeddedCloud) -> None:
    _manifest, onnx = _registered(served, 1)
    rows = centre_rows()
    status, answer = served.api("POST", f"/models/{MODEL}/predict", {"instances": rows})
    assert status == 200, answer
    predictions = answer["predictions"]
    local = onnx.predict_records(rows)
    assert local.distances is not None
    assert [p["prediction"] for p in predictions] == local.labels.tolist()
    assert len({p["prediction"] for p in predictions}) == 3, "each group's centre is a cluster of its own"
    for answered, distances in zip(predictions, local.distances, strict=True):
        assert answered["probabilities"] is None
        assert [answered["distances"][c] for c in ("0", "1", "2")] == pytest.approx(distances.tolist(), abs=1e-12)
        # the cluster answered is the nearest one
        assert answered["prediction"] == min(answered["distances"], key=answered["distances"].get)
    status, one = served.predict(MODEL, rows[0])
    assert (status, one["prediction"], one["model_version"]) == (200, predictions[0]["prediction"], 1)
    status, _refused = served.predict(MODEL, {**rows[0], "channel": "fax"})
    assert status == 422, "a category the contract does not know is refused, as for every task"


def test_feedback_is_refused_plainly(served: EmbeddedCloud) -> None:
    _status, answer = served.predict(MODEL, centre_rows()[0])
    for feedback in ({"label": answer["prediction"]}, {"reward": 1.0}):
        status, refused = served.api("POST", f"/models/{MODEL}/feedback",
                                     {"request_id": answer["request_id"], **feedback})
        assert status == 422, refused
        assert "clustering model" in refused["message"]
        assert "takes no feedback" in refused["message"]


def _put_window(cloud: EmbeddedCloud, hour: datetime, frame: pd.DataFrame) -> None:
    """The window's predictions as the infer function captures them (no feedback: a clustering takes none)."""
    lines = [{"type": "prediction", "model": MODEL, "time": (hour + timedelta(seconds=5 + i)).isoformat(),
              "features": row, "request_id": str(uuid.uuid4()), "model_version": 1, "variant": "champion",
              "prediction": "0", "probabilities": None} for i, row in enumerate(frame.to_dict("records"))]
    key = f"captures/{hour:%Y/%m/%d/%H}/mlops-captures-1-{hour:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
    cloud.client("s3").put_object(Bucket=cloud.deployment.names["captures"], Key=key,
                                  Body="".join(json.dumps(line) + "\n" for line in lines).encode())


def test_drift_check_checks_the_features_and_skips_the_concept(served: EmbeddedCloud) -> None:
    hour = datetime(2031, 1, 1, 10, tzinfo=UTC)
    shifted = customers(5, n=120).assign(spend=lambda f: f["spend"] + 60.0)
    _put_window(served, hour, shifted)
    response = served.client("lambda").invoke(FunctionName=served.function("drift_check"), Payload=json.dumps(
        {"model": MODEL, "window_end": (hour + timedelta(hours=1)).isoformat()}).encode())
    summary = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, summary
    assert summary["status"] == "drifted"
    assert "spend" in summary["drifted_features"]
    assert summary["concept"]["status"] == "skipped"
    assert "clustering model has no labels" in summary["concept"]["reason"]
    assert summary["prediction_drift"] is not None  # the predicted clusters against their evaluation-time shares
    [window] = served.registry.drift_windows(MODEL)
    assert window["labelled_rows"] == 120, "a clustering's window keeps its inputs for retraining"


def test_a_second_version_is_canaried_and_promoted_on_the_guardrails_alone(served: EmbeddedCloud) -> None:
    served.upload(MODEL, "second.csv", customers(2).to_csv(index=False).encode())
    executions = served.wait_for_executions(2)
    assert all(e["status"] == "SUCCEEDED" for e in executions)
    assert served.registry.aliases(MODEL) == {"champion": 1, "challenger": 2}
    rollout_arn = served.deployment.rollout_arn
    rows = centre_rows()
    seen = {"champion": 0, "challenger": 0}
    for i in range(600):
        status, answer = served.predict(MODEL, rows[i % len(rows)])
        assert status == 200, answer
        seen[answer["variant"]] += 1
        if i % 20 == 19 and all(e["status"] != "RUNNING" for e in served.executions(rollout_arn)):
            break
    assert seen["challenger"] >= 20
    [rollout] = served.wait_for_executions(1, timeout=60, state_machine_arn=rollout_arn)
    assert rollout["status"] == "SUCCEEDED"
    output = json.loads(rollout["output"])
    assert output["action"] == "promote", output.get("reason")
    assert output["test"] is None, "no sequential test without feedback labels"
    assert served.registry.aliases(MODEL) == {"champion": 2}
    looks = served.registry.looks(MODEL, 2)
    last = looks[-1]
    assert {look["metric"] for look in looks} == {"guardrails"}
    assert last["action"] == "promote"
    assert last["reason"].startswith("guardrail-only rollout (a clustering has no feedback labels")
    assert last["p_value"] is None
    assert last["n_treatment"] >= 20
    assert last["health"]["challenger"]["error_rate"] == 0

    split = ServingDeployer(served.client("lambda")).split(served.function(f"infer:{MODEL}"))
    ab = ab_status(served.registry, split, MODEL)
    assert ab["guardrail_only"] is True
    assert "guardrails only: a clustering has no feedback labels to test on" in render_table(ab)
    assert "p95 latency per arm" in render_html(ab)
    # `mlops status`: the champion's primary metric is its silhouette
    text = render_text({"at": "now", "models": [model_status(
        load_config().model(MODEL), registry=served.registry, split=split, metrics=None, now=datetime.now(UTC),
        window=timedelta(hours=1))]})
    assert f"{MODEL} (clustering)" in text
    assert "silhouette" in text

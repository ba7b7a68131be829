"""drift_check on the embedded moto cloud: a champion trained by the real pipeline, captured traffic in the
Firehose layout, hourly windows checked by invoking the deployed function. Reports land in S3, metrics in
the function's EMF output, alerts on the topic, and a sustained drift asks for retraining exactly once,
through ingest and the training pipeline."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clouds import served_cloud

from mlops.local.embedded import EmbeddedCloud

EVENTS = Path(__file__).resolve().parents[2] / "events"
T0 = datetime(2026, 1, 5, tzinfo=UTC)
SHIFTED = ("mean radius", "mean texture")

CONFIG = """
[project]
project = "mlops"

[[model]]
name = "drifty"
target = "target"
task = "binary"
family = "logistic_regression"
test_size = 0.25
thresholds = { accuracy = 0.9 }
rollout_interval_seconds = 1
rollout_max_hours = 0.0003

[model.drift]
min_samples = 100
min_feedback = 50
feedback_lookback_hours = 1
retrain_windows = 2
retrain_window_of = 3
retrain_min_labels = 100
retrain_cooldown_hours = 24
"""


@pytest.fixture(scope="module")
def drift_cloud(tmp_path_factory: pytest.TempPathFactory,
                breast_cancer_csv: bytes) -> Iterator[tuple[EmbeddedCloud, io.StringIO]]:
    output = io.StringIO()
    with served_cloud(tmp_path_factory.mktemp("drift-config") / "mlops.toml", {"drifty": breast_cancer_csv},
                      config_text=CONFIG, handler_output=output) as cloud:
        yield cloud, output


@pytest.fixture(scope="module")
def frame(breast_cancer_csv: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(breast_cancer_csv))


def put_window(cloud: EmbeddedCloud, frame: pd.DataFrame, hour: datetime, *, drift: bool, n: int = 300,
               seed: int = 0, flip: float = 0.0, tag: str | None = None) -> None:
    """n predictions with feedback, in the record format of mlops.serving.server and Firehose's key layout; the
    predictions are the labels (a perfect model), the values jittered so no row repeats a training row;
    ``flip``: the share of labels flipped among large tumours (a region of feature space); ``tag``: the key's
    last part (Firehose's is a uuid)."""
    rng = np.random.default_rng(seed)
    rows = frame.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    observed = rows["target"].copy()
    flipped = (rows["mean radius"] > frame["mean radius"].median()) & (rng.random(n) < flip)
    observed[flipped] = 1 - observed[flipped]
    features = rows.drop(columns="target")
    features = features * (1 + rng.normal(0, 0.001, features.shape))
    if drift:
        for name in SHIFTED:
            features[name] += 2 * frame[name].std()
    lines = []
    for i, (record, label, seen) in enumerate(zip(features.to_dict("records"), rows["target"], observed,
                                                  strict=True)):
        at = hour + timedelta(seconds=5 + i * 10)
        request_id = str(uuid.uuid4())
        lines.append({"type": "prediction", "model": "drifty", "time": at.isoformat(timespec="milliseconds"),
                      "features": record, "request_id": request_id, "model_version": 1, "variant": "champion",
                      "prediction": str(label), "probabilities": None})
        lines.append({"type": "feedback", "model": "drifty", "request_id": request_id, "label": str(seen),
                      "time": (at + timedelta(seconds=2)).isoformat(timespec="milliseconds"), "reward": None})
    key = f"captures/{hour:%Y/%m/%d/%H}/mlops-captures-1-{hour:%Y-%m-%d-%H-%M-%S}-{tag or uuid.uuid4()}"
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    cloud.client("s3").put_object(Bucket=cloud.deployment.names["captures"], Key=key, Body=body)


def invoke(cloud: EmbeddedCloud, event: dict[str, Any]) -> dict[str, Any]:
    response = cloud.client("lambda").invoke(FunctionName=cloud.function("drift_check"),
                                             Payload=json.dumps(event).encode())
    payload: dict[str, Any] = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload


def emf_metrics(output: io.StringIO) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in output.getvalue().splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            dims = {d: blob[d] for group in directive["Dimensions"] for d in group}
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                out.append((metric["Name"], dims, float(value[0] if isinstance(value, list) else value)))
    return out


def test_drift_check_is_provisioned_from_the_platform(drift_cloud: tuple[EmbeddedCloud, io.StringIO]) -> None:
    cloud, _ = drift_cloud
    config = cloud.client("lambda").get_function(FunctionName=cloud.function("drift_check"))["Configuration"]
    env = config["Environment"]["Variables"]
    assert {"DATA_BUCKET", "MODELS_BUCKET", "CAPTURES_BUCKET", "REGISTRY_TABLE", "NOTIFICATIONS_TOPIC_ARN"} <= set(env)


def test_scheduled_windows_report_alert_and_retrain_once(drift_cloud: tuple[EmbeddedCloud, io.StringIO],
                                                          frame: pd.DataFrame) -> None:
    cloud, output = drift_cloud
    sqs, sns = cloud.client("sqs"), cloud.client("sns")
    queue = sqs.create_queue(QueueName="drift-alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=cloud.deployment.topic_arn, Protocol="sqs", Endpoint=queue_arn)

    # window 1 (00:00-01:00) is quiet, windows 2-5 drift; the first one goes through the scheduled event
    for h in range(5):
        put_window(cloud, frame, T0 + timedelta(hours=h), drift=h > 0, seed=h)
    scheduled = json.loads((EVENTS / "drift_check_schedule.json").read_text())
    scheduled["time"] = (T0 + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    first = invoke(cloud, scheduled)["results"]
    assert [r["model"] for r in first] == ["drifty"]
    request = json.loads((EVENTS / "drift_check_request.json").read_text())
    summaries = [first[0]] + [invoke(cloud, {**request, "model": "drifty",
                                             "window_end": (T0 + timedelta(hours=h)).isoformat()})
                              for h in range(2, 6)]

    assert [s["status"] for s in summaries] == ["no_drift", "drifted", "drifted", "drifted", "drifted"]
    assert all(sorted(s["drifted_features"]) == sorted(SHIFTED) for s in summaries[1:])
    assert all(s["rows"] == 300 and s["concept"]["status"] == "no_drift" for s in summaries)

    # retraining asked for once: at the second drifting window; later ones wait (N-of-M since, cooldown)
    assert [s["retrain"]["requested"] for s in summaries] == [False, False, True, False, False]
    decisions = cloud.registry.retrain_decisions("drifty")
    assert [d["requested"] for d in decisions] == [False, False, True, False, False]
    assert "cooldown" in decisions[-1]["reason"]
    data = cloud.data
    retrain_files = [k for k in data.keys("incoming/drifty/") if "drift-retrain" in k]
    assert retrain_files == ["incoming/drifty/drift-retrain-20260105T030000Z.csv"]
    retrain = pd.read_csv(io.BytesIO(data.get_bytes(retrain_files[0])))
    assert len(retrain) == len(frame) + 900  # the curated rows plus the labelled rows of windows 1-3
    assert list(retrain.columns) == list(frame.columns)

    # ... which ingest curated and train_trigger sent through the pipeline: one more training, no more
    executions = cloud.wait_for_executions(2)
    assert len(executions) == 2
    assert all(e["status"] == "SUCCEEDED" for e in executions)
    assert cloud.registry.latest_version("drifty") == 2

    # reports: the newest is the last window's, with a plot per drifted feature
    latest = cloud.models.get_json("reports/drifty/latest.json")
    report = cloud.models.get_json(latest["json"])
    html = cloud.models.get_bytes(latest["html"]).decode()
    assert report["window_end"] == (T0 + timedelta(hours=5)).isoformat()
    assert sorted(report["drifted_features"]) == sorted(SHIFTED)
    assert html.count("<svg") == 2
    assert len([k for k in cloud.models.keys("reports/drifty/") if k.endswith("report.json")]) == 5

    # alerts: one per drifting window, none for the quiet one
    messages = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        messages += [json.loads(m["Body"]) for m in batch]
        sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]}
                                                          for m in batch])
    alerts = [m for m in messages if m.get("Subject") == "[mlops] drifty: drift detected"]
    assert len(alerts) == 4
    assert "mean radius" in alerts[0]["Message"]
    assert "report.html" in alerts[0]["Message"]

    # the drift alarm (declared in mlops.aws.alarms; created and evaluated by the local cloud as CloudWatch would):
    # in ALARM, entered once for the four drifting windows (a state change notifies, a repeat does not)
    [alarm] = cloud.client("cloudwatch").describe_alarms(AlarmNames=["mlops-drifty-drift"])["MetricAlarms"]
    assert (alarm["StateValue"], alarm["MetricName"]) == ("ALARM", "DriftDetected")
    assert alarm["AlarmActions"] == [cloud.deployment.topic_arn]
    notices = [json.loads(m["Message"]) for m in messages if m.get("Subject", "").startswith(("ALARM:", "OK:"))]
    assert [n["NewStateValue"] for n in notices if n["AlarmName"] == "mlops-drifty-drift"] == ["ALARM"]
    [concept] = cloud.client("cloudwatch").describe_alarms(AlarmNames=["mlops-drifty-concept"])["MetricAlarms"]
    assert concept["StateValue"] == "OK"  # the live accuracy from feedback stays above the gate

    # metrics: EMF from Powertools, dimensions service + model (+ feature for per-feature scores)
    metrics = emf_metrics(output)
    scores = [(d, v) for name, d, v in metrics if name == "FeatureDriftScore" and d.get("feature") == "mean radius"]
    assert len(scores) == 5
    assert scores[0][0]["model"] == "drifty"
    assert scores[0][0]["service"] == "drift_check"
    assert scores[-1][1] > 0.5 > scores[0][1]
    counts = [v for name, d, v in metrics if name == "DriftedFeatures" and d.get("model") == "drifty"]
    assert counts == [0, 2, 2, 2, 2]
    assert [v for name, _, v in metrics if name == "ConceptMetric"] == [1.0] * 5
    assert sum(v for name, _, v in metrics if name == "RetrainRequested") == 1


def test_a_model_without_champion_is_skipped(drift_cloud: tuple[EmbeddedCloud, io.StringIO]) -> None:
    from mlops.core.config import ProjectConfig
    from mlops.drift.check import check_drift

    cloud, _ = drift_cloud
    config = ProjectConfig.model_validate({"models": [{"name": "nobody", "target": "y"}]})
    summary = check_drift("nobody", config=config, window_end=T0, registry=cloud.registry, models=cloud.models,
                          captures=cloud.models, data=cloud.data)
    assert summary["status"] == "skipped"
    assert "no champion" in summary["reason"]


def test_concept_drift_from_feedback_alone(drift_cloud: tuple[EmbeddedCloud, io.StringIO],
                                           frame: pd.DataFrame) -> None:
    """Inputs as in training, but a fifth of the labels of large tumours flipped: P(y|X) moved, P(X) did not."""
    cloud, _ = drift_cloud
    hour = T0 + timedelta(hours=10)
    put_window(cloud, frame, hour, drift=False, n=800, seed=10, flip=0.2)
    summary = invoke(cloud, {"model": "drifty", "window_end": (hour + timedelta(hours=1)).isoformat()})
    assert summary["drifted_features"] == []
    assert summary["concept"]["drifted"] is True, summary["concept"]["reason"]
    assert summary["status"] == "drifted"
    assert summary["concept"]["interval"][1] < summary["concept"]["baseline"]


def test_an_object_landing_after_its_windows_check_counts_once_in_the_next(
        drift_cloud: tuple[EmbeddedCloud, io.StringIO], frame: pd.DataFrame) -> None:
    """Firehose keys an object by its oldest record but may write it much later (a buffer closing, S3 refusing the
    write for a while): an object of the first window, keyed before the one that window's check read, lands after
    that check. The next check counts its records, once; none of the objects read before is counted again."""
    cloud, _ = drift_cloud
    hour = T0 + timedelta(days=300)
    put_window(cloud, frame, hour, drift=False, seed=20, tag="on-time")
    put_window(cloud, frame, hour + timedelta(hours=1), drift=False, seed=21)
    put_window(cloud, frame, hour + timedelta(hours=2), drift=False, seed=22)

    def check(n: int) -> dict[str, Any]:
        return invoke(cloud, {"model": "drifty", "window_end": (hour + timedelta(hours=n)).isoformat()})

    first = check(1)
    put_window(cloud, frame, hour, drift=False, n=100, seed=23, tag="-late")  # sorts before "on-time"
    second = check(2)
    third = check(3)  # everything listed again, nothing counted twice
    checks = (first, second, third)
    # the second window: its own 300 and the first window's 100 that landed late, predictions and feedback alike
    assert [c["rows"] for c in checks] == [300, 400, 300]
    assert [c["concept"]["n"] for c in checks] == [300, 400, 300]
    assert [w["labelled_rows"] for w in cloud.registry.drift_windows("drifty", after=hour.isoformat())] == [
        300, 400, 300]
    assert [c["late_records"] for c in checks] == [0, 200, 0]

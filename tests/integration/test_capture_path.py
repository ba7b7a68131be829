"""Capture as the local cloud plays it, the way AWS runs it: a handler's marked stdout lines -> its log group's
subscription filter -> the capture stream (decompressed, one message per line, buffered) -> captures/ in S3, where
rollout and drift_check read them. What the filter lets through (the marked lines of subscribed groups, nothing else
a handler prints), what the stream refuses or sets apart, and the capture sample rate: the champion alone, while no
canary runs; every prediction of both arms while one does (docs/capture.md)."""

from __future__ import annotations

import copy
import gzip
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from clouds import served_cloud
from moto import mock_aws
from project_configs import PROJECT, model_table

from mlops import aws
from mlops.aws import platform
from mlops.aws.storage import ObjectStore
from mlops.core.config import load_config
from mlops.local.cloud import Deployment, provision
from mlops.local.embedded import EmbeddedCloud
from mlops.local.firehose import BufferedFirehose
from mlops.local.metrics import EmfBridge, LogSubscriptions
from mlops.release.rollout import RolloutState, join_new_captures
from mlops.serving.capture import FAILURES_PREFIX, MARKER

EVENTS = Path(__file__).resolve().parents[2] / "events"


# -- the path, line by line ----------------------------------------------------------------------------------
@pytest.fixture
def fresh(config_file: Path) -> Iterator[tuple[Deployment, LogSubscriptions, BufferedFirehose]]:
    with mock_aws():
        aws.client.cache_clear()
        firehose = BufferedFirehose(interval_s=3600, max_bytes=0)  # each delivery written at once
        firehose.install()
        try:
            deployment = provision(aws.client, config_file=config_file)
            yield deployment, LogSubscriptions(deployment.region), firehose
        finally:
            firehose.uninstall()
    aws.client.cache_clear()


def _captured(deployment: Deployment, prefix: str = "captures/") -> list[str]:
    store = ObjectStore(aws.client("s3"), deployment.names["captures"])
    return [line for key in sorted(store.keys(prefix)) for line in store.get_bytes(key).decode().splitlines()]


def _emf() -> str:
    return json.dumps({"_aws": {"Timestamp": 0, "CloudWatchMetrics": [{"Namespace": "mlops", "Dimensions": [[]],
                                                                      "Metrics": [{"Name": "Requests"}]}]},
                       "Requests": 1})


def test_only_the_marked_lines_of_subscribed_log_groups_reach_the_captures(
        fresh: tuple[Deployment, LogSubscriptions, BufferedFirehose], config_file: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deployment, subscriptions, _firehose = fresh
    shown = io.StringIO()
    bridge = EmfBridge(lambda namespace, entries: None, shown, subscriptions)
    infer = deployment.infer_function("breast-cancer")
    [push] = [q.function for q in platform.push_queues(load_config(config_file)) if q.model == "breast-cancer"]

    def written_by(function: str, *texts: str) -> None:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", function)
        for text in texts:
            bridge.write(text)

    prediction = json.dumps({MARKER: 1, "type": "prediction", "model": "breast-cancer", "request_id": "p1"})
    written_by(infer,
               "START RequestId: 1 Version: 1\n",
               json.dumps({"level": "WARNING", "message": "capture failed", "service": "infer"}) + "\n",
               _emf() + "\n",
               # a log line quoting a capture line is not one: the filter reads the top-level field
               json.dumps({"level": "INFO", "message": prediction}) + "\n",
               json.dumps({MARKER: 2, "type": "prediction", "request_id": "other-format"}) + "\n",
               json.dumps({MARKER: "1", "type": "prediction", "request_id": "a-string"}) + "\n",
               prediction[:20], prediction[20:] + "\n",  # a line written in two parts is one event
               json.dumps({MARKER: 1, "type": "feedback", "request_id": "p1", "label": "1"}) + "\n")
    # a function whose log group no subscription watches: its marked lines go nowhere
    written_by(deployment.function_arns["ingest"].rsplit(":", 1)[1],
               json.dumps({MARKER: 1, "type": "prediction", "request_id": "from-ingest"}) + "\n")
    written_by(push, json.dumps({MARKER: 1, "type": "prediction", "request_id": "pushed"}) + "\n")
    assert _captured(deployment) == []  # delivered asynchronously, as CloudWatch Logs does
    subscriptions.flush()

    captured = [json.loads(line) for line in _captured(deployment)]
    assert sorted(r["request_id"] for r in captured) == ["p1", "p1", "pushed"]
    assert all(r[MARKER] == 1 for r in captured)
    assert [r["type"] for r in captured if r["request_id"] == "p1"] == ["prediction", "feedback"]
    assert "START RequestId" in shown.getvalue()  # the bridge still passes everything on
    assert _captured(deployment, FAILURES_PREFIX) == []


def test_the_capture_stream_takes_records_from_cloudwatch_logs_only(
        fresh: tuple[Deployment, LogSubscriptions, BufferedFirehose]) -> None:
    """A stream that decompresses CloudWatch Logs refuses PutRecordBatch from anyone else (AWS's
    InvalidSourceException): a function that still put records itself would lose them."""
    deployment, _subscriptions, _firehose = fresh
    with pytest.raises(ClientError) as refused:
        aws.client("firehose").put_record_batch(DeliveryStreamName=deployment.names["captures"],
                                                Records=[{"Data": b'{"type": "prediction"}\n'}])
    assert refused.value.response["Error"]["Code"] == "InvalidSourceException"


def test_what_the_stream_cannot_process_is_set_apart_and_control_messages_are_dropped(
        fresh: tuple[Deployment, LogSubscriptions, BufferedFirehose]) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.firehose.models import firehose_backends

    deployment, _subscriptions, _firehose = fresh
    backend = firehose_backends[DEFAULT_ACCOUNT_ID][deployment.region]
    stream = backend.delivery_streams[deployment.names["captures"]]
    destination = stream.destinations[0]["ExtendedS3"]

    def deliver(data: bytes) -> None:
        backend.put_s3_records(stream.delivery_stream_name, stream.version_id, destination, [{"Data": data}])

    deliver(gzip.compress(json.dumps({"messageType": "CONTROL_MESSAGE", "logEvents": [
        {"id": "0", "timestamp": 0, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]})
        .encode()))
    deliver(b"not gzip")
    assert _captured(deployment) == []
    [failure] = [json.loads(line) for line in _captured(deployment, FAILURES_PREFIX)]
    assert failure["errorCode"] == "decompression-failed"
    keys = list(ObjectStore(aws.client("s3"), deployment.names["captures"]).keys(""))
    assert [k.startswith(f"{FAILURES_PREFIX}decompression-failed/") for k in keys] == [True]


# -- through the real handlers, with a sample rate -----------------------------------------------------------
SAMPLE_RATE = 0.2
CONFIG = (PROJECT + model_table("sampled", f"capture_sample_rate = {SAMPLE_RATE}\n")
          # the rollout does not look during the test: the test joins the captures itself, as each look does
          + model_table("canaried", f"""champion_margin = 0.05
canary_weight = 0.5
rollout_interval_seconds = 3600
capture_sample_rate = {SAMPLE_RATE}
"""))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, breast_cancer_csv: bytes) -> Iterator[tuple[EmbeddedCloud,
                                                                                                  io.StringIO]]:
    output = io.StringIO()
    with served_cloud(tmp_path_factory.mktemp("capture") / "mlops.toml", {"sampled": breast_cancer_csv},
                      config_text=CONFIG, handler_output=output) as cloud:
        yield cloud, output


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    return [{k: float(v) for k, v in row.items()} for _, row in frame.head(100).iterrows()]


def _call(cloud: EmbeddedCloud, model: str, route: str, body: Any) -> tuple[int, dict[str, Any]]:
    event = copy.deepcopy(json.loads((EVENTS / "apigw_predict.json").read_text()))
    event["path"], event["body"] = f"/models/{model}/{route}", json.dumps(body)
    response = cloud.client("lambda").invoke(FunctionName=f"{cloud.deployment.infer_function(model)}:live",
                                             Payload=json.dumps(event).encode())
    payload = json.loads(response["Payload"].read())
    return int(payload["statusCode"]), json.loads(payload["body"])


def _records(cloud: EmbeddedCloud, model: str) -> list[dict[str, Any]]:
    cloud.flush_captures()
    store = ObjectStore(aws.client("s3"), cloud.deployment.names["captures"])
    return [r for key in store.keys("captures/") for r in store.json_lines(key) if r.get("model") == model]


def test_a_handlers_own_log_lines_and_metrics_never_reach_the_captures(
        served: tuple[EmbeddedCloud, io.StringIO], rows: list[dict[str, Any]]) -> None:
    cloud, output = served
    for row in rows[:5]:
        status, answer = _call(cloud, "sampled", "predict", {"features": row})
        assert status == 200
        _call(cloud, "sampled", "feedback", {"request_id": answer["request_id"], "label": answer["prediction"]})
    assert _call(cloud, "sampled", "predict", {"features": {"nope": 1}})[0] == 422
    printed = [line for line in output.getvalue().splitlines() if line.startswith("{")]
    assert any('"_aws"' in line for line in printed)  # the handler printed its metrics (EMF)...
    assert any(MARKER in line for line in printed)  # ...and its capture lines, on the same stdout
    assert _records(cloud, "sampled")
    # every line under captures/, whatever model it names or none: nothing else of what the handler printed
    cloud.flush_captures()
    store = ObjectStore(aws.client("s3"), cloud.deployment.names["captures"])
    everything = [r for key in store.keys("captures/") for r in store.json_lines(key)]
    assert store.invalid_lines == 0
    assert {r["type"] for r in everything} <= {"prediction", "feedback"}
    assert all(r.get(MARKER) == 1 for r in everything)


def test_the_champion_alone_is_sampled_and_every_feedback_is_captured(
        served: tuple[EmbeddedCloud, io.StringIO], rows: list[dict[str, Any]]) -> None:
    cloud, _output = served
    ids = []
    for i in range(300):
        status, answer = _call(cloud, "sampled", "predict", {"features": rows[i % len(rows)]})
        assert (status, answer["variant"]) == (200, "champion")
        ids.append(answer["request_id"])
        _call(cloud, "sampled", "feedback", {"request_id": answer["request_id"], "label": answer["prediction"]})
    captured = [r for r in _records(cloud, "sampled") if r["request_id"] in set(ids)]
    predictions = [r for r in captured if r["type"] == "prediction"]
    # binomial(300, 0.2): 60 +- 7; what drift_check reads is this sample
    assert 20 < len(predictions) < 120
    assert sorted(r["request_id"] for r in captured if r["type"] == "feedback") == sorted(ids)


def test_a_canarys_feedback_join_is_complete_under_sampling(
        served: tuple[EmbeddedCloud, io.StringIO], breast_cancer_csv: bytes, rows: list[dict[str, Any]]) -> None:
    """While a challenger holds traffic, every prediction of both arms is captured whatever the sample rate: the
    rollout's join finds each feedback's prediction, on both arms."""
    cloud, _output = served
    cloud.upload("canaried", "one.csv", breast_cancer_csv)
    cloud.wait_for_executions(2)
    lines = breast_cancer_csv.decode().splitlines()
    cloud.upload("canaried", "two.csv", ("\n".join([lines[0], *reversed(lines[1:])]) + "\n").encode())
    assert all(e["status"] == "SUCCEEDED" for e in cloud.wait_for_executions(3))
    assert cloud.registry.aliases("canaried") == {"champion": 1, "challenger": 2}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    sent = {1: 0, 2: 0}
    for i in range(200):
        status, answer = _call(cloud, "canaried", "predict", {"features": rows[i % len(rows)]})
        assert status == 200
        sent[answer["model_version"]] += 1
        _call(cloud, "canaried", "feedback", {"request_id": answer["request_id"], "label": answer["prediction"]})
    assert min(sent.values()) > 40  # both arms served (canary_weight 0.5)
    cloud.flush_captures()
    state = RolloutState(model="canaried", champion=1, challenger=2, started_at=started)
    join_new_captures(state, ObjectStore(aws.client("s3"), cloud.deployment.names["captures"]))
    assert state.counts == {"1": [sent[1], sent[1]], "2": [sent[2], sent[2]]}  # every feedback joined, and right
    assert state.pending == {}
    assert state.orphans == {}

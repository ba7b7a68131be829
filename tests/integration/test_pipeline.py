"""The training half of the loop on moto: an upload under incoming/ ends as a registered version (or a
recorded rejection), through the real handlers and the real ASL file executed by moto's Step Functions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops.local.embedded import EmbeddedCloud as Cloud


def _manifest(cloud: Cloud, model: str, version: int) -> dict:
    v = cloud.registry.version(model, version)
    assert v is not None
    _, key = v.manifest_uri[5:].split("/", 1)
    return cloud.models.get_json(key)


def test_upload_trains_and_registers_a_champion(cloud: Cloud, breast_cancer_csv: bytes) -> None:
    cloud.upload("breast-cancer", "first batch.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED", execution.get("cause")

    versions = cloud.registry.versions("breast-cancer")
    assert [(v.version, v.aliases) for v in versions] == [(1, ("champion",))]
    v1 = versions[0]
    assert v1.metrics["metrics"]["accuracy"] >= 0.9

    manifest = _manifest(cloud, "breast-cancer", 1)
    # lineage: which data, which code, which libraries, which settings, how good, how fast
    assert manifest["dataset"]["sha256"] == v1.dataset_sha256
    assert manifest["dataset"]["uri"].startswith(f"s3://{cloud.deployment.data_bucket}/curated/breast-cancer/")
    for key in ("code_version", "params", "seed", "libraries", "metrics", "latency", "timings", "onnx"):
        assert manifest[key], key
    assert manifest["onnx"]["sha256"] == v1.onnx_sha256
    assert {"sklearn", "onnxruntime", "skl2onnx"} <= set(manifest["libraries"])
    assert cloud.models.exists(v1.baseline_uri.split("/", 3)[3])

    # what ingest kept: the original, the curated rows and its manifest
    assert cloud.data.exists("incoming/breast-cancer/first batch.csv")
    curated = [k for k in cloud.data.keys("curated/breast-cancer/")]
    assert any(k.endswith("data.parquet") for k in curated)


def test_same_dataset_twice_trains_once(cloud: Cloud, breast_cancer_csv: bytes) -> None:
    cloud.upload("breast-cancer", "a.csv", breast_cancer_csv)
    cloud.wait_for_executions(1)
    cloud.upload("breast-cancer", "copy-of-a.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED"
    assert len(cloud.registry.versions("breast-cancer")) == 1


def test_multiclass_model_registers(cloud: Cloud, wine_csv: bytes) -> None:
    cloud.upload("wine", "wine.csv", wine_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    [v1] = cloud.registry.versions("wine")
    assert v1.metrics["metrics"]["accuracy"] >= 0.9
    assert _manifest(cloud, "wine", 1)["classes"] == ["0", "1", "2"]


def test_candidate_below_threshold_is_rejected_with_reason_and_notified(cloud: Cloud, breast_cancer_csv: bytes) -> None:
    sqs = cloud.client("sqs")
    queue = sqs.create_queue(QueueName="notes")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    cloud.client("sns").subscribe(TopicArn=cloud.deployment.topic_arn, Protocol="sqs", Endpoint=queue_arn)

    cloud.upload("strict", "data.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED"  # a rejection is an outcome, not a failure
    assert cloud.registry.versions("strict") == []
    [run] = cloud.registry.runs("strict")
    assert run.outcome == "rejected"
    assert "accuracy" in run.reason
    assert "below the threshold 0.999" in run.reason
    # the model's training_backend is left to "auto": its few rows trained in the function, and the record says why
    assert run.details["training_backend"] == {
        "backend": "lambda",
        "reason": "auto: 0.1 MB in memory (569 rows x 31 columns as float64) <= sagemaker_above_mb 400"}

    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert any("rejected" in json.loads(m["Body"])["Message"] for m in messages)


def test_second_better_or_equal_dataset_becomes_challenger(cloud: Cloud, breast_cancer_csv: bytes) -> None:
    cloud.upload("breast-cancer", "one.csv", breast_cancer_csv)
    cloud.wait_for_executions(1)
    # the same rows in another order: another dataset (new sha256), as good as the champion
    lines = breast_cancer_csv.decode().splitlines()
    reordered = "\n".join([lines[0], *reversed(lines[1:])]) + "\n"
    cloud.upload("breast-cancer", "two.csv", reordered.encode())
    executions = cloud.wait_for_executions(2)
    assert all(e["status"] == "SUCCEEDED" for e in executions)
    aliases = {v.version: v.aliases for v in cloud.registry.versions("breast-cancer")}
    assert aliases == {1: ("champion",), 2: ("challenger",)}
    # deployed as the canary next to the champion: the live alias carries the configured weight
    versions = {v.version: v for v in cloud.registry.versions("breast-cancer")}
    alias = cloud.live_alias("breast-cancer")
    assert alias["FunctionVersion"] == versions[1].lambda_version
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {versions[2].lambda_version: 0.1}
    champion_eval = _manifest(cloud, "breast-cancer", 2)["champion_at_evaluation"]
    assert champion_eval["version"] == 1
    assert champion_eval["metrics"]["accuracy"] > 0.9


def test_failure_is_recorded_notified_and_leaves_no_version(cloud: Cloud, breast_cancer_csv: bytes) -> None:
    # A dataset that ingest accepts but training cannot use: a single class.
    lines = breast_cancer_csv.decode().splitlines()
    one_class = [lines[0]] + [line for line in lines[1:] if line.endswith(",1")]
    cloud.upload("breast-cancer", "one-class.csv", ("\n".join(one_class) + "\n").encode())
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "TrainingFailed"
    assert cloud.registry.versions("breast-cancer") == []
    assert cloud.registry.latest_version("breast-cancer") == 0
    [run] = cloud.registry.runs("breast-cancer")
    assert run.outcome == "failed"
    assert "InvalidDataset" in run.reason


def test_transient_aws_error_is_retried_by_the_state_machine(
    cloud: Cloud, breast_cancer_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from mlops.aws.storage import ObjectStore
    from mlops.data import frames

    original = frames.get_parquet
    calls = {"n": 0}

    def throttled_once(store: ObjectStore, key: str) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
        return original(store, key)

    monkeypatch.setattr(frames, "get_parquet", throttled_once)
    cloud.upload("breast-cancer", "data.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED"
    errors = [e for e in cloud.history(execution["executionArn"]) if e["type"] == "LambdaFunctionFailed"
              or e["type"] == "TaskFailed"]
    assert [e.get("taskFailedEventDetails", e.get("lambdaFunctionFailedEventDetails", {})).get("error")
            for e in errors] == ["TransientError"]
    assert [v.version for v in cloud.registry.versions("breast-cancer")] == [1]

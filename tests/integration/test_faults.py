"""Faults on the wire: AWS answering 503s, timing out or refusing, under the whole loop on moto.

The injector sits where the network would be (botocore's ``before-send``, ahead of moto), so every layer
above it reacts as it would to the real service: the SDK's retries, the handlers' error translation, the
state machine's Retry/Catch, the registry's transactions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from moto.core.botocore_stubber import MockRawResponse

from mlops import aws
from mlops.local.embedded import EmbeddedCloud

EVENTS = Path(__file__).resolve().parents[2] / "events"
SERVICES = ("s3", "dynamodb", "lambda", "firehose", "stepfunctions", "sns")


class WireFaults:
    """Answers chosen calls of the project's AWS clients. ``decide(operation, n, request)`` gets the operation
    (``s3.PutObject``), how many times it was attempted before and the request; it returns None to let the
    call through, ``"timeout"`` (the request never arrives), or an HTTP status with the service's error code
    (botocore still hands the request to moto, so the call is done and only its answer replaced)."""

    def __init__(self, decide: Callable[[str, int, Any], tuple[int, str] | str | None]) -> None:
        self.decide = decide
        self.attempts: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _hook(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        operation = event_name.removeprefix("before-send.")
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        # attempts are counted per distinct request, so that an SDK retry is "the second attempt" whatever
        # else runs in between
        identity = f"{operation} {request.url} {hashlib.sha256(body).hexdigest()}"
        with self._lock:
            seen = self.attempts[identity]
            self.attempts[identity] += 1
            fault = self.decide(operation, seen, request)
            if fault is not None:
                self.injected[operation] += 1
        if fault is None:
            return None
        if fault == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        status, code = fault
        json_protocol = operation.startswith(("dynamodb", "sfn", "firehose", "lambda"))
        body = (json.dumps({"__type": code, "message": "injected"}).encode() if json_protocol
                else f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode())
        return AWSResponse(request.url, status, {}, MockRawResponse(body))


@contextmanager
def _attach(faults: WireFaults) -> Iterator[WireFaults]:
    clients = [aws.client(service) for service in SERVICES]
    for c in clients:
        c.meta.events.register_first("before-send", faults._hook)
    try:
        yield faults
    finally:
        for c in clients:
            c.meta.events.unregister("before-send", faults._hook)


def _predict(cloud: EmbeddedCloud, row: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((EVENTS / "apigw_predict.json").read_text()))
    event["body"] = json.dumps({"features": row})
    response = cloud.client("lambda").invoke(FunctionName="mlops-infer-breast-cancer:live",
                                              Payload=json.dumps(event).encode())
    payload: dict[str, Any] = json.loads(response["Payload"].read())
    return payload


def test_every_call_failing_once_is_recovered_end_to_end(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """Every other attempt of every call times out or gets a 503, in every step: nothing is lost or doubled."""
    def first_attempts_fail(operation: str, seen: int, request: Any) -> tuple[int, str] | str | None:
        if seen % 2:
            return None
        return "timeout" if seen % 4 == 0 else (503, "ServiceUnavailable")

    faults = WireFaults(first_attempts_fail)
    with _attach(faults):
        cloud.upload("breast-cancer", "data.csv", breast_cancer_csv)
        [execution] = cloud.wait_for_executions(1)
        assert execution["status"] == "SUCCEEDED", execution.get("cause")
        from sklearn.datasets import load_breast_cancer

        row = {k: float(v) for k, v in load_breast_cancer(as_frame=True).frame.drop(columns="target")
               .iloc[0].items()}
        answers = [_predict(cloud, row) for _ in range(5)]
    assert {a["statusCode"] for a in answers} == {200}
    # the faults reached every part of the loop...
    for operation in ("s3.PutObject", "s3.GetObject", "dynamodb.TransactWriteItems", "lambda.PublishVersion",
                      "sfn.StartExecution", "firehose.PutRecordBatch"):
        assert faults.injected[operation] > 0, operation
    # ...and the result is exactly what a fault-free run gives: one version, the alias on it, captures kept
    [version] = cloud.registry.versions("breast-cancer")
    assert version.aliases == ("champion",)
    alias = cloud.client("lambda").get_alias(FunctionName="mlops-infer-breast-cancer", Name="live")
    assert alias["FunctionVersion"] == version.lambda_version
    assert [r.outcome for r in cloud.registry.runs("breast-cancer")] == ["registered"]
    captured = [k for k in cloud.data.s3.list_objects_v2(Bucket=cloud.deployment.names["captures"])
                .get("Contents", [])]
    assert captured


WRITES = ("s3.PutObject", "s3.CopyObject", "dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.DeleteItem",
          "dynamodb.TransactWriteItems", "sfn.StartExecution", "lambda.PublishVersion", "lambda.UpdateAlias",
          "lambda.CreateAlias", "lambda.UpdateFunctionConfiguration", "firehose.PutRecordBatch")


def test_writes_whose_answer_is_lost_are_not_done_twice(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """The nastiest transient fault: the service did the write, then the answer was lost (a 503 or a timeout
    after the commit), and the SDK retries it. Conditional writes must recognise their own first attempt."""
    def answers_lost(operation: str, seen: int, request: Any) -> tuple[int, str] | None:
        # Not Powertools' idempotency records: its in-progress marker cannot tell its own retry from a
        # concurrent run (a known limit of the library; on AWS the event then waits in ingest's DLQ).
        if b"idempotency" in (request.body or b"") if isinstance(request.body, bytes) else False:
            return None
        return (503, "ServiceUnavailable") if operation in WRITES and seen % 2 == 0 else None

    faults = WireFaults(answers_lost)
    with _attach(faults):
        cloud.upload("breast-cancer", "one.csv", breast_cancer_csv)
        [execution] = cloud.wait_for_executions(1)
        assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert faults.injected["dynamodb.TransactWriteItems"] > 0
    [version] = cloud.registry.versions("breast-cancer")
    assert version.aliases == ("champion",)
    assert cloud.registry.latest_version("breast-cancer") == 1
    alias = cloud.client("lambda").get_alias(FunctionName="mlops-infer-breast-cancer", Name="live")
    assert alias["FunctionVersion"] == version.lambda_version


def test_a_permanent_refusal_ends_in_a_failure_record_and_no_version(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes
) -> None:
    """The models bucket refuses writes (a broken policy): the run fails cleanly and says why."""
    models_bucket = cloud.deployment.models_bucket

    def refuse_model_writes(operation: str, seen: int, request: Any) -> tuple[int, str] | None:
        return (403, "AccessDenied") if operation == "s3.PutObject" and models_bucket in request.url else None

    faults = WireFaults(refuse_model_writes)
    with _attach(faults):
        cloud.upload("breast-cancer", "data.csv", breast_cancer_csv)
        [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "FAILED"
    assert faults.injected["s3.PutObject"] > 0
    assert cloud.registry.versions("breast-cancer") == []
    [run] = cloud.registry.runs("breast-cancer")
    assert run.outcome == "failed"
    assert "AccessDenied" in run.reason
    with pytest.raises(cloud.client("lambda").exceptions.ResourceNotFoundException):
        cloud.client("lambda").get_alias(FunctionName="mlops-infer-breast-cancer", Name="live")

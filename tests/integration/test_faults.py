"""Faults on the wire: AWS answering 503s, timing out or refusing, under the whole loop on moto.

The injector sits where the network would be (botocore's ``before-send``, ahead of moto), so every layer
above it reacts as it would to the real service: the SDK's retries, the handlers' error translation, the
state machine's Retry/Catch, the registry's transactions. The machinery (``wire_faults`` and the fault
patterns) serves test_faults_drift and test_faults_rollout too.
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

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from moto.core.botocore_stubber import MockRawResponse

from mlops import aws
from mlops.aws.storage import ObjectStore
from mlops.local.embedded import EmbeddedCloud

EVENTS = Path(__file__).resolve().parents[2] / "events"
SERVICES = ("s3", "dynamodb", "lambda", "firehose", "stepfunctions", "sns", "cloudwatch")
# botocore's operation names of the writes (a lost answer is only nasty on a write)
WRITES = ("s3.PutObject", "s3.CopyObject", "dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.DeleteItem",
          "dynamodb.TransactWriteItems", "sfn.StartExecution", "lambda.PublishVersion", "lambda.UpdateAlias",
          "lambda.CreateAlias", "lambda.UpdateFunctionConfiguration", "firehose.PutRecordBatch", "sns.Publish")

Fault = tuple[int, str] | str | None
Decide = Callable[[str, int, Any], Fault]


class WireFaults:
    """Answers chosen calls of the project's AWS clients. ``decide(operation, n, request)`` gets the operation
    (``s3.PutObject``), how many times it was attempted before and the request; it returns None to let the
    call through, ``"timeout"`` (the request never arrives), or an HTTP status with the service's error code:
    a 5xx answers a call that was done (botocore still hands the request to moto; only its answer is lost), a
    4xx one the service refused (it is kept from moto, so nothing is done)."""

    def __init__(self, decide: Decide) -> None:
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
        if status < 500:
            # moto's stub, called after this hook, handles AWS addresses only: this one it leaves alone
            request.url = "http://refused.invalid/"
        return AWSResponse(request.url, status, {}, MockRawResponse(_error_body(operation, status, code)))


def _error_body(operation: str, status: int, code: str) -> bytes:
    """An error as the service spells it: in its protocol, with what AWS says of a refusal (the JSON services
    name the action refused; S3 names nothing, so naming the key is the platform's job)."""
    service, action = operation.split(".", 1)
    message = "injected"
    if status == 403 and service != "s3":
        message = f"User: arn:aws:sts::123456789012:assumed-role/fn is not authorized to perform: {service}:{action}"
    if service in ("s3", "sns"):  # the XML protocols
        return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return json.dumps({"__type": code, "message": message}).encode()


@contextmanager
def wire_faults(decide: Decide) -> Iterator[WireFaults]:
    """The project's clients answered by ``decide`` for as long as the block runs."""
    faults = WireFaults(decide)
    clients = [aws.client(service) for service in SERVICES]
    for c in clients:
        c.meta.events.register_first("before-send", faults._hook)
    try:
        yield faults
    finally:
        for c in clients:
            c.meta.events.unregister("before-send", faults._hook)


def every_other_attempt_fails(operation: str, seen: int, request: Any) -> Fault:
    """Every call's first (and third...) attempt times out or gets a 503: the retries must recover."""
    if seen % 2:
        return None
    return "timeout" if seen % 4 == 0 else (503, "ServiceUnavailable")


def answers_lost(operation: str, seen: int, request: Any) -> Fault:
    """Each write is done, then its answer is lost (a 503 after the commit) and the SDK retries it."""
    # Not Powertools' idempotency records: its in-progress marker cannot tell its own retry from a
    # concurrent run (a known limit of the library; on AWS the event then waits in ingest's DLQ).
    if b"idempotency" in (request.body if isinstance(request.body, bytes) else b""):
        return None
    return (503, "ServiceUnavailable") if operation in WRITES and seen % 2 == 0 else None


def refused(operation: str, *where: str) -> Decide:
    """A permanent AccessDenied on ``operation`` where the request's URL or body holds every one of ``where``
    (a bucket, a key prefix, a table): a broken policy, which no retry mends."""
    code = "AccessDenied" if operation.startswith("s3.") else "AccessDeniedException"

    def decide(op: str, seen: int, request: Any) -> Fault:
        text = request.url + (request.body.decode(errors="replace") if isinstance(request.body, bytes)
                              else str(request.body or ""))
        return (403, code) if op == operation and all(w in text for w in where) else None

    return decide


def _predict(cloud: EmbeddedCloud, row: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((EVENTS / "apigw_predict.json").read_text()))
    event["body"] = json.dumps({"features": row})
    response = cloud.client("lambda").invoke(FunctionName=f"{cloud.function('infer:breast-cancer')}:live",
                                              Payload=json.dumps(event).encode())
    payload: dict[str, Any] = json.loads(response["Payload"].read())
    return payload


def _request_id(answer: dict[str, Any]) -> str:
    return str(json.loads(answer["body"])["request_id"])


def _captured_requests(cloud: EmbeddedCloud) -> Counter[str]:
    """How many times each prediction (by request id) was captured."""
    cloud.flush_captures()
    captures = ObjectStore(cloud.client("s3"), cloud.deployment.names["captures"])
    records = [json.loads(line) for key in captures.keys("captures/") for line in captures.get_bytes(key).splitlines()]
    return Counter(r["request_id"] for r in records if r["type"] == "prediction")


def test_every_call_failing_once_is_recovered_end_to_end(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """Every other attempt of every call times out or gets a 503, in every step: nothing is lost or doubled."""
    with wire_faults(every_other_attempt_fails) as faults:
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
                      "sfn.StartExecution"):
        assert faults.injected[operation] > 0, operation
    # ...and the result is exactly what a fault-free run gives: one version, the alias on it, captures kept
    [version] = cloud.registry.versions("breast-cancer")
    assert version.aliases == ("champion",)
    alias = cloud.live_alias("breast-cancer")
    assert alias["FunctionVersion"] == version.lambda_version
    assert [r.outcome for r in cloud.registry.runs("breast-cancer")] == ["registered"]
    # every answered prediction captured, once (a lost answer to an Invoke runs the function again: that
    # second prediction is captured too, under its own request id)
    captured = _captured_requests(cloud)
    assert all(captured[_request_id(a)] == 1 for a in answers)

    # capture makes no call on the request path (docs/capture.md): with Firehose refusing every call, predictions
    # are answered and captured all the same, since the handler only writes its log
    with wire_faults(refused("firehose.PutRecordBatch")) as faults:
        answers = [_predict(cloud, row) for _ in range(3)]
    assert faults.injected["firehose.PutRecordBatch"] == 0
    assert {a["statusCode"] for a in answers} == {200}
    assert _captured_requests(cloud) == captured + Counter(_request_id(a) for a in answers)


def test_writes_whose_answer_is_lost_are_not_done_twice(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """The nastiest transient fault: the service did the write, then the answer was lost (a 503 or a timeout
    after the commit), and the SDK retries it. Conditional writes must recognise their own first attempt."""
    with wire_faults(answers_lost) as faults:
        cloud.upload("breast-cancer", "one.csv", breast_cancer_csv)
        [execution] = cloud.wait_for_executions(1)
        assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert faults.injected["dynamodb.TransactWriteItems"] > 0
    [version] = cloud.registry.versions("breast-cancer")
    assert version.aliases == ("champion",)
    assert cloud.registry.latest_version("breast-cancer") == 1
    alias = cloud.live_alias("breast-cancer")
    assert alias["FunctionVersion"] == version.lambda_version


def test_a_permanent_refusal_ends_in_a_failure_record_and_no_version(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes
) -> None:
    """The models bucket refuses writes (a broken policy): the run fails cleanly and says why."""
    models_bucket = cloud.deployment.models_bucket
    with wire_faults(refused("s3.PutObject", models_bucket)) as faults:
        cloud.upload("breast-cancer", "data.csv", breast_cancer_csv)
        [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "FAILED"
    assert faults.injected["s3.PutObject"] > 0
    assert cloud.registry.versions("breast-cancer") == []
    [run] = cloud.registry.runs("breast-cancer")
    assert run.outcome == "failed"
    assert "AccessDenied" in run.reason
    # nothing was deployed: `live` is where the deploy put it, and the API says no version is deployed
    assert cloud.live_alias("breast-cancer")["FunctionVersion"] == "$LATEST"
    status, answer = cloud.api("POST", "/models/breast-cancer/predict", {"features": {}})
    assert (status, answer["error"]) == (503, "NoModelDeployed")

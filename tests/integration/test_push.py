"""Push mode on the local cloud: messages sent to a model's queue are answered on its topic (or in its bucket) by
the push function, through the queue poller (mlops.local.queues), with the answers the API gives for the same
rows; poison messages end in the dead-letter queue with their reason; a message whose answer could not be sent is
retried by SQS and answered once; the poller itself behaves as Lambda's (batches, partial failures, redrive)."""

from __future__ import annotations

import copy
import io
import json
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from clouds import served_cloud
from moto import mock_aws

from mlops import aws
from mlops.aws import platform
from mlops.core import layout
from mlops.core.config import load_config
from mlops.local.embedded import EmbeddedCloud

EVENTS = Path(__file__).resolve().parents[2] / "events"
CONFIG = """
[project]
project = "mlops"

[[model]]
name = "tumours"
target = "target"
task = "binary"
family = "logistic_regression"
test_size = 0.25
thresholds = { accuracy = 0.9 }
primary_metric = "accuracy"

[[model]]
name = "tumours-s3"
target = "target"
task = "binary"
family = "logistic_regression"
test_size = 0.25
thresholds = { accuracy = 0.9 }
primary_metric = "accuracy"
push_output = "s3"
"""
SITES = ("north", "south", "east")
INBOX = "subscriber"
# the embedded cloud, the queues' URLs by name, the models' push queues
Pushed = tuple[EmbeddedCloud, dict[str, str], dict[str, platform.PushQueue]]
GOOD = 1000
WAVE = 50


def _frame() -> Any:
    """breast-cancer with a categorical feature, so that an unknown category can be sent."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "site", [SITES[i % 3] for i in range(len(frame))])
    return frame


def _rows(n: int) -> list[dict[str, Any]]:
    frame = _frame().drop(columns="target")
    records = frame.to_dict(orient="records")
    return [records[i % len(records)] for i in range(n)]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    """Both models trained and deployed; the queues' URLs by name, including a subscriber's inbox on the topic."""
    config_file = tmp_path_factory.mktemp("push") / "mlops.toml"
    config_file.write_text(CONFIG)
    queues = {q.model: q for q in platform.push_queues(load_config(config_file))}
    data = _frame().to_csv(index=False).encode()
    with served_cloud(config_file, dict.fromkeys(queues, data), buffered_captures=True) as cloud:
        sqs, sns = cloud.client("sqs"), cloud.client("sns")
        urls = {name: sqs.get_queue_url(QueueName=name)["QueueUrl"]
                for q in queues.values() for name in (q.queue, q.dead_letter_queue)}
        # what a subscriber sees: the topic's answers, delivered raw to a queue of its own
        urls[INBOX] = sqs.create_queue(QueueName=INBOX)["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=urls[INBOX], AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"]
        topic = next(t["TopicArn"] for t in sns.list_topics()["Topics"]
                     if t["TopicArn"].endswith(f":{queues['tumours'].topic}"))
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "true"})
        yield cloud, urls, queues


def _answered(invocation: Any, request_id: str) -> bool | None:
    """Whether this push invocation answered the message carrying request_id (None: it did not carry it)."""
    [record] = [r for r in invocation.event["Records"] if request_id in r["body"]] or [None]
    if record is None:
        return None
    return record["messageId"] not in {f["itemIdentifier"] for f in invocation.result.get("batchItemFailures", [])}


def _send(sqs: Any, url: str, bodies: list[str]) -> dict[str, str]:
    """message id -> body, sent ten at a time."""
    sent = {}
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start:start + 10])]
        answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not answer.get("Failed"), answer
        sent.update({s["MessageId"]: entries[int(s["Id"])]["MessageBody"] for s in answer["Successful"]})
    return sent


def _receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                       AttributeNames=["All"]).get("Messages", []):
        messages.extend(batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for i, m in enumerate(batch)])
    return messages


def _api(cloud: EmbeddedCloud, model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's answers (infer through its live alias) for these rows."""
    event = copy.deepcopy(json.loads((EVENTS / "apigw_predict.json").read_text()))
    event["path"] = f"/models/{model}/predict"
    answers: list[dict[str, Any]] = []
    for start in range(0, len(rows), 100):
        event["body"] = json.dumps({"instances": rows[start:start + 100]})
        response = cloud.client("lambda").invoke(FunctionName=f"{cloud.function(f'infer:{model}')}:live",
                                                  Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read())
        assert payload["statusCode"] == 200, payload
        answers.extend(json.loads(payload["body"])["predictions"])
    return answers


POISON = {
    "not JSON": ("{'features': oops", "MalformedRequest", "body"),
    "a missing feature": ({"features": "drop:mean radius"}, "InvalidInput", "features.mean radius"),
    "a wrong type": ({"features": "set:mean radius=big"}, "InvalidInput", "features.mean radius"),
    "an unknown category": ({"features": "set:site=west"}, "InvalidInput", "features.site"),
}


def _poison_body(spec: Any, row: dict[str, Any]) -> str:
    if isinstance(spec, str):
        return spec
    change = spec["features"]
    features = dict(row)
    if change.startswith("drop:"):
        del features[change[5:]]
    else:
        name, value = change[4:].split("=")
        features[name] = value
    return json.dumps({"features": features})


def test_good_messages_are_answered_once_like_the_api_and_poison_ones_dead_lettered_with_reasons(
    pushed: Pushed,
) -> None:
    cloud, urls, queues = pushed
    sqs, queue = cloud.client("sqs"), queues["tumours"]
    rows = _rows(GOOD)
    bodies = [json.dumps({"features": row, "request_id": f"order-{i}"}) for i, row in enumerate(rows)]
    poison = {reason: _poison_body(spec, rows[i]) for i, (reason, (spec, _e, _f)) in enumerate(POISON.items())}
    everything = bodies + list(poison.values())
    random.Random(7).shuffle(everything)
    sent: dict[str, str] = {}
    answers = []
    # moto's SQS scans the whole queue on every send and receive: a producer streaming in waves, and a subscriber
    # reading as they come, keep the queues short
    for start in range(0, len(everything), WAVE):
        sent.update(_send(sqs, urls[queue.queue], everything[start:start + WAVE]))
        cloud.queues.drain()  # type: ignore[union-attr]
        answers.extend(json.loads(m["Body"]) for m in _receive_all(sqs, urls[INBOX]))

    by_request = {a["request_id"]: a for a in answers}
    assert len(by_request) == len(answers) == GOOD, "every good message answered exactly once"
    api = _api(cloud, "tumours", rows)
    for i, expected in enumerate(api):
        answer = by_request[f"order-{i}"]
        assert (answer["prediction"], answer["model_version"]) == (expected["prediction"], expected["model_version"])
        assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        assert sent[answer["message_id"]] == bodies[i]
        assert answer["model"] == "tumours"

    dead = _receive_all(sqs, urls[queue.dead_letter_queue])
    reasons = {m["Body"]: {k: v.get("StringValue") for k, v in m["MessageAttributes"].items()} for m in dead}
    assert set(reasons) == set(poison.values()), "the poison messages, and only they, with their bodies unchanged"
    for reason, (_spec, error, field) in POISON.items():
        attributes = reasons[poison[reason]]
        assert (attributes["error"], attributes.get("field")) == (error, field), reason
        assert attributes["message"], reason
        assert sent[attributes["message_id"]] == poison[reason]
        assert attributes["receive_count"] == "1", "dead-lettered at once, not after every retry"


def test_a_transient_failure_is_retried_by_sqs_then_answered_once(pushed: Pushed) -> None:
    """SNS cannot be reached on any of the SDK's attempts to publish an answer: the message is reported as a batch
    item failure, SQS delivers it again, and it is answered once."""
    cloud, urls, queues = pushed
    sqs, sns = cloud.client("sqs"), aws.client("sns")
    failures = iter(range(sns.meta.config.retries["total_max_attempts"]))  # every attempt of the SDK's, once

    def unavailable(request: Any, **_: Any) -> None:
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        # raised before moto's own handler sees the request: nothing is published (an answer replaced by a 503
        # would come after moto published, and SNS would rightly hold the answer twice)
        if b"flaky-1" in body and next(failures, None) is not None:
            raise EndpointConnectionError(endpoint_url=request.url)

    sns.meta.events.register_first("before-send.sns.Publish", unavailable)
    try:
        _send(sqs, urls[queues["tumours"].queue], [json.dumps({"features": _rows(1)[0], "request_id": "flaky-1"})])
        cloud.queues.drain()  # type: ignore[union-attr]
    finally:
        sns.meta.events.unregister("before-send.sns.Publish", unavailable)
    function = queues["tumours"].function
    deliveries = [_answered(i, "flaky-1") for i in cloud.runtime.invocations if i.function == function]
    assert [d for d in deliveries if d is not None] == [False, True], "reported failed once, then answered"
    answers = [json.loads(m["Body"]) for m in _receive_all(sqs, urls[INBOX])]
    assert [a["request_id"] for a in answers] == ["flaky-1"]
    assert _receive_all(sqs, urls[queues["tumours"].dead_letter_queue]) == []


def test_s3_output_and_capture(pushed: Pushed) -> None:
    cloud, urls, queues = pushed
    sqs = cloud.client("sqs")
    rows = _rows(3)
    sent = _send(sqs, urls[queues["tumours-s3"].queue], [json.dumps({"instances": rows, "request_id": "batch-7"})])
    cloud.queues.drain()  # type: ignore[union-attr]
    [message_id] = sent
    keys = list(cloud.data.keys(f"{layout.PREDICTIONS}tumours-s3/"))
    assert len(keys) == 1
    assert keys[0].endswith(f"/{message_id}.jsonl")
    lines = [json.loads(line) for line in cloud.data.get_bytes(keys[0]).decode().splitlines()]
    api = _api(cloud, "tumours-s3", rows)
    assert [line["request_id"] for line in lines] == ["batch-7/0", "batch-7/1", "batch-7/2"]
    assert [line["prediction"] for line in lines] == [a["prediction"] for a in api]
    assert {line["message_id"] for line in lines} == {message_id}

    cloud.flush_captures()
    s3 = cloud.client("s3")
    bucket = cloud.deployment.names["captures"]
    captured = [json.loads(line) for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
                for line in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode().splitlines()]
    pushed_ids = {r["request_id"] for r in captured if r["type"] == "prediction"}
    assert {"batch-7/0", "batch-7/1", "batch-7/2", "flaky-1", "order-0"} <= pushed_ids, "under the ids answered"


REPORTER = """
import json

def handler(event, context):
    # fails every message whose body asks to, reporting it as a batch item failure
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                  if json.loads(r["body"]).get("fail")]}
"""


def test_the_poller_delivers_batches_deletes_what_succeeded_and_sqs_dead_letters_after_max_receives() -> None:
    """The local poller alone (mlops.local.queues), with a function that reports failures: what AWS's does."""
    from mlops.local.lambda_runtime import InProcessRuntime
    from mlops.local.queues import QueuePoller, moto_delivery_off

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", REPORTER)
    with mock_aws(), InProcessRuntime() as runtime, moto_delivery_off():
        aws.client.cache_clear()
        sqs, lam = aws.client("sqs"), aws.client("lambda")
        role = aws.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = sqs.create_queue(QueueName="q", Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        lam.create_function(FunctionName="reporter", Runtime="python3.12", Role=role, Handler="handler.handler",
                            Code={"ZipFile": buffer.getvalue()})
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="reporter", BatchSize=10,
                                        FunctionResponseTypes=["ReportBatchItemFailures"])
        sent = _send(sqs, queue, [json.dumps({"n": i, "fail": i == 7}) for i in range(25)])
        assert not runtime.invocations, "nothing is delivered inside SendMessage"
        poller = QueuePoller(sqs, lam, region="us-east-1")
        poller.start()
        try:
            poller.drain(60)
        finally:
            poller.stop()
        [dead] = _receive_all(sqs, dlq)
        assert json.loads(dead["Body"]) == {"n": 7, "fail": True}
        assert sent[dead["MessageId"]] == dead["Body"]
        delivered = [r["messageId"] for i in runtime.invocations for r in i.event["Records"]]
        assert all(len(i.event["Records"]) <= 10 for i in runtime.invocations)
        assert sorted(set(delivered)) == sorted(sent)
        assert delivered.count(dead["MessageId"]) == 2, "delivered maxReceiveCount times, then dead-lettered"
        assert len(delivered) == 25 + 1, "every other message delivered once"
    aws.client.cache_clear()

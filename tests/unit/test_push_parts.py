"""Push mode's pieces without a model: the SQS event a push function receives (AWS's and the local poller's), what
counts as a reported failure, which errors are poison, and the S3 output keyed by message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from moto import mock_aws

from mlops import aws
from mlops.aws.storage import ObjectStore
from mlops.core.errors import IntegrityError
from mlops.local.queues import reported_failures, sqs_event_record
from mlops.serving.errors import InvalidInput, MalformedRequest, NoModelDeployed, PayloadTooLarge
from mlops.serving.push import BucketOutput, PushMessage, is_poison

EVENT = Path(__file__).resolve().parents[2] / "events" / "sqs_push.json"


@pytest.fixture
def cloud() -> Iterator[None]:
    with mock_aws():
        aws.client.cache_clear()
        yield
    aws.client.cache_clear()


def test_the_sample_event_and_the_local_pollers_event_have_the_shape_lambda_sends(cloud: None) -> None:
    sample = json.loads(EVENT.read_text())["Records"]
    for record in sample:
        parsed = SqsRecordModel.model_validate(record)
        assert json.loads(str(parsed.body)).keys() & {"features", "instances"}
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"features": {}}', MessageAttributes={
        "tenant": {"DataType": "String", "StringValue": "a"}, "blob": {"DataType": "Binary", "BinaryValue": b"\x00"}})
    [message] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
    local = sqs_event_record(message, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    assert set(local) == set(sample[0])
    parsed = SqsRecordModel.model_validate(local)
    assert parsed.messageId == message["MessageId"]
    assert parsed.attributes.ApproximateReceiveCount == "1"
    assert parsed.messageAttributes["tenant"].stringValue == "a"
    assert parsed.messageAttributes["blob"].binaryValue == "AA=="


@pytest.mark.parametrize(("answer", "failed"), [
    (b"", set()),  # no answer: every message succeeded, as on AWS
    (b"null", set()),
    (b'{"batchItemFailures": []}', set()),
    (b'{"batchItemFailures": [{"itemIdentifier": "b"}]}', {"b"}),
    (b'{"batchItemFailures": [{"itemIdentifier": "z"}]}', {"a", "b"}),  # an id not in the batch: all fail
    (b'{"batchItemFailures": [{"id": "b"}]}', {"a", "b"}),
    (b"not json", {"a", "b"}),
])
def testreported_failures_follow_lambdas_rules(answer: bytes, failed: set[str]) -> None:
    assert reported_failures(answer, {"a", "b"}) == failed


@pytest.mark.parametrize(("error", "poison"), [
    (MalformedRequest("not JSON", "body"), True),
    (InvalidInput("unknown category", "features.site"), True),
    (PayloadTooLarge("too many", "instances"), True),
    (NoModelDeployed("nothing deployed yet"), False),
    (IntegrityError("sha256 mismatch"), False),
    (ConnectionError("throttled"), False),
])
def test_only_what_the_sender_must_change_is_poison(error: Exception, poison: bool) -> None:
    assert is_poison(error) is poison


def test_s3_output_is_one_object_per_message_rewritten_on_redelivery(cloud: None) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="data")
    output = BucketOutput(ObjectStore(s3, "data"), "predictions/")
    message = PushMessage("m-1", "{}", 1, datetime(2026, 11, 27, 23, 59, tzinfo=UTC))
    answer: dict[str, Any] = {"message_id": "m-1", "model": "m", "request_id": "r", "predictions": [
        {"request_id": "r/0", "prediction": "1"}, {"request_id": "r/1", "prediction": "0"}]}
    output.send(answer, message)
    output.send(answer, PushMessage("m-1", "{}", 2, message.sent_at))  # SQS delivered it again
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"]]
    assert key == "predictions/m/2026/11/27/m-1.jsonl"
    lines = [json.loads(line) for line in s3.get_object(Bucket="data", Key=key)["Body"].read().splitlines()]
    assert [(line["message_id"], line["model"], line["request_id"]) for line in lines] == [
        ("m-1", "m", "r/0"), ("m-1", "m", "r/1")]

"""The capture sink against Firehose's partial failures: PutRecordBatch answers 200 while refusing some records
(ErrorCode per record); those are sent again, and what is still refused is reported, never dropped silently."""

from __future__ import annotations

import json

import boto3
from botocore.stub import Stubber

from mlops.serving.capture import CaptureIncomplete, CaptureSink


def _client() -> tuple[object, Stubber]:
    client = boto3.client("firehose", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def _records(*ids: str) -> list[dict[str, bytes]]:
    return [{"Data": (json.dumps({"request_id": i}) + "\n").encode()} for i in ids]


def test_refused_records_are_sent_again_and_only_they() -> None:
    client, stub = _client()
    errors: list[Exception] = []
    stub.add_response("put_record_batch", {"FailedPutCount": 1, "RequestResponses": [
        {"RecordId": "a"}, {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}]},
        {"DeliveryStreamName": "captures", "Records": _records("r1", "r2")})
    stub.add_response("put_record_batch", {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "b"}]},
                      {"DeliveryStreamName": "captures", "Records": _records("r2")})
    with stub:
        CaptureSink(client, "captures", errors.append).put([{"request_id": "r1"}, {"request_id": "r2"}])
    stub.assert_no_pending_responses()
    assert errors == []


def test_records_refused_every_time_are_reported() -> None:
    client, stub = _client()
    errors: list[Exception] = []
    for _ in range(3):
        stub.add_response("put_record_batch", {"FailedPutCount": 1, "RequestResponses": [
            {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}]})
    with stub:
        CaptureSink(client, "captures", errors.append).put([{"request_id": "r1"}])
    assert len(errors) == 1
    assert isinstance(errors[0], CaptureIncomplete)
    assert "refused 1 capture record(s) after 3 attempts" in str(errors[0])

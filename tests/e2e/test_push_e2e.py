"""Push mode through `mlops local up` with the AWS CLI, before any model is trained (no training: cheap): a message
that can never succeed reaches the dead-letter queue at once with its reason; one that could succeed once a model
is deployed is retried by SQS and reaches it only after the queue's maxReceiveCount receives, without a reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = pytest.mark.slow


def test_poison_is_dead_lettered_at_once_with_its_reason_and_a_transient_failure_after_retries(
    start_local_up: Callable[..., LocalUp],
) -> None:
    server = start_local_up()
    [model] = server.info["models"]
    queue = server.aws_json("sqs", "get-queue-url", "--queue-name", model["push_queue"])["QueueUrl"]
    redrive = json.loads(server.aws_json("sqs", "get-queue-attributes", "--queue-url", queue, "--attribute-names",
                                         "RedrivePolicy")["Attributes"]["RedrivePolicy"])
    dlq_name = redrive["deadLetterTargetArn"].rsplit(":", 1)[1]
    dlq = server.aws_json("sqs", "get-queue-url", "--queue-name", dlq_name)["QueueUrl"]

    poison = server.aws_json("sqs", "send-message", "--queue-url", queue, "--message-body", "{not json")["MessageId"]
    early = server.aws_json("sqs", "send-message", "--queue-url", queue, "--message-body",
                            json.dumps({"features": {"x1": 0.1, "x2": 0.2, "x3": 0.3, "x4": 0.4}}))["MessageId"]

    dead: dict[str, dict[str, Any]] = {}

    def both_dead_lettered() -> bool:
        found = server.aws_json("sqs", "receive-message", "--queue-url", dlq, "--max-number-of-messages", "10",
                                "--attribute-names", "All", "--message-attribute-names", "All") or {}
        for message in found.get("Messages", []):
            attributes = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
            dead[attributes.get("message_id", message["MessageId"])] = {**message, "reason": attributes}
            server.aws("sqs", "delete-message", "--queue-url", dlq, "--receipt-handle", message["ReceiptHandle"])
        return len(dead) == 2

    server.wait_for("both messages in the dead-letter queue", both_dead_lettered, timeout=60)
    assert dead[poison]["Body"] == "{not json"
    assert dead[poison]["reason"]["error"] == "MalformedRequest"
    assert dead[poison]["reason"]["field"] == "body"
    assert dead[poison]["reason"]["receive_count"] == "1"
    # the transient one was moved by SQS itself after its receives: same message, no reason attached
    assert early in dead
    assert "error" not in dead[early]["reason"]
    assert int(dead[early]["Attributes"]["ApproximateReceiveCount"]) >= redrive["maxReceiveCount"]
    assert f"[push] {model['push_queue']}: 1 message(s), 1 to retry" in server.log_path.read_text()

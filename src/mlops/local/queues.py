"""Push mode on the local cloud: the models' queues provisioned into moto, and a poller that plays Lambda's part
in delivering them to the push functions, as AWS does.

moto stores queues, dead-letter queues and event source mappings, and moves a message to its dead-letter queue
once it has been received maxReceiveCount times. Its own delivery to Lambda is not AWS's: it runs inside the
SendMessage request (so the sender waits for the function, and behind ``mlops local up`` a handler's nested call
would wait for itself), one message per invocation with made-up attributes, it ignores the function's
``batchItemFailures`` and makes a failed message visible again at once without receiving it again. The poller
switches that off and, for every enabled SQS event source mapping, receives batches of up to its BatchSize,
invokes the function through the Lambda API (the in-process runtime), deletes what succeeded and leaves what
failed for SQS to deliver again, and to dead-letter after maxReceiveCount receives.

One difference from AWS: a failed message is visible again after ``retry_after_s`` (1 s) instead of the queue's
visibility timeout (6 x the function's timeout), so that retries happen while a person or a test watches.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from moto.sqs.models import Queue

from mlops.aws import environment as variables  # the resource variables' names
from mlops.aws import platform
from mlops.core.config import ProjectConfig

# moto delivers to the mappings a queue holds under this attribute: while the poller runs it reads as empty
_INLINE_DELIVERY = "lambda_event_source_mappings"
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


def provision_queues(client: Callable[[str], Any], *, config: ProjectConfig, region: str, role: str, code: bytes,
                     values: dict[str, str]) -> list[platform.PushQueue]:
    """Each model's dead-letter queue, queue, topic (push_output = "sns"), push function and event source mapping.
    ``values`` holds the values of the resource variables of ``mlops.aws.platform.PUSH.env`` and DATA_BUCKET."""
    sqs, sns, lam = client("sqs"), client("sns"), client("lambda")
    queues = platform.push_queues(config)
    for queue in queues:
        dlq_url = sqs.create_queue(QueueName=queue.dead_letter_queue, Attributes={
            "MessageRetentionPeriod": str(platform.PUSH_DLQ_RETENTION_S)})["QueueUrl"]
        redrive = {"deadLetterTargetArn": _queue_arn(sqs, dlq_url), "maxReceiveCount": queue.max_receives}
        queue_url = sqs.create_queue(QueueName=queue.queue, Attributes={
            "VisibilityTimeout": str(platform.PUSH_VISIBILITY_TIMEOUT_S), "RedrivePolicy": json.dumps(redrive)})[
            "QueueUrl"]
        output = (sns.create_topic(Name=queue.topic)["TopicArn"] if queue.topic
                  else values[variables.DATA_BUCKET])
        function_env = {**{v: values[v] for v in platform.PUSH.env},
                        **platform.serving_env(queue.model, queue.capture_sample_rate),
                        variables.PUSH_OUTPUT: queue.output, variables.DEAD_LETTER_QUEUE_URL: dlq_url,
                        queue.output_variable: output,
                        "POWERTOOLS_SERVICE_NAME": platform.PUSH.name,
                        "POWERTOOLS_METRICS_NAMESPACE": config.project, "POWERTOOLS_TRACE_DISABLED": "true"}
        function = lam.create_function(
            FunctionName=queue.function, Runtime="python3.12", Role=role, Handler="handler.handler",
            Code={"ZipFile": code}, Description=platform.PUSH.description, Timeout=platform.PUSH.timeout_s,
            MemorySize=platform.PUSH.memory_mb, Environment={"Variables": function_env})
        lam.create_event_source_mapping(EventSourceArn=_queue_arn(sqs, queue_url),
                                        FunctionName=function["FunctionArn"], BatchSize=platform.PUSH_BATCH_SIZE,
                                        FunctionResponseTypes=[REPORT_BATCH_ITEM_FAILURES])
    return queues


def _queue_arn(sqs: Any, url: str) -> str:
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return arn


_switched_off = [0]  # how many pollers (or tests) need moto's own delivery off
_switch = threading.Lock()


def _keep(queue: Queue, value: Any) -> None:
    queue.__dict__[_INLINE_DELIVERY] = value


@contextlib.contextmanager
def moto_delivery_off() -> Iterator[None]:
    """moto's in-request delivery to Lambda reads as empty; what it stores is kept and comes back afterwards."""
    with _switch:
        if not _switched_off[0]:
            setattr(Queue, _INLINE_DELIVERY, property(lambda _queue: {}, _keep))
        _switched_off[0] += 1
    try:
        yield
    finally:
        with _switch:
            _switched_off[0] -= 1
            if not _switched_off[0]:
                delattr(Queue, _INLINE_DELIVERY)


def sqs_event_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A received message as Lambda hands it to a function (Powertools' SqsRecordModel parses it)."""
    def attribute(value: dict[str, Any]) -> dict[str, Any]:
        binary = value.get("BinaryValue")
        return {"stringValue": value.get("StringValue"), "stringListValues": [], "binaryListValues": [],
                "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
                "dataType": value["DataType"]}

    attributes = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
        "attributes": {name: attributes[name] for name in (
            "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")
            if name in attributes},
        "messageAttributes": {name: attribute(v) for name, v in message.get("MessageAttributes", {}).items()},
        "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class QueuePoller:
    """Lambda's SQS poller for every enabled SQS event source mapping, on one thread (the in-process runtime runs
    one invocation at a time anyway)."""

    def __init__(self, sqs: Any, lam: Any, *, region: str, log: Callable[[str], None] | None = None,
                 retry_after_s: int = 1, idle_s: tuple[float, float] = (0.05, 1.0), refresh_s: float = 5.0) -> None:
        """Idle, the poller waits from ``idle_s[0]`` up to ``idle_s[1]`` between passes (doubling), so that it costs
        next to nothing between bursts; it re-reads the event source mappings every ``refresh_s``."""
        self.sqs = sqs
        self.lam = lam
        self.region = region
        self.log = log or (lambda _line: None)
        self.retry_after_s = retry_after_s
        self.idle_s = idle_s
        self.refresh_s = refresh_s
        self._urls: dict[str, str] = {}
        self._mappings: tuple[float, list[dict[str, Any]]] = (-refresh_s, [])
        self._stop = threading.Event()
        self._wake = threading.Event()  # someone waits for the queues (drain): poll now
        self._thread = threading.Thread(target=self._run, name="sqs-poller", daemon=True)
        self._delivery = contextlib.ExitStack()

    def start(self) -> None:
        self._delivery.enter_context(moto_delivery_off())
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._delivery.close()

    def _run(self) -> None:
        idle = self.idle_s[0]
        while not self._stop.is_set():
            try:
                delivered = self.poll_once()
            except Exception as exc:  # a failed pass is logged; polling goes on, as Lambda's poller does
                self.log(f"[push] polling failed: {exc!r}")
                delivered = 0
            idle = self.idle_s[0] if delivered else min(idle * 2, self.idle_s[1])
            if not delivered and self._wake.wait(idle):
                self._wake.clear()
                idle = self.idle_s[0]

    def mappings(self) -> list[dict[str, Any]]:
        """The enabled SQS event source mappings, as the Lambda API lists them (re-read every refresh_s)."""
        at, mappings = self._mappings
        if time.monotonic() - at >= self.refresh_s:
            found = self.lam.list_event_source_mappings()["EventSourceMappings"]
            mappings = [m for m in found if m["EventSourceArn"].startswith("arn:aws:sqs:")
                        and m.get("State") == "Enabled"]
            self._mappings = (time.monotonic(), mappings)
        return mappings

    def queue_url(self, arn: str) -> str:
        if arn not in self._urls:
            _, _, _, _, account, name = arn.split(":", 5)
            self._urls[arn] = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        return self._urls[arn]

    def poll_once(self) -> int:
        """One batch from each mapping's queue; returns how many messages were delivered."""
        delivered = 0
        for mapping in self.mappings():
            url = self.queue_url(mapping["EventSourceArn"])
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(int(mapping.get("BatchSize") or 10), 10), WaitTimeSeconds=0,
                AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
            if messages:
                self._deliver(mapping, url, messages)
                delivered += len(messages)
        return delivered

    def _deliver(self, mapping: dict[str, Any], url: str, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [sqs_event_record(m, mapping["EventSourceArn"], self.region) for m in messages]}
        name = mapping["FunctionArn"].rsplit(":", 1)[-1]
        ids = {m["MessageId"] for m in messages}
        failed = set(ids)  # a function error, or an invocation that failed, returns the whole batch to the queue
        try:
            response = self.lam.invoke(FunctionName=mapping["FunctionArn"], Payload=json.dumps(event).encode())
        except Exception as exc:
            self.log(f"[push] {name}: invocation failed: {exc!r}")
        else:
            payload = response["Payload"].read()
            if "FunctionError" not in response:
                failed = set()
                if REPORT_BATCH_ITEM_FAILURES in (mapping.get("FunctionResponseTypes") or []):
                    failed = reported_failures(payload, ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        retried = [m for m in messages if m["MessageId"] in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        if retried:
            self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self.retry_after_s}
                for i, m in enumerate(retried)])
        self.log(f"[push] {name}: {len(messages)} message(s), {len(retried)} to retry")

    def drain(self, timeout: float = 120.0) -> None:
        """Wait until every mapped queue is empty: each message answered, dead-lettered or out of retries."""
        urls = [self.queue_url(m["EventSourceArn"]) for m in self.mappings()]
        deadline = time.monotonic() + timeout
        while not all(self._empty(url) for url in urls):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the push queues were not drained within {timeout:.0f}s")
            self._wake.set()
            time.sleep(0.05)

    def _empty(self, url: str) -> bool:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return all(int(attributes.get(name, 0)) == 0 for name in names)


def reported_failures(payload: bytes, ids: set[str]) -> set[str]:
    """The message ids a function reported failed. As on AWS, no answer or an empty list is a full success, and an
    answer Lambda cannot read (not JSON, an item without a known message id) fails the whole batch."""
    try:
        answer = json.loads(payload) if payload else None
        failures = (answer or {}).get("batchItemFailures") or []
        reported = {f["itemIdentifier"] for f in failures}
    except (ValueError, AttributeError, TypeError, KeyError):
        return set(ids)
    return reported if reported <= ids else set(ids)

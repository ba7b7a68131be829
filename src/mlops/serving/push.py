"""Push mode: a model's prediction requests arrive on its SQS queue and are answered on its SNS topic or in its
bucket, scored by the serving core the API uses (``ModelServer.predict``): same validation, same answer, same
capture.

A message's body is the API's predict body (``{"features": {...}}`` or ``{"instances": [...]}``), optionally
with the sender's ``request_id``. The answer is the API's answer with the message id and the model beside it;
its ``request_id`` is the sender's (``<id>/<i>`` per row of ``instances``), or the SQS message id when the sender
gave none, and it is the id captured with the prediction, so feedback (``POST /feedback``) can name it.

Poison or transient: a message that can never succeed (not JSON, a missing, extra or mistyped feature, an unknown
category: a 4xx ``ServingError``) goes to the dead-letter queue at once, with its reason in message attributes,
and counts as handled; retrying it N times would only delay the reason and spend N invocations. Anything else
(no model deployed yet, a throttled or failing AWS call) may pass: it fails the message only, SQS redelivers it
after its visibility timeout and moves it to the dead-letter queue after ``push_max_receives`` receives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mlops.aws.storage import ObjectStore
from mlops.serving.capture import CaptureSink
from mlops.serving.errors import InvalidInput, ServingError, printable
from mlops.serving.requests import identifier, parse_json
from mlops.serving.server import ModelServer

REQUEST_ID_MAX = 128  # answers to `instances` are `<request_id>/<i>`: still within serving's MAX_ID_CHARS
Outcome = Literal["answered", "dead_lettered"]


@dataclass(frozen=True)
class PushMessage:
    """What a push function needs of one SQS message."""

    message_id: str
    body: str
    receive_count: int
    sent_at: datetime


def is_poison(exc: Exception) -> bool:
    """A message that failed this way fails again on every retry: the sender has to change it."""
    return isinstance(exc, ServingError) and exc.status < 500


class HeldCapture(CaptureSink):
    """The capture of the message being answered, held until its answer is out: a message retried after a
    failed output is captured once, when it is answered. Held as the server put it, sampled or not."""

    def __init__(self, sink: CaptureSink) -> None:
        super().__init__(enabled=sink.enabled, on_error=sink.on_error, sample_rate=sink.sample_rate, out=sink.out,
                         rng=sink.rng)
        self.held: list[dict[str, Any]] = []
        self.sampling = False

    def put(self, records: Sequence[Mapping[str, Any]], *, sampling: bool = False) -> None:
        self.held.extend(dict(r) for r in records)
        self.sampling = sampling

    def release(self) -> None:
        held, self.held = self.held, []
        super().put(held, sampling=self.sampling)


class TopicOutput:
    """One SNS message per answer, with the model and request id as message attributes (filter policies)."""

    def __init__(self, sns: Any, topic_arn: str) -> None:
        self.sns = sns
        self.topic_arn = topic_arn

    def send(self, answer: Mapping[str, Any], message: PushMessage) -> None:
        attributes = {name: {"DataType": "String", "StringValue": str(answer[name])}
                      for name in ("model", "request_id")}
        self.sns.publish(TopicArn=self.topic_arn, Message=json.dumps(answer), MessageAttributes=attributes)


class BucketOutput:
    """One JSON-lines object per message, one line per prediction, named by the message id under the day it was
    sent: a redelivered message rewrites its own object, so each answer is there once."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def key(self, model: str, message: PushMessage) -> str:
        return f"{self.prefix}{model}/{message.sent_at:%Y/%m/%d}/{message.message_id}.jsonl"

    def send(self, answer: Mapping[str, Any], message: PushMessage) -> None:
        head = {"message_id": answer["message_id"], "model": answer["model"]}
        rows = [{**head, **p} for p in answer["predictions"]] if "predictions" in answer else [dict(answer)]
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        self.store.put_bytes(self.key(str(answer["model"]), message), data, content_type="application/x-ndjson")


Output = TopicOutput | BucketOutput


class DeadLetters:
    """The model's dead-letter queue, for a poison message: its body unchanged, the reason beside it."""

    def __init__(self, sqs: Any, queue_url: str, model: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.model = model

    def send(self, message: PushMessage, error: ServingError) -> None:
        reason = {"error": type(error).__name__, "message": error.message[:1024], "field": error.field,
                  "model": self.model, "message_id": message.message_id}
        # SQS refuses empty attribute values (a reason without a field has no `field` attribute) and characters
        # outside XML's: a field or message quoting the sender's key is written with escapes
        attributes = {name: {"DataType": "String", "StringValue": printable(value)}
                      for name, value in reason.items() if value}
        attributes["receive_count"] = {"DataType": "Number", "StringValue": str(message.receive_count)}
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=message.body, MessageAttributes=attributes)


class PushConsumer:
    def __init__(self, server: ModelServer, output: Output, dead_letters: DeadLetters) -> None:
        # the server captures as it answers; here an answer counts once it is out, so its capture waits for that
        self.capture = HeldCapture(server.capture)
        server.capture = self.capture
        self.server = server
        self.output = output
        self.dead_letters = dead_letters

    def answer(self, message: PushMessage) -> Outcome:
        """Answer one message, or dead-letter it when it is poison; any other failure is raised (retry it)."""
        self.capture.held.clear()
        self.capture.sampling = False
        try:
            answer = self._predict(message)
        except ServingError as exc:
            if not is_poison(exc):
                raise
            self.dead_letters.send(message, exc)
            return "dead_lettered"
        self.output.send(answer, message)
        self.capture.release()
        return "answered"

    def _predict(self, message: PushMessage) -> dict[str, Any]:
        body = parse_json(message.body, "the message body")
        request_id = message.message_id
        if isinstance(body, dict) and "request_id" in body:
            body = dict(body)
            # the sender's id goes out as an SNS message attribute and comes back in feedback: printable, bounded
            request_id = identifier(body.pop("request_id"), "request_id", "your id for this request")
            if len(request_id) > REQUEST_ID_MAX:
                raise InvalidInput(f"'request_id' must be a string of 1 to {REQUEST_ID_MAX} characters, got "
                                   f"{len(request_id)}", "request_id")
        answer = self.server.predict(self.server.model_name, body)
        predictions = answer.get("predictions")
        ids = [request_id] if predictions is None else [f"{request_id}/{i}" for i in range(len(predictions))]
        # the capture carries the id the answer gives, so that feedback naming it joins its prediction
        for record, answered, rid in zip(self.capture.held, predictions or [answer], ids, strict=True):
            record["request_id"] = answered["request_id"] = rid
        head = {"message_id": message.message_id, "model": self.server.model_name}
        return {**head, **answer} if predictions is None else {**head, "request_id": request_id, **answer}

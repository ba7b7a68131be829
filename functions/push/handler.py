"""push: a model's SQS queue (event source mapping, ReportBatchItemFailures) -> its ONNX champion -> its SNS topic
or its bucket (mlops.serving.push). Answered and dead-lettered messages succeed; a message that may succeed later is
reported as a batch item failure, so SQS redelivers it and, after the queue's maxReceiveCount, dead-letters it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws import environment
from mlops.aws.environment import require, resources
from mlops.aws.observability import instrumented, powertools
from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.serving.push import BucketOutput, DeadLetters, Output, PushConsumer, PushMessage, TopicOutput
from mlops.serving.server import ModelServer

logger, tracer, metrics = powertools()
# A batch whose every message failed transiently is reported, not raised: a function error would say our code
# broke, and SQS retries the reported messages all the same.
processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel, raise_on_entire_batch_failure=False)


def _capture_failed(exc: Exception) -> None:
    logger.warning("capture failed; the prediction was still answered", extra={"error": repr(exc)})
    metrics.add_metric(name="CaptureErrors", unit=MetricUnit.Count, value=1)


def _output() -> Output:
    if require(environment.PUSH_OUTPUT) == "s3":
        return BucketOutput(ObjectStore(aws.client("s3"), resources.data_bucket), layout.PREDICTIONS)
    return TopicOutput(aws.client("sns"), require(environment.PREDICTIONS_TOPIC_ARN))


def _consumer() -> PushConsumer:
    server = ModelServer.from_environment(_capture_failed)  # no MODEL_VERSION: the champion, as infer's $LATEST
    return PushConsumer(server, _output(), DeadLetters(aws.client("sqs"), require(environment.DEAD_LETTER_QUEUE_URL),
                                                       server.model_name))


consumer = _consumer()


def record_handler(record: SqsRecordModel) -> str:
    receives = int(record.attributes.ApproximateReceiveCount)
    try:
        outcome = consumer.answer(PushMessage(record.messageId, str(record.body), receives,
                                              record.attributes.SentTimestamp))
    except Exception as exc:
        logger.warning("message not answered; SQS retries it", extra={"message_id": record.messageId,
                                                                     "receive_count": receives, "error": repr(exc)})
        raise
    if outcome == "dead_lettered":
        logger.warning("poison message sent to the dead-letter queue", extra={"message_id": record.messageId})
    metrics.add_metric(name="PushAnswered" if outcome == "answered" else "PushDeadLettered", unit=MetricUnit.Count,
                       value=1)
    return outcome


@instrumented(logger, tracer, metrics)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = dict(process_partial_response(event, record_handler, processor, context))
    if failed := len(response["batchItemFailures"]):
        metrics.add_metric(name="PushRetried", unit=MetricUnit.Count, value=failed)
    metrics.add_dimension(name="model", value=consumer.server.model_name)
    return response

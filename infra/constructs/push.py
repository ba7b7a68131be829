"""Push mode (``mlops.serving.push``): for each declared model, its queue with a dead-letter queue after
``push_max_receives`` receives, its push function consuming the queue through an event source mapping that reports
batch item failures, and its predictions topic (``push_output = "sns"``). Physical names come from
``mlops.aws.platform.push_queues``, as in the local cloud. The function's access to the registry, the models, the
capture stream, its dead-letter queue, its topic and, for ``push_output = "s3"``, the data bucket is granted by the
stack (``mlops.aws.access.push_access``); receiving from its queue is granted here, with the event source mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Tags
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.function import Packaging, PlatformFunction
from infra.constructs.nag import acknowledge
from infra.constructs.serving import MODEL_TAG
from infra.constructs.storage import Storage
from mlops.aws import environment as variables  # the resource variables' names
from mlops.aws import platform


class Push(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        project: str,
        packaging: Packaging,
        queues: Sequence[platform.PushQueue],
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        """`environment` holds a value for each resource variable of mlops.aws.platform.PUSH, and DATA_BUCKET; `project`
        is the metrics namespace (the project in its stage)."""
        super().__init__(scope, construct_id)
        if missing := [v for v in (*platform.PUSH.env, variables.DATA_BUCKET) if v not in environment]:
            raise KeyError(f"push needs {missing} (mlops.aws.platform) but the CDK app provides no value")
        self.specs = {queue.model: queue for queue in queues}
        self.project = project
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        self.topics: dict[str, sns.Topic] = {}
        self.functions: dict[str, PlatformFunction] = {}
        for queue in queues:
            self._model(queue, storage, packaging, environment, log_retention, removal_policy)

    def _model(self, spec: platform.PushQueue, storage: Storage, packaging: Packaging, environment: Mapping[str, str],
               log_retention: logs.RetentionDays, removal_policy: RemovalPolicy) -> None:
        scope = Construct(self, spec.model)
        # Deleted with the stack in every stage: their names are fixed (clients send to `<project>-push-<model>`), so
        # a queue a deleted stage retained would stop the stage from being created again; and they hold no record:
        # requests wait for a function the deletion removes, answers are captured elsewhere, dead letters are copies
        # of requests with their reason, kept 14 days at most.
        encrypted: dict[str, Any] = {"encryption": sqs.QueueEncryption.KMS, "encryption_master_key": storage.key,
                                     "enforce_ssl": True, "removal_policy": RemovalPolicy.DESTROY}
        dead_letters = sqs.Queue(scope, "DeadLetters", queue_name=spec.dead_letter_queue,
                                 retention_period=Duration.seconds(platform.PUSH_DLQ_RETENTION_S), **encrypted)
        acknowledge(dead_letters, "AwsSolutions-SQS3",
                    f"this is the dead-letter queue of {spec.queue}: people read it, nothing consumes it that could "
                    "fail again")
        queue = sqs.Queue(scope, "Queue", queue_name=spec.queue,
                          visibility_timeout=Duration.seconds(platform.PUSH_VISIBILITY_TIMEOUT_S),
                          dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=spec.max_receives,
                                                                queue=dead_letters), **encrypted)
        topic = (sns.Topic(scope, "Predictions", topic_name=spec.topic, master_key=storage.key, enforce_ssl=True)
                 if spec.topic else None)
        output = topic.topic_arn if topic else environment[variables.DATA_BUCKET]
        function = PlatformFunction(
            scope, platform.PUSH,
            construct_id="Function",
            function_name=spec.function,
            code=packaging.zip(platform.PUSH),
            layers=packaging.layers(platform.PUSH),
            environment={
                **{v: environment[v] for v in platform.PUSH.env},
                **platform.serving_env(spec.model, spec.capture_sample_rate),
                variables.PUSH_OUTPUT: spec.output,
                variables.DEAD_LETTER_QUEUE_URL: dead_letters.queue_url,
                spec.output_variable: output,
                "POWERTOOLS_SERVICE_NAME": platform.PUSH.name,
                "POWERTOOLS_METRICS_NAMESPACE": self.project,
            },
            asynchronous=False,
            key=storage.key,
            log_retention=log_retention,
            removal_policy=removal_policy,
            reserved_concurrency=None,
        )
        Tags.of(function).add(MODEL_TAG, spec.model)
        # grants receive, delete and change visibility on the queue, and kms:Decrypt on its key
        function.function.add_event_source(sources.SqsEventSource(
            queue, batch_size=platform.PUSH_BATCH_SIZE, report_batch_item_failures=True))
        CfnOutput(scope, "QueueUrl", value=queue.queue_url,
                  description=f"send {spec.model}'s prediction requests here (docs/push.md)")
        self.queues[spec.model], self.dead_letter_queues[spec.model] = queue, dead_letters
        self.functions[spec.model] = function
        if topic is not None:
            self.topics[spec.model] = topic

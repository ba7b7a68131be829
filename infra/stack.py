"""The serverless-mlops stack: composes one construct per concern and grants each function exactly what its
handler does (ACCESS below; the keys come from mlops.ingest, mlops.pipeline, mlops.rollout and mlops.serving)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.batch import DATA_PREFIX as BATCH_PREFIX
from infra.constructs.batch import Batch
from infra.constructs.function import Packaging
from infra.constructs.monitoring import AlarmThresholds, Monitoring
from infra.constructs.nag import acknowledge
from infra.constructs.pipeline import Pipeline
from infra.constructs.push import Push
from infra.constructs.serving import ApiKeyPlan, Serving
from infra.constructs.storage import Storage
from mlops import platform, settings
from mlops.config import load_config

READ: Final = "read"
WRITE: Final = "write"


@dataclass(frozen=True)
class Access:
    """What one function may touch. Object access is by key prefix; table access is read or read-write."""

    read: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # bucket -> key prefixes
    write: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    read_versions: bool = False  # reads a given object version (s3:GetObjectVersion)
    tables: Mapping[str, Literal["read", "write"]] = field(default_factory=dict)
    starts: tuple[str, ...] = ()  # state machines it starts executions of
    puts: tuple[str, ...] = ()  # Firehose delivery streams it puts records to (firehose:PutRecordBatch)
    publishes: bool = False  # to the notifications topic (sns:Publish)
    infer: tuple[str, ...] = ()  # Lambda actions on every model's infer function and its versions and aliases
    reads_metrics: bool = False  # cloudwatch:GetMetricData (the rollout's guardrails, mlops.serving_health)


# mlops.deploy.ServingDeployer: pin a model version in $LATEST's environment, publish it, move the `live` alias
ROUTE = ("lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration", "lambda:GetAlias",
         "lambda:CreateAlias", "lambda:UpdateAlias")
# register also publishes the version of a new model version, and lets API Gateway invoke the alias it creates
DEPLOY = (*ROUTE, "lambda:PublishVersion", "lambda:AddPermission")
# register's variable for the API's execute-api ARN (settings.API_SOURCE_ARN once mlops.settings declares it): the
# SourceArn of the permission it adds on a model's `live` alias when it creates the alias
API_SOURCE_ARN: Final = "API_SOURCE_ARN"


ACCESS: dict[str, Access] = {
    # reads the exact version an S3 event names; the data contract is read and versioned under contracts/; the
    # entities' newest features go to the online store (mlops.features)
    "ingest": Access(read={"data": ("incoming/", "contracts/")},
                     write={"data": ("curated/", "quarantine/", "contracts/")},
                     read_versions=True, tables={"idempotency": WRITE, "features": WRITE}),
    # the manifest it was notified of, or the newest one; claims the dataset in the registry
    "train_trigger": Access(read={"data": ("curated/",)}, tables={"registry": WRITE},
                            starts=(platform.STATE_MACHINE,)),
    "train": Access(read={"data": ("curated/", "contracts/")}, write={"models": ("candidates/",)}),
    # the candidate, and the champion's registered model
    "evaluate": Access(read={"models": ("candidates/", "models/")}, tables={"registry": READ}),
    # publishes a version of the model's infer function, moves its alias, and starts the canary's rollout
    "register": Access(read={"models": ("candidates/", "models/")}, write={"models": ("models/",)},
                       tables={"registry": WRITE}, starts=(platform.ROLLOUT_STATE_MACHINE,), infer=DEPLOY),
    "record_outcome": Access(tables={"registry": WRITE}),
    # reads the captured predictions and feedback (Firehose writes them under captures/), moves the alias
    "rollout": Access(read={"captures": ("captures/",)}, tables={"registry": WRITE}, infer=ROUTE,
                      reads_metrics=True),
    # mlops.monitoring.check_drift: the window's captures, the champion's baseline, manifest and contract; writes the
    # report (reports/), the labelled captured rows (labelled/) and, to retrain, a CSV under incoming/ that ingest
    # curates like any other; reads the newest curated dataset to build that CSV; alerts on the topic
    "drift_check": Access(read={"captures": ("captures/",), "models": ("models/",),
                                "data": ("curated/", "labelled/")},
                          write={"models": ("reports/",), "data": ("labelled/", "incoming/")},
                          tables={"registry": WRITE}, publishes=True),
    # mlops.batch_run: a run's input objects, predictions, manifest and working files under batch/ in the data bucket
    # (and in the buckets named by batch_buckets, see infra/constructs/batch.py); the model version's artefacts
    "batch": Access(read={"data": (BATCH_PREFIX,), "models": ("models/",)}, write={"data": (BATCH_PREFIX,)},
                    tables={"registry": READ}),
}


def infer_access(model: str) -> Access:
    """A model's infer function: that model's registered artefacts, the registry, and the capture stream."""
    return Access(read={"models": (f"models/{model}/",)}, tables={"registry": READ, "features": READ},
                  puts=(platform.CAPTURE_STREAM,))


def push_access(queue: platform.PushQueue) -> Access:
    """A model's push function scores like its infer function; with push_output = "s3" it also writes its answers
    under predictions/<model>/ in the data bucket (its queues and topic are granted by infra/constructs/push.py)."""
    access = infer_access(queue.model)
    if queue.output != "s3":
        return access
    return Access(read=access.read, tables=access.tables, puts=access.puts,
                  write={"data": (f"{platform.PREDICTIONS_PREFIX}{queue.model}/",)})

DDB_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem",
            "dynamodb:DescribeTable")
# TransactWriteItems is authorised item by item with these
DDB_WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")
# What S3 (SSE-KMS) and DynamoDB (customer-managed key) ask of the caller: CDK's grant helpers would add
# kms:GenerateDataKey* and kms:ReEncrypt*, which none of these calls needs.
KMS_DECRYPT = ("kms:Decrypt", "kms:DescribeKey")
KMS_ENCRYPT = ("kms:Encrypt", "kms:GenerateDataKey")


class MlopsStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config_file: Path,
        stage: str,
        removal_policy: RemovalPolicy,
        log_retention: logs.RetentionDays,
        reserved_concurrency: Mapping[str, int],
        alarm_thresholds: AlarmThresholds,
        api_keys: ApiKeyPlan | None = None,
        batch_buckets: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        """`stage` is part of every physical name and of the metrics namespace (`<project>-<stage>`), so that two
        stages can share an account; `api_keys` adds API keys and a usage plan on top of AWS_IAM; `batch_buckets`
        names buckets outside the stack where batch runs may also read and write (docs/batch.md)."""
        super().__init__(scope, construct_id, **kwargs)
        if ungranted := [spec.name for spec in platform.FUNCTIONS if spec.name not in ACCESS]:
            raise KeyError(f"declare what {ungranted} may access in infra/stack.py ACCESS")
        config = load_config(config_file)
        # what the platform calls the project is, for this deployment, the project in this stage
        config = config.model_copy(update={"project": f"{config.project}-{stage}"})
        project = self.name_prefix = config.project
        self.storage = storage = Storage(self, "Storage", removal_policy=removal_policy)
        self.packaging = packaging = Packaging(self, "Packaging", config_file=config_file)
        self.serving = serving = Serving(
            self, "Serving",
            storage=storage,
            project=project,
            packaging=packaging,
            models=[model.name for model in config.models],
            capture_stream_name=platform.resource_names(project)[platform.CAPTURE_STREAM],
            environment={settings.REGISTRY_TABLE: storage.tables["registry"].table_name,
                         settings.FEATURES_TABLE: storage.tables["features"].table_name},
            log_retention=log_retention,
            removal_policy=removal_policy,
            api_keys=api_keys,
        )
        self.pipeline = Pipeline(
            self, "Pipeline",
            storage=storage,
            environment={
                settings.DATA_BUCKET: storage.buckets["data"].bucket_name,
                settings.MODELS_BUCKET: storage.buckets["models"].bucket_name,
                settings.CAPTURES_BUCKET: storage.buckets["captures"].bucket_name,
                settings.REGISTRY_TABLE: storage.tables["registry"].table_name,
                settings.IDEMPOTENCY_TABLE: storage.tables["idempotency"].table_name,
                settings.FEATURES_TABLE: storage.tables["features"].table_name,
                settings.NOTIFICATIONS_TOPIC_ARN: storage.topic.topic_arn,
                # model -> the infer function's physical name (its Ref), as the local cloud gives it
                settings.INFER_FUNCTIONS: self.to_json_string(
                    {model: f.function.function_name for model, f in serving.functions.items()}),
                API_SOURCE_ARN: serving.api_source_arn,
            },
            project=project,
            packaging=packaging,
            log_retention=log_retention,
            removal_policy=removal_policy,
            reserved_concurrency=reserved_concurrency,
            schedules=platform.scheduled_rules(config),
        )
        register = self.pipeline.functions["register"]
        if API_SOURCE_ARN not in register.spec.env:  # until mlops.platform declares it for register
            register.function.add_environment(API_SOURCE_ARN, serving.api_source_arn)
        for name, access in ACCESS.items():
            if name in self.pipeline.functions:
                self._grant(name, self.pipeline.functions[name].role, access)
        # a SageMaker training job runs the train step (the training pipeline's SageMaker path): the same data access
        self._grant("train (SageMaker training jobs)", self.pipeline.training_job_role, ACCESS["train"])
        for model, function in serving.functions.items():
            self._grant(f"infer ({model})", function.role, infer_access(model))
        # push mode: each model's queue, dead-letter queue, topic and push function (infra/constructs/push.py)
        self.push = Push(self, "Push", storage=storage, project=project, packaging=packaging,
                         queues=platform.push_queues(config), log_retention=log_retention,
                         removal_policy=removal_policy,
                         environment={**self.pipeline.environment, settings.CAPTURE_STREAM: serving.stream.ref})
        for model, function in self.push.functions.items():
            self._grant(f"push ({model})", function.role, push_access(self.push.specs[model]))
        self.batch = Batch(self, "Batch", storage=storage, functions=self.pipeline.functions,
                           infer_functions=serving.functions, api=serving.api, log_retention=log_retention,
                           removal_policy=removal_policy, extra_buckets=batch_buckets)
        # one registry of the state machines: monitoring alarms on a failed run, the outputs and the tests find it there
        self.pipeline.state_machines[platform.BATCH_STATE_MACHINE] = self.batch.state_machine
        self.monitoring = Monitoring(
            self, "Monitoring",
            project=project,
            storage=storage,
            models=config.models,
            infer_functions=serving.functions,
            pipeline_functions=self.pipeline.functions,
            state_machines=self.pipeline.state_machines,
            dead_letter_queues=self.push.dead_letter_queues,
            api_name=serving.api.rest_api_name,
            api_stage=serving.api.deployment_stage.stage_name,
            thresholds=alarm_thresholds,
        )
        self._outputs(serving)
        self._acknowledge_cdk_internals()

    def _outputs(self, serving: Serving) -> None:
        CfnOutput(self, "ApiUrl", value=serving.api.url, description="the models' API (AWS_IAM: SigV4-signed requests)")
        # What the mlops CLI and CI need to reach this deployment: the same variables the functions get
        # (mlops.settings), as one JSON object (`jq -r '.Environment | fromjson | to_entries[] | "\(.key)=\(.value)"'`).
        variables = {**self.pipeline.environment,
                     settings.TRAINING_STATE_MACHINE_ARN:
                         self.pipeline.state_machines[platform.STATE_MACHINE].state_machine_arn,
                     settings.ROLLOUT_STATE_MACHINE_ARN:
                         self.pipeline.state_machines[platform.ROLLOUT_STATE_MACHINE].state_machine_arn,
                     settings.BATCH_STATE_MACHINE_ARN: self.batch.state_machine.state_machine_arn,
                     "POWERTOOLS_METRICS_NAMESPACE": self.name_prefix}
        CfnOutput(self, "Environment", value=self.to_json_string(variables),
                  description="resource variables (mlops.settings) of this deployment, as a JSON object")
        if serving.api_key is not None:
            CfnOutput(self, "ApiKeyId", value=serving.api_key.key_id,
                      description="aws apigateway get-api-key --include-value --api-key <id>")

    def _grant(self, name: str, role: iam.Role, access: Access) -> None:
        key_arn = self.storage.key.key_arn
        kms_actions: set[str] = set()

        def statement(actions: list[str], resources: list[str]) -> None:
            role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=resources))

        for bucket_name in sorted({*access.read, *access.write}):
            bucket = self.storage.buckets[bucket_name]
            read, write = access.read.get(bucket_name, ()), access.write.get(bucket_name, ())
            # Without s3:ListBucket a HEAD on a missing key answers 403 instead of 404, and ObjectStore.exists
            # and ObjectStore.keys rely on the 404 and on listing.
            statement(["s3:ListBucket"], [bucket.bucket_arn])
            if read:
                statement(["s3:GetObject", *(["s3:GetObjectVersion"] if access.read_versions else [])],
                          [bucket.arn_for_objects(f"{prefix}*") for prefix in read])
                kms_actions.update(KMS_DECRYPT)
            if write:
                statement(["s3:PutObject"], [bucket.arn_for_objects(f"{prefix}*") for prefix in write])
                kms_actions.update(KMS_ENCRYPT)
            bucket_id = self.resolve(bucket.node.default_child.logical_id)  # type: ignore[union-attr]
            for prefix in sorted({*read, *write}):
                acknowledge(role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}*]",
                            f"{name} reads or writes objects whose keys are only known at run time (model, dataset "
                            f"sha256, run id) under {prefix} in the {bucket_name} bucket, and nothing outside it")

        for table_name, mode in sorted(access.tables.items()):
            statement([*DDB_READ, *(DDB_WRITE if mode == WRITE else ())],
                      [self.storage.tables[table_name].table_arn])
            kms_actions.update(KMS_DECRYPT, KMS_ENCRYPT if mode == WRITE else ())

        for machine in access.starts:
            self.pipeline.state_machines[machine].grant_start_execution(role)
        if access.publishes:
            statement(["sns:Publish"], [self.storage.topic.topic_arn])
            # what SNS asks of a publisher to a topic encrypted with a customer-managed key
            kms_actions.update(("kms:GenerateDataKey", "kms:Decrypt"))
        if kms_actions:
            statement(sorted(kms_actions), [key_arn])
        if access.reads_metrics:
            # GetMetricData has no resource-level permission
            statement(["cloudwatch:GetMetricData"], ["*"])
            acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                        f"{name} reads the infer functions' metrics (cloudwatch:GetMetricData), an action without "
                        "resource-level permissions; X-Ray's actions are the same")
        if access.puts:
            streams = {platform.CAPTURE_STREAM: self.serving.stream_arn}
            statement(["firehose:PutRecordBatch"], [streams[stream] for stream in access.puts])
        if access.infer:
            infer = [f.function.function_arn for f in self.serving.functions.values()]
            statement(sorted(access.infer), [*infer, *(f"{arn}:*" for arn in infer)])
            for f in self.serving.functions.values():
                lid = self.resolve(f.function.node.default_child.logical_id)  # type: ignore[union-attr]
                acknowledge(role, f"AwsSolutions-IAM5[Resource::<{lid}.Arn>:*]",
                            f"{name} publishes versions of the infer function of model {f.node.id} and moves its "
                            "`live` alias, whose qualified ARNs (version numbers) are only known at run time")

    def _acknowledge_cdk_internals(self) -> None:
        # aws-cdk-lib writes S3 notification configurations with its own singleton function (a custom resource
        # at deploy time); its role comes with aws-cdk-lib.
        for child in self.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                acknowledge(child, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                                   "AWSLambdaBasicExecutionRole]",
                            "aws-cdk-lib's S3 notifications handler runs only at deploy time and this managed "
                            "policy only lets it write its logs")

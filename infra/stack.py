"""The serverless-mlops stack: composes one construct per concern and grants each function exactly what its
handler does, as mlops.aws.access declares it (the local cloud's IAM guard evaluates the same declaration)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.batch import NEW_ACCOUNT_CONCURRENCY, Batch
from infra.constructs.function import NEW_ACCOUNT_MEMORY_MB, Packaging, check_memory
from infra.constructs.ingest import IngestMap, state_machine_arn
from infra.constructs.monitoring import AlarmThresholds, Monitoring
from infra.constructs.nag import acknowledge
from infra.constructs.pipeline import Pipeline
from infra.constructs.push import Push
from infra.constructs.serving import ApiKeyPlan, Serving
from infra.constructs.storage import PROTECTED_PREFIXES, Storage
from mlops.aws import access as declared
from mlops.aws import environment, platform
from mlops.aws.access import ACCESS, Access, Resource, infer_access, push_access
from mlops.core.config import load_config


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
        infer_reserved_concurrency: int | None = None,
        lambda_concurrency_quota: int = NEW_ACCOUNT_CONCURRENCY,
        api_gateway_logging_role: bool = True,
        lambda_memory_quota_mb: int = NEW_ACCOUNT_MEMORY_MB,
        **kwargs: Any,
    ) -> None:
        """`stage` is part of every physical name and of the metrics namespace (`<project>-<stage>`), so that two
        stages can share an account; `api_keys` adds API keys and a usage plan on top of AWS_IAM;
        `infer_reserved_concurrency` is what each infer function keeps of the account's Lambda concurrency (None:
        nothing), checked with the other reservations and batch runs' concurrency against `lambda_concurrency_quota`,
        the account's quota (docs/batch.md).
        `api_gateway_logging_role=False` leaves the account's API Gateway CloudWatch Logs role (an account setting)
        to whoever manages it; `lambda_memory_quota_mb` is the memory the account allows a function (docs/deploy.md)."""
        super().__init__(scope, construct_id, **kwargs)
        if ungranted := [spec.name for spec in platform.FUNCTIONS if spec.name not in ACCESS]:
            raise KeyError(f"declare what {ungranted} may access in mlops/access.py ACCESS")
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
            capture_sample_rates={model.name: model.capture_sample_rate for model in config.models},
            capture_stream_name=platform.resource_names(project)[platform.CAPTURE_STREAM],
            environment={environment.REGISTRY_TABLE: storage.tables["registry"].table_name,
                         environment.FEATURES_TABLE: storage.tables["features"].table_name},
            log_retention=log_retention,
            removal_policy=removal_policy,
            api_keys=api_keys,
            api_gateway_logging_role=api_gateway_logging_role,
            reserved_concurrency=infer_reserved_concurrency,
        )
        self.pipeline = Pipeline(
            self, "Pipeline",
            storage=storage,
            environment={
                environment.DATA_BUCKET: storage.buckets["data"].bucket_name,
                environment.MODELS_BUCKET: storage.buckets["models"].bucket_name,
                environment.CAPTURES_BUCKET: storage.buckets["captures"].bucket_name,
                environment.REGISTRY_TABLE: storage.tables["registry"].table_name,
                environment.IDEMPOTENCY_TABLE: storage.tables["idempotency"].table_name,
                # built from its physical name: the state machine invokes ingest, which must not name it (a cycle)
                environment.INGEST_STATE_MACHINE_ARN: state_machine_arn(self, project),
                environment.FEATURES_TABLE: storage.tables["features"].table_name,
                environment.NOTIFICATIONS_TOPIC_ARN: storage.topic.topic_arn,
                # model -> the infer function's physical name (its Ref), as the local cloud gives it
                environment.INFER_FUNCTIONS: self.to_json_string(
                    {model: f.function.function_name for model, f in serving.functions.items()}),
                # the SourceArn of API Gateway's right to invoke a model's `live` alias (register repairs it)
                environment.API_SOURCE_ARN: serving.api_source_arn,
            },
            project=project,
            packaging=packaging,
            log_retention=log_retention,
            removal_policy=removal_policy,
            reserved_concurrency=reserved_concurrency,
            schedules=platform.scheduled_rules(config),
        )
        # push mode: each model's queue, dead-letter queue, topic and push function (infra/constructs/push.py)
        self.push = Push(self, "Push", storage=storage, project=project, packaging=packaging,
                         queues=platform.push_queues(config), log_retention=log_retention,
                         removal_policy=removal_policy,
                         environment={**self.pipeline.environment, environment.CAPTURE_STREAM: serving.stream.ref})
        # push captures like infer: its log group's marked lines go to the capture stream
        for model, function in self.push.functions.items():
            serving.subscribe_captures(f"push-{model}", function.log_group)
        self.batch = Batch(self, "Batch", storage=storage, functions=self.pipeline.functions,
                           infer_functions=serving.functions, api=serving.api, log_retention=log_retention,
                           removal_policy=removal_policy, models=config.models,
                           lambda_concurrency_quota=lambda_concurrency_quota,
                           reserved_concurrency={**reserved_concurrency, **{
                               f"infer ({model})": infer_reserved_concurrency for model in serving.functions
                               if infer_reserved_concurrency}})
        check_memory([*self.pipeline.functions.values(), *serving.functions.values(), *self.push.functions.values()],
                     quota_mb=lambda_memory_quota_mb)
        # a file above its model's ingest_map_above_mb is validated in parts (infra/constructs/ingest.py)
        self.ingest = IngestMap(self, "Ingest", project=project, storage=storage, functions=self.pipeline.functions,
                                log_retention=log_retention, removal_policy=removal_policy)
        # one registry of the state machines: monitoring alarms on a failed run, the outputs and the tests find it there
        self.pipeline.state_machines[platform.BATCH_STATE_MACHINE] = self.batch.state_machine
        self.pipeline.state_machines[platform.INGEST_STATE_MACHINE] = self.ingest.state_machine
        # every function's access, as mlops.aws.access declares it (all resources exist by now)
        self._writes: list[tuple[str, str, iam.IRole]] = []  # (bucket, key prefix, role), recorded by _grant
        for name, access in ACCESS.items():
            if name in self.pipeline.functions:
                self._grant(name, self.pipeline.functions[name].role, access)
        # a SageMaker training job runs the train step (the training pipeline's SageMaker path): the same data access
        self._grant("train (SageMaker training jobs)", self.pipeline.training_job_role, ACCESS["train"])
        for model, function in serving.functions.items():
            self._grant(f"infer ({model})", function.role, infer_access(model))
        for model, function in self.push.functions.items():
            self._grant(f"push ({model})", function.role, push_access(self.push.specs[model]))
        # and the lineage's prefixes are written by the roles granted that, whatever else IAM allows
        for bucket, prefixes in PROTECTED_PREFIXES.items():
            storage.protect(bucket, {prefix: self._writers(bucket, prefix) for prefix in prefixes})
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
        # (mlops.aws.environment), as one JSON object (`jq -r '.Environment | fromjson | to_entries[] |
        # "\(.key)=\(.value)"'`).
        variables = {**self.pipeline.environment,
                     environment.TRAINING_STATE_MACHINE_ARN:
                         self.pipeline.state_machines[platform.STATE_MACHINE].state_machine_arn,
                     environment.ROLLOUT_STATE_MACHINE_ARN:
                         self.pipeline.state_machines[platform.ROLLOUT_STATE_MACHINE].state_machine_arn,
                     environment.BATCH_STATE_MACHINE_ARN: self.batch.state_machine.state_machine_arn,
                     environment.REGISTER_FUNCTION: self.pipeline.functions["register"].function.function_name,
                     "POWERTOOLS_METRICS_NAMESPACE": self.name_prefix}
        CfnOutput(self, "Environment", value=self.to_json_string(variables),
                  description="resource variables (mlops.aws.environment) of this deployment, as a JSON object")
        if serving.api_key is not None:
            CfnOutput(self, "ApiKeyId", value=serving.api_key.key_id,
                      description="aws apigateway get-api-key --include-value --api-key <id>")

    def _resources(self, resource: Resource) -> list[str]:
        """A declared resource (mlops.aws.access) as the deployed ARNs it names."""
        kind, name = resource.kind, resource.name
        if kind == "bucket":
            return [self.storage.buckets[name].bucket_arn]
        if kind == "objects":
            return [self.storage.buckets[name].arn_for_objects(resource.pattern)]
        if kind == "table":
            return [self.storage.tables[name].table_arn]
        if kind == "state_machine":
            return [self.pipeline.state_machines[name].state_machine_arn]
        if kind == "executions":
            return [self.batch.executions_arn(self.pipeline.state_machines[name])]
        if kind == "stream":
            return [{platform.CAPTURE_STREAM: self.serving.stream_arn}[name]]
        if kind == "topic":
            if name == declared.NOTIFICATIONS:
                return [self.storage.topic.topic_arn]
            return [self.push.topics[name.removeprefix("predictions:")].topic_arn]
        if kind == "queue":
            return [self.push.dead_letter_queues[name.removeprefix("dead-letters:")].queue_arn]
        if kind == "key":
            return [self.storage.key.key_arn]
        if kind == "infer_functions":
            arns = [f.function.function_arn for f in self.serving.functions.values()]
            return [*arns, *(f"{arn}:*" for arn in arns)]
        if kind == "any":
            return ["*"]
        raise ValueError(f"no deployed resource for {resource}")

    def _writers(self, bucket: str, prefix: str) -> list[iam.IRole]:
        """The roles granted writing some keys under `prefix` in `bucket`."""
        return [role for b, p, role in self._writes if b == bucket and (p.startswith(prefix) or prefix.startswith(p))]

    def _grant(self, name: str, role: iam.Role, access: Access) -> None:
        self._writes.extend((bucket, prefix, role) for bucket, prefixes in access.write.items() for prefix in prefixes)
        starts: list[iam.PolicyStatement] = []
        for statement in declared.statements(access):
            granted = iam.PolicyStatement(
                actions=list(statement.actions),
                resources=[arn for r in statement.resources for arn in self._resources(r)],
                conditions={op: dict(values) for op, values in statement.conditions.items()} or None)
            if "states:StartExecution" in statement.actions:
                starts.append(granted)
            else:
                role.add_to_principal_policy(granted)
        if starts:
            # apart from the role's default policy, which the function waits for: a state machine that invokes this
            # very function (rollout starts its own next execution) would otherwise wait for it too, in a cycle
            # (outside the role's scope too: the function depends on everything under its role)
            iam.Policy(self, f"StartsExecutions {name}", statements=starts, roles=[role])
        for bucket_name in sorted({*access.read, *access.write}):
            bucket = self.storage.buckets[bucket_name]
            bucket_id = self.resolve(bucket.node.default_child.logical_id)  # type: ignore[union-attr]
            for prefix in sorted({*access.read.get(bucket_name, ()), *access.write.get(bucket_name, ())}):
                acknowledge(role, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}*]",
                            f"{name} reads or writes objects whose keys are only known at run time (model, dataset "
                            f"sha256, run id) under {prefix} in the {bucket_name} bucket, and nothing outside it")
        if access.reads_metrics:
            acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                        f"{name} reads the infer functions' metrics (cloudwatch:GetMetricData), an action without "
                        "resource-level permissions; X-Ray's actions are the same")
        if access.describes:
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{self.batch.executions_nag()}]",
                        f"{name} reads the status of batch runs, executions named by a batch id only known at run "
                        "time, of the batch state machine only")
        if access.infer or access.grants_api:
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

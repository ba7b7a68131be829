"""Provision the platform into moto from the declarative description in ``mlops.aws.platform``.

Works against embedded moto (``mock_aws``) or a moto server (clients built with its endpoint). The
functions are real zips of ``functions/<name>/`` plus the project's ``mlops.toml``, exactly what the CDK
app bundles; the in-process runtime (``mlops.local.lambda_runtime``) executes them.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mlops.aws import access, environment, platform
from mlops.core.config import CONFIG_FILE, ProjectConfig, load_config
from mlops.local.alarms import create_alarms
from mlops.local.gateway import execute_api_arn
from mlops.local.iam.policies import LocalNames
from mlops.local.queues import provision_queues
from mlops.release.deploy import LIVE_ALIAS, ServingDeployer
from mlops.serving import capture

ACCOUNT = "123456789012"


def function_zip(spec: platform.FunctionSpec, config_file: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(spec.code_dir.rglob("*.py")):
            archive.write(path, path.relative_to(spec.code_dir).as_posix())
        archive.write(config_file, CONFIG_FILE)
    return buffer.getvalue()


@dataclass
class Deployment:
    project: str
    region: str
    names: dict[str, str]
    topic_arn: str = ""
    state_machine_arn: str = ""
    function_arns: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    alarms: list[str] = field(default_factory=list)  # CloudWatch alarm names (mlops.aws.alarms)
    role_arn: str = ""

    @property
    def data_bucket(self) -> str:
        return self.names["data"]

    @property
    def models_bucket(self) -> str:
        return self.names["models"]

    def env_value(self, variable: str) -> str:
        return {
            environment.DATA_BUCKET: self.names["data"],
            environment.MODELS_BUCKET: self.names["models"],
            environment.REGISTRY_TABLE: self.names["registry"],
            environment.IDEMPOTENCY_TABLE: self.names["idempotency"],
            environment.FEATURES_TABLE: self.names["features"],
            environment.NOTIFICATIONS_TOPIC_ARN: self.topic_arn,
            environment.TRAINING_STATE_MACHINE_ARN: self.state_machine_arn,
            environment.CAPTURE_STREAM: self.names["captures"],
            environment.CAPTURES_BUCKET: self.names["captures"],
            environment.ROLLOUT_STATE_MACHINE_ARN: self.rollout_arn,
            environment.BATCH_STATE_MACHINE_ARN: self.batch_arn,
            environment.INGEST_STATE_MACHINE_ARN: self.ingest_arn,
            environment.INFER_FUNCTIONS: json.dumps({m: self.infer_function(m) for m in self.models}),
            environment.API_SOURCE_ARN: self.api_source_arn,
        }[variable]

    @property
    def api_source_arn(self) -> str:
        """What the local gateway presents as the source of its invocations, for any method and path (as the
        stack's API does for its stage: infra/constructs/serving.py)."""
        return execute_api_arn(self.region, ACCOUNT)

    def machine_arn(self, machine: str) -> str:
        """The ARN of the platform's state machine ``machine`` (its key in ``names``)."""
        return f"arn:aws:states:{self.region}:{ACCOUNT}:stateMachine:{self.names[machine]}"

    @property
    def batch_arn(self) -> str:
        return self.machine_arn(platform.BATCH_STATE_MACHINE)

    @property
    def ingest_arn(self) -> str:
        return self.machine_arn(platform.INGEST_STATE_MACHINE)

    @property
    def rollout_arn(self) -> str:
        return self.machine_arn(platform.ROLLOUT_STATE_MACHINE)

    def training_job_values(self) -> dict[str, str]:
        """What the SageMaker path's placeholders stand for here. moto cannot run a training job (nor the image):
        the path is there so that the local cloud runs the very ASL file the stack deploys."""
        return {
            "TrainingImageUri": f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{self.project}-train:local",
            "SageMakerRoleArn": self.role_arn,
            "ModelsBucketName": self.models_bucket,
            "DataKeyArn": f"arn:aws:kms:{self.region}:{ACCOUNT}:alias/{self.project}-local",
        }

    def infer_function(self, model: str) -> str:
        return platform.infer_function_name(self.project, model)

    def local_names(self) -> LocalNames:
        return LocalNames(self.region, ACCOUNT, self.project, self.names, self.models)

    def function_env(self, spec: platform.FunctionSpec) -> dict[str, str]:
        return {
            **{variable: self.env_value(variable) for variable in spec.env},
            "POWERTOOLS_SERVICE_NAME": spec.name,
            "POWERTOOLS_METRICS_NAMESPACE": self.project,
            # no X-Ray daemon locally; on AWS the CDK app turns active tracing on
            "POWERTOOLS_TRACE_DISABLED": "true",
        }


def live_alias(lam: Any, function: str, api_source_arn: str) -> None:
    """What the stack does at deploy time (infra/constructs/serving.py): the `live` alias, on $LATEST until register
    moves it (a fresh stack answers 503 until a model is deployed), and API Gateway's right to invoke it. The alias
    belongs to the platform: one that exists already is left where it points."""
    try:
        lam.create_alias(FunctionName=function, Name=LIVE_ALIAS, FunctionVersion="$LATEST",
                         Description="the A/B split: moved by register and rollout, never by a deploy")
    except ClientError as exc:  # AWS says ResourceConflictException, moto ConflictException
        if exc.response["Error"]["Code"] not in ("ResourceConflictException", "ConflictException"):
            raise
    ServingDeployer(lam, api_source_arn=api_source_arn).ensure_api_permission(function)


def rule_arn(region: str, rule_name: str) -> str:
    return f"arn:aws:events:{region}:{ACCOUNT}:rule/{rule_name}"


def _definition(path: Path, functions: dict[str, str], deployment: Deployment) -> str:
    text = path.read_text()
    for placeholder, function in functions.items():
        text = text.replace(f"${{{placeholder}}}", deployment.function_arns[function])
    for placeholder, value in deployment.training_job_values().items():
        text = text.replace(f"${{{placeholder}}}", value)
    return text.replace(f"${{{platform.ASL_TOPIC_SUBSTITUTION}}}", deployment.topic_arn)


def training_definition(deployment: Deployment) -> str:
    return _definition(platform.TRAINING_ASL, platform.ASL_SUBSTITUTIONS, deployment)


def batch_definition(deployment: Deployment) -> str:
    """The very file the stack deploys: moto's interpreter runs its Distributed Map (ItemReader included)."""
    return _definition(platform.BATCH_ASL, platform.BATCH_SUBSTITUTIONS, deployment)


def ingest_definition(deployment: Deployment) -> str:
    """The very file the stack deploys: moto's interpreter runs its Distributed Map (ItemReader included)."""
    return _definition(platform.INGEST_ASL, platform.INGEST_SUBSTITUTIONS, deployment)


def rollout_definition(deployment: Deployment) -> str:
    return _definition(platform.ROLLOUT_ASL, platform.ROLLOUT_SUBSTITUTIONS, deployment)


# moto warns on every parse of the training ASL that it cannot run SageMaker tasks: the local cloud takes that branch
# only for a model set to "sagemaker" or data above its sagemaker_above_mb, so the warning only hides real messages.
logging.getLogger("moto.stepfunctions.parser.asl.component.state.exec.state_task.service."
                  "state_task_service_unsupported").setLevel(logging.ERROR)


def provision(client: Callable[[str], Any], *, config_file: Path, region: str = "us-east-1") -> Deployment:
    config = load_config(config_file)
    deployment = Deployment(config.project, region, platform.resource_names(config.project),
                            models=tuple(m.name for m in config.models))
    s3, ddb = client("s3"), client("dynamodb")
    for bucket in platform.BUCKETS:
        s3.create_bucket(Bucket=deployment.names[bucket])
        s3.put_bucket_versioning(Bucket=deployment.names[bucket], VersioningConfiguration={"Status": "Enabled"})
    for table in platform.TABLES:
        key = platform.TABLE_KEYS[table].schema()
        ddb.create_table(
            TableName=deployment.names[table], BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in key],
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in key],
        )
    deployment.topic_arn = client("sns").create_topic(Name=deployment.names["notifications"])["TopicArn"]
    deployment.alarms = create_alarms(client("cloudwatch"), config, deployment.topic_arn)
    role = client("iam").create_role(
        RoleName=f"{config.project}-local-lambda",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
            "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]
    deployment.role_arn = role
    lam = client("lambda")
    # The state machine ARN is known before it exists; functions that start it get it in their environment.
    deployment.state_machine_arn = deployment.machine_arn("training")
    for spec in platform.FUNCTIONS:
        created = lam.create_function(
            FunctionName=spec.physical_name(config.project), Runtime="python3.12", Role=role,
            Handler="handler.handler", Code={"ZipFile": function_zip(spec, config_file)},
            Description=spec.description, Timeout=spec.timeout_s, MemorySize=spec.memory_mb,
            Environment={"Variables": deployment.function_env(spec)},
        )
        deployment.function_arns[spec.name] = created["FunctionArn"]
    stream_arn = client("firehose").create_delivery_stream(
        DeliveryStreamName=deployment.names["captures"], DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": role, "BucketARN": f"arn:aws:s3:::{deployment.names['captures']}", "Prefix": "captures/",
            "ErrorOutputPrefix": capture.FAILURES_PREFIX,
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
            # the subscriptions' deliveries, decompressed and reduced to their messages, one per line
            # (mlops.local.firehose plays these processors)
            "ProcessingConfiguration": {"Enabled": True, "Processors": [
                {"Type": kind, "Parameters": [{"ParameterName": k, "ParameterValue": v} for k, v in params.items()]}
                for kind, params in capture.STREAM_PROCESSORS]},
        },
    )["DeliveryStreamARN"]
    for model in deployment.models:
        lam.create_function(
            FunctionName=deployment.infer_function(model), Runtime="python3.12", Role=role,
            Handler="handler.handler", Code={"ZipFile": function_zip(platform.INFER, config_file)},
            Description=platform.INFER.description, Timeout=platform.INFER.timeout_s,
            MemorySize=platform.INFER.memory_mb,
            Environment={"Variables": {**deployment.function_env(platform.INFER),
                                       **platform.serving_env(model, config.model(model).capture_sample_rate),
                                       # infer starts batch runs (mlops.batch.start) with their inputs in the data
                                       # bucket; push shares INFER.env, not these
                                       environment.BATCH_STATE_MACHINE_ARN: deployment.batch_arn,
                                       environment.DATA_BUCKET: deployment.data_bucket}},
        )
        live_alias(lam, deployment.infer_function(model), deployment.api_source_arn)
    for machine, definition in (("training", training_definition), (platform.ROLLOUT_STATE_MACHINE, rollout_definition),
                                (platform.BATCH_STATE_MACHINE, batch_definition),
                                (platform.INGEST_STATE_MACHINE, ingest_definition)):
        created = client("stepfunctions").create_state_machine(
            name=deployment.names[machine], definition=definition(deployment), roleArn=role)
        assert created["stateMachineArn"] == deployment.machine_arn(machine)
    for bucket in platform.BUCKETS:
        triggers = [t for t in platform.S3_TRIGGERS if t.bucket == bucket]
        if not triggers:
            continue
        # S3 refuses a notification configuration naming a function it may not invoke (mlops.local.permissions)
        for function in sorted({t.function for t in triggers}):
            lam.add_permission(FunctionName=deployment.function_arns[function], StatementId=f"s3-{bucket}",
                               Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
                               SourceArn=f"arn:aws:s3:::{deployment.names[bucket]}", SourceAccount=ACCOUNT)
        s3.put_bucket_notification_configuration(
            Bucket=deployment.names[bucket],
            NotificationConfiguration={"LambdaFunctionConfigurations": [
                {
                    "LambdaFunctionArn": deployment.function_arns[t.function],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [
                        {"Name": name, "Value": value}
                        for name, value in (("prefix", t.prefix), ("suffix", t.suffix)) if value]}},
                }
                for t in triggers
            ]},
        )
    # EventBridge invokes a scheduled function only with its permission, one per rule (as the stack's targets add)
    for rule in platform.scheduled_rules(config):
        lam.add_permission(FunctionName=deployment.function_arns[rule.function], StatementId=rule.rule_name,
                           Action="lambda:InvokeFunction", Principal="events.amazonaws.com",
                           SourceArn=rule_arn(region, rule.rule_name))
    # push mode: each model's queue, dead-letter queue, topic, push function and event source mapping
    provision_queues(client, config=config, region=region, role=role, code=function_zip(platform.PUSH, config_file),
                     values={v: deployment.env_value(v) for v in (*platform.PUSH.env, environment.DATA_BUCKET)})
    subscribe_captures(client, deployment, config, stream_arn)
    return deployment


def subscribe_captures(client: Callable[[str], Any], deployment: Deployment, config: ProjectConfig,
                       stream_arn: str) -> None:
    """What the stack does (infra/constructs/serving.py): each infer and push function's log group subscribed to the
    capture stream, filtered on the capture marker, through a role CloudWatch Logs assumes. Lambda names a function's
    log group /aws/lambda/<function> unless told otherwise; the local runtime's output lands there
    (mlops.local.metrics.LogSubscriptions delivers what the filter matches)."""
    role = client("iam").create_role(
        RoleName=f"{config.project}-local-capture-logs",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
    )["Role"]
    client("iam").put_role_policy(RoleName=role["RoleName"], PolicyName="capture-stream", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": list(access.CAPTURE_DELIVERY),
                                                "Resource": stream_arn}]}))
    logs = client("logs")
    functions = [deployment.infer_function(m) for m in deployment.models]
    functions += [queue.function for queue in platform.push_queues(config)]
    for function in functions:
        group = f"/aws/lambda/{function}"
        logs.create_log_group(logGroupName=group)
        logs.put_subscription_filter(logGroupName=group, filterName=capture.SUBSCRIPTION_FILTER,
                                     filterPattern=capture.FILTER_PATTERN, destinationArn=stream_arn,
                                     roleArn=role["Arn"])

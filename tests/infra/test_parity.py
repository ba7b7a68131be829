"""The local cloud (mlops.local.cloud.provision into moto) and the synthesized stack deploy the same platform:
same functions with the same environment variables, same S3 triggers, same state machine definitions, same
table keys. Both read mlops.aws.platform; this catches whatever either side adds on its own.

Names differ by design (the local cloud names resources itself, CloudFormation names them in the stack), so
both sides are compared by platform name: ARNs become `function:<name>` and `topic:notifications`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from infra.app import CONFIG_CONTEXT, cdk_json_context
from infra.constructs.pipeline import STATE_MACHINES
from mlops.aws import platform
from mlops.core.config import load_config

# The local cloud has no X-Ray daemon; on AWS the functions trace actively (see test_stack).
LOCAL_ONLY_ENV = {"POWERTOOLS_TRACE_DISABLED"}
# The API's execute-api ARN, which register needs to let API Gateway invoke a `live` alias it creates; the local
# cloud has no API Gateway yet. Empty once mlops.aws.platform declares it for register (the local cloud then sets it).
Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


@dataclass
class Local:
    """What the local cloud provisioned, read back from moto, by platform names."""

    functions: dict[str, set[str]] = field(default_factory=dict)  # name -> environment variable names
    serving: dict[str, set[str]] = field(default_factory=dict)  # infer function name -> environment variable names
    push: dict[str, set[str]] = field(default_factory=dict)  # push function name -> environment variable names
    capture_stream: dict[str, Any] = field(default_factory=dict)  # name, type, prefix, buffering, processors
    # the function whose log group is subscribed -> (filter name, filter pattern, destination's platform name)
    subscriptions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    triggers: set[tuple[str, str, str, str]] = field(default_factory=set)
    definitions: dict[str, str] = field(default_factory=dict)
    table_keys: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    buckets: dict[str, bool] = field(default_factory=dict)  # name -> versioned


@pytest.fixture(scope="module")
def local() -> Local:
    from moto import mock_aws

    from mlops import aws
    from mlops.local.cloud import provision

    config_file = platform.ROOT / cdk_json_context()[CONFIG_CONTEXT]  # the file the CDK app bundles
    project = load_config(config_file).project
    with mock_aws():
        aws.client.cache_clear()
        deployment = provision(aws.client, config_file=config_file)
        by_arn = {arn: name for name, arn in deployment.function_arns.items()}
        by_bucket = {deployment.names[name]: name for name in platform.BUCKETS}
        infer = {platform.infer_function_name(project, model) for model in deployment.models}
        push = {queue.function for queue in platform.push_queues(load_config(config_file))}
        found = Local()

        for function in aws.client("lambda").list_functions()["Functions"]:
            variables = set(function.get("Environment", {}).get("Variables", {}))
            if function["FunctionName"] in infer:
                found.serving[function["FunctionName"]] = variables
            elif function["FunctionName"] in push:
                found.push[function["FunctionName"]] = variables
            else:
                found.functions[by_arn[function["FunctionArn"]]] = variables

        s3 = aws.client("s3")
        for bucket, name in by_bucket.items():
            found.buckets[name] = s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
            configuration = s3.get_bucket_notification_configuration(Bucket=bucket)
            for config in configuration.get("LambdaFunctionConfigurations", []):
                rules = {r["Name"]: r["Value"] for r in config["Filter"]["Key"]["FilterRules"]}
                found.triggers.add((by_arn[config["LambdaFunctionArn"]], name,
                                    rules.get("prefix", ""), rules.get("suffix", "")))

        sfn = aws.client("stepfunctions")
        for machine in sfn.list_state_machines()["stateMachines"]:
            text = sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"]
            for arn, name in by_arn.items():
                text = text.replace(arn, f"function:{name}")
            text = text.replace(deployment.topic_arn, "topic:notifications")
            for placeholder, value in deployment.training_job_values().items():
                text = text.replace(value, platform.ASL_TRAINING_JOB_SUBSTITUTIONS[placeholder])
            found.definitions[{v: k for k, v in deployment.names.items()}[machine["name"]]] = text

        firehose = aws.client("firehose")
        description = firehose.describe_delivery_stream(
            DeliveryStreamName=deployment.names[platform.CAPTURE_STREAM])["DeliveryStreamDescription"]
        [destination] = description["Destinations"]
        s3_destination = destination["ExtendedS3DestinationDescription"]
        found.capture_stream = {
            "name": description["DeliveryStreamName"], "type": description["DeliveryStreamType"],
            "bucket": by_bucket[s3_destination["BucketARN"].rsplit(":", 1)[1]], "prefix": s3_destination["Prefix"],
            "buffering": s3_destination["BufferingHints"], "error_prefix": s3_destination["ErrorOutputPrefix"],
            "processors": _processors(s3_destination["ProcessingConfiguration"]),
        }
        logs = aws.client("logs")
        for group in logs.describe_log_groups()["logGroups"]:
            for sub in logs.describe_subscription_filters(logGroupName=group["logGroupName"])["subscriptionFilters"]:
                destination = "stream:captures" if sub["destinationArn"] == description["DeliveryStreamARN"] \
                    else sub["destinationArn"]
                found.subscriptions[group["logGroupName"].removeprefix("/aws/lambda/")] = (
                    sub["filterName"], sub["filterPattern"], destination)

        ddb = aws.client("dynamodb")
        for table in platform.TABLES:
            found.table_keys[table] = ddb.describe_table(TableName=deployment.names[table])["Table"]["KeySchema"]
        aws.client.cache_clear()
    return found


def _processors(config: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """A ProcessingConfiguration, API's or template's: [(type, parameters)] in order, when enabled."""
    assert config["Enabled"] in (True, "true")
    return [(p["Type"], {q["ParameterName"]: q["ParameterValue"] for q in p.get("Parameters", [])})
            for p in config["Processors"]]


def test_same_functions_with_the_same_environment(local: Local, synthesized: Synthesized) -> None:
    deployed = {name: set(resource["Properties"]["Environment"]["Variables"])
                for name, (_lid, resource) in synthesized.functions().items()}
    assert {name: variables - LOCAL_ONLY_ENV for name, variables in local.functions.items()} == deployed


def test_same_infer_functions_with_the_same_environment(local: Local, synthesized: Synthesized) -> None:
    """One infer function per declared model on both sides, named by the same rule (register finds it through
    INFER_FUNCTIONS), with the same environment variables. The stack's names carry the stage
    (`<project>-<stage>`), the local cloud's the bare project."""
    config = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
    deployed = {}
    for model, (_lid, resource) in synthesized.serving().items():
        props = resource["Properties"]
        assert props["FunctionName"] == platform.infer_function_name(synthesized.stack.name_prefix, model)
        deployed[platform.infer_function_name(config.project, model)] = set(props["Environment"]["Variables"])
    assert local.serving
    assert {name: variables - LOCAL_ONLY_ENV for name, variables in local.serving.items()} == deployed


def test_same_push_functions_with_the_same_environment(local: Local, synthesized: Synthesized) -> None:
    """One push function per declared model on both sides, named by mlops.aws.platform.push_queues."""
    config = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
    stage = platform.push_queues(config.model_copy(update={"project": synthesized.stack.name_prefix}))
    deployed = {}
    for queue, local_queue in zip(stage, platform.push_queues(config), strict=True):
        props = synthesized.push()[queue.model][1]["Properties"]
        assert props["FunctionName"] == queue.function
        deployed[local_queue.function] = set(props["Environment"]["Variables"])
    assert local.push
    assert {name: variables - LOCAL_ONLY_ENV for name, variables in local.push.items()} == deployed


def test_same_capture_stream(local: Local, synthesized: Synthesized) -> None:
    [props] = [r["Properties"] for r in synthesized.of_type("AWS::KinesisFirehose::DeliveryStream").values()]
    destination = props["ExtendedS3DestinationConfiguration"]
    buckets = {synthesized.logical_id(b): name for name, b in synthesized.stack.storage.buckets.items()}
    config = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
    names = platform.resource_names(config.project), platform.resource_names(synthesized.stack.name_prefix)
    assert props["DeliveryStreamName"] == names[1][platform.CAPTURE_STREAM]  # with the stage
    assert local.capture_stream == {
        "name": names[0][platform.CAPTURE_STREAM], "type": props["DeliveryStreamType"],
        "bucket": buckets[destination["BucketARN"]["Fn::GetAtt"][0]], "prefix": destination["Prefix"],
        "buffering": destination["BufferingHints"], "error_prefix": destination["ErrorOutputPrefix"],
        "processors": _processors(destination["ProcessingConfiguration"]),
    }
    assert local.capture_stream["bucket"] == "captures"


def test_same_capture_subscriptions(local: Local, synthesized: Synthesized) -> None:
    """Each infer and push function's log group is subscribed to the capture stream with the same filter on both
    sides (the stack's function names carry the stage, the local cloud's the bare project)."""
    config = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
    stage = synthesized.stack.name_prefix
    local_name = {platform.infer_function_name(stage, m.name): platform.infer_function_name(config.project, m.name)
                  for m in config.models}
    local_name |= {deployed.function: bare.function for deployed, bare in zip(
        platform.push_queues(config.model_copy(update={"project": stage})), platform.push_queues(config), strict=True)}
    [stream_lid] = synthesized.of_type("AWS::KinesisFirehose::DeliveryStream")
    by_log_group = {r["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]: r["Properties"]["FunctionName"]
                    for r in synthesized.of_type("AWS::Lambda::Function").values()
                    if isinstance(r["Properties"].get("FunctionName"), str)}
    deployed = {}
    for resource in synthesized.of_type("AWS::Logs::SubscriptionFilter").values():
        props = resource["Properties"]
        destination = "stream:captures" if props["DestinationArn"] == {"Fn::GetAtt": [stream_lid, "Arn"]} \
            else props["DestinationArn"]
        deployed[local_name[by_log_group[props["LogGroupName"]["Ref"]]]] = (
            props["FilterName"], props["FilterPattern"], destination)
    assert len(deployed) == 2 * len(config.models)
    assert local.subscriptions == deployed


def test_same_s3_triggers(local: Local, synthesized: Synthesized) -> None:
    assert local.triggers == synthesized.notification_triggers()
    assert local.triggers == {(t.function, t.bucket, t.prefix, t.suffix) for t in platform.S3_TRIGGERS}


@pytest.mark.parametrize("machine", [m.name for m in STATE_MACHINES])
def test_same_state_machine_definition(local: Local, synthesized: Synthesized, machine: str) -> None:
    _props, deployed = synthesized.state_machine(machine)
    assert json.loads(local.definitions[machine]) == json.loads(deployed)


def test_same_state_machines(local: Local, synthesized: Synthesized) -> None:
    assert set(local.definitions) == set(synthesized.stack.pipeline.state_machines)


def test_same_buckets_and_tables(local: Local, synthesized: Synthesized) -> None:
    assert set(local.buckets) == set(synthesized.stack.storage.buckets)
    assert all(local.buckets.values()), "versioned locally as in the stack"
    tables = synthesized.stack.storage.tables
    for name, key_schema in local.table_keys.items():
        props = synthesized.resources[synthesized.logical_id(tables[name])]["Properties"]
        assert key_schema == props["KeySchema"], name

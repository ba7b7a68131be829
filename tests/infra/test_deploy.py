"""What a first deploy, a `cdk destroy` and a deploy after it need of the synthesized template: the account's API
Gateway logging role, buckets that empty themselves where the stage deletes them, no retained resource whose fixed
name would collide when the stage is created again, the lineage's prefixes writable only by their writers, and Lambda
memory sizes checked against what the account allows."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra.app import API_GATEWAY_LOGGING_ROLE_CONTEXT, LAMBDA_MEMORY_QUOTA_CONTEXT
from infra.constructs.function import LAMBDA_MEMORY_MAX_MB, MEMORY_QUOTA_WARNING, check_memory
from infra.constructs.storage import OBJECT_WRITES, PROTECTED_PREFIXES
from mlops.aws import platform
from mlops.aws.access import ACCESS

Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name
API_GATEWAY_LOGS_POLICY = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"
# The property that holds a resource's physical name, for every type the stack retains (None: it has none)
NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName", "AWS::DynamoDB::Table": "TableName", "AWS::KMS::Key": None,
    "AWS::Logs::LogGroup": "LogGroupName", "AWS::Logs::LogStream": "LogStreamName", "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName", "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::IAM::Role": "RoleName", "AWS::ApiGateway::Account": None, "AWS::Lambda::Function": "FunctionName",
    "AWS::KinesisFirehose::DeliveryStream": "DeliveryStreamName", "AWS::Events::Rule": "Name",
}
def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_arn(synthesized: Synthesized, role: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synthesized.logical_id(role), "Arn"]}


# -- API Gateway's CloudWatch Logs role ------------------------------------------------------------------------
def logging_roles(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in synthesized.of_type("AWS::IAM::Role").items()
            if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
            == {"Service": "apigateway.amazonaws.com"}}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_stack_sets_the_accounts_api_gateway_logging_role_and_keeps_it(
        synthesized: Synthesized, synthesized_prod: Synthesized, stage: str) -> None:
    template = synthesized if stage == "dev" else synthesized_prod
    [(account_lid, account)] = template.of_type("AWS::ApiGateway::Account").items()
    [(role_lid, role)] = logging_roles(template).items()
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": [role_lid, "Arn"]}
    assert [template.render(arn) for arn in role["Properties"]["ManagedPolicyArns"]] == [
        f"arn:<AWS::Partition>:iam::aws:policy/{API_GATEWAY_LOGS_POLICY}"]
    # account-wide: deleting this stage (dev deletes everything else) must leave the setting on a role that exists
    assert (account["DeletionPolicy"], role["DeletionPolicy"]) == ("Retain", "Retain")
    assert "RoleName" not in role["Properties"]  # a stage created again makes its own
    # the stage's access logging needs the setting first
    [stage_resource] = template.of_type("AWS::ApiGateway::Stage").values()
    assert account_lid in stage_resource["DependsOn"]


def test_an_account_managed_elsewhere_is_left_alone(synthesized: Synthesized, tmp_path: Path,
                                                    synthesize_with: Any) -> None:
    """`-c mlops:api-gateway-logging-role=false` (scripts/preflight.py then checks the account has one), and
    `-c mlops:lambda-memory-quota-mb=10240`: the deployer says the account allows train's 4096 MB."""
    assert synthesized.of_type("AWS::ApiGateway::Account")  # what the options turn off
    managed = synthesize_with(tmp_path, **{API_GATEWAY_LOGGING_ROLE_CONTEXT: "false",
                                           LAMBDA_MEMORY_QUOTA_CONTEXT: "10240"})
    assert not managed.of_type("AWS::ApiGateway::Account")
    assert not logging_roles(managed)
    report = json.loads((managed.assembly_dir / "validation-report.json").read_text())
    assert not [v for r in report["pluginReports"] for v in r.get("violations", [])], report


# -- Lambda memory ---------------------------------------------------------------------------------------------
def test_memory_above_a_new_accounts_quota_is_a_warning_on_the_function(synthesized: Synthesized) -> None:
    report = json.loads((synthesized.assembly_dir / "validation-report.json").read_text())
    [warning] = [v for r in report["pluginReports"] for v in r.get("violations", [])
                 if v["ruleName"] == f"Annotation::{MEMORY_QUOTA_WARNING}"]
    assert warning["severity"] == "warning"
    above = sorted(spec.name for spec in (*platform.FUNCTIONS, platform.INFER, platform.PUSH) if spec.memory_mb > 3008)
    assert above == ["train"]
    assert [c["constructPath"] for c in warning["violatingConstructs"]] == [
        f"{synthesized.stack.stack_name}/Pipeline/Functions/train"]
    assert "train asks for 4096 MB" in warning["description"]
    assert LAMBDA_MEMORY_QUOTA_CONTEXT in warning["description"]


def test_memory_above_lambdas_maximum_stops_the_synthesis() -> None:
    too_big = SimpleNamespace(spec=SimpleNamespace(name="big", memory_mb=LAMBDA_MEMORY_MAX_MB + 64),
                              node=SimpleNamespace(path="mlops-dev/Pipeline/Functions/big"))
    with pytest.raises(ValueError, match="above Lambda's maximum of 10240 MB"):
        check_memory([too_big], quota_mb=LAMBDA_MEMORY_MAX_MB)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="outside Lambda's"):
        check_memory([], quota_mb=20_000)


# -- deleting a stage and creating it again --------------------------------------------------------------------
def test_buckets_empty_themselves_where_the_stage_deletes_them(synthesized: Synthesized,
                                                               synthesized_prod: Synthesized) -> None:
    """CloudFormation cannot delete a bucket that holds objects or versions: dev's empty themselves first; prod's
    are retained with their objects."""
    buckets = synthesized.of_type("AWS::S3::Bucket")
    assert len(buckets) == len(platform.BUCKETS) + 1  # and the access logs
    emptied = {r["Properties"]["BucketName"]["Ref"]
               for r in synthesized.of_type("Custom::S3AutoDeleteObjects").values()}
    assert emptied == set(buckets)
    assert {r["DeletionPolicy"] for r in buckets.values()} == {"Delete"}
    assert not synthesized_prod.of_type("Custom::S3AutoDeleteObjects")
    assert {r["DeletionPolicy"] for r in synthesized_prod.of_type("AWS::S3::Bucket").values()} == {"Retain"}


def test_no_retained_resource_has_a_fixed_name_in_prod(synthesized_prod: Synthesized) -> None:
    """A resource prod retains outlives the stack; if its physical name were fixed, creating the stage again would
    collide with it. Names that carry the stack instance (the StackId's UUID) are unique per creation."""
    fixed = {}
    for lid, resource in synthesized_prod.resources.items():
        if "Retain" not in (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")):
            continue
        assert resource["Type"] in NAME_PROPERTY, f"{lid}: which property names a {resource['Type']}?"
        name = resource.get("Properties", {}).get(NAME_PROPERTY[resource["Type"]] or "")
        if name is None or "AWS::StackId" in json.dumps(name):
            continue
        fixed[lid] = name if isinstance(name, str) else json.dumps(name)
    assert fixed == {}


def test_state_machine_log_groups_are_vended_and_named_per_stack_instance(synthesized_prod: Synthesized) -> None:
    for name, machine in synthesized_prod.stack.pipeline.state_machines.items():
        props = synthesized_prod.resources[synthesized_prod.logical_id(machine)]["Properties"]
        [destination] = props["LoggingConfiguration"]["Destinations"]
        log_group = synthesized_prod.resources[destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]]
        log_group_name = json.dumps(log_group["Properties"]["LogGroupName"])
        assert f"/aws/vendedlogs/states/mlops-prod-{name}-" in log_group_name
        assert '{"Ref": "AWS::StackId"}' in log_group_name
        assert log_group["DeletionPolicy"] == "Retain"


def test_push_queues_keep_their_names_and_go_with_the_stack(synthesized_prod: Synthesized) -> None:
    names = {q.queue for q in synthesized_prod.stack.push.specs.values()}
    names |= {q.dead_letter_queue for q in synthesized_prod.stack.push.specs.values()}
    queues = {r["Properties"].get("QueueName"): r for r in synthesized_prod.of_type("AWS::SQS::Queue").values()}
    assert names <= set(queues)
    assert {queues[name]["DeletionPolicy"] for name in names} == {"Delete"}


# -- the lineage's prefixes --------------------------------------------------------------------------------------
def declared_writers(bucket: str, prefix: str) -> set[str]:
    return {name for name, access in ACCESS.items()
            for written in access.write.get(bucket, ()) if written.startswith(prefix) or prefix.startswith(written)}


def protection(synthesized: Synthesized, bucket: str, prefix: str) -> dict[str, Any]:
    bucket_lid = synthesized.logical_id(synthesized.stack.storage.buckets[bucket])
    [policy] = [r["Properties"] for r in synthesized.of_type("AWS::S3::BucketPolicy").values()
                if r["Properties"]["Bucket"] == {"Ref": bucket_lid}]
    [statement] = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"
                   and s["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_lid, "Arn"]}, f"/{prefix}*"]]}]
    return statement


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_only_the_declared_writers_write_the_lineages_prefixes(synthesized: Synthesized,
                                                               synthesized_prod: Synthesized, stage: str) -> None:
    template = synthesized if stage == "dev" else synthesized_prod
    assert PROTECTED_PREFIXES == {"data": ("curated/", "contracts/"), "models": ("models/",)}
    assert declared_writers("data", "curated/") == declared_writers("data", "contracts/") == {"ingest"}
    assert declared_writers("models", "models/") == {"register"}
    provider = template.stack.node.try_find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
    for bucket, prefixes in PROTECTED_PREFIXES.items():
        for prefix in prefixes:
            statement = protection(template, bucket, prefix)
            assert statement["Principal"] == {"AWS": "*"}
            assert sorted(as_list(statement["Action"])) == sorted(OBJECT_WRITES)
            allowed = [role_arn(template, template.stack.pipeline.functions[name].role)
                       for name in sorted(declared_writers(bucket, prefix))]
            if stage == "dev":  # aws-cdk-lib's provider empties the bucket when the stage is deleted
                allowed.append(template.stack.resolve(provider.role_arn))
            else:
                assert provider is None
            assert statement["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": allowed}}
    # aws-cdk-lib's bucket notifications custom resource only configures the bucket: the protection cannot stop it
    [notifications] = template.of_type("Custom::S3BucketNotifications").values()
    handler = template.resources[notifications["Properties"]["ServiceToken"]["Fn::GetAtt"][0]]
    role = handler["Properties"]["Role"]["Fn::GetAtt"][0]
    actions = {a for policy in template.of_type("AWS::IAM::Policy").values()
               if {"Ref": role} in policy["Properties"]["Roles"]
               for s in policy["Properties"]["PolicyDocument"]["Statement"] for a in as_list(s["Action"])}
    assert actions == {"s3:PutBucketNotification"}

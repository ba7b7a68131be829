"""The roles of the synthesized template, against what runs under them: the local cloud's guard enforces the same
policies the platform declares (parity), and every integration a state machine's ASL uses is allowed by its role."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import template_policies

from mlops.aws import platform
from mlops.batch.start import MAP_RESULTS, WORK_PREFIX
from mlops.core import layout
from mlops.core.config import load_config
from mlops.local.iam.guard import RolePolicy
from mlops.local.iam.operations import GUARDED_SERVICES, Target, UnmappedOperation, targets
from mlops.local.iam.policies import LocalNames, evaluate, pairs, platform_policies, role_of
from mlops.local.iam.policies import template_policies as policies_of_template

Synthesized = Any  # conftest.Synthesized
REGION, ACCOUNT = "us-east-1", "123456789012"


@pytest.fixture(scope="module")
def local(synthesized: Synthesized) -> tuple[LocalNames, Any, dict[str, str], dict[str, dict[str, str]]]:
    from infra.app import CONFIG_CONTEXT, cdk_json_context

    config = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
    names = LocalNames(REGION, ACCOUNT, config.project, platform.resource_names(config.project),
                       [m.name for m in config.models])
    functions, resources = template_policies.local_resources(synthesized.stack, names, config)
    return names, config, functions, resources


def test_the_guard_enforces_what_the_template_grants(synthesized: Synthesized, local: Any) -> None:
    """`mlops local up` evaluates the platform's declaration (mlops.aws.access); the tests' clouds and AWS the
    template's policies: for every function, the same actions on the same resources, with the same conditions."""
    names, config, functions, resources = local
    roles = {role_of(synthesized.resources[lid]): name for lid, name in functions.items()}
    deployed = policies_of_template(synthesized.template, roles=roles, resources=resources, region=REGION,
                                    account=ACCOUNT)
    declared = platform_policies(names, config)
    assert set(deployed) == set(declared)
    differences = {}
    for function in declared:
        template_only = pairs(deployed[function], GUARDED_SERVICES) - pairs(declared[function], GUARDED_SERVICES)
        declared_only = pairs(declared[function], GUARDED_SERVICES) - pairs(deployed[function], GUARDED_SERVICES)
        if template_only or declared_only:
            differences[function] = {"template only": sorted(template_only), "declared only": sorted(declared_only)}
    assert not differences, json.dumps(differences, indent=1)
    # and it is not vacuous: every function may do something, and ingest what its declaration says
    assert all(pairs(declared[f], GUARDED_SERVICES) for f in declared)
    ingest = pairs(declared[f"{names.project}-ingest"], GUARDED_SERVICES)
    assert ("s3:PutObject", f"arn:aws:s3:::{names.names['data']}/curated/*", "{}") in ingest


# -- state machines ---------------------------------------------------------------------------------------------------
# What the ASL's dynamic parameters stand for at run time, in the shape the platform gives them: each path a state
# machine reads a resource name or key from must be listed here (the test says which one is missing).
def _dynamic(names: LocalNames) -> dict[str, str]:
    return {
        "$.plan.items_bucket": names.names["data"],
        "$.plan.items_key": f"{layout.BATCH_RUNS}breast-cancer/run-1/{WORK_PREFIX}items.json",
        "$.job.bucket": names.names["data"],
        "$.job.items_key": f"{layout.INGEST_RUNS}breast-cancer/run-1/items.json",
        "$$.Execution.Input.results.bucket": names.names["data"],
        "$$.Execution.Input.results.prefix": f"{layout.BATCH_RUNS}breast-cancer/run-1/{WORK_PREFIX}{MAP_RESULTS}",
        "States.Format('candidates/{}/{}/train.json', $.model, $.run_id)": "candidates/breast-cancer/run-1/train.json",
        "States.Format('mlops-train-{}', States.Hash($$.Execution.Id, 'MD5'))": "mlops-train-0123456789abcdef",
    }


def _states(states: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, state in states.items():
        yield name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _states(processor["States"])
        for branch in state.get("Branches", []):
            yield from _states(branch["States"])


def _value(parameters: Mapping[str, Any], field: str, dynamic: Mapping[str, str], where: str) -> str:
    if field in parameters:
        return str(parameters[field])
    path = parameters[f"{field}.$"]
    assert path in dynamic, f"{where}: give the run-time value of {path} in _dynamic()"
    return dynamic[path]


def required(machine_arn: str, asl: Mapping[str, Any], names: LocalNames) -> list[tuple[str, Target]]:
    """(state, authorisation) for each integration of a definition, as AWS documents what each one asks of the
    state machine's role."""
    dynamic = _dynamic(names)
    out: list[tuple[str, Target]] = []
    for name, state in _states(asl["States"]):
        if state["Type"] == "Map" and (state.get("ItemProcessor") or {}).get("ProcessorConfig", {}).get(
                "Mode") == "DISTRIBUTED":
            # the map starts one child execution of this very state machine per item
            out.append((name, Target("states:StartExecution", machine_arn)))
            if reader := state.get("ItemReader"):
                params = reader["Parameters"]
                key = f"{_value(params, 'Bucket', dynamic, name)}/{_value(params, 'Key', dynamic, name)}"
                out.append((name, Target("s3:GetObject", f"arn:aws:s3:::{key}")))
            if writer := state.get("ResultWriter"):
                params = writer["Parameters"]
                where = f"arn:aws:s3:::{_value(params, 'Bucket', dynamic, name)}/" \
                        f"{_value(params, 'Prefix', dynamic, name)}manifest.json"
                # what aws-cdk-lib's ResultWriter grants, for the multipart upload of large results
                out.extend((name, Target(a, where)) for a in (
                    "s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"))
        if state["Type"] != "Task":
            continue
        resource, params = state["Resource"], state.get("Parameters", {})
        if resource.startswith("arn:aws:lambda:"):
            out.append((name, Target("lambda:InvokeFunction", resource)))
        elif resource == "arn:aws:states:::lambda:invoke":
            out.append((name, Target("lambda:InvokeFunction", _value(params, "FunctionName", dynamic, name))))
        elif resource == "arn:aws:states:::sns:publish":
            out.append((name, Target("sns:Publish", _value(params, "TopicArn", dynamic, name))))
        elif resource == "arn:aws:states:::aws-sdk:s3:getObject":
            key = f"{_value(params, 'Bucket', dynamic, name)}/{_value(params, 'Key', dynamic, name)}"
            out.append((name, Target("s3:GetObject", f"arn:aws:s3:::{key}")))
        elif resource == "arn:aws:states:::sagemaker:createTrainingJob.sync":
            job = names.arn("sagemaker", f"training-job/{_value(params, 'TrainingJobName', dynamic, name)}")
            actions = ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"]
            if "Tags" in params:
                actions.append("sagemaker:AddTags")
            out.extend((name, Target(a, job)) for a in actions)
            rule = names.arn("events", "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule")
            out.extend((name, Target(a, rule)) for a in ("events:PutTargets", "events:PutRule", "events:DescribeRule"))
            out.append((name, Target("iam:PassRole", _value(params, "RoleArn", dynamic, name),
                                     {"iam:PassedToService": "sagemaker.amazonaws.com"})))
        else:
            pytest.fail(f"{name}: no rule for the integration {resource}; add what AWS documents it needs")
    return out


@pytest.mark.parametrize("machine", [platform.STATE_MACHINE, platform.ROLLOUT_STATE_MACHINE,
                                     platform.BATCH_STATE_MACHINE])
def test_each_state_machine_s_role_allows_every_integration_of_its_definition(
        synthesized: Synthesized, local: Any, machine: str) -> None:
    names, _config, _functions, resources = local
    construct = synthesized.stack.pipeline.state_machines[machine]
    lid = synthesized.logical_id(construct)
    props = synthesized.resources[lid]["Properties"]
    pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
              "AWS::URLSuffix": "amazonaws.com"}
    text = synthesized.file_asset(props["DefinitionS3Location"]["Key"]).read_text()
    for placeholder, value in props.get("DefinitionSubstitutions", {}).items():
        text = text.replace(f"${{{placeholder}}}", str(evaluate(value, resources, pseudo)))
    assert not re.findall(r"\$\{\w+\}", text), "every placeholder is substituted"
    arn = resources[lid]["Ref"]
    deployed = policies_of_template(synthesized.template, roles={role_of(synthesized.resources[lid]): machine},
                                    resources=resources, region=REGION, account=ACCOUNT)[machine]
    role = RolePolicy(machine, deployed)
    needed = required(arn, json.loads(text), names)
    assert needed
    missing = [(state, t.action, t.resource) for state, t in needed if not role.allows(t)]
    assert not missing, missing


def test_a_missing_grant_is_found(synthesized: Synthesized, local: Any) -> None:
    """The check can fail: the training pipeline without its right to invoke evaluate misses exactly that."""
    names, _config, _functions, resources = local
    lid = synthesized.logical_id(synthesized.stack.pipeline.state_machines[platform.STATE_MACHINE])
    deployed = policies_of_template(synthesized.template, roles={role_of(synthesized.resources[lid]): "training"},
                                    resources=resources, region=REGION, account=ACCOUNT)["training"]
    evaluate_arn = names.function_arn(platform.function("evaluate").physical_name(names.project))
    stripped = [{**s, "Resource": [r for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
                                   if r != evaluate_arn] or ["arn:aws:none"]} for s in deployed]
    assert RolePolicy("training", deployed).allows(Target("lambda:InvokeFunction", evaluate_arn))
    assert not RolePolicy("training", stripped).allows(Target("lambda:InvokeFunction", evaluate_arn))


# -- the operation map ------------------------------------------------------------------------------------------------
def _targets(prefix: str, operation: str, **params: Any) -> list[tuple[str, str]]:
    return [(t.action, t.resource) for t in targets(prefix, operation, params, region=REGION, account=ACCOUNT)]


def test_operations_map_to_the_actions_and_resources_aws_authorises() -> None:
    assert _targets("s3", "GetObject", Bucket="b", Key="k/x.csv", VersionId="v1") == [
        ("s3:GetObjectVersion", "arn:aws:s3:::b/k/x.csv")]
    assert _targets("s3", "HeadObject", Bucket="b", Key="k") == [("s3:GetObject", "arn:aws:s3:::b/k")]
    assert _targets("s3", "ListObjectsV2", Bucket="b", Prefix="k/") == [("s3:ListBucket", "arn:aws:s3:::b")]
    assert _targets("s3", "CopyObject", Bucket="b", Key="to", CopySource={"Bucket": "a", "Key": "from"}) == [
        ("s3:GetObject", "arn:aws:s3:::a/from"), ("s3:PutObject", "arn:aws:s3:::b/to")]
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t"
    assert _targets("dynamodb", "TransactWriteItems", TransactItems=[
        {"Put": {"TableName": "t"}}, {"Delete": {"TableName": "t"}}, {"ConditionCheck": {"TableName": "t"}}]) == [
        ("dynamodb:PutItem", table), ("dynamodb:DeleteItem", table), ("dynamodb:ConditionCheckItem", table)]
    assert _targets("dynamodb", "Query", TableName="t", IndexName="i") == [("dynamodb:Query", f"{table}/index/i")]
    function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f"
    assert _targets("lambda", "Invoke", FunctionName="f:live") == [("lambda:InvokeFunction", f"{function}:live")]
    assert _targets("lambda", "UpdateAlias", FunctionName="f", Name="live") == [("lambda:UpdateAlias", function)]
    [add] = targets("lambda", "AddPermission", {"FunctionName": "f", "Qualifier": "live", "Principal": "x"},
                    region=REGION, account=ACCOUNT)
    assert (add.resource, dict(add.context)) == (f"{function}:live", {"lambda:Principal": "x"})
    assert _targets("sqs", "SendMessage", QueueUrl=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/q") == [
        ("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:q")]
    assert _targets("sts", "GetCallerIdentity") == []


def test_an_operation_without_a_mapping_fails_loudly() -> None:
    with pytest.raises(UnmappedOperation, match=r"s3:PutBucketPolicy.*mlops.local.iam.operations.OPERATIONS"):
        targets("s3", "PutBucketPolicy", {"Bucket": "b"}, region=REGION, account=ACCOUNT)


def test_the_principal_condition_of_add_permission_is_evaluated() -> None:
    role = RolePolicy("register", [{"Effect": "Allow", "Action": "lambda:AddPermission", "Resource": "*",
                                    "Condition": {"StringEquals": {"lambda:Principal": "apigateway.amazonaws.com"}}}])
    assert role.allows(Target("lambda:AddPermission", "arn:f", {"lambda:Principal": "apigateway.amazonaws.com"}))
    assert not role.allows(Target("lambda:AddPermission", "arn:f", {"lambda:Principal": "*"}))

"""Batch inference in the synthesized stack: the state machine (a Distributed Map, the very file the local cloud
runs), the batch function, and who may do what with them."""

from __future__ import annotations

import json
from typing import Any

from infra.app import CONFIG_CONTEXT, cdk_json_context
from mlops import platform, settings
from mlops.config import load_config
from mlops.local.cloud import Deployment, batch_definition

Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name
MODELS = [m.name for m in load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT]).models]


def _policy_statements(synthesized: Synthesized, role_lid: str) -> list[dict[str, Any]]:
    return [statement for policy in synthesized.of_type("AWS::IAM::Policy").values()
            if {"Ref": role_lid} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _machine_lid(synthesized: Synthesized) -> str:
    return str(synthesized.logical_id(synthesized.stack.batch.state_machine))


def test_the_state_machine_is_a_distributed_map_over_the_objects_scored_by_the_batch_function(
        synthesized: Synthesized) -> None:
    props, text = synthesized.state_machine(platform.BATCH_STATE_MACHINE)
    definition = json.loads(text)
    assert list(definition["States"]) == ["Plan", "ScoreObjects", "Finish"]
    scoring = definition["States"]["ScoreObjects"]
    assert scoring["Type"] == "Map"
    assert scoring["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert scoring["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    # the children's outputs go to S3, not into the state: any number of objects stays under the payload limit
    assert scoring["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert scoring["ResultPath"] is None
    tasks = [s for s in (*definition["States"].values(), *scoring["ItemProcessor"]["States"].values())
             if s["Type"] == "Task"]
    assert {t["Resource"] for t in tasks} == {"function:batch"}
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"


def test_the_local_cloud_runs_the_same_definition(synthesized: Synthesized) -> None:
    """moto runs the Distributed Map itself: there is no local variant of the file."""
    arn = "arn:aws:lambda:us-east-1:123456789012:function:mlops-batch"
    local = Deployment("mlops", "us-east-1", platform.resource_names("mlops"), function_arns={"batch": arn})
    _props, deployed = synthesized.state_machine(platform.BATCH_STATE_MACHINE)
    assert json.loads(batch_definition(local).replace(arn, "function:batch")) == json.loads(deployed)


def test_the_batch_function_is_an_image_with_the_registry(synthesized: Synthesized) -> None:
    _lid, resource = synthesized.functions()["batch"]
    props = resource["Properties"]
    assert props["PackageType"] == "Image"
    assert set(props["Environment"]["Variables"]) >= {settings.REGISTRY_TABLE}
    assert props["Timeout"] == 900


def test_the_batch_function_reads_and_writes_under_batch_only(synthesized: Synthesized) -> None:
    construct = synthesized.stack.pipeline.functions["batch"]
    statements = _policy_statements(synthesized, synthesized.logical_id(construct.role))
    buckets = {synthesized.logical_id(b): name for name, b in synthesized.stack.storage.buckets.items()}
    written, read = set(), set()
    for statement in statements:
        for resource in _as_list(statement["Resource"]):
            rendered = synthesized.render(resource)
            lid = rendered.split(".", 1)[0]
            where = f"{buckets.get(lid, lid)}:{rendered.partition('/')[2]}"
            actions = set(_as_list(statement["Action"]))
            if "s3:PutObject" in actions:
                written.add(where)
            if "s3:GetObject" in actions:
                read.add(where)
        assert not any(a.startswith("states:") for a in _as_list(statement["Action"]))
    assert written == {"data:batch/*"}
    assert read == {"data:batch/*", "models:models/*"}


def test_infer_may_start_and_describe_batch_runs_and_nothing_else_of_step_functions(synthesized: Synthesized) -> None:
    machine = _machine_lid(synthesized)
    for model in MODELS:
        infer = synthesized.stack.serving.functions[model]
        found = {}
        for statement in _policy_statements(synthesized, synthesized.logical_id(infer.role)):
            for action in _as_list(statement["Action"]):
                if action.startswith("states:"):
                    found[action] = _as_list(statement["Resource"])
        assert set(found) == {"states:StartExecution", "states:DescribeExecution"}, model
        assert found["states:StartExecution"] == [{"Ref": machine}]
        [executions] = found["states:DescribeExecution"]  # arn:...:execution:<the batch state machine's name>:*
        text = json.dumps(executions)
        assert ":execution:" in text
        assert json.dumps({"Ref": machine}) in text
        assert ':*"' in text
        props = synthesized.serving()[model][1]["Properties"]
        assert props["Environment"]["Variables"][settings.BATCH_STATE_MACHINE_ARN] == {"Ref": machine}


def test_only_infer_and_the_map_itself_start_batch_runs(synthesized: Synthesized) -> None:
    machine = _machine_lid(synthesized)
    starters = set()
    for lid, policy in synthesized.of_type("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "states:StartExecution" in _as_list(statement["Action"]) and \
                    {"Ref": machine} in _as_list(statement["Resource"]):
                starters.add(lid)
    infer = {synthesized.logical_id(f.role) for f in synthesized.stack.serving.functions.values()}
    machine_role = synthesized.logical_id(synthesized.stack.batch.state_machine.role)
    roles = {r["Ref"] for lid in starters for r in synthesized.resources[lid]["Properties"]["Roles"]}
    assert roles == infer | {machine_role}


def test_a_failed_run_raises_an_alarm_and_the_outputs_carry_the_state_machine(synthesized: Synthesized) -> None:
    alarms = [a["Properties"] for a in synthesized.of_type("AWS::CloudWatch::Alarm").values()]
    machine = _machine_lid(synthesized)
    assert any(a.get("MetricName") == "ExecutionsFailed"
               and {"Name": "StateMachineArn", "Value": {"Ref": machine}} in a.get("Dimensions", []) for a in alarms)
    rendered = synthesized.render(synthesized.template["Outputs"]["Environment"]["Value"])
    assert f'"{settings.BATCH_STATE_MACHINE_ARN}":"ref:{machine}"' in rendered

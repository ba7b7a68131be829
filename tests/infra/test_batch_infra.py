"""Batch inference in the synthesized stack: the state machine (a Distributed Map, the very file the local cloud
runs), the batch function, who may do what with them, and how much of the account's Lambda concurrency runs may
take."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.app import (
    BATCH_BUCKETS_CONTEXT,
    CONFIG_CONTEXT,
    FALLBACK_ACCOUNT,
    FALLBACK_REGION,
    STAGE_CONTEXT,
    STAGES,
    cdk_json_context,
)
from infra.constructs.batch import RESULT_WRITER_ACTIONS, check_concurrency
from mlops.aws import environment, platform
from mlops.core.config import load_config
from mlops.local.cloud import Deployment, batch_definition

Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name
CONFIG = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
MODELS = [m.name for m in CONFIG.models]
# a model declaring a batch input outside the platform (s3://partner-exports/scoring/), and one whose runs would take
# more than a new account can give them
DECLARING = "tests/data/batch/mlops.toml"
GREEDY = "tests/data/batch/greedy.toml"


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
    # bounded: the model's batch_max_concurrency, as the Plan step reads it from the deployed mlops.toml; never
    # Step Functions' default (no limit) nor a number whoever starts a run chooses
    assert "MaxConcurrency" not in scoring
    assert scoring["MaxConcurrencyPath"] == "$.plan.max_concurrency"
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
    assert set(props["Environment"]["Variables"]) >= {environment.REGISTRY_TABLE}
    assert props["Timeout"] == 900


def _s3_access(synthesized: Synthesized, role: Any) -> dict[str, set[str]]:
    """S3 action -> where a role may do it: `<platform bucket>:<key pattern>`, or a foreign bucket's ARN."""
    buckets = {synthesized.logical_id(b): name for name, b in synthesized.stack.storage.buckets.items()}
    found: dict[str, set[str]] = {}
    for statement in _policy_statements(synthesized, synthesized.logical_id(role)):
        actions = [action for action in _as_list(statement["Action"]) if action.startswith("s3:")]
        for resource in _as_list(statement["Resource"]) if actions else []:
            rendered = synthesized.render(resource)
            lid = rendered.split(".", 1)[0]
            where = f"{buckets[lid]}:{rendered.partition('/')[2]}" if lid in buckets else rendered
            for action in actions:
                found.setdefault(action, set()).add(where)
    return found


def test_the_batch_function_reads_inputs_under_batch_and_writes_only_under_the_runs_prefix(
        synthesized: Synthesized) -> None:
    role = synthesized.stack.pipeline.functions["batch"].role
    access = _s3_access(synthesized, role)
    # a run writes nowhere runs read inputs, nor anywhere else of the platform
    assert access["s3:PutObject"] == {"data:batch-runs/*"}
    assert access["s3:GetObject"] == {"data:batch/*", "data:batch-runs/*", "models:models/*"}
    assert set(access) == {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}
    statements = _policy_statements(synthesized, synthesized.logical_id(role))
    assert not any(a.startswith("states:") for s in statements for a in _as_list(s["Action"]))


def test_the_state_machine_reads_a_runs_object_list_and_writes_its_results_and_nothing_else(
        synthesized: Synthesized) -> None:
    """The ItemReader reads the run's object list (a JSON object: GetObject only); the ResultWriter writes the map's
    results with what AWS documents for it, multipart actions included; both among a run's working files."""
    access = _s3_access(synthesized, synthesized.stack.batch.state_machine.role)
    results = "data:batch-runs/*/_batch/map/*"
    assert access == {"s3:GetObject": {"data:batch-runs/*/_batch/items.json", results},
                      **{action: {results} for action in RESULT_WRITER_ACTIONS if action != "s3:GetObject"}}
    assert set(access) == {"s3:GetObject", "s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"}


def _arn(value: Any, machine: str) -> str:
    """A template ARN as text, pseudo parameters as <AWS::...>, the batch state machine's name as <name>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_arn(part, machine) for part in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    assert value == {"Fn::Select": [6, {"Fn::Split": [":", {"Ref": machine}]}]}, value
    return "<name>"


def test_the_map_may_redrive_its_child_executions(synthesized: Synthesized) -> None:
    """A child execution is execution:<state machine>/<map run label>:<name> (AWS, "IAM policies for using
    Distributed Map state"): redriving a failed run redrives its map run's children, which execution:<name>:*, where
    the map starts, describes and stops them, does not name."""
    machine = _machine_lid(synthesized)
    policy = synthesized.logical_id(synthesized.stack.batch.node.find_child("DistributedMapPolicy"))
    statements = synthesized.resources[policy]["Properties"]["PolicyDocument"]["Statement"]
    found = {action: [_arn(r, machine) for r in _as_list(s["Resource"])]
             for s in statements for action in _as_list(s["Action"])}
    executions = f"arn:aws:states:{FALLBACK_REGION}:{FALLBACK_ACCOUNT}:execution:<name>"
    assert found == {"states:StartExecution": [f"<{machine}>"],
                     "states:DescribeExecution": [f"{executions}:*"], "states:StopExecution": [f"{executions}:*"],
                     "states:RedriveExecution": [f"{executions}/*:*"]}


def test_in_prod_declared_batch_inputs_are_read_only_grants_and_infer_keeps_its_reserved_concurrency(
        tmp_path: Path, synthesize_with: Any, synthesized: Synthesized) -> None:
    """One more synthesis (prod, with a model declaring s3://partner-exports/scoring/): the batch function may list
    and read that prefix and nothing else of the bucket, and write nothing there; batch runs and the pipeline cannot
    take what the infer functions keep. A new account can reserve nothing (dev), so nothing is reserved there."""
    prod = synthesize_with(tmp_path, **{STAGE_CONTEXT: "prod", CONFIG_CONTEXT: DECLARING})
    role = prod.stack.pipeline.functions["batch"].role
    access = _s3_access(prod, role)
    assert "arn:aws:s3:::partner-exports/scoring/*" in access["s3:GetObject"]
    assert access["s3:PutObject"] == {"data:batch-runs/*"}
    listing = [s for s in _policy_statements(prod, prod.logical_id(role))
               if "s3:ListBucket" in _as_list(s["Action"])
               and prod.render(_as_list(s["Resource"])[0]).endswith(":::partner-exports")]
    assert [s["Condition"] for s in listing] == [{"StringLike": {"s3:prefix": "scoring/*"}}]

    assert STAGES["prod"].infer_reserved_concurrency
    for model, (_lid, resource) in prod.serving().items():
        reserved = resource["Properties"].get("ReservedConcurrentExecutions")
        assert reserved == STAGES["prod"].infer_reserved_concurrency, model
    assert STAGES[cdk_json_context()[STAGE_CONTEXT]].infer_reserved_concurrency is None
    for model, (_lid, resource) in synthesized.serving().items():
        assert "ReservedConcurrentExecutions" not in resource["Properties"], model


def test_the_shipped_stages_fit_their_accounts() -> None:
    for name, stage in STAGES.items():
        reserved = {**stage.reserved_concurrency,
                    **{f"infer ({m})": stage.infer_reserved_concurrency for m in MODELS
                       if stage.infer_reserved_concurrency}}
        check_concurrency(quota=stage.lambda_concurrency_quota, reserved=reserved,
                          batch={m.name: m.batch_max_concurrency for m in CONFIG.models})
        assert stage.lambda_concurrency_quota >= 10, name


@pytest.mark.parametrize(("quota", "reserved", "batch", "words"), [
    # Lambda keeps 100 unreserved: an account of 10 (a new one) can reserve nothing at all
    (10, {"infer (m)": 1}, {"m": 1}, "Lambda keeps at least 100 unreserved and would refuse the deploy"),
    (1000, {"ingest": 20, "infer (a)": 500, "infer (b)": 400}, {"a": 1}, "reserves 920 concurrent"),
    # a run may take at most half of what is unreserved: (10 - 0) // 2 = 5
    (10, {}, {"m": 6}, "batch_max_concurrency of m (6) in mlops.toml is more than 5"),
    (1000, {"ingest": 20, "infer (m)": 50}, {"m": 466, "n": 5}, "of m (466) in mlops.toml is more than 465"),
])
def test_an_impossible_combination_of_concurrencies_is_refused(quota: int, reserved: dict[str, int],
                                                               batch: dict[str, int], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        check_concurrency(quota=quota, reserved=reserved, batch=batch)


def test_the_synthesis_refuses_batch_runs_the_stage_cannot_give_concurrency_to(tmp_path: Path,
                                                                                 synthesize_with: Any) -> None:
    with pytest.raises(ValueError, match=r"batch_max_concurrency of breast-cancer \(6\) in mlops.toml is more "
                                         r"than 5: .*\(10, lambda_concurrency_quota in infra/app.py STAGES\)"):
        synthesize_with(tmp_path, **{CONFIG_CONTEXT: GREEDY})


def test_whole_foreign_buckets_are_no_longer_granted(tmp_path: Path, synthesize_with: Any) -> None:
    """`-c mlops:batch-buckets=...` used to grant the batch function and the state machine whole foreign buckets, read
    and write: it is refused, rather than silently dropped, with what to do instead."""
    with pytest.raises(SystemExit, match=r"declares in mlops.toml \(batch_inputs"):
        synthesize_with(tmp_path, **{BATCH_BUCKETS_CONTEXT: "partner-exports"})


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
        assert props["Environment"]["Variables"][environment.BATCH_STATE_MACHINE_ARN] == {"Ref": machine}
        # where runs read and write: the route checks a run's input and names its prefix there
        data = synthesized.logical_id(synthesized.stack.storage.buckets["data"])
        assert props["Environment"]["Variables"][environment.DATA_BUCKET] == {"Ref": data}


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
    assert f'"{environment.BATCH_STATE_MACHINE_ARN}":"ref:{machine}"' in rendered


def test_the_outputs_name_the_register_function_the_model_import_invokes(synthesized: Synthesized) -> None:
    [register] = [lid for lid, fn in synthesized.of_type("AWS::Lambda::Function").items()
                  if {"Key": "mlops:function", "Value": "register"} in fn["Properties"].get("Tags", [])]
    rendered = synthesized.render(synthesized.template["Outputs"]["Environment"]["Value"])
    assert f'"{environment.REGISTER_FUNCTION}":"ref:{register}"' in rendered

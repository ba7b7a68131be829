"""The training pipeline's SageMaker path: the TrainingBackend choice in the ASL, the training jobs' image (the train
function's), their role (the train function's data access, the image, the logs) and what the state machine may do
with them; and the image's entrypoint, which SageMaker and Lambda run alike."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from infra.constructs.function import DOCKERFILE
from infra.constructs.pipeline import SYNC_RULE, TRAINING_JOB_PREFIX
from mlops.aws import platform
from mlops.aws.access import ACCESS

Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name
ASL = json.loads(platform.TRAINING_ASL.read_text())
STATES = ASL["States"]
TRAINING_TASKS = ("Train", "TrainOnSageMaker", "LoadTrainingJobResult")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of(synthesized: Synthesized, role: Any) -> list[dict[str, Any]]:
    ref = {"Ref": synthesized.logical_id(role)}
    return [statement for policy in synthesized.of_type("AWS::IAM::Policy").values()
            if ref in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]]


def allowed(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if s["Effect"] == "Allow" and action in as_list(s["Action"])]


def rendered(synthesized: Synthesized, statement: dict[str, Any]) -> list[str]:
    return [synthesized.render(resource) for resource in as_list(statement["Resource"])]


# -- the ASL ----------------------------------------------------------------------------------------------------
def test_the_pipeline_starts_by_choosing_the_training_backend() -> None:
    choice = STATES[ASL["StartAt"]]
    assert choice["Type"] == "Choice"
    [rule] = choice["Choices"]
    # an input without the field (started by hand, or before it existed) trains on Lambda
    assert rule["And"] == [{"Variable": "$.training_backend", "IsPresent": True},
                           {"Variable": "$.training_backend", "StringEquals": "sagemaker"}]
    assert rule["Next"] == "TrainOnSageMaker"
    assert choice["Default"] == "Train"
    assert STATES["Train"]["Resource"] == "${TrainFunctionArn}"


def test_both_backends_hand_evaluate_the_train_result_in_the_same_place() -> None:
    assert STATES["Train"]["ResultPath"] == "$.train"
    assert STATES["Train"]["Next"] == "Evaluate"
    path = ["TrainOnSageMaker", "LoadTrainingJobResult", "UseTrainingJobResult", "Evaluate"]
    assert [STATES[state]["Next"] for state in path[:-1]] == path[1:]
    assert STATES["LoadTrainingJobResult"]["ResultPath"] == "$.train"
    assert STATES["UseTrainingJobResult"] == {**STATES["UseTrainingJobResult"], "Type": "Pass",
                                              "InputPath": "$.train.summary", "ResultPath": "$.train"}
    # a failure on either path is recorded like any other
    for task in TRAINING_TASKS:
        assert STATES[task]["Catch"] == STATES["Evaluate"]["Catch"], task
        assert STATES[task]["Retry"], task


def test_the_training_job_is_named_within_sagemakers_rules_and_waited_for() -> None:
    task = STATES["TrainOnSageMaker"]
    assert task["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    parameters = task["Parameters"]
    name = parameters["TrainingJobName.$"]
    assert name == f"States.Format('{TRAINING_JOB_PREFIX}{{}}', States.Hash($$.Execution.Id, 'MD5'))"
    assert len(TRAINING_JOB_PREFIX) + 32 <= 63  # an MD5 in hex
    assert parameters["AlgorithmSpecification"]["TrainingImage"] == "${TrainingImageUri}"
    assert parameters["RoleArn"] == "${SageMakerRoleArn}"
    assert parameters["ResourceConfig"]["InstanceType.$"] == "$.sagemaker.instance_type"
    assert parameters["StoppingCondition"] == {"MaxRuntimeInSeconds.$": "$.sagemaker.max_runtime_seconds"}
    assert parameters["Environment"]["MODELS_BUCKET"] == "${ModelsBucketName}"


# -- the stack --------------------------------------------------------------------------------------------------
def test_training_jobs_run_the_train_functions_image_with_their_own_role(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    props, _text = synthesized.state_machine(platform.STATE_MACHINE)
    substitutions = props["DefinitionSubstitutions"]
    train = synthesized.functions()["train"][1]["Properties"]
    assert substitutions["TrainingImageUri"] == train["Code"]["ImageUri"]
    role = synthesized.logical_id(stack.pipeline.training_job_role)
    assert substitutions["SageMakerRoleArn"] == {"Fn::GetAtt": [role, "Arn"]}
    assert substitutions["ModelsBucketName"] == {"Ref": synthesized.logical_id(stack.storage.buckets["models"])}
    assert substitutions["DataKeyArn"] == {"Fn::GetAtt": [synthesized.logical_id(stack.storage.key), "Arn"]}
    trust = synthesized.resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "sagemaker.amazonaws.com"}]
    # the rollout's state machine has no training jobs
    rollout, _ = synthesized.state_machine(platform.ROLLOUT_STATE_MACHINE)
    assert set(rollout["DefinitionSubstitutions"]).isdisjoint(platform.ASL_TRAINING_JOB_SUBSTITUTIONS)


def test_training_job_role_has_the_train_functions_data_access_the_image_and_its_logs(
        synthesized: Synthesized) -> None:
    stack = synthesized.stack
    statements = statements_of(synthesized, stack.pipeline.training_job_role)
    buckets = {synthesized.logical_id(b): name for name, b in stack.storage.buckets.items()}
    objects = set()
    for action in ("s3:GetObject", "s3:PutObject"):
        for statement in allowed(statements, action):
            for resource in as_list(statement["Resource"]):
                arn, suffix = resource["Fn::Join"][1]
                objects.add((action, buckets[arn["Fn::GetAtt"][0]], suffix.lstrip("/")))
    train = ACCESS["train"]
    assert objects == {("s3:GetObject", b, f"{p}*") for b, ps in train.read.items() for p in ps} | {
        ("s3:PutObject", b, f"{p}*") for b, ps in train.write.items() for p in ps}
    assert not [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]

    # the image's repository only (its name is the image URI's path)
    [pull] = allowed(statements, "ecr:BatchGetImage")
    image = synthesized.functions()["train"][1]["Properties"]["Code"]["ImageUri"]
    [repository] = as_list(pull["Resource"])
    assert json.dumps(image) in json.dumps(repository)
    assert [s["Resource"] for s in allowed(statements, "ecr:GetAuthorizationToken")] == ["*"]
    [streams] = allowed(statements, "logs:PutLogEvents")
    assert [r.endswith(f":log-group:/aws/sagemaker/TrainingJobs:log-stream:{TRAINING_JOB_PREFIX}*")
            for r in rendered(synthesized, streams)] == [True]


def test_state_machine_may_run_only_its_training_jobs_with_only_that_role(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    statements = statements_of(synthesized, stack.pipeline.state_machines[platform.STATE_MACHINE].role)
    # what AWS documents for the createTrainingJob.sync integration (ListTags included), on these jobs only
    for action in ("sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                   "sagemaker:AddTags", "sagemaker:ListTags"):
        [statement] = allowed(statements, action)
        [resource] = rendered(synthesized, statement)
        assert resource.endswith(f":training-job/{TRAINING_JOB_PREFIX}*"), (action, resource)
    [passes] = allowed(statements, "iam:PassRole")
    assert passes["Resource"] == {"Fn::GetAtt": [synthesized.logical_id(stack.pipeline.training_job_role), "Arn"]}
    assert passes["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    for action in ("events:PutTargets", "events:PutRule", "events:DescribeRule"):
        [statement] = allowed(statements, action)
        assert rendered(synthesized, statement)[0].endswith(f":rule/{SYNC_RULE}")
    # LoadTrainingJobResult: the candidates' train.json, nothing else in the bucket
    [reads] = allowed(statements, "s3:GetObject")
    models = synthesized.logical_id(stack.storage.buckets["models"])
    assert rendered(synthesized, reads) == [f"{models}.Arn/candidates/*"]
    # the rollout's state machine may do none of it
    rollout = statements_of(synthesized, stack.pipeline.state_machines[platform.ROLLOUT_STATE_MACHINE].role)
    assert not [s for s in rollout if any(a.startswith(("sagemaker:", "iam:", "events:", "s3:"))
                                          for a in as_list(s["Action"]))]


# -- the image --------------------------------------------------------------------------------------------------
def entrypoint_script(tmp_path: Path) -> Path:
    """The entrypoint the Dockerfile writes, written here by the very same command."""
    dockerfile = (platform.ROOT / DOCKERFILE).read_text()
    match = re.search(r"^RUN (printf .*?) > (/usr/local/bin/mlops-entrypoint) \\$", dockerfile, re.M | re.S)
    assert match, "the Dockerfile writes the entrypoint with printf"
    assert f'ENTRYPOINT ["{match.group(2)}"]' in dockerfile
    script = tmp_path / "mlops-entrypoint"
    subprocess.run(["sh", "-c", f"{match.group(1)} > {script}"], check=True)
    script.chmod(0o755)
    return script


def test_image_entrypoint_runs_the_training_job_for_sagemaker_and_the_handler_for_lambda(tmp_path: Path) -> None:
    script = entrypoint_script(tmp_path)
    # a python3 that says how it was called
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text('#!/bin/sh\necho "python3 $*"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    sagemaker = subprocess.run([str(script), "train"], env=env, capture_output=True, text=True, check=True)
    assert sagemaker.stdout.strip() == "python3 -m mlops.pipeline.sagemaker"

    # Lambda passes the handler (CMD) on to the base image's entrypoint, absent here
    handler = "functions.evaluate.handler.handler"
    lambda_ = subprocess.run([str(script), handler], env=env, capture_output=True, text=True, check=False)
    assert lambda_.returncode != 0
    assert "/lambda-entrypoint.sh" in lambda_.stderr
    assert "python3" not in lambda_.stdout

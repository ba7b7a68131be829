"""What AWS enforces, the local cloud enforces: each function's role (the synthesized template's policy) on every
AWS call its handler makes, and the Lambda resource policies API Gateway, S3 and EventBridge need to invoke."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import template_policies
from botocore.exceptions import ClientError

from mlops.aws.platform import scheduled_rules
from mlops.core.config import ProjectConfig
from mlops.local.embedded import EmbeddedCloud, embedded_cloud
from mlops.local.iam.policies import LocalNames
from mlops.local.scheduler import Job, lambda_invoker
from mlops.release.deploy import LIVE_ALIAS, ServingDeployer
from mlops.release.lifecycle import Lifecycle

MODEL = "breast-cancer"
ROW_FIELD = "mean radius"


def _predict(cloud: EmbeddedCloud, rows: Any) -> tuple[int, Any]:
    return cloud.predict(MODEL, rows)


def _first_row(csv: bytes) -> dict[str, float]:
    header, first = csv.decode().splitlines()[:2]
    row = dict(zip(header.split(","), (float(v) for v in first.split(",")), strict=True))
    row.pop("target")
    return row


def _remove_api_permission(cloud: EmbeddedCloud) -> None:
    lam = cloud.client("lambda")
    function = cloud.deployment.infer_function(MODEL)
    policy = json.loads(lam.get_policy(FunctionName=function, Qualifier=LIVE_ALIAS)["Policy"])
    for statement in policy["Statement"]:
        lam.remove_permission(FunctionName=function, StatementId=statement["Sid"], Qualifier=LIVE_ALIAS)


# -- API Gateway and the live alias ---------------------------------------------------------------------------------
def test_a_fresh_stack_answers_503_until_a_model_is_deployed(cloud: EmbeddedCloud) -> None:
    """The deploy creates `live` (on $LATEST) with API Gateway's permission: no 500 before the first model."""
    status, answer = _predict(cloud, {ROW_FIELD: 1.0})
    assert status == 503
    assert answer["error"] == "NoModelDeployed"
    assert "deployed" in answer["message"]


def test_without_its_permission_the_gateway_answers_500_and_register_repairs_it(
        cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    _remove_api_permission(cloud)
    status, answer = _predict(cloud, {ROW_FIELD: 1.0})
    assert (status, answer) == (500, {"message": "Internal server error"})  # API Gateway's own answer
    cloud.upload(MODEL, "data.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED"
    status, answer = _predict(cloud, _first_row(breast_cancer_csv))
    assert status == 200, answer
    assert answer["model_version"] == 1


def test_models_republish_repairs_a_lost_permission(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    cloud.upload(MODEL, "data.csv", breast_cancer_csv)
    cloud.wait_for_executions(1)
    _remove_api_permission(cloud)
    assert _predict(cloud, _first_row(breast_cancer_csv))[0] == 500
    function = cloud.deployment.infer_function(MODEL)
    lifecycle = Lifecycle(registry=cloud.registry, function=function,
                          deployer=ServingDeployer(cloud.client("lambda"),
                                                   api_source_arn=cloud.deployment.api_source_arn))
    lifecycle.republish(MODEL, who="test")
    assert _predict(cloud, _first_row(breast_cancer_csv))[0] == 200


def test_register_adds_no_second_permission_when_one_allows_the_api(cloud: EmbeddedCloud) -> None:
    deployer = ServingDeployer(cloud.client("lambda"), api_source_arn=cloud.deployment.api_source_arn)
    function = cloud.deployment.infer_function(MODEL)
    assert deployer.ensure_api_permission(function) is False  # the deploy's permission covers it
    _remove_api_permission(cloud)
    assert deployer.ensure_api_permission(function) is True
    assert deployer.ensure_api_permission(function) is False


# -- S3 notifications and EventBridge schedules ----------------------------------------------------------------------
def test_s3_invokes_ingest_only_with_its_permission(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    lam, s3 = cloud.client("lambda"), cloud.client("s3")
    ingest = cloud.deployment.function_arns["ingest"]
    [statement] = json.loads(lam.get_policy(FunctionName=ingest)["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    bucket = cloud.deployment.data_bucket
    configuration = s3.get_bucket_notification_configuration(Bucket=bucket)
    configuration.pop("ResponseMetadata")
    lam.remove_permission(FunctionName=ingest, StatementId=statement["Sid"])

    cloud.upload(MODEL, "data.csv", breast_cancer_csv)
    assert not [i for i in cloud.runtime.invocations if i.function.endswith("-ingest")]  # the event was dropped
    assert not list(cloud.data.keys(f"curated/{MODEL}/"))
    # and S3 refuses a configuration naming a function it may not invoke, as AWS does
    with pytest.raises(ClientError, match="Unable to validate the following destination configurations"):
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)


def test_eventbridge_invokes_a_schedule_only_with_its_permission(cloud: EmbeddedCloud, config_file: Path) -> None:
    from mlops.core.config import load_config

    rule = scheduled_rules(load_config(config_file))[0]
    function = cloud.deployment.function_arns[rule.function]
    job = Job(rule.rule_name, function.rsplit(":", 1)[-1], 3600, dict(rule.input))
    lines: list[str] = []
    invoke = lambda_invoker(cloud.client("lambda"), lines.append)
    invoke(job)
    assert [i for i in cloud.runtime.invocations if i.function == job.function]
    before = len(cloud.runtime.invocations)
    cloud.client("lambda").remove_permission(FunctionName=function, StatementId=rule.rule_name)
    invoke(job)
    assert len(cloud.runtime.invocations) == before
    assert "not invoked" in lines[-1]
    assert "events.amazonaws.com" in lines[-1]


# -- each function's role ---------------------------------------------------------------------------------------------
def _without(grant: tuple[str, str]) -> Any:
    """The template's policies, with one action removed from one function's statements on one resource pattern."""
    action, resource_suffix = grant

    def source(names: LocalNames, config: ProjectConfig, config_file: Path) -> Mapping[str, Sequence[Any]]:
        policies = {name: [dict(s) for s in statements]
                    for name, statements in template_policies.guard_policies(names, config, config_file).items()}
        ingest = f"{names.project}-ingest"
        removed = 0
        for statement in policies[ingest]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if action in actions and any(r.endswith(resource_suffix) for r in resources):
                statement["Resource"] = [r for r in resources if not r.endswith(resource_suffix)] or ["arn:aws:none"]
                removed += 1
        assert removed, f"the template grants ingest no {action} on *{resource_suffix}"
        return policies

    return source


def test_the_guard_bites_a_grant_removed_from_the_template_fails_its_path(
        config_file: Path, breast_cancer_csv: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_CONFIG", str(config_file))
    with embedded_cloud(config_file, policies=_without(("s3:PutObject", "/curated/*"))) as cloud:
        cloud.upload(MODEL, "data.csv", breast_cancer_csv)
        [ingest] = [i for i in cloud.runtime.invocations if i.function.endswith("-ingest")]
        assert ingest.errored
        assert ingest.result["errorType"] == "ClientError"
        assert "AccessDenied" in ingest.result["errorMessage"]
        assert "s3:PutObject" in ingest.result["errorMessage"]
        assert "/curated/" in ingest.result["errorMessage"]
        assert not list(cloud.data.keys(f"curated/{MODEL}/"))
        assert cloud.guard is not None
        assert cloud.guard.denials
        assert cloud.executions() == []  # nothing was trained


def test_the_whole_loop_runs_within_the_template_s_policies(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """Upload, train, register and serve under each function's deployed role: no call outside it."""
    cloud.upload(MODEL, "data.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED"
    status, _answer = _predict(cloud, _first_row(breast_cancer_csv))
    assert status == 200
    assert cloud.client("lambda").get_alias(FunctionName=cloud.deployment.infer_function(MODEL),
                                            Name=LIVE_ALIAS)["FunctionVersion"] != "$LATEST"
    assert cloud.guard is not None
    assert cloud.guard.checked > 20
    assert cloud.guard.denials == []

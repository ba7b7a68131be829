"""scripts/preflight.py, run by the deploy workflow before `cdk deploy`, against moto's account (CloudFormation, SSM,
API Gateway, IAM, STS). moto does not implement lambda:GetAccountSettings, nor lets anyone write AWS's public
`/aws/service/...` parameters: those two answers are given here, as AWS documents them."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.app import API_GATEWAY_LOGGING_ROLE_CONTEXT, LAMBDA_MEMORY_QUOTA_CONTEXT, STAGE_CONTEXT
from mlops.aws import platform

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


def load_preflight() -> ModuleType:
    spec = importlib.util.spec_from_file_location("preflight", platform.ROOT / "scripts" / "preflight.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


preflight = load_preflight()
# what GetAccountSettings answers for an established account and for a new one
ESTABLISHED = {"ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 1000}
NEW_ACCOUNT = {"ConcurrentExecutions": 10, "UnreservedConcurrentExecutions": 10}


class Lambda:
    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits

    def get_account_settings(self) -> dict[str, Any]:
        return {"AccountLimit": {**self.limits, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
                                 "TotalCodeSize": 80530636800}}


class PublicParameters:
    """moto's SSM, plus the public parameters AWS publishes (which no one else may write)."""

    def __init__(self, ssm: Any, public: dict[str, str]) -> None:
        self.ssm, self.public = ssm, public

    def get_parameter(self, Name: str) -> dict[str, Any]:  # boto3's keyword
        if Name in self.public:
            return {"Parameter": {"Name": Name, "Value": self.public[Name]}}
        return dict(self.ssm.get_parameter(Name=Name))


class Session:
    region_name = REGION

    def __init__(self, limits: dict[str, int], public: dict[str, str]) -> None:
        self.limits, self.public = limits, public

    def client(self, service: str) -> Any:
        if service == "lambda":
            return Lambda(self.limits)
        client = boto3.client(service, region_name=REGION)
        return PublicParameters(client, self.public) if service == "ssm" else client


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def bootstrap(version: int) -> None:
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="CDKToolkit", TemplateBody=json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}))
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/cdk-bootstrap/hnb659fds/version", Value=str(version), Type="String")


def run(limits: dict[str, int] = ESTABLISHED, **context: str) -> dict[str, Any]:
    session = Session(limits, {})
    findings = preflight.run(session, preflight.context([f"{k}={v}" for k, v in context.items()]))
    return {f.check: f for f in findings}


def test_a_bootstrapped_account_passes(aws: None) -> None:
    bootstrap(29)
    found = run()
    assert {check: f.status for check, f in found.items()} == {
        "CDK bootstrap": "ok", "API Gateway CloudWatch Logs role": "ok", "Lambda concurrency": "ok",
        # train asks for 4096 MB: no API says whether this account allows it
        "Lambda memory": "WARN"}
    # declaring the account's memory quota settles it
    assert run(**{LAMBDA_MEMORY_QUOTA_CONTEXT: "10240"})["Lambda memory"].status == "ok"


def test_an_account_never_bootstrapped_is_told_to_bootstrap(aws: None) -> None:
    finding = run()["CDK bootstrap"]
    assert finding.status == "FAIL"
    assert f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}" in finding.fix
    assert "FAIL CDK bootstrap" in preflight.report(list(run().values()))


def test_an_old_bootstrap_is_told_to_update(aws: None) -> None:
    bootstrap(preflight.MIN_BOOTSTRAP_VERSION - 1)
    finding = run()["CDK bootstrap"]
    assert finding.status == "FAIL"
    assert f"needs at least {preflight.MIN_BOOTSTRAP_VERSION}" in finding.detail
    assert "npx cdk bootstrap" in finding.fix


def test_the_bootstrap_version_is_what_the_cloud_assembly_requires(synthesized: Synthesized) -> None:
    manifest = json.loads((synthesized.assembly_dir / "manifest.json").read_text())
    required = set()
    for artifact in manifest["artifacts"].values():
        properties = artifact.get("properties", {})
        required |= {properties.get("requiresBootstrapStackVersion"),
                     properties.get("lookupRole", {}).get("requiresBootstrapStackVersion")}
    highest = max(v for v in required if v is not None)
    assert highest == preflight.MIN_BOOTSTRAP_VERSION


def test_a_new_accounts_quotas_are_flagged(aws: None) -> None:
    bootstrap(29)
    found = run(limits=NEW_ACCOUNT)
    memory = found["Lambda memory"]
    assert memory.status == "FAIL"
    assert "train 4096 MB" in memory.detail
    assert LAMBDA_MEMORY_QUOTA_CONTEXT in memory.fix
    # dev reserves nothing; prod reserves for ingest and each infer function, more than an account of 10 can, and
    # is sized for the default 1,000 (infra/app.py STAGES)
    assert found["Lambda concurrency"].status == "ok"
    prod = run(limits=NEW_ACCOUNT, **{STAGE_CONTEXT: "prod"})
    assert prod["Lambda concurrency"].status == "FAIL"
    assert "keeps 100 unreserved" in prod["Lambda concurrency"].detail
    assert "ingest 20" in prod["Lambda concurrency"].detail
    assert prod["Lambda concurrency quota"].status == "FAIL"
    assert "sized for 1000 concurrent executions" in prod["Lambda concurrency quota"].detail
    assert run(**{STAGE_CONTEXT: "prod"})["Lambda concurrency"].status == "ok"


def test_the_api_gateway_logging_role_is_checked_when_the_stack_does_not_create_it(aws: None) -> None:
    bootstrap(29)
    external = {API_GATEWAY_LOGGING_ROLE_CONTEXT: "false"}
    finding = run(**external)["API Gateway CloudWatch Logs role"]
    assert finding.status == "FAIL"
    assert "update-account" in finding.fix
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="apigw-logs", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "apigateway.amazonaws.com"}}]}))["Role"]
    boto3.client("apigateway", region_name=REGION).update_account(patchOperations=[
        {"op": "replace", "path": "/cloudwatchRoleArn", "value": role["Arn"]}])
    assert run(**external)["API Gateway CloudWatch Logs role"].status == "ok"
    iam.delete_role(RoleName="apigw-logs")
    assert "no longer exists" in run(**external)["API Gateway CloudWatch Logs role"].detail


def test_main_exits_1_and_says_what_to_do(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    session = Session(ESTABLISHED, {})
    assert preflight.main(["-c", f"{STAGE_CONTEXT}=dev", "--region", REGION],
                          new_session=lambda region_name: session) == 1
    out = capsys.readouterr().out
    assert "FAIL CDK bootstrap" in out
    assert "what to do: bootstrap this account and region once" in out

"""Checks, before `cdk deploy`, what the stack needs of the account and region but cannot create itself.

    python scripts/preflight.py [-c mlops:stage=prod] [-c key=value ...] [--region us-east-1]

The context is cdk.json's, overridden by `-c` as for `cdk deploy` (give it the same ones). Each check prints `ok`,
`WARN` (the deploy may go through, read why) or `FAIL` with what to do; the exit status is 1 when any check fails.

- the CDK bootstrap (CDKToolkit): deployed, not stuck in a failed state, and at least the version the app's cloud
  assembly requires (its SSM parameter `/cdk-bootstrap/<qualifier>/version`);
- API Gateway's CloudWatch Logs role, an account-and-region setting the stage's access logging needs: only when the
  stack does not create it (`-c mlops:api-gateway-logging-role=false`), it must be set and the role must exist;
- Lambda's quotas (lambda:GetAccountSettings): the account must have the concurrency the stage is sized for, and the
  stage's reservations (its functions' and each infer function's) must leave the 100 unreserved executions Lambda
  keeps; a new account (below the default 1,000 concurrent executions) also has a reduced memory
  quota, which no API reports, and refuses functions above 3,008 MB;

What the caller needs: ssm:GetParameter (on the bootstrap's parameter),
cloudformation:DescribeStacks (CDKToolkit), apigateway:GET (/account), iam:GetRole, lambda:GetAccountSettings,
sts:GetCallerIdentity.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `infra` is an application directory, not an installed package

from infra.app import (  # noqa: E402
    API_GATEWAY_LOGGING_ROLE_CONTEXT,
    CONFIG_CONTEXT,
    LAMBDA_MEMORY_QUOTA_CONTEXT,
    STAGE_CONTEXT,
    STAGES,
    cdk_json_context,
)
from infra.constructs.function import NEW_ACCOUNT_MEMORY_MB  # noqa: E402
from mlops.aws import platform  # noqa: E402
from mlops.core.config import load_config  # noqa: E402

# The highest `requiresBootstrapStackVersion` of the cloud assembly aws-cdk-lib writes for this app (the deploy role
# and assets need 6, the lookup role `cdk diff` uses needs 8); tests/infra/test_preflight.py keeps it in step.
MIN_BOOTSTRAP_VERSION = 8
DEFAULT_QUALIFIER = "hnb659fds"
QUALIFIER_CONTEXT = "@aws-cdk/core:bootstrapQualifier"
TOOLKIT_STACK = "CDKToolkit"
# Lambda keeps this many executions unreserved: a reservation that would leave fewer is refused
UNRESERVED_MINIMUM = 100
# Lambda's default quota of concurrent executions; a new account starts below it, with a reduced memory quota too
DEFAULT_CONCURRENCY = 1000
API_GATEWAY_PRINCIPAL = "apigateway.amazonaws.com"
HEALTHY_STACK = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE",
                 "IMPORT_ROLLBACK_COMPLETE")


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | WARN | FAIL
    detail: str
    fix: str = ""


def context(overrides: Sequence[str]) -> dict[str, Any]:
    """cdk.json's context with `key=value` overrides, as the CDK CLI merges them."""
    merged = dict(cdk_json_context())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-c takes key=value, not {item!r}")
        merged[key] = value
    return merged


def flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() not in ("false", "no", "0")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def check_bootstrap(ssm: Any, cloudformation: Any, *, qualifier: str, account: str, region: str,
                    toolkit_stack: str = TOOLKIT_STACK) -> list[Finding]:
    bootstrap = f"npx cdk bootstrap aws://{account}/{region} --no-notices"
    parameter = f"/cdk-bootstrap/{qualifier}/version"
    try:
        stack = cloudformation.describe_stacks(StackName=toolkit_stack)["Stacks"][0]
    except ClientError as error:
        if error_code(error) != "ValidationError":
            raise
        return [Finding("CDK bootstrap", "FAIL", f"no {toolkit_stack} stack in {account}/{region}",
                        f"bootstrap this account and region once: {bootstrap}")]
    status = stack["StackStatus"]
    if status not in HEALTHY_STACK:
        return [Finding("CDK bootstrap", "FAIL", f"{toolkit_stack} is {status}",
                        f"wait for it to finish, or delete it if it failed to create, then run {bootstrap}")]
    try:
        version = int(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    except ClientError as error:
        if error_code(error) != "ParameterNotFound":
            raise
        return [Finding("CDK bootstrap", "FAIL", f"{toolkit_stack} exists but {parameter} does not (bootstrapped "
                        f"with another qualifier than {qualifier}?)",
                        f"run {bootstrap}, or set {QUALIFIER_CONTEXT} in cdk.json to the qualifier you used")]
    if version < MIN_BOOTSTRAP_VERSION:
        return [Finding("CDK bootstrap", "FAIL", f"version {version}, this app needs at least {MIN_BOOTSTRAP_VERSION}",
                        f"update it with the project's CDK CLI: {bootstrap}")]
    return [Finding("CDK bootstrap", "ok", f"{toolkit_stack} {status}, version {version} (at least "
                    f"{MIN_BOOTSTRAP_VERSION} needed)")]


def check_api_gateway_logging_role(apigateway: Any, iam: Any, *, stack_creates_it: bool) -> list[Finding]:
    check = "API Gateway CloudWatch Logs role"
    current = apigateway.get_account().get("cloudwatchRoleArn")
    if stack_creates_it:
        detail = "the stack creates one and sets it (AWS::ApiGateway::Account), and keeps it when deleted"
        if current:
            detail += f"; it replaces the account's current setting, {current}, which keeps working for its owner"
        return [Finding(check, "ok", detail)]
    manage = (f"the stack does not create it ({API_GATEWAY_LOGGING_ROLE_CONTEXT}=false): set one with a role API "
              f"Gateway may assume ({API_GATEWAY_PRINCIPAL}, managed policy AmazonAPIGatewayPushToCloudWatchLogs): "
              "aws apigateway update-account --patch-operations op=replace,path=/cloudwatchRoleArn,value=<role arn>; "
              f"or let the stack create it (drop -c {API_GATEWAY_LOGGING_ROLE_CONTEXT}=false)")
    if not current:
        return [Finding(check, "FAIL", "this account and region have none: a stage with access logging fails "
                        "to deploy (\"CloudWatch Logs role ARN must be set in account settings\")", manage)]
    try:
        role = iam.get_role(RoleName=current.rsplit("/", 1)[-1])["Role"]
    except ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        return [Finding(check, "FAIL", f"the account's setting names {current}, which no longer exists", manage)]
    trusted = str(role.get("AssumeRolePolicyDocument", ""))
    if API_GATEWAY_PRINCIPAL not in trusted:
        return [Finding(check, "FAIL", f"{current} does not trust {API_GATEWAY_PRINCIPAL}", manage)]
    return [Finding(check, "ok", f"set to {current}")]


def check_lambda_quotas(lambda_client: Any, *, reserved: Mapping[str, int], memory: Mapping[str, int],
                        declared_memory_quota_mb: int | None, assumed_concurrency: int | None = None) -> list[Finding]:
    """`reserved`: the stage's reservations by function; `assumed_concurrency`: the account quota the stage was
    sized for (infra/app.py STAGES lambda_concurrency_quota)."""
    limits = lambda_client.get_account_settings()["AccountLimit"]
    total, unreserved = int(limits["ConcurrentExecutions"]), int(limits["UnreservedConcurrentExecutions"])
    findings = []
    increase = "ask for more concurrent executions (Service Quotas, Lambda, \"Concurrent executions\")"
    if assumed_concurrency is not None and total < assumed_concurrency:
        findings.append(Finding("Lambda concurrency quota", "FAIL",
                                f"the stage is sized for {assumed_concurrency} concurrent executions (infra/app.py "
                                f"STAGES), this account has {total}",
                                f"{increase}, or deploy a stage sized for this account"))
    wanted = sum(reserved.values())
    reservations = ", ".join(f"{name} {n}" for name, n in sorted(reserved.items())) or "none"
    if wanted and wanted > total - UNRESERVED_MINIMUM:
        findings.append(Finding("Lambda concurrency", "FAIL",
                                f"the stage reserves {wanted} ({reservations}); this account has {total} concurrent "
                                f"executions and Lambda keeps {UNRESERVED_MINIMUM} unreserved",
                                f"{increase}, or reserve less in infra/app.py STAGES"))
    elif wanted and wanted > unreserved - UNRESERVED_MINIMUM:
        findings.append(Finding("Lambda concurrency", "WARN",
                                f"the stage reserves {wanted} ({reservations}) and {unreserved} of {total} are "
                                "unreserved now: enough only if this stack already holds those reservations",
                                f"{increase}, or release other functions' reservations"))
    else:
        findings.append(Finding("Lambda concurrency", "ok",
                                f"{total} concurrent executions, {unreserved} unreserved; the stage reserves "
                                f"{wanted} ({reservations})"))
    largest = max(memory.values())
    above = ", ".join(f"{name} {mb} MB" for name, mb in sorted(memory.items()) if mb > NEW_ACCOUNT_MEMORY_MB)
    if largest <= NEW_ACCOUNT_MEMORY_MB:
        findings.append(Finding("Lambda memory", "ok",
                                f"every function fits a new account's {NEW_ACCOUNT_MEMORY_MB} MB"))
    elif declared_memory_quota_mb is not None and declared_memory_quota_mb >= largest:
        findings.append(Finding("Lambda memory", "ok", f"{above}: within the {declared_memory_quota_mb} MB declared "
                                f"with {LAMBDA_MEMORY_QUOTA_CONTEXT}"))
    elif total < DEFAULT_CONCURRENCY:
        findings.append(Finding("Lambda memory", "FAIL",
                                f"{above}; this account has a new account's quotas ({total} concurrent executions, "
                                f"below the default {DEFAULT_CONCURRENCY}), and a new account's functions are refused "
                                f"above {NEW_ACCOUNT_MEMORY_MB} MB",
                                "ask AWS Support to raise the Lambda memory quota (AWS also raises it with usage); if "
                                f"you know this account allows it, say so: -c {LAMBDA_MEMORY_QUOTA_CONTEXT}=<MB>"))
    else:
        findings.append(Finding("Lambda memory", "WARN",
                                f"{above}: no API reports the memory quota; accounts past a new account's quotas allow "
                                "10,240 MB, which this one looks like",
                                f"if the deploy fails on MemorySize, ask AWS Support; to silence this, "
                                f"-c {LAMBDA_MEMORY_QUOTA_CONTEXT}=<MB>"))
    return findings


def run(session: Any, ctx: Mapping[str, Any], *, toolkit_stack: str = TOOLKIT_STACK) -> list[Finding]:
    """Every check, with `session`'s clients (a boto3.Session) and the deploy's context."""
    stage_name = str(ctx.get(STAGE_CONTEXT) or "dev")
    if stage_name not in STAGES:
        raise SystemExit(f"unknown stage {stage_name!r}; choose one of {sorted(STAGES)}")
    stage = STAGES[stage_name]
    region = session.region_name
    account = session.client("sts").get_caller_identity()["Account"]
    ssm = session.client("ssm")
    quota = ctx.get(LAMBDA_MEMORY_QUOTA_CONTEXT)
    memory = {spec.name: spec.memory_mb for spec in (*platform.FUNCTIONS, platform.INFER, platform.PUSH)}
    models = [model.name for model in load_config(platform.ROOT / str(ctx.get(CONFIG_CONTEXT) or "mlops.toml")).models]
    per_infer = getattr(stage, "infer_reserved_concurrency", None)
    reserved = {**stage.reserved_concurrency, **{f"infer ({m})": per_infer for m in models if per_infer}}
    checks: list[Callable[[], Iterable[Finding]]] = [
        lambda: check_bootstrap(ssm, session.client("cloudformation"), qualifier=str(
            ctx.get(QUALIFIER_CONTEXT) or DEFAULT_QUALIFIER), account=account, region=region,
            toolkit_stack=toolkit_stack),
        lambda: check_api_gateway_logging_role(session.client("apigateway"), session.client("iam"),
                                               stack_creates_it=flag(ctx.get(API_GATEWAY_LOGGING_ROLE_CONTEXT), True)),
        lambda: check_lambda_quotas(session.client("lambda"), reserved=reserved, memory=memory,
                                    declared_memory_quota_mb=int(quota) if quota not in (None, "") else None,
                                    assumed_concurrency=getattr(stage, "lambda_concurrency_quota", None)),
    ]
    findings: list[Finding] = []
    for check in checks:
        findings.extend(check())
    return findings


def report(findings: Sequence[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.status:<4} {finding.check}: {finding.detail}")
        if finding.fix and finding.status != "ok":
            lines.append(f"     what to do: {finding.fix}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, new_session: Callable[..., Any] = boto3.Session) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="context, as given to cdk deploy (e.g. mlops:stage=prod)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--toolkit-stack-name", default=TOOLKIT_STACK)
    args = parser.parse_args(argv)
    session = new_session(region_name=args.region)
    if session.region_name is None:
        raise SystemExit("no region: pass --region or set AWS_REGION")
    findings = run(session, context(args.context), toolkit_stack=args.toolkit_stack_name)
    print(report(findings))
    failed = [f.check for f in findings if f.status == "FAIL"]
    if failed:
        print(f"\n{len(failed)} check(s) failed ({', '.join(failed)}): fix them before `cdk deploy`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CDK app. `npx cdk synth` runs `.venv/bin/python -m infra.app` (cdk.json); running that command directly
gives the same result, because the app loads cdk.json's context itself (the CLI's context, when present,
overrides it).

Every synthesis runs cdk-nag's AWS Solutions rules as a policy-validation plugin: an unacknowledged finding
stops the synthesis.

The layers the functions use are built first (layers/builder.py, the same as `make layers`): once, from PyPI, then
only when their pins change. A synthesis never deploys a layer older than constraints.txt, and never falls back to
another packaging (a function's package type cannot change in place).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from aws_cdk import App, Environment, RemovalPolicy, Validations
from aws_cdk import aws_logs as logs
from cdk_nag import AwsSolutionsChecks

from infra.constructs.batch import NEW_ACCOUNT_CONCURRENCY
from infra.constructs.function import NEW_ACCOUNT_MEMORY_MB
from infra.constructs.monitoring import AlarmThresholds
from infra.constructs.serving import ApiKeyPlan
from infra.stack import MlopsStack
from layers import builder as layer_build
from mlops.aws import platform
from mlops.core.config import load_config

CDK_JSON = platform.ROOT / "cdk.json"
STAGE_CONTEXT = "mlops:stage"
CONFIG_CONTEXT = "mlops:config"
API_KEY_CONTEXT = "mlops:api-key-quota-per-day"
# refused: batch runs read whole foreign buckets no more, but the prefixes each model declares (batch_inputs)
BATCH_BUCKETS_CONTEXT = "mlops:batch-buckets"
# `-c mlops:api-gateway-logging-role=false`: the account's API Gateway CloudWatch Logs role is managed elsewhere
API_GATEWAY_LOGGING_ROLE_CONTEXT = "mlops:api-gateway-logging-role"
# `-c mlops:lambda-memory-quota-mb=10240`: the memory this account allows a function (a new account's 3,008 MB if unset)
LAMBDA_MEMORY_QUOTA_CONTEXT = "mlops:lambda-memory-quota-mb"
# Without credentials (offline synth, CI, tests) the CLI sets no account: synthesize for a placeholder one,
# the same the local cloud uses. `cdk deploy` always runs with credentials, hence with the real account.
FALLBACK_ACCOUNT = "123456789012"
FALLBACK_REGION = "us-east-1"


@dataclass(frozen=True)
class StageSettings:
    removal_policy: RemovalPolicy
    log_retention: logs.RetentionDays
    # Only async (S3-invoked) functions are capped: Lambda queues throttled events and retries them, whereas a
    # throttled state-machine task would fail its run. Nothing is reserved in dev: a new account has 10
    # concurrent executions in total and refuses any reservation.
    reserved_concurrency: dict[str, int]
    alarms: AlarmThresholds
    # The Lambda concurrency quota of the account the stage deploys to (`aws lambda get-account-settings`), and what
    # each infer function keeps of it so that batch runs cannot starve the API: Lambda refuses reservations that leave
    # fewer than 100 unreserved, so a new account (10) can reserve nothing. The stack checks both with every model's
    # batch_max_concurrency (infra/constructs/batch.py check_concurrency, docs/batch.md).
    lambda_concurrency_quota: int = NEW_ACCOUNT_CONCURRENCY
    infer_reserved_concurrency: int | None = None


STAGES: dict[str, StageSettings] = {
    # dev alarms wait longer: a developer's test traffic is bursty and nobody is paged at night
    "dev": StageSettings(RemovalPolicy.DESTROY, logs.RetentionDays.TWO_WEEKS, {},
                         AlarmThresholds(evaluation_periods=6)),
    # AWS's default quota; 50 per infer function serves the stage's API throttle (100 requests/s, bursts of 200)
    # through cold starts, and up to 17 models fit beside ingest's 20 and the 100 Lambda keeps unreserved
    "prod": StageSettings(RemovalPolicy.RETAIN, logs.RetentionDays.ONE_YEAR, {"ingest": 20}, AlarmThresholds(),
                          lambda_concurrency_quota=1000, infer_reserved_concurrency=50),
}


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


def environment() -> Environment:
    return Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT", FALLBACK_ACCOUNT),
                       region=os.environ.get("CDK_DEFAULT_REGION", FALLBACK_REGION))


def used_layers() -> list[str]:
    """Every zip function has the Powertools layer (infra.constructs.function.Packaging.layers), and its own."""
    zipped = [spec for spec in (*platform.FUNCTIONS, platform.INFER, platform.PUSH) if not spec.image]
    return sorted({layer_build.POWERTOOLS, *(name for spec in zipped for name in spec.layers)})


def build_layers() -> None:
    try:
        layer_build.ensure(used_layers())
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"building the layers {used_layers()} failed ({exc}); pip needs PyPI the first time, "
                         "then layers/build/ is reused until constraints.txt changes: run `make layers`") from exc


def api_keys(app: App) -> ApiKeyPlan | None:
    """`-c mlops:api-key-quota-per-day=N`: API keys and a usage plan on top of AWS_IAM, N requests a day per key."""
    quota = app.node.try_get_context(API_KEY_CONTEXT)
    return ApiKeyPlan(quota_per_day=int(quota)) if quota not in (None, "", "0", 0) else None


def flag(app: App, key: str, default: bool) -> bool:
    """A yes/no context value: `-c key=false` arrives as a string, cdk.json's as a JSON boolean."""
    value = app.node.try_get_context(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "yes", "1"):
        return True
    if str(value).lower() in ("false", "no", "0"):
        return False
    raise SystemExit(f"context {key} must be true or false, not {value!r}")


def lambda_memory_quota_mb(app: App) -> int:
    value = app.node.try_get_context(LAMBDA_MEMORY_QUOTA_CONTEXT)
    try:
        return NEW_ACCOUNT_MEMORY_MB if value in (None, "") else int(value)
    except ValueError:
        raise SystemExit(f"context {LAMBDA_MEMORY_QUOTA_CONTEXT} must be a number of MB, not {value!r}") from None


def build(app: App) -> MlopsStack:
    """Add the stack for the context's stage to `app` and enforce cdk-nag on its synthesis."""
    build_layers()
    stage_name = app.node.try_get_context(STAGE_CONTEXT) or "dev"
    try:
        stage = STAGES[stage_name]
    except KeyError:
        known = sorted(STAGES)
        raise SystemExit(f"unknown stage {stage_name!r} (context {STAGE_CONTEXT}); choose one of {known}") from None
    if app.node.try_get_context(BATCH_BUCKETS_CONTEXT):
        raise SystemExit(f"context {BATCH_BUCKETS_CONTEXT} is no longer read: a model's batch runs read under "
                         "s3://<data bucket>/batch/<model>/ and the prefixes the model declares in mlops.toml "
                         '(batch_inputs = ["s3://bucket/prefix/"]), read only; see docs/batch.md')
    config_file = platform.ROOT / (app.node.try_get_context(CONFIG_CONTEXT) or "mlops.toml")
    project = load_config(config_file).project
    stack = MlopsStack(
        app, f"{project}-{stage_name}",
        config_file=config_file,
        stage=stage_name,
        removal_policy=stage.removal_policy,
        log_retention=stage.log_retention,
        reserved_concurrency=stage.reserved_concurrency,
        alarm_thresholds=stage.alarms,
        api_keys=api_keys(app),
        infer_reserved_concurrency=stage.infer_reserved_concurrency,
        lambda_concurrency_quota=stage.lambda_concurrency_quota,
        api_gateway_logging_role=flag(app, API_GATEWAY_LOGGING_ROLE_CONTEXT, default=True),
        lambda_memory_quota_mb=lambda_memory_quota_mb(app),
        env=environment(),
        description=f"serverless-mlops ({project}, {stage_name}): ingest, train, evaluate, register",
        tags={"project": project, "stage": stage_name},
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> None:
    app = App(context=cdk_json_context())
    build(app)
    app.synth()


if __name__ == "__main__":
    main()

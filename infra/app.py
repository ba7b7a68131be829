"""The CDK app. `npx cdk synth` runs `.venv/bin/python -m infra.app` (cdk.json); running that command directly
gives the same result, because the app loads cdk.json's context itself (the CLI's context, when present,
overrides it).

Every synthesis runs cdk-nag's AWS Solutions rules as a policy-validation plugin: an unacknowledged finding
stops the synthesis.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from aws_cdk import App, Environment, RemovalPolicy, Validations
from aws_cdk import aws_logs as logs
from cdk_nag import AwsSolutionsChecks

from infra.stack import MlopsStack
from mlops import platform
from mlops.config import load_config

CDK_JSON = platform.ROOT / "cdk.json"
STAGE_CONTEXT = "mlops:stage"
CONFIG_CONTEXT = "mlops:config"
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


STAGES: dict[str, StageSettings] = {
    "dev": StageSettings(RemovalPolicy.DESTROY, logs.RetentionDays.TWO_WEEKS, {}),
    "prod": StageSettings(RemovalPolicy.RETAIN, logs.RetentionDays.ONE_YEAR, {"ingest": 20}),
}


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


def environment() -> Environment:
    return Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT", FALLBACK_ACCOUNT),
                       region=os.environ.get("CDK_DEFAULT_REGION", FALLBACK_REGION))


def build(app: App) -> MlopsStack:
    """Add the stack for the context's stage to `app` and enforce cdk-nag on its synthesis."""
    stage_name = app.node.try_get_context(STAGE_CONTEXT) or "dev"
    try:
        stage = STAGES[stage_name]
    except KeyError:
        known = sorted(STAGES)
        raise SystemExit(f"unknown stage {stage_name!r} (context {STAGE_CONTEXT}); choose one of {known}") from None
    config_file = platform.ROOT / (app.node.try_get_context(CONFIG_CONTEXT) or "mlops.toml")
    project = load_config(config_file).project
    stack = MlopsStack(
        app, f"{project}-{stage_name}",
        config_file=config_file,
        removal_policy=stage.removal_policy,
        log_retention=stage.log_retention,
        reserved_concurrency=stage.reserved_concurrency,
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

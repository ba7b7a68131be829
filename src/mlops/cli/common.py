"""What the ``mlops`` subcommands share: the ``--config`` option, and the names of the deployed resources a command
works on.

Names: against AWS, the stack's `Environment` output, exported, gives the physical names (they carry the stage), e.g.
`export REGISTRY_TABLE=... INFER_FUNCTIONS='{"<model>": "<function>"}'`; without it, the names are the local cloud's
(AWS_ENDPOINT_URL pointing at it), derived from the project as ``mlops.aws.platform`` derives them.

Every ``mlops`` command imports this module, `mlops --help` included: the configuration (pydantic) and the AWS
clients (boto3) are imported by the functions that need them, not here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.core.config import ProjectConfig

CONFIG_HELP = "project configuration (default: $MLOPS_CONFIG or ./mlops.toml)"


def progress(line: str) -> None:
    """A step of a long command, on stderr: stdout keeps only the result (the JSON of --json, say)."""
    print(f"  .. {line}", file=sys.stderr, flush=True)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=CONFIG_HELP)


def config_file(args: argparse.Namespace) -> Path:
    """The file ``--config`` names, else the one the project's configuration is found in by default."""
    from mlops.core.config import config_path

    return Path(args.config) if args.config else config_path()


def load_project(args: argparse.Namespace) -> ProjectConfig:
    """The project's configuration, from the file ``--config`` names or the default one."""
    from mlops.core.config import load_config

    return load_config(args.config) if args.config else load_config()


def resource_name(resource: str, project: str) -> str:
    """The physical name of one of the platform's buckets or tables (a key of ``platform.resource_names``: "data",
    "models", "registry", "features"): the deployed stack's, else the local cloud's."""
    from mlops.aws import environment, platform

    variable = {"data": environment.DATA_BUCKET, "models": environment.MODELS_BUCKET,
                "registry": environment.REGISTRY_TABLE, "features": environment.FEATURES_TABLE}[resource]
    return os.environ.get(variable) or platform.resource_names(project)[resource]


def infer_function(project: str, model: str) -> str:
    """A model's infer function: the deployed stack's (INFER_FUNCTIONS), else the local cloud's."""
    from mlops.aws import platform
    from mlops.aws.environment import resources

    return resources.infer_functions.get(model) or platform.infer_function_name(project, model)


def state_machine_arn(project: str, variable: str, machine: str) -> str:
    """A state machine of the platform (``machine``: a platform name, ``platform.BATCH_STATE_MACHINE`` say): the
    deployed stack's (the environment ``variable`` holding its ARN), else the local cloud's, in the caller's account."""
    from mlops import aws
    from mlops.aws import platform

    arn = os.environ.get(variable)
    if arn:
        return arn
    account = aws.client("sts").get_caller_identity()["Account"]
    name = platform.resource_names(project)[machine]
    return f"arn:aws:states:{aws.region()}:{account}:stateMachine:{name}"


def batch_state_machine_arn(project: str) -> str:
    """The batch state machine: the deployed stack's, else the local cloud's."""
    from mlops.aws import environment, platform

    return state_machine_arn(project, environment.BATCH_STATE_MACHINE_ARN, platform.BATCH_STATE_MACHINE)


def invoke_platform_function(project: str, name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Invoke a platform function (``mlops.aws.platform.FUNCTIONS``: "register", say) synchronously with ``event``, as
    a state machine's task does, and return its answer; its error is an MlopsError. The function: the deployed
    stack's, named by the environment variable <NAME>_FUNCTION (REGISTER_FUNCTION: its name or ARN; CloudFormation
    names the stack's functions), else the local cloud's (its physical name, as for the state machines). No retry (a
    retried invocation would run twice) and Lambda's longest timeout: the function ends by its own."""
    import json

    import boto3
    from botocore.config import Config

    from mlops import aws
    from mlops.aws import platform
    from mlops.core.errors import MlopsError

    variable = f"{name.upper()}_FUNCTION"  # environment.REGISTER_FUNCTION for "register", in the stack's outputs
    function = os.environ.get(variable) or platform.function(name).physical_name(project)
    lam = boto3.client("lambda", region_name=aws.region(),
                       config=Config(retries={"total_max_attempts": 1}, read_timeout=900, connect_timeout=5))
    try:
        response = lam.invoke(FunctionName=function, Payload=json.dumps(event, default=str).encode())
    except lam.exceptions.ResourceNotFoundException:
        raise MlopsError(f"no function {function}: against AWS, export {variable} as the deployed stack's {name} "
                         "function (its name or ARN)") from None
    answer = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        error = answer if isinstance(answer, dict) else {}
        raise MlopsError(f"{function} failed: {error.get('errorType', 'Error')}: {error.get('errorMessage', answer)}")
    if not isinstance(answer, dict):
        raise MlopsError(f"{function} answered {str(answer)[:200]!r}, not a JSON object")
    return answer


def api_source_arn() -> str | None:
    """The API whose right to invoke a model's `live` alias a move checks (and repairs): the deployed stack's, else the
    local cloud's when AWS_ENDPOINT_URL points at one, else none."""
    from mlops.aws import environment

    if arn := os.environ.get(environment.API_SOURCE_ARN):
        return arn
    if not os.environ.get("AWS_ENDPOINT_URL"):
        return None
    from mlops import aws
    from mlops.local.cloud import ACCOUNT
    from mlops.local.gateway import execute_api_arn

    return execute_api_arn(aws.region(), ACCOUNT)

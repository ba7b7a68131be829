"""One function of ``mlops.aws.platform.FUNCTIONS``, deployed the way its spec says: its code (container image or
zip), its own role (no managed policies: each grant is added by the stack), its log group, X-Ray tracing and,
for functions invoked asynchronously, a bounded retry policy with an encrypted failure queue."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import (
    Annotations,
    AssetHashType,
    BundlingOptions,
    DockerImage,
    Duration,
    IgnoreMode,
    ILocalBundling,
    RemovalPolicy,
    Size,
    Tags,
)
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.nag import acknowledge
from layers import builder as layer_build
from mlops.aws import platform
from mlops.core.config import CONFIG_FILE, load_config

ROOT = platform.ROOT
DOCKERFILE = "infra/Dockerfile"
# what the image's USER_CODE copies when no model has code of its own: a directory holding one explanatory file
NO_USER_CODE = "infra/no-user-code"
# The tag that maps a deployed function back to its platform name (tests, console, cost reports).
FUNCTION_TAG = "mlops:function"
# What `docker build` needs from the repository, and nothing else (.venv, node_modules, cdk.out stay out of
# the asset's fingerprint and of the build context).
IMAGE_CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", "src", "functions", DOCKERFILE)
BUILD_LEFTOVERS = ("**/__pycache__", "**/*.pyc", "**/*.egg-info")
# Zip functions get boto3 from the runtime and Powertools (with pydantic and the X-Ray SDK) from the project's own
# layer (layers/builder.py `powertools`: the extras the functions import, pinned by constraints.txt, without the AWS
# SDK), not from AWS's public layer, which carries every extra and whose content the size test cannot see.
ZIP_RUNTIME = lambda_.Runtime.PYTHON_3_12  # the container image's base is python:3.12 too
# Lambda's memory range (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html). A new account has "reduced
# concurrency and memory quotas" that AWS raises with usage: Lambda refuses its functions above 3,008 MB ("'MemorySize'
# value failed to satisfy constraint: Member must have value less than or equal to 3008"), and no API tells an
# account's memory quota before that.
LAMBDA_MEMORY_MAX_MB = 10_240
NEW_ACCOUNT_MEMORY_MB = 3_008
MEMORY_QUOTA_WARNING = "mlops:lambda-memory-above-quota"


def user_code_stage(config_file: Path) -> Path:
    """Where the models' own code of this configuration is staged for the image (git-ignored, one per configuration)."""
    return ROOT / ".mlops" / "user-code" / hashlib.sha256(str(config_file.resolve()).encode()).hexdigest()[:16]


class LayerNotBuilt(RuntimeError):
    pass


class Packaging(Construct):
    """The code of every function: one container image shared by all image functions (one build, one push;
    each function only changes CMD), one zip per zip function, and one layer version per layer of
    layers/builder.py that some function uses (shared by all of them)."""

    def __init__(self, scope: Construct, construct_id: str, *, config_file: Path) -> None:
        super().__init__(scope, construct_id)
        self.config_file = config_file
        self.built_layers: dict[str, lambda_.LayerVersion] = {}
        self._user_code: str | None = None

    def image(self, spec: platform.FunctionSpec) -> lambda_.DockerImageCode:
        config = self.config_file.resolve().relative_to(ROOT).as_posix()
        user_code = self.user_code()
        return lambda_.DockerImageCode.from_image_asset(
            str(ROOT),
            file=DOCKERFILE,
            cmd=[f"functions.{spec.name}.handler.handler"],
            build_args={"CONFIG_FILE": config, "USER_CODE": user_code},
            platform=ecr_assets.Platform.LINUX_AMD64,
            ignore_mode=IgnoreMode.DOCKER,
            exclude=["*", *(f"!{path}" for path in (*IMAGE_CONTEXT, config, user_code)), *BUILD_LEFTOVERS],
        )

    def user_code(self) -> str:
        """The models' own code (`family = "package.module:build"`, `code = "<dir>"`), staged in one directory that
        the Dockerfile copies beside the image's mlops.toml, each `code` directory at its place relative to it: the
        import is then the same in the image as next to mlops.toml here. NO_USER_CODE when no model has code."""
        if self._user_code is not None:
            return self._user_code
        codes = [(m.name, m.code) for m in load_config(self.config_file).models if m.code is not None]
        if not codes:
            self._user_code = NO_USER_CODE
            return NO_USER_CODE
        stage = user_code_stage(self.config_file)
        shutil.rmtree(stage, ignore_errors=True)
        for name, code in codes:
            source = self.config_file.resolve().parent / code
            if not source.is_dir():
                raise FileNotFoundError(f"model {name!r}: its code directory {source} does not exist (`code` "
                                        f"is relative to {self.config_file})")
            shutil.copytree(source, stage / code, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        self._user_code = stage.relative_to(ROOT).as_posix()
        return self._user_code

    def zip(self, spec: platform.FunctionSpec) -> lambda_.Code:
        return lambda_.Code.from_asset(
            str(spec.code_dir),
            # the bundle's content is the hash: a change in src/mlops or mlops.toml must redeploy the zip
            asset_hash_type=AssetHashType.OUTPUT,
            bundling=BundlingOptions(
                # never used: the local bundler always succeeds (no Docker needed), see _ZipBundle
                image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.12"),
                # jsii calls try_bundle(output_dir, options) with the struct as one argument, not the keyword
                # arguments its Python protocol declares
                local=_ZipBundle(spec, self.config_file),  # type: ignore[arg-type]
            ),
        )

    def layers(self, spec: platform.FunctionSpec) -> list[lambda_.ILayerVersion]:
        """A zip function's layers: Powertools', then those its spec names."""
        return [self.layer(name) for name in (layer_build.POWERTOOLS, *spec.layers)]

    def layer(self, name: str) -> lambda_.LayerVersion:
        """The layer built by layers/builder.py. It must be built and current (`make layers`; infra.app builds the
        layers the platform uses before synthesizing): a stale layer would deploy other pins than the lock's."""
        if name not in self.built_layers:
            spec = layer_build.LAYERS[name]
            built = layer_build.current(name)
            if built is None:
                raise LayerNotBuilt(f"layer {name!r} is not built or out of date: run `make layers`")
            # A function lists its layers sorted by construct path (the recognizeLayerVersion flag): Powertools' id
            # sorts first, so that it stays every function's first layer
            self.built_layers[name] = lambda_.LayerVersion(
                self, "PowertoolsLayer" if name == layer_build.POWERTOOLS else f"{name}_layer",
                code=lambda_.Code.from_asset(
                    str(built.path),
                    # the build's inputs (pins, spec) identify the content: no need to hash 100+ MB per synthesis
                    asset_hash_type=AssetHashType.CUSTOM, asset_hash=built.inputs),
                compatible_runtimes=[ZIP_RUNTIME],
                compatible_architectures=[lambda_.Architecture.X86_64],
                description=f"serverless-mlops {name}: {spec.description}"[:256],
            )
        return self.built_layers[name]


@jsii.implements(lambda_.IDestination)
class _QueueDestination:
    """An SQS on-failure destination granted by the caller: aws_lambda_destinations.SqsDestination would grant
    kms:GenerateDataKey* and kms:ReEncrypt* on the queue's key, more than sending a message needs."""

    def __init__(self, queue_arn: str) -> None:
        self.queue_arn = queue_arn

    def bind(self, scope: Construct, fn: lambda_.IFunction, *,
             type: lambda_.DestinationType) -> lambda_.DestinationConfig:
        return lambda_.DestinationConfig(destination=self.queue_arn)


@jsii.implements(ILocalBundling)
class _ZipBundle:
    """The same layout as the local cloud's zip (handler at the root, mlops.toml next to it) plus the core
    package, which the local cloud imports from the virtualenv instead."""

    def __init__(self, spec: platform.FunctionSpec, config_file: Path) -> None:
        self.spec = spec
        self.config_file = config_file

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        out = Path(output_dir)
        for path in sorted(self.spec.code_dir.rglob("*.py")):
            target = out / path.relative_to(self.spec.code_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        shutil.copyfile(self.config_file, out / CONFIG_FILE)
        package = ROOT / "src" / "mlops"
        # mlops.local is the moto-based local cloud: never imported on AWS
        shutil.copytree(package, out / "mlops", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "local"))
        return True


class PlatformFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        spec: platform.FunctionSpec,
        *,
        code: lambda_.DockerImageCode | lambda_.Code,
        layers: list[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        asynchronous: bool,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        reserved_concurrency: int | None,
        construct_id: str | None = None,
        function_name: str | None = None,
    ) -> None:
        """`function_name` is the physical name, for a function found by name at run time (the per-model infer
        functions); CloudFormation names all the others."""
        super().__init__(scope, construct_id or spec.name)
        self.spec = spec
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=removal_policy)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"serverless-mlops {spec.name}")
        self.log_group.grant_write(self.role)

        self.failures: sqs.Queue | None = None
        on_failure = None
        if asynchronous:
            # S3 invokes asynchronously: a failed event is retried by Lambda, then kept here with its error
            # instead of being dropped.
            self.failures = sqs.Queue(
                self, "Failures", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
                enforce_ssl=True, retention_period=Duration.days(14), removal_policy=removal_policy,
            )
            acknowledge(self.failures, "AwsSolutions-SQS3",
                        f"this queue is the on-failure destination of {spec.name}: it is the dead-letter "
                        "queue, and nothing consumes it that could fail again")
            on_failure = _QueueDestination(self.failures.queue_arn)
            self.role.add_to_principal_policy(iam.PolicyStatement(actions=["sqs:SendMessage"],
                                                                   resources=[self.failures.queue_arn]))
            self.role.add_to_principal_policy(iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"],
                                                                  resources=[key.key_arn]))

        common: dict[str, Any] = {
            "function_name": function_name,
            "description": spec.description,
            "environment": dict(environment),
            "memory_size": spec.memory_mb,
            "timeout": Duration.seconds(spec.timeout_s),
            "ephemeral_storage_size": Size.mebibytes(spec.ephemeral_mb),
            "tracing": lambda_.Tracing.ACTIVE,
            "architecture": lambda_.Architecture.X86_64,
            "role": self.role,
            "log_group": self.log_group,
            "reserved_concurrent_executions": reserved_concurrency,
            "on_failure": on_failure,
            # S3-triggered functions are idempotent (ingest: Powertools idempotency; train_trigger: a registry
            # claim per dataset), so retrying is safe; two retries ride out a throttle or a transient error
            "retry_attempts": 2 if asynchronous else None,
            "max_event_age": Duration.hours(6) if asynchronous else None,
        }
        self.function: lambda_.Function
        if isinstance(code, lambda_.DockerImageCode):
            self.function = lambda_.DockerImageFunction(self, "Function", code=code, **common)
        else:
            self.function = lambda_.Function(self, "Function", code=code, handler="handler.handler",
                                             runtime=ZIP_RUNTIME, layers=layers, **common)
            acknowledge(self, "AwsSolutions-L1",
                        f"{ZIP_RUNTIME.name} matches the container image's base (lambda/python:3.12) and the "
                        "Powertools layer it pins; every function moves to a newer runtime together")
        Tags.of(self).add(FUNCTION_TAG, spec.name)
        acknowledge(self, "AwsSolutions-IAM5[Resource::*]",
                    "active X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords have no "
                    "resource-level permissions")


def check_memory(functions: Iterable[PlatformFunction], *, quota_mb: int) -> None:
    """Above Lambda's maximum a function can never deploy: an error. Above `quota_mb`, what the deployer says the
    account allows (a new account's 3,008 MB unless told otherwise), the first deploy may fail: a warning on the
    function, shown by every `cdk synth` and `cdk deploy`, and checked against the account by scripts/preflight.py.
    Not an error: most accounts allow 10,240 MB, and failing their synthesis would only teach everyone to turn the
    check off."""
    if not 128 <= quota_mb <= LAMBDA_MEMORY_MAX_MB:
        raise ValueError(f"a Lambda memory quota of {quota_mb} MB is outside Lambda's 128-{LAMBDA_MEMORY_MAX_MB} MB")
    for function in functions:
        memory = function.spec.memory_mb
        if memory > LAMBDA_MEMORY_MAX_MB:
            raise ValueError(f"{function.node.path}: {memory} MB is above Lambda's maximum of "
                             f"{LAMBDA_MEMORY_MAX_MB} MB (mlops.aws.platform declares {function.spec.name}'s memory)")
        if memory > quota_mb:
            Annotations.of(function).add_warning_v2(
                MEMORY_QUOTA_WARNING,
                f"{function.spec.name} asks for {memory} MB, above the {quota_mb} MB this account is assumed to "
                f"allow: a new account's functions are refused above {NEW_ACCOUNT_MEMORY_MB} MB until AWS raises its "
                "quota. Run scripts/preflight.py before deploying; if your account allows it, say so with "
                f"-c mlops:lambda-memory-quota-mb=<MB>.")

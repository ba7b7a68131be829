"""The IAM policies of the synthesized CloudFormation template, for the local cloud's guard (mlops.local.iam): the
tests' clouds enforce what is deployed, not a second description of it.

For a project configuration, the CDK app is synthesized once (in process, assets not staged) and each function's
role policy is read from the template, its resource references evaluated to the local cloud's resources: the
template's buckets, tables, topics, state machines, stream, queues and functions are mapped to the local ones by the
stack's constructs (their platform names)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops.aws import platform
from mlops.core.config import ProjectConfig
from mlops.local.iam.policies import LocalNames, role_of, template_policies

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `infra` is an application directory, not an installed package
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
NO_STAGING = {"aws:cdk:disable-asset-staging": True}

_lock = threading.Lock()
_synthesized: dict[str, tuple[Any, dict[str, Any]]] = {}
_workdir: Path | None = None


def _config_in_repository(config_file: Path) -> str:
    """The CDK app reads its configuration from inside the repository (the container image is built from it): a
    test's configuration is copied under .mlops/ (git-ignored), in a directory of this test session's own."""
    global _workdir
    if _workdir is None:
        (ROOT / ".mlops").mkdir(exist_ok=True)
        _workdir = Path(tempfile.mkdtemp(prefix="template-configs-", dir=ROOT / ".mlops"))
    text = config_file.read_bytes()
    home = _workdir / hashlib.sha256(text).hexdigest()[:16]
    home.mkdir(exist_ok=True)
    copy = home / "mlops.toml"
    copy.write_bytes(text)
    # the models' own code, at its place relative to the configuration (the image copies it from there)
    for model in tomllib.loads(text.decode()).get("model", []):
        if model.get("code"):
            shutil.copytree(config_file.parent / model["code"], home / model["code"], dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
    return copy.relative_to(ROOT).as_posix()


def cleanup() -> None:
    if _workdir is not None:
        from infra.constructs.function import user_code_stage

        for config in _workdir.glob("*/mlops.toml"):  # what the synthesis staged of their models' own code
            shutil.rmtree(user_code_stage(config), ignore_errors=True)
        shutil.rmtree(_workdir, ignore_errors=True)


def synthesized(config_file: Path) -> tuple[Any, dict[str, Any]]:
    """(stack, template) of the dev stage for this configuration, synthesized once per distinct configuration."""
    from aws_cdk import App

    from infra.app import CONFIG_CONTEXT, build, cdk_json_context

    key = hashlib.sha256(config_file.read_bytes()).hexdigest()
    with _lock:
        if key not in _synthesized:
            outdir = tempfile.mkdtemp(prefix="cdk.out-")
            try:
                app = App(context={**cdk_json_context(), **NO_STAGING,
                                   CONFIG_CONTEXT: _config_in_repository(config_file)}, outdir=outdir)
                stack = build(app)
                template = app.synth().get_stack_by_name(stack.stack_name).template
            finally:
                shutil.rmtree(outdir, ignore_errors=True)
            _synthesized[key] = (stack, template)
        return _synthesized[key]


def _lid(stack: Any, construct: Any) -> str:
    child = getattr(construct, "node", None) and construct.node.default_child
    logical_id: str = stack.resolve((child or construct).logical_id)
    return logical_id


def local_resources(stack: Any, names: LocalNames, config: ProjectConfig) -> tuple[dict[str, str],
                                                                                   dict[str, dict[str, str]]]:
    """(function logical id -> local function name, logical id -> local Ref and attributes)."""
    functions: dict[str, str] = {}
    resources: dict[str, dict[str, str]] = {}

    def function(construct: Any, local: str) -> None:
        lid = _lid(stack, construct.function)
        functions[lid] = local
        resources[lid] = {"Ref": local, "Arn": names.function_arn(local)}

    for name, bucket in stack.storage.buckets.items():
        local = names.names[name]
        resources[_lid(stack, bucket)] = {"Ref": local, "Arn": f"arn:aws:s3:::{local}"}
    for name, table in stack.storage.tables.items():
        local = names.names[name]
        resources[_lid(stack, table)] = {"Ref": local, "Arn": names.arn("dynamodb", f"table/{local}")}
    topic = names.arn("sns", names.names[platform.TOPIC])
    resources[_lid(stack, stack.storage.topic)] = {"Ref": topic, "TopicArn": topic}
    key = names.arn("kms", f"key/{names.project}-data")
    resources[_lid(stack, stack.storage.key)] = {"Ref": key, "Arn": key}
    for name, machine in stack.pipeline.state_machines.items():
        arn = names.arn("states", f"stateMachine:{names.names[name]}")
        resources[_lid(stack, machine)] = {"Ref": arn, "Arn": arn, "Name": names.names[name]}
    stream = names.names[platform.CAPTURE_STREAM]
    resources[_lid(stack, stack.serving.stream)] = {"Ref": stream,
                                                    "Arn": names.arn("firehose", f"deliverystream/{stream}")}
    for name, construct in stack.pipeline.functions.items():
        function(construct, platform.function(name).physical_name(names.project))
    for model, construct in stack.serving.functions.items():
        function(construct, platform.infer_function_name(names.project, model))
    queues = {q.model: q for q in platform.push_queues(config)}
    for model, construct in stack.push.functions.items():
        spec = queues[model]
        function(construct, spec.function)
        for queue, local in ((stack.push.queues[model], spec.queue),
                             (stack.push.dead_letter_queues[model], spec.dead_letter_queue)):
            url = f"https://sqs.{names.region}.amazonaws.com/{names.account}/{local}"
            resources[_lid(stack, queue)] = {"Ref": url, "Arn": names.arn("sqs", local), "QueueName": local}
        if model in stack.push.topics:
            arn = names.arn("sns", str(spec.topic))
            resources[_lid(stack, stack.push.topics[model])] = {"Ref": arn, "TopicArn": arn}
    role = f"arn:aws:iam::{names.account}:role/{names.project}-training-job"
    resources[_lid(stack, stack.pipeline.training_job_role)] = {"Ref": role.rsplit("/", 1)[1], "Arn": role}
    return functions, resources


# Where the test session's workers (pytest -n) share what they synthesized: set by tests/conftest.py
shared_dir: Path | None = None


def guard_policies(names: LocalNames, config: ProjectConfig,
                   config_file: Path) -> Mapping[str, Sequence[Mapping[str, Any]]]:
    """mlops.local.embedded's policy source for the tests: each function's role policy from the template. A session
    synthesizes each configuration once, whichever worker needs it first: the others read its policies."""
    if shared_dir is None:
        return _from_template(names, config, config_file)
    key = hashlib.sha256(config_file.read_bytes() + json.dumps(names.names, sort_keys=True).encode()).hexdigest()
    found = shared_dir / f"policies-{key[:24]}.json"
    with (shared_dir / f".policies-{key[:24]}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not found.exists():
            policies = _from_template(names, config, config_file)
            partial = found.with_suffix(f".{os.getpid()}.part")
            partial.write_text(json.dumps(policies))
            partial.replace(found)
    loaded: dict[str, list[dict[str, Any]]] = json.loads(found.read_text())
    return loaded


def _from_template(names: LocalNames, config: ProjectConfig,
                   config_file: Path) -> dict[str, list[dict[str, Any]]]:
    stack, template = synthesized(config_file)
    functions, resources = local_resources(stack, names, config)
    roles = {role_of(template["Resources"][lid]): name for lid, name in functions.items()}
    return template_policies(template, roles=roles, resources=resources, region=names.region, account=names.account)

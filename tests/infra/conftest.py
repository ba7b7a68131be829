"""The CDK app synthesized once per session, in process: no node_modules, no CDK CLI, no Docker, no account.

There is deliberately no __init__.py here: it would make this directory the package `infra` for pytest and
hide the real one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `infra` is an application directory, not an installed package
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# the synthesized template must not depend on the developer's credentials
for _var in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION"):
    os.environ.pop(_var, None)

from infra.constructs.function import FUNCTION_TAG  # noqa: E402
from infra.constructs.serving import MODEL_TAG  # noqa: E402


@dataclass
class Synthesized:
    stack: Any  # infra.stack.MlopsStack
    template: dict[str, Any]  # the synthesized CloudFormation template
    assembly_dir: Path

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.template["Resources"]
        return resources

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == kind}

    def logical_id(self, construct: Any) -> str:
        """The logical id of an L2 construct's CloudFormation resource."""
        logical_id: str = self.stack.resolve(construct.node.default_child.logical_id)
        return logical_id

    def _tagged_functions(self) -> list[tuple[dict[str, str], str, dict[str, Any]]]:
        found = []
        for lid, resource in self.of_type("AWS::Lambda::Function").items():
            tags = {t["Key"]: t["Value"] for t in resource["Properties"].get("Tags", [])}
            found.append((tags, lid, resource))
        return found

    def functions(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Platform function name -> (logical id, resource), through the tag every platform function carries.
        The per-model infer functions are in `serving()`."""
        return {tags[FUNCTION_TAG]: (lid, resource) for tags, lid, resource in self._tagged_functions()
                if FUNCTION_TAG in tags and MODEL_TAG not in tags}

    def serving(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Model name -> (logical id, resource) of its infer function."""
        return {tags[MODEL_TAG]: (lid, resource) for tags, lid, resource in self._tagged_functions()
                if MODEL_TAG in tags and tags.get(FUNCTION_TAG) == "infer"}

    def push(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Model name -> (logical id, resource) of its push function (infra/constructs/push.py)."""
        return {tags[MODEL_TAG]: (lid, resource) for tags, lid, resource in self._tagged_functions()
                if MODEL_TAG in tags and tags.get(FUNCTION_TAG) == "push"}

    def render(self, value: Any) -> str:
        """A template value as text: a function's Ref becomes its physical name when it has one, any other Ref
        `ref:<logical id>`, a GetAtt `<logical id>.<attribute>`, a pseudo parameter `<AWS::...>`, a Select of a
        Split a description of it."""
        if isinstance(value, str):
            return value
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return str(separator).join(self.render(part) for part in parts)
        if "Ref" in value:
            if value["Ref"].startswith("AWS::"):
                return f"<{value['Ref']}>"
            name = self.resources[value["Ref"]].get("Properties", {}).get("FunctionName")
            return str(name) if isinstance(name, str) else f"ref:{value['Ref']}"
        if "Fn::GetAtt" in value:
            lid, attribute = value["Fn::GetAtt"]
            return f"{lid}.{attribute}"
        if "Fn::Select" in value:  # a part of a value known at deploy time, e.g. the stack instance of a name
            index, of = value["Fn::Select"]
            return f"<part {index} of {self.render(of)}>"
        if "Fn::Split" in value:
            separator, of = value["Fn::Split"]
            return f"{self.render(of)} split on {separator!r}"
        raise ValueError(f"cannot render {value!r}")

    def function_names_by_logical_id(self) -> dict[str, str]:
        return {lid: name for name, (lid, _r) in self.functions().items()}

    def notification_triggers(self) -> set[tuple[str, str, str, str]]:
        """(function, bucket, prefix, suffix) for every S3 notification, by platform names."""
        names = self.function_names_by_logical_id()
        buckets = {self.logical_id(b): name for name, b in self.stack.storage.buckets.items()}
        found = set()
        for resource in self.of_type("Custom::S3BucketNotifications").values():
            props = resource["Properties"]
            for config in props["NotificationConfiguration"].get("LambdaFunctionConfigurations", []):
                assert config["Events"] == ["s3:ObjectCreated:*"]
                rules = {r["Name"]: r["Value"] for r in config["Filter"]["Key"]["FilterRules"]}
                found.add((names[config["LambdaFunctionArn"]["Fn::GetAtt"][0]], buckets[props["BucketName"]["Ref"]],
                           rules.get("prefix", ""), rules.get("suffix", "")))
        return found

    def state_machine(self, name: str) -> tuple[dict[str, Any], str]:
        """A state machine's properties and its definition, each substitution replaced by what it points at:
        `function:<platform name>`, `topic:notifications`, or for the SageMaker path's placeholders their platform
        names (mlops.aws.platform.ASL_TRAINING_JOB_SUBSTITUTIONS; test_training_jobs checks what their values are)."""
        from mlops.aws.platform import ASL_TRAINING_JOB_SUBSTITUTIONS

        props = self.resources[self.logical_id(self.stack.pipeline.state_machines[name])]["Properties"]
        text = self.file_asset(props["DefinitionS3Location"]["Key"]).read_text()
        names = self.function_names_by_logical_id()
        topic = {"Ref": self.logical_id(self.stack.storage.topic)}
        for placeholder, value in props["DefinitionSubstitutions"].items():
            if placeholder in ASL_TRAINING_JOB_SUBSTITUTIONS:
                target = ASL_TRAINING_JOB_SUBSTITUTIONS[placeholder]
            else:
                target = "topic:notifications" if value == topic else f"function:{names[value['Fn::GetAtt'][0]]}"
            text = text.replace(f"${{{placeholder}}}", target)
        return props, text

    def file_asset(self, object_key: str) -> Path:
        """The staged file behind an S3 location the template points at (e.g. a state machine definition)."""
        manifest = json.loads((self.assembly_dir / f"{self.stack.artifact_id}.assets.json").read_text())
        asset_hash = object_key.rsplit(".", 1)[0]
        return self.assembly_dir / manifest["files"][asset_hash]["source"]["path"]


def synthesize(outdir: Path, **context: Any) -> Synthesized:
    from aws_cdk import App

    from infra.app import build, cdk_json_context

    app = App(context={**cdk_json_context(), **context}, outdir=str(outdir))
    stack = build(app)
    # app.synth() runs the policy-validation plugins (cdk-nag) and raises on any unacknowledged finding
    assembly = app.synth()
    return Synthesized(stack, assembly.get_stack_by_name(stack.stack_name).template, Path(assembly.directory))


# reports a test hands over (the size table of tests/infra/test_sizes.py), shown at the end of every run
_REPORTS: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for title, report in _REPORTS.items():
        terminalreporter.section(title)
        terminalreporter.write_line(report)


@pytest.fixture(scope="session")
def reports() -> dict[str, str]:
    """title -> text, printed in the run's summary, passing or not."""
    return _REPORTS


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The stack of cdk.json's stage (dev), as `npx cdk synth` produces it."""
    return synthesize(tmp_path_factory.mktemp("cdk.out"))


# For the extra syntheses, which only look at the template: assets (the layers are 300 MB) stay where they are
# instead of being copied into each cloud assembly.
NO_STAGING = {"aws:cdk:disable-asset-staging": True}


@pytest.fixture(scope="session")
def synthesized_prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The prod stage's stack (`-c mlops:stage=prod`), synthesized once for the tests that only read it."""
    return synthesize(tmp_path_factory.mktemp("cdk.out.prod"), **{**NO_STAGING, "mlops:stage": "prod"})


@pytest.fixture
def synthesize_with() -> Callable[..., Synthesized]:
    """Another synthesis with some context changed (`synthesize_with(tmp_path, **{"mlops:stage": "prod"})`)."""

    def synthesize_unstaged(outdir: Path, **context: Any) -> Synthesized:
        return synthesize(outdir, **{**NO_STAGING, **context})

    return synthesize_unstaged

"""The models' own code goes into the training image beside its mlops.toml (docs/custom-code.md): the CDK app stages
each `code` directory at its place relative to the configuration, and the Dockerfile copies the staged directory into
${LAMBDA_TASK_ROOT}, where mlops.toml is, so that `<directory of mlops.toml>/<code>` is the same path there."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_cdk import App, Stack

from infra.constructs.function import DOCKERFILE, NO_USER_CODE, Packaging
from mlops.aws.platform import ROOT

EXAMPLE = ROOT / "examples" / "custom_code"


@pytest.fixture
def project() -> Iterator[Path]:
    """The example project, copied inside the repository (the image's build context is the repository)."""
    (ROOT / ".mlops").mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="user-code-image-", dir=ROOT / ".mlops"))
    shutil.copytree(EXAMPLE, home / "project")
    yield home / "project" / "mlops.toml"
    shutil.rmtree(home, ignore_errors=True)


def _packaging(config: Path) -> Packaging:
    return Packaging(Stack(App(), "Test"), "Packaging", config_file=config)


def test_each_models_code_is_staged_at_its_place_relative_to_the_configuration(project: Path) -> None:
    staged = ROOT / _packaging(project).user_code()
    assert staged.is_relative_to(ROOT / ".mlops" / "user-code")
    expected = {p.relative_to(project.parent) for p in (project.parent / "src").rglob("*.py")}
    assert {p.relative_to(staged) for p in staged.rglob("*.py")} == expected
    assert not list(staged.rglob("__pycache__"))
    shutil.rmtree(staged)


def test_a_project_without_code_of_its_own_copies_the_placeholder() -> None:
    assert _packaging(ROOT / "mlops.toml").user_code() == NO_USER_CODE
    assert [p.name for p in (ROOT / NO_USER_CODE).iterdir()] == ["NO_USER_CODE"]


def test_a_code_directory_that_is_not_there_fails_the_synthesis_saying_where(project: Path) -> None:
    shutil.rmtree(project.parent / "src")
    with pytest.raises(FileNotFoundError, match=r"model 'churn': its code directory .*src does not exist"):
        _packaging(project).user_code()


def test_the_dockerfile_copies_the_staged_code_beside_its_mlops_toml() -> None:
    text = (ROOT / DOCKERFILE).read_text()
    copies = re.findall(r"^COPY (\S+) (\S+)$", text, flags=re.MULTILINE)
    assert ("${CONFIG_FILE}", "./mlops.toml") in copies
    assert ("${USER_CODE}/", "./") in copies
    # both land in the same directory: the one WORKDIR ${LAMBDA_TASK_ROOT} sets before them
    workdir, config, code = (text.index(line) for line in ("WORKDIR ${LAMBDA_TASK_ROOT}", "COPY ${CONFIG_FILE}",
                                                           "COPY ${USER_CODE}"))
    assert workdir < config < code

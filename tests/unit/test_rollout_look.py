"""One look of the rollout outside Step Functions: the registry a stand-in that records what the look asked of it, the
captures on moto S3. What it holds the model's lock for, and how it hands the rollout to the next execution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlops.aws.storage import ObjectStore
from mlops.core.config import ModelConfig
from mlops.release.rollout import LOOK_SECONDS, RolloutExecutions, RolloutState, analyze

MODEL = ModelConfig(name="m1", target="y", rollout_interval_seconds=1)


class Registry:
    """What a look reads and writes in the registry: a champion v1 and a challenger v2, the lock, the looks."""

    def __init__(self) -> None:
        self.locks: list[tuple[str, int]] = []
        self.looks: list[dict[str, Any]] = []

    def aliases(self, model: str) -> dict[str, int]:
        return {"champion": 1, "challenger": 2}

    def acquire_lock(self, model: str, owner: str, ttl_seconds: int = 900) -> bool:
        self.locks.append((owner, ttl_seconds))
        return True

    def release_lock(self, model: str, owner: str) -> None:
        pass

    def version(self, model: str, version: int) -> None:
        return None

    def record_look(self, model: str, challenger: int, look: dict[str, Any]) -> None:
        self.looks.append(look)


class Executions(RolloutExecutions):
    def __init__(self) -> None:
        super().__init__(None, "arn:aws:states:us-east-1:123456789012:stateMachine:mlops-rollout")
        self.started: list[tuple[str, dict[str, Any]]] = []

    def start(self, name: str, payload: dict[str, Any]) -> str:
        self.started.append((name, payload))
        return f"arn:aws:states:us-east-1:123456789012:execution:mlops-rollout:{name}"


@pytest.fixture
def captures() -> Any:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="captures")
        yield ObjectStore(s3, "captures")


def _look(state: RolloutState, captures: ObjectStore, registry: Registry, **kwargs: Any) -> dict[str, Any]:
    return analyze(state, model_cfg=MODEL, registry=registry, lifecycle=None,  # type: ignore[arg-type]
                   captures=captures, lock_owner="m1-v2-rollout", **kwargs)


def _state(**fields: Any) -> RolloutState:
    started = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="seconds")
    return RolloutState(model="m1", champion=1, challenger=2, started_at=started, **fields)


def test_a_look_holds_the_lock_as_long_as_the_function_may_run(captures: ObjectStore) -> None:
    """With a look every second, three intervals would free the lock under a look that takes four seconds."""
    registry = Registry()
    _look(_state(), captures, registry)
    assert registry.locks == [("m1-v2-rollout", LOOK_SECONDS)]
    assert LOOK_SECONDS == 300  # the rollout function's timeout (mlops.aws.platform)


def test_the_look_that_ends_an_executions_share_starts_the_next_execution(captures: ObjectStore) -> None:
    registry, executions = Registry(), Executions()
    first = _look(_state(generation=1), captures, registry, executions=executions, max_looks=2)
    assert (first["action"], first["execution_looks"], executions.started) == ("continue", 1, [])
    second = _look(RolloutState.model_validate(first), captures, registry, executions=executions, max_looks=2)
    [(name, payload)] = executions.started
    assert name == "m1-v2-rollout-2"
    # the next execution goes on from this look's payload, its own count of looks starting over
    assert (payload["generation"], payload["execution_looks"], payload["looks"]) == (2, 0, 2)
    assert payload["test"] == second["test"]
    assert [h["at"] for h in payload["history"]] == [h["at"] for h in second["history"]]
    # this one ends, saying where the rollout went on
    assert second["action"] == "continued"
    assert second["continued_as"] == {
        "name": name, "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:mlops-rollout:{name}"}
    assert [look["action"] for look in registry.looks] == ["continue", "continue"]


def test_a_start_made_already_is_that_execution() -> None:
    """A look retried after its answer was lost starts the next execution again, from a later payload: the name is
    taken, and the execution that has it is the rollout's next one."""
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        role = boto3.client("iam", region_name="us-east-1").create_role(
            RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        machine = sfn.create_state_machine(name="mlops-rollout", roleArn=role, definition=(
            '{"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 60, "End": true}}}'))["stateMachineArn"]
        executions = RolloutExecutions(sfn, machine)
        first = executions.start("m1-v2-rollout-3", {"looks": 6})
        assert executions.start("m1-v2-rollout-3", {"looks": 7}) == first
        assert [e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]] == ["m1-v2-rollout-3"]

"""`mlops local up --state DIR` survives a SIGKILL: a restart keeps the data, re-drives the work that was
interrupted (ingest, a training execution) and registers nothing twice. Real clients only."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = pytest.mark.slow

MODEL = "e2e"
# a forest large enough that training takes a few seconds: long enough to be killed in the middle
RESTART_CONFIG = """
[project]
project = "mlops"

[[model]]
name = "e2e"
target = "label"
task = "binary"
family = "random_forest"
params = { n_estimators = 150 }
thresholds = { accuracy = 0.85 }
"""


def _executions(server: LocalUp) -> list[dict[str, Any]]:
    executions: list[dict[str, Any]] = server.aws_json(
        "stepfunctions", "list-executions", "--state-machine-arn",
        f"arn:aws:states:{server.info['region']}:123456789012:stateMachine:mlops-training")["executions"]
    return executions


def _registered_versions(server: LocalUp) -> list[dict[str, Any]]:
    found = server.aws_json("dynamodb", "query", "--table-name", "mlops-registry", "--key-condition-expression",
                            "pk = :pk AND begins_with(sk, :v)", "--expression-attribute-values",
                            f'{{":pk": {{"S": "MODEL#{MODEL}"}}, ":v": {{"S": "VERSION#"}}}}')
    items: list[dict[str, Any]] = found["Items"]
    return items


def test_a_killed_server_restarts_with_its_state_and_trains_once(
        start_local_up: Callable[..., LocalUp], workdir: Path, world: Callable[..., list[dict[str, Any]]],
        csv_of: Callable[..., bytes]) -> None:
    config = workdir / "restart.toml"
    config.write_text(RESTART_CONFIG)
    state = workdir / "state"

    first = start_local_up(state, config=config)
    assert first.info["restored"] is False
    [model] = first.info["models"]
    first.upload(model, "world_a.csv", csv_of(world("a", 800, seed=1)))
    first.stop(signal.SIGKILL)  # the upload was answered; ingest had at most begun

    second = start_local_up(state, config=config)
    assert second.info["restored"] is True
    assert "world_a.csv" in second.aws("s3", "ls", model["incoming_prefix"]).stdout
    # a training execution: killed while it runs (a slow machine may only see it finished: still no loss)
    second.wait_for("a training execution", lambda: _executions(second), timeout=90, every=0)
    second.stop(signal.SIGKILL)

    third = start_local_up(state, config=config)
    assert "world_a.csv" in third.aws("s3", "ls", model["incoming_prefix"]).stdout
    champion = third.wait_for("the re-driven champion",
                              lambda: (third.http("GET", f"/models/{MODEL}")[1] or {}).get("champion"), timeout=120)
    assert champion["version"] == 1
    third.wait_for("no running execution", lambda: all(e["status"] != "RUNNING" for e in _executions(third)))
    assert len(_registered_versions(third)) == 1
    row = {k: v for k, v in world("a", 1, seed=5)[0].items() if k != "label"}
    status, answer = third.http("POST", f"/models/{MODEL}/predict", {"features": row})
    assert (status, answer["model_version"]) == (200, 1)
    assert third.stop() == 0

    # a clean stop and start: the champion is still served, by the same function version
    fourth = start_local_up(state, config=config)
    status, answer = fourth.http("POST", f"/models/{MODEL}/predict", {"features": row})
    assert (status, answer["model_version"]) == (200, 1)
    assert len(_registered_versions(fourth)) == 1

"""The canary decided by the sequential test on live feedback, end to end on moto: two datasets make a
champion and a challenger, traffic goes through the weighted `live` alias, feedback comes back, and the
rollout state machine promotes or rolls back, in as many executions as its history needs."""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlops.local.embedded import EmbeddedCloud
from mlops.local.iam.operations import Target
from mlops.release.rollout import EVENTS_PER_LOOK, MAX_LOOKS_VARIABLE, execution_name

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _call(cloud: EmbeddedCloud, path: str, body: Any) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((EVENTS / "apigw_predict.json").read_text()))
    event["path"], event["body"] = path, json.dumps(body)
    response = cloud.client("lambda").invoke(FunctionName=f"{cloud.function('infer:canary')}:live",
                                             Payload=json.dumps(event).encode())
    payload = json.loads(response["Payload"].read())
    assert payload["statusCode"] == 200, payload
    answer: dict[str, Any] = json.loads(payload["body"])
    return answer


def _champion_and_challenger(cloud: EmbeddedCloud, csv: bytes) -> None:
    cloud.upload("canary", "one.csv", csv)
    cloud.wait_for_executions(1)
    lines = csv.decode().splitlines()
    cloud.upload("canary", "two.csv", ("\n".join([lines[0], *reversed(lines[1:])]) + "\n").encode())
    executions = cloud.wait_for_executions(2)
    assert all(e["status"] == "SUCCEEDED" for e in executions)
    assert cloud.registry.aliases("canary") == {"champion": 1, "challenger": 2}


def _traffic(cloud: EmbeddedCloud, rows: list[dict[str, Any]], challenger_right: bool, until_done: int = 1500) -> dict:
    """Predict and send feedback until the rollout decides: the challenger is always right (or always wrong),
    the champion the opposite, so the test must find the difference."""
    seen = {"champion": 0, "challenger": 0}
    for i in range(until_done):
        answer = _call(cloud, "/models/canary/predict", {"features": rows[i % len(rows)]})
        seen[answer["variant"]] += 1
        right = (answer["variant"] == "challenger") == challenger_right
        label = answer["prediction"] if right else ("1" if answer["prediction"] == "0" else "0")
        _call(cloud, "/models/canary/feedback", {"request_id": answer["request_id"], "label": label})
        if i % 50 == 49 and all(e["status"] != "RUNNING"
                                for e in cloud.executions(cloud.deployment.rollout_arn)):
            break
    return seen


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    return [{k: float(v) for k, v in row.items()} for _, row in frame.head(200).iterrows()]


def _decided(cloud: EmbeddedCloud, action: str, champion: int) -> dict[str, Any]:
    """The rollout ended with `action`, and both the registry and the live alias agree on the champion."""
    [rollout] = cloud.wait_for_executions(1, timeout=120, state_machine_arn=cloud.deployment.rollout_arn)
    errors = [i.result for i in cloud.runtime.invocations if i.errored]
    failed = [e for e in cloud.history(rollout["executionArn"]) if "Failed" in e["type"]]
    assert rollout["status"] == "SUCCEEDED", json.dumps([errors, failed], default=str)[:3000]
    output: dict[str, Any] = json.loads(rollout["output"])
    assert output["action"] == action
    assert cloud.registry.aliases("canary") == {"champion": champion}
    version = cloud.registry.version("canary", champion)
    assert version is not None
    alias = cloud.live_alias("canary")
    assert alias["FunctionVersion"] == version.lambda_version
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")  # 100% on the champion
    [event] = cloud.registry.events("canary")
    assert event["action"] == action
    assert event["who"].startswith("rollout:")
    return output


def test_better_challenger_is_promoted_by_the_sequential_test(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes, rows: list[dict[str, Any]]
) -> None:
    _champion_and_challenger(cloud, breast_cancer_csv)
    seen = _traffic(cloud, rows, challenger_right=True)
    assert seen["champion"] > 0
    assert seen["challenger"] > 0  # the alias really split the traffic
    look = _decided(cloud, "promote", champion=2)["history"][-1]
    assert look["p_value"] <= 0.05
    assert look["n_control"] >= 100
    assert look["n_treatment"] >= 100
    # every look is on record with its statistics, the last one being the decision
    looks = cloud.registry.looks("canary", 2)
    assert len(looks) >= 2
    assert [x["action"] for x in looks[:-1]] == ["continue"] * (len(looks) - 1)
    assert looks[-1]["action"] == "promote"
    assert looks[-1]["p_value"] == look["p_value"]
    # the guardrails read both arms' serving metrics from CloudWatch (published by the infer function)
    assert looks[-1]["health"]["champion"]["requests"] > 0
    assert looks[-1]["health"]["challenger"]["requests"] > 0
    assert looks[-1]["health"]["challenger"]["error_rate"] == 0


def test_a_challenger_that_fails_to_serve_is_rolled_back_by_the_guardrail(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes, rows: list[dict[str, Any]]
) -> None:
    _champion_and_challenger(cloud, breast_cancer_csv)
    # the challenger's artefact no longer matches the sha256 on record: it must refuse to serve it
    cloud.client("dynamodb").update_item(
        TableName=cloud.deployment.names["registry"], Key={"pk": {"S": "MODEL#canary"}, "sk": {"S": "VERSION#000002"}},
        UpdateExpression="SET onnx_sha256 = :s", ExpressionAttributeValues={":s": {"S": "0" * 64}})
    statuses = {"champion": [], "challenger": []}
    event = json.loads((EVENTS / "apigw_predict.json").read_text())
    for i in range(400):
        event["path"], event["body"] = "/models/canary/predict", json.dumps({"features": rows[i % len(rows)]})
        response = cloud.client("lambda").invoke(FunctionName=f"{cloud.function('infer:canary')}:live",
                                             Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read())
        statuses["challenger" if payload["statusCode"] == 500 else "champion"].append(payload["statusCode"])
        if i % 50 == 49 and all(e["status"] != "RUNNING" for e in cloud.executions(cloud.deployment.rollout_arn)):
            break
    assert statuses["challenger"]  # the broken challenger answered 500s (JSON, not a crash)...
    assert set(statuses["champion"]) == {200}  # ...while the champion kept serving
    output = _decided(cloud, "rollback", champion=1)
    assert output["reason"].startswith("guardrail breached: error rate")
    # the sequential test had no feedback at all: the guardrail alone decided
    assert output["history"][-1]["n_treatment"] == 0


def test_worse_challenger_is_rolled_back(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes, rows: list[dict[str, Any]]
) -> None:
    _champion_and_challenger(cloud, breast_cancer_csv)
    _traffic(cloud, rows, challenger_right=False)
    look = _decided(cloud, "rollback", champion=1)["history"][-1]
    assert look["upper"] < 0  # the challenger is worse, with confidence


def captured_feedback(cloud: EmbeddedCloud, better: int, worse: int, n: int = 600, model: str = "canary") -> None:
    """n answers split between the two arms, each with its label: ``better`` always right, ``worse`` right
    half of the time. One capture object, in Firehose's layout and serving's record format."""
    now = datetime.now(UTC)
    lines = []
    for i in range(n):
        version = (better, worse)[i % 2]
        right = version == better or i % 4 < 2
        request_id = str(uuid.uuid4())
        at = now.isoformat(timespec="milliseconds")
        lines.append({"type": "prediction", "model": model, "time": at, "request_id": request_id,
                      "model_version": version, "prediction": "1", "features": {}})
        lines.append({"type": "feedback", "model": model, "time": at, "request_id": request_id,
                      "label": "1" if right else "0", "reward": None})
    key = f"captures/{now:%Y/%m/%d/%H}/mlops-captures-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
    cloud.client("s3").put_object(Bucket=cloud.deployment.names["captures"], Key=key,
                                  Body="".join(json.dumps(line) + "\n" for line in lines).encode())


def test_a_long_rollout_continues_in_new_executions_and_still_decides(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two looks per execution instead of 694 (the history's cap, mlops.release.rollout): the rollout hands its state
    to a new execution of the same state machine, named after the model, the challenger and the generation, and the
    sequential test goes on from where it was to its decision."""
    monkeypatch.setenv(MAX_LOOKS_VARIABLE, "2")
    arn = cloud.deployment.rollout_arn
    # the deployed role lets the rollout start its own next execution (mlops.aws.access)
    assert cloud.guard is not None
    assert cloud.guard.policies[cloud.function("rollout")].allows(Target("states:StartExecution", arn))
    _champion_and_challenger(cloud, breast_cancer_csv)
    deadline = time.monotonic() + 60
    while len(cloud.executions(arn)) < 3 and time.monotonic() < deadline:  # two hand-overs without any feedback
        time.sleep(0.2)
    captured_feedback(cloud, better=2, worse=1)
    executions = sorted(cloud.wait_for_executions(3, timeout=120, state_machine_arn=arn),
                        key=lambda e: e["startDate"])
    names = [e["name"] for e in executions]
    assert names == [execution_name("canary", 2, g) for g in range(len(names))]
    assert names[:2] == ["canary-v2-rollout", "canary-v2-rollout-1"]
    assert [e["status"] for e in executions] == ["SUCCEEDED"] * len(executions)
    outputs = [json.loads(e["output"]) for e in executions]
    for output, following in zip(outputs, executions[1:], strict=False):
        # each ended after its two looks, saying where the rollout went on, and that one started from its payload
        assert output["action"] == "continued"
        assert output["continued_as"]["execution_arn"] == following["executionArn"]
        assert json.loads(following["input"])["looks"] == output["looks"]
    assert [o["looks"] for o in outputs[:-1]] == [2 * (g + 1) for g in range(len(outputs) - 1)]
    assert outputs[-1]["action"] == "promote"
    assert cloud.registry.aliases("canary") == {"champion": 2}
    # one sequential test across the executions: every look on record, the last the promotion
    looks = cloud.registry.looks("canary", 2)
    assert len(looks) == outputs[-1]["looks"]
    assert [x["action"] for x in looks] == ["continue"] * (len(looks) - 1) + ["promote"]
    # the first execution's history: its two looks, the start and the hand-over
    history = cloud.history(executions[0]["executionArn"])
    assert len(history) <= 2 * EVENTS_PER_LOOK + 5, [e["type"] for e in history]

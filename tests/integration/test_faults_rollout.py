"""Faults on the wire under the rollout (the machinery of test_faults, the scenario of test_rollout): a champion,
a challenger at its canary weight, and a rollout looking every second. The feedback that decides it is
written as serving captures it, so the looks, the alias move and the registry write all run under faults."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from test_faults import answers_lost, every_other_attempt_fails, refused, wire_faults
from test_rollout import _champion_and_challenger, _decided

from mlops.local.embedded import EmbeddedCloud

MODEL = "canary"
LOOK_CALLS = ("dynamodb.Query", "dynamodb.GetItem", "dynamodb.PutItem", "dynamodb.DeleteItem", "s3.ListObjectsV2",
              "s3.GetObject", "cloudwatch.GetMetricData")


def _feedback(cloud: EmbeddedCloud, better: int, worse: int, n: int = 600) -> None:
    """n answers split between the two arms, each with its label: ``better`` always right, ``worse`` right
    half of the time. One capture object, in Firehose's layout and serving's record format."""
    now = datetime.now(UTC)
    lines = []
    for i in range(n):
        version = (better, worse)[i % 2]
        right = version == better or i % 4 < 2
        request_id = str(uuid.uuid4())
        at = now.isoformat(timespec="milliseconds")
        lines.append({"type": "prediction", "model": MODEL, "time": at, "request_id": request_id,
                      "model_version": version, "prediction": "1", "features": {}})
        lines.append({"type": "feedback", "model": MODEL, "time": at, "request_id": request_id,
                      "label": "1" if right else "0", "reward": None})
    key = f"captures/{now:%Y/%m/%d/%H}/mlops-captures-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
    cloud.client("s3").put_object(Bucket=cloud.deployment.names["captures"], Key=key,
                                  Body="".join(json.dumps(line) + "\n" for line in lines).encode())


def _live_versions(cloud: EmbeddedCloud) -> dict[str, float]:
    """The function versions the live alias sends traffic to, with their shares."""
    alias = cloud.client("lambda").get_alias(FunctionName=f"mlops-infer-{MODEL}", Name="live")
    weights = {v: float(w) for v, w in ((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
                                        or {}).items()}
    return {alias["FunctionVersion"]: 1 - sum(weights.values()), **weights}


def test_every_call_failing_once_promotes_as_without(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """Each call of the looks, of the alias move and of the promotion's record fails once: the same promotion
    as without faults, one audit record, the registry and the traffic agreeing (test_rollout's _decided)."""
    _champion_and_challenger(cloud, breast_cancer_csv)
    with wire_faults(every_other_attempt_fails) as faults:
        _feedback(cloud, better=2, worse=1)
        output = _decided(cloud, "promote", champion=2)
    for operation in (*LOOK_CALLS, "lambda.UpdateAlias", "dynamodb.TransactWriteItems"):
        assert faults.injected[operation] > 0, operation
    assert output["history"][-1]["p_value"] <= 0.05


def test_an_alias_move_and_record_whose_answers_are_lost_are_done_once(
        cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """The alias update and the registry transaction of a rollback are done, their answers lost, and retried:
    the rollback stands, with one audit record, and the registry agrees with the traffic."""
    _champion_and_challenger(cloud, breast_cancer_csv)
    with wire_faults(answers_lost) as faults:
        _feedback(cloud, better=1, worse=2)
        _decided(cloud, "rollback", champion=1)
    for operation in ("lambda.UpdateAlias", "dynamodb.TransactWriteItems", "dynamodb.PutItem"):
        assert faults.injected[operation] > 0, operation


def test_a_refused_registry_write_fails_the_rollout_and_keeps_the_split(
        cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """The registry refuses the promotion's transaction, after the alias moved: the rollout fails under its
    Step Functions error, the alias goes back to the split the registry records, and no audit record claims
    a promotion that did not happen."""
    _champion_and_challenger(cloud, breast_cancer_csv)
    split = _live_versions(cloud)
    with wire_faults(refused("dynamodb.TransactWriteItems", cloud.deployment.names["registry"])) as faults:
        _feedback(cloud, better=2, worse=1)
        [rollout] = cloud.wait_for_executions(1, timeout=120, state_machine_arn=cloud.deployment.rollout_arn)
    assert faults.injected["dynamodb.TransactWriteItems"] > 0
    assert (rollout["status"], rollout.get("error")) == ("FAILED", "RolloutFailed")
    causes = [json.dumps(e, default=str) for e in cloud.history(rollout["executionArn"]) if "Failed" in e["type"]]
    assert any("AccessDeniedException" in c and "TransactWriteItems" in c for c in causes), causes
    assert cloud.registry.aliases(MODEL) == {"champion": 1, "challenger": 2}
    assert cloud.registry.events(MODEL) == []
    assert _live_versions(cloud) == split
    assert set(split) <= {v.lambda_version for v in cloud.registry.versions(MODEL)}

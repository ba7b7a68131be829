"""Faults on the wire under the rollout (the machinery of test_faults, the scenario of test_rollout): a champion,
a challenger at its canary weight, and a rollout looking every second. The feedback that decides it is
written as serving captures it, so the looks, the alias move and the registry write all run under faults."""

from __future__ import annotations

import json

from test_faults import answers_lost, every_other_attempt_fails, refused, wire_faults
from test_rollout import _champion_and_challenger, _decided, captured_feedback

from mlops.local.embedded import EmbeddedCloud

MODEL = "canary"
LOOK_CALLS = ("dynamodb.Query", "dynamodb.GetItem", "dynamodb.PutItem", "dynamodb.DeleteItem", "s3.ListObjectsV2",
              "s3.GetObject", "cloudwatch.GetMetricData")


def _live_versions(cloud: EmbeddedCloud) -> dict[str, float]:
    """The function versions the live alias sends traffic to, with their shares."""
    alias = cloud.live_alias(MODEL)
    weights = {v: float(w) for v, w in ((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
                                        or {}).items()}
    return {alias["FunctionVersion"]: 1 - sum(weights.values()), **weights}


def test_every_call_failing_once_promotes_as_without(cloud: EmbeddedCloud, breast_cancer_csv: bytes) -> None:
    """Each call of the looks, of the alias move and of the promotion's record fails once: the same promotion
    as without faults, one audit record, the registry and the traffic agreeing (test_rollout's _decided)."""
    _champion_and_challenger(cloud, breast_cancer_csv)
    with wire_faults(every_other_attempt_fails) as faults:
        captured_feedback(cloud, better=2, worse=1)
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
        captured_feedback(cloud, better=1, worse=2)
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
        captured_feedback(cloud, better=2, worse=1)
        [rollout] = cloud.wait_for_executions(1, timeout=120, state_machine_arn=cloud.deployment.rollout_arn)
    assert faults.injected["dynamodb.TransactWriteItems"] > 0
    assert (rollout["status"], rollout.get("error")) == ("FAILED", "RolloutFailed")
    causes = [json.dumps(e, default=str) for e in cloud.history(rollout["executionArn"]) if "Failed" in e["type"]]
    assert any("AccessDeniedException" in c and "TransactWriteItems" in c for c in causes), causes
    assert cloud.registry.aliases(MODEL) == {"champion": 1, "challenger": 2}
    assert cloud.registry.events(MODEL) == []
    assert _live_versions(cloud) == split
    assert set(split) <= {v.lambda_version for v in cloud.registry.versions(MODEL)}

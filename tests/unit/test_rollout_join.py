"""The rollout's incremental join of captured predictions and feedback (on moto S3), for both metrics:
labels (accuracy) and numeric rewards (mean reward through the sequential test's means variant)."""

from __future__ import annotations

import json
import random
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlops.abtest import SequentialTest
from mlops.rollout import RolloutState, _look_at_metric, join_new_captures
from mlops.storage import ObjectStore

STARTED = "2026-11-27T10:00:00+00:00"


def _record(kind: str, request_id: str, version: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "model": "m", "time": "2026-11-27T10:05:00+00:00", "request_id": request_id,
            "model_version": version, **fields}


@pytest.fixture
def captures() -> Any:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="captures")
        yield ObjectStore(s3, "captures")


def _put(captures: ObjectStore, key: str, records: list[dict[str, Any]]) -> None:
    captures.s3.put_object(Bucket="captures", Key=key, Body="".join(json.dumps(r) + "\n" for r in records).encode())


def test_rewards_are_joined_by_request_id_once_and_feed_the_means_test(captures: ObjectStore) -> None:
    rng = random.Random(7)
    predictions, feedback = [], []
    for i in range(600):
        version = 1 if i % 2 else 2
        predictions.append(_record("prediction", f"r{i}", version, prediction="a"))
        # the challenger (v2) earns one more unit of reward on average
        feedback.append(_record("feedback", f"r{i}", version, reward=rng.gauss(1.0 if version == 1 else 2.0, 1.0)))
    feedback.append(dict(feedback[0]))  # a repeated feedback counts once
    feedback.append(_record("feedback", "unknown", 2, reward=100.0))  # feedback of no captured prediction
    _put(captures, "captures/m/2026/11/27/10/a", predictions[:300])
    _put(captures, "captures/m/2026/11/27/10/b", predictions[300:] + feedback[:300])
    state = RolloutState(model="m", champion=1, challenger=2, started_at=STARTED)
    join_new_captures(state, captures)
    assert state.rewards["2"][0] == 150  # half the first 300 feedback records are the challenger's
    _put(captures, "captures/m/2026/11/27/10/c", feedback[300:])
    join_new_captures(state, captures)  # only the new object is read
    assert state.rewards["1"][0] == 300
    assert state.rewards["2"][0] == 300
    assert state.rewards["1"][1] / 300 == pytest.approx(1.0, abs=0.2)
    assert state.rewards["2"][1] / 300 == pytest.approx(2.0, abs=0.2)
    assert state.counts["2"] == [0, 0]  # no labels were given
    test = SequentialTest(max_samples_per_arm=20000, alpha=0.05, mde=0.5)
    decision = _look_at_metric(state, test, "reward")
    assert decision.action == "promote"
    assert decision.rate_treatment - decision.rate_control == pytest.approx(1.0, abs=0.25)


def test_labels_count_correct_predictions_per_version(captures: ObjectStore) -> None:
    records = [_record("prediction", "x1", 1, prediction="yes"), _record("prediction", "x2", 2, prediction="no"),
               _record("feedback", "x1", 1, label="yes"), _record("feedback", "x2", 2, label="yes")]
    _put(captures, "captures/m/k", records)
    state = RolloutState(model="m", champion=1, challenger=2, started_at=STARTED)
    join_new_captures(state, captures)
    assert state.counts == {"1": [1, 1], "2": [0, 1]}

"""The rollout's incremental join of captured predictions and feedback (on moto S3), for both metrics:
labels (accuracy) and numeric rewards (mean reward through the sequential test's means variant); capture objects
landing late and out of key order, each counted once; the payload within Step Functions' bound."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlops.aws.storage import ObjectStore
from mlops.release.abtest import SequentialTest
from mlops.release.rollout import (
    MAX_ORPHANS,
    MAX_PENDING,
    MAX_RECENT,
    ORPHAN_BYTES,
    PENDING_BYTES,
    SETTLE,
    ReadObjects,
    RolloutState,
    _look_at_metric,
    _newest,
    join_new_captures,
)

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


def test_a_line_that_is_not_json_is_skipped_and_counted_not_fatal(captures: ObjectStore) -> None:
    # what the log pipeline could put among the captures: a health-check message, a line cut short
    records = [_record("prediction", "x1", 1, prediction="yes"), _record("feedback", "x1", 1, label="yes")]
    body = ("CWL CONTROL MESSAGE: Checking health of destination Firehose.\n" + json.dumps(records[0]) + "\n"
            + '{"type": "predic\n' + json.dumps(records[1]) + "\n")
    captures.s3.put_object(Bucket="captures", Key="captures/m/k", Body=body.encode())
    state = RolloutState(model="m", champion=1, challenger=2, started_at=STARTED)
    join_new_captures(state, captures)
    assert state.counts["1"] == [1, 1]
    assert captures.invalid_lines == 2


# -- capture objects that land late and out of key order (Firehose keys by the oldest record's arrival) ---------------
def _firehose_key(at: datetime, tag: str) -> str:
    return f"captures/{at:%Y/%m/%d/%H}/mlops-captures-1-{at:%Y-%m-%d-%H-%M-%S}-{tag}"


def _pairs(prefix: str, n: int, version: int, at: datetime, right: bool = True) -> list[dict[str, Any]]:
    """n predictions of ``version`` with their feedback (right or wrong), timed ``at``."""
    out = []
    for i in range(n):
        when = at.isoformat(timespec="milliseconds")
        out.append({"type": "prediction", "model": "m", "time": when, "request_id": f"{prefix}{i}",
                    "model_version": version, "prediction": "1"})
        out.append({"type": "feedback", "model": "m", "time": when, "request_id": f"{prefix}{i}",
                    "label": "1" if right else "0"})
    return out


def test_a_late_object_keyed_before_one_read_is_counted_once_and_no_object_twice(captures: ObjectStore) -> None:
    now = datetime.now(UTC)
    state = RolloutState(model="m", champion=1, challenger=2,
                         started_at=(now - timedelta(hours=1)).isoformat(timespec="seconds"))
    _put(captures, _firehose_key(now - timedelta(minutes=5), "b"), _pairs("b", 10, 2, now - timedelta(minutes=5)))
    join_new_captures(state, captures)
    assert state.counts == {"1": [0, 0], "2": [10, 10]}
    # its buffer opened earlier (a smaller key), but S3 refused the write for a while: it lands after "b" was read
    _put(captures, _firehose_key(now - timedelta(minutes=9), "a"), _pairs("a", 7, 1, now - timedelta(minutes=8),
                                                                          right=False))
    join_new_captures(state, captures)  # lists both, reads "a" only
    assert state.counts == {"1": [0, 7], "2": [10, 10]}
    join_new_captures(state, captures)  # nothing new: "a" and "b" are listed again, neither read
    assert state.counts == {"1": [0, 7], "2": [10, 10]}


def test_feedback_read_before_its_late_prediction_counts_when_the_prediction_lands(captures: ObjectStore) -> None:
    now = datetime.now(UTC)
    state = RolloutState(model="m", champion=1, challenger=2,
                         started_at=(now - timedelta(hours=1)).isoformat(timespec="seconds"))
    records = _pairs("r", 4, 2, now - timedelta(minutes=20))
    _put(captures, _firehose_key(now - timedelta(minutes=2), "feedback"), records[1::2])
    join_new_captures(state, captures)
    assert state.counts["2"] == [0, 0]
    assert len(state.orphans) == 4  # waiting for their predictions, in the payload
    _put(captures, _firehose_key(now - timedelta(minutes=20), "predictions"), records[0::2])
    join_new_captures(state, captures)
    assert state.counts["2"] == [4, 4]
    assert state.orphans == {}
    assert state.pending == {}


def test_what_was_read_stays_bounded_however_many_objects_land() -> None:
    """The payload names only objects landing within SETTLE of a look, at most MAX_RECENT of them: beyond that,
    the older are taken as read by their time, so none is read twice."""
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    listed = [(f"captures/k{i:05d}", at - timedelta(seconds=i % 600)) for i in range(MAX_RECENT + 500)]
    listed += [(f"captures/old{i}", at - SETTLE - timedelta(minutes=i + 1)) for i in range(100)]
    read = ReadObjects.after(listed, at)
    assert len(read.recent) <= MAX_RECENT
    assert all(read.has(key, modified) for key, modified in listed)
    assert not read.has("captures/new", at)
    assert len(read.model_dump_json()) < 32_000


def test_the_payload_stays_under_step_functions_256_kib_at_its_bounds() -> None:
    """Every part of the state at its bound, with the longest request ids a client may send (128 characters)."""
    long_id = "x" * 120
    state = RolloutState(
        model="m" * 40, champion=1, challenger=2, started_at=STARTED,
        pending=_newest({f"{long_id}{i:08d}": [1, "a long class label"] for i in range(5000)}, MAX_PENDING,
                        PENDING_BYTES),
        orphans=_newest({f"{long_id}{i:08d}": ["label", "a long class label"] for i in range(5000)}, MAX_ORPHANS,
                        ORPHAN_BYTES),
        read=ReadObjects(until=STARTED, recent=["0" * 12] * MAX_RECENT))
    test = SequentialTest(max_samples_per_arm=20000, alpha=0.05, mde=0.05)
    decision = test.update(4000, 9000, 4200, 9000)
    look = {"at": STARTED, **decision.to_dict(), "metric": "accuracy", "champion": 1, "action": "continue",
            "reason": decision.reason, "health": {arm: {"requests": 123456.0, "errors": 1234.0, "error_rate": 0.01,
                                                        "p95_ms": 123.456} for arm in ("champion", "challenger")}}
    payload = {**state.model_dump(), "test": test.to_dict(), "history": [look] * 50, "action": "continue",
               "reason": decision.reason, "wait_seconds": 300, "next_execution": "m" * 40 + "-v123-rollout-12"}
    assert len(json.dumps(payload).encode()) < 262_144 * 0.9

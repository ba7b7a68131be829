"""Faults on the wire under drift_check (the machinery of test_faults, the scenario of test_drift_check): three
hourly windows, quiet, drifting, drifting, where the third asks for retraining. Each scenario runs in its
own epoch, far enough from the others that their windows, labelled rows and cooldowns do not meet."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from botocore.exceptions import ClientError
from test_drift_check import T0, drift_cloud, frame, invoke, put_window
from test_faults import Fault, answers_lost, every_other_attempt_fails, refused, wire_faults

from mlops.core.clock import iso, stamp
from mlops.core.config import ModelConfig
from mlops.drift.retraining import DriftCheckRefused, maybe_retrain
from mlops.local.embedded import EmbeddedCloud
from mlops.registry.versions import CHAMPION

__all__ = ["drift_cloud", "frame"]  # the fixtures of test_drift_check, used here by name

DRIFTING = (False, True, True)
# what a check concludes; the rest (report keys, the retraining file's rows) depends on the window's time
OUTCOME = ("status", "rows", "drifted_features", "features", "prediction_drift", "prediction_effect", "concept")
Cloud = tuple[EmbeddedCloud, io.StringIO]


def _epoch(n: int) -> datetime:
    # beyond the retraining horizon (30 days) of the epoch before: each scenario decides on its own windows
    return T0 + timedelta(days=60 * n)


def _window_end(epoch: datetime, n: int) -> datetime:
    return epoch + timedelta(hours=n + 1)


def _captures(cloud: EmbeddedCloud, frame: pd.DataFrame, epoch: datetime) -> None:
    for h, drift in enumerate(DRIFTING):
        put_window(cloud, frame, epoch + timedelta(hours=h), drift=drift, seed=h)


def _check(cloud: EmbeddedCloud, epoch: datetime, n: int) -> dict[str, Any]:
    return invoke(cloud, {"model": "drifty", "window_end": _window_end(epoch, n).isoformat()})


def _outcome(summary: dict[str, Any]) -> dict[str, Any]:
    return {**{k: summary[k] for k in OUTCOME}, "retrain": (summary["retrain"]["requested"],
                                                           summary["retrain"]["reason"])}


def _decisions(cloud: EmbeddedCloud, epoch: datetime) -> list[bool]:
    """Whether each decision of the epoch asked for retraining, oldest first."""
    last = iso(_window_end(epoch, len(DRIFTING) - 1))
    return [d["requested"] for d in cloud.registry.retrain_decisions("drifty") if iso(epoch) < d["at"] <= last]


def _retraining_files(cloud: EmbeddedCloud, epoch: datetime) -> list[str]:
    return [k for k in cloud.data.keys("incoming/drifty/drift-retrain-")
            if stamp(epoch) < k.rsplit("-", 1)[-1].removesuffix(".csv") <= stamp(epoch + timedelta(days=1))]


def test_every_call_failing_once_changes_no_conclusion(drift_cloud: Cloud, frame: pd.DataFrame) -> None:
    cloud, _ = drift_cloud
    clean, faulted = _epoch(1), _epoch(2)
    _captures(cloud, frame, clean)
    _captures(cloud, frame, faulted)
    expected = [_outcome(_check(cloud, clean, n)) for n in range(3)]
    with wire_faults(every_other_attempt_fails) as faults:
        got = [_outcome(_check(cloud, faulted, n)) for n in range(3)]
    # each of its calls failed once, reads and writes alike...
    for operation in ("dynamodb.Query", "dynamodb.GetItem", "dynamodb.PutItem", "s3.ListObjectsV2", "s3.GetObject",
                      "s3.PutObject", "sns.Publish"):
        assert faults.injected[operation] > 0, operation
    # ...and the checks concluded what they conclude without faults, retraining asked once
    assert got == expected
    assert [r["retrain"][0] for r in got] == [False, False, True]
    assert _decisions(cloud, faulted) == [False, False, True]
    assert len(_retraining_files(cloud, faulted)) == 1


def test_writes_whose_answer_is_lost_ask_for_retraining_once(drift_cloud: Cloud, frame: pd.DataFrame) -> None:
    """The report, the window and decision items, the retraining claim and file, the alert: each done, its answer
    lost, and retried by the SDK. The claim must recognise itself, or retraining is never asked for."""
    cloud, _ = drift_cloud
    epoch = _epoch(3)
    _captures(cloud, frame, epoch)
    with wire_faults(answers_lost) as faults:
        summaries = [_check(cloud, epoch, n) for n in range(3)]
    for operation in ("s3.PutObject", "dynamodb.PutItem", "sns.Publish"):
        assert faults.injected[operation] > 0, operation
    assert [s["retrain"]["requested"] for s in summaries] == [False, False, True], summaries[-1]["retrain"]
    assert [s["notified"] for s in summaries] == list(DRIFTING)  # an alert for each drifting window (at least once)
    assert _decisions(cloud, epoch) == [False, False, True]
    assert _retraining_files(cloud, epoch) == [f"incoming/drifty/drift-retrain-{stamp(_window_end(epoch, 2))}.csv"]
    assert cloud.registry.last_retrain_request("drifty") == iso(_window_end(epoch, 2))
    windows = cloud.registry.drift_windows("drifty", after=iso(epoch))
    assert [w["drifted"] for w in windows if w["window_end"] <= iso(_window_end(epoch, 2))] == list(DRIFTING)


def test_a_refused_retraining_file_fails_the_check_and_holds_nothing_back(
        drift_cloud: Cloud, frame: pd.DataFrame) -> None:
    """drift_check may not write under incoming/ (a broken policy): the check fails naming the file, no decision
    is left half made (no claim holding the cooldown, no decision, no file), and once the policy is mended
    the same check asks for retraining, once."""
    cloud, _ = drift_cloud
    epoch = _epoch(4)
    _captures(cloud, frame, epoch)
    before = cloud.registry.last_retrain_request("drifty")
    assert [_check(cloud, epoch, n)["retrain"]["requested"] for n in range(2)] == [False, False]
    with wire_faults(refused("s3.PutObject", cloud.deployment.data_bucket, "/incoming/")) as faults:
        response = cloud.client("lambda").invoke(FunctionName=cloud.function("drift_check"), Payload=json.dumps(
            {"model": "drifty", "window_end": _window_end(epoch, 2).isoformat()}).encode())
    error = json.loads(response["Payload"].read())
    assert faults.injected["s3.PutObject"] > 0
    assert response.get("FunctionError"), error
    assert error["errorType"] == "DriftCheckRefused"
    file = cloud.data.uri(f"incoming/drifty/drift-retrain-{stamp(_window_end(epoch, 2))}.csv")
    assert file in error["errorMessage"]
    assert "AccessDenied" in error["errorMessage"]
    assert cloud.registry.last_retrain_request("drifty") == before
    assert _decisions(cloud, epoch) == [False, False]
    assert _retraining_files(cloud, epoch) == []

    again = _check(cloud, epoch, 2)
    assert again["retrain"]["requested"] is True, again["retrain"]
    assert _decisions(cloud, epoch) == [False, False, True]
    assert len(_retraining_files(cloud, epoch)) == 1


# -- what may fail once retraining is claimed ----------------------------------------------------------------------
# A model with a feature store: its retraining file follows the data's own contract (contracts/<model>/ in the data
# bucket), not the champion's. Its windows are recorded directly: three drifting windows of 100 labelled rows each, so
# retraining is due (3 of 4, 200 labels).
SHOP = ModelConfig.model_validate({"name": "shop", "target": "bought", "features": {
    "entity_key": "customer", "columns": [{"name": "spend", "aggregate": "sum"}]}})


def _due(cloud: EmbeddedCloud, epoch: datetime) -> datetime:
    for h in range(1, 4):
        cloud.registry.record_drift_window(SHOP.name, iso(epoch + timedelta(hours=h)), status="drifted", drifted=True,
                                           labelled_rows=100, details={})
    return epoch + timedelta(hours=3)


def _retrain(cloud: EmbeddedCloud, at: datetime) -> dict[str, Any]:
    champion = cloud.registry.alias("drifty", CHAMPION)  # used for a model without a feature store only
    assert champion is not None
    return maybe_retrain(SHOP, at=at, registry=cloud.registry, models=cloud.models, data=cloud.data, champion=champion)


def test_a_refused_contract_read_fails_the_check_and_claims_nothing(drift_cloud: Cloud) -> None:
    """drift_check may not read contracts/ (a policy that forgot it): the check fails naming what it read, and no
    claim is left holding off retraining for the cooldown."""
    cloud, _ = drift_cloud
    at = _due(cloud, _epoch(5))
    what = f"reading the data contract of shop under {cloud.data.uri('contracts/shop/')} was refused: AccessDenied"
    with wire_faults(refused("s3.ListObjectsV2", cloud.deployment.data_bucket, "contracts")) as faults, \
            pytest.raises(DriftCheckRefused, match=re.escape(what)):
        _retrain(cloud, at)
    assert faults.injected["s3.ListObjectsV2"] > 0
    assert cloud.registry.last_retrain_request(SHOP.name) is None
    assert cloud.registry.retrain_decisions(SHOP.name) == []


def test_a_retraining_file_that_cannot_be_written_gives_the_claim_back(drift_cloud: Cloud) -> None:
    """S3 answers 503 to every attempt of the retraining file's write (not a refusal: an outage outlasting the SDK's
    retries). The error reaches the caller as it is, and the claim goes back: no request was made."""
    cloud, _ = drift_cloud
    at = _due(cloud, _epoch(6))

    def down(operation: str, seen: int, request: Any) -> Fault:
        return (503, "ServiceUnavailable") if operation == "s3.PutObject" and "/incoming/shop/" in request.url else None

    with wire_faults(down) as faults, pytest.raises(ClientError, match="ServiceUnavailable"):
        _retrain(cloud, at)
    assert faults.injected["s3.PutObject"] > 1  # the SDK retried it
    assert cloud.registry.last_retrain_request(SHOP.name) is None
    assert cloud.registry.retrain_decisions(SHOP.name) == []

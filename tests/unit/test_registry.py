from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlops.registry.store import CHALLENGER, CHAMPION, Registry


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(
            TableName="reg", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
        )
        yield Registry(db, "reg")


def _register(registry: Registry, run_id: str, alias: str | None) -> Any:
    return registry.register(model="m", run_id=run_id, artefacts_prefix=f"s3://b/models/m/runs/{run_id}/",
                             onnx_sha256="ab" * 32, dataset_sha256="cd" * 32, metrics={"accuracy": 0.9}, alias=alias)


def test_versions_are_numbered_and_aliased(registry: Registry) -> None:
    v1 = _register(registry, "r1", CHAMPION)
    v2 = _register(registry, "r2", CHALLENGER)
    assert (v1.version, v1.aliases) == (1, (CHAMPION,))
    assert (v2.version, v2.aliases) == (2, (CHALLENGER,))
    assert registry.alias("m", CHAMPION).version == 1  # type: ignore[union-attr]
    assert v2.model_uri == "s3://b/models/m/runs/r2/model.onnx"
    assert [r.outcome for r in registry.runs("m")] == ["registered", "registered"]


def test_register_is_idempotent_per_run(registry: Registry) -> None:
    first = _register(registry, "r1", CHAMPION)
    again = _register(registry, "r1", CHAMPION)
    assert again.version == first.version == 1
    assert registry.latest_version("m") == 1


def test_concurrent_writer_gets_the_next_number(registry: Registry) -> None:
    _register(registry, "r1", CHAMPION)
    # Simulate a racer: the counter moved between our read and our transaction.
    original = registry.latest_version
    calls = iter([1, 2])
    registry.latest_version = lambda model: next(calls)  # type: ignore[method-assign]
    registry.db.update_item(TableName="reg", Key={"pk": {"S": "MODEL#m"}, "sk": {"S": "META"}},
                            UpdateExpression="SET latest_version = :v", ExpressionAttributeValues={":v": {"N": "2"}})
    v = _register(registry, "r3", None)
    registry.latest_version = original  # type: ignore[method-assign]
    assert v.version == 3


def test_a_dataset_is_claimed_once(registry: Registry) -> None:
    assert registry.claim_dataset("m", "sha", "run-1") is True
    assert registry.claim_dataset("m", "sha", "run-2") is False
    registry.release_dataset("m", "sha")
    assert registry.claim_dataset("m", "sha", "run-3") is True


def test_rejections_and_failures_are_recorded_without_a_version(registry: Registry) -> None:
    registry.record_run("m", "r9", "rejected", "accuracy 0.5 is below the threshold 0.9", {"x": 1})
    assert registry.versions("m") == []
    run = registry.run("m", "r9")
    assert run is not None
    assert run.outcome == "rejected"
    assert "below the threshold" in run.reason


def test_a_version_carries_the_sha256_of_its_manifest(registry: Registry) -> None:
    vouched = registry.register(model="m", run_id="r1", artefacts_prefix="s3://b/models/m/runs/r1/",
                                onnx_sha256="ab" * 32, dataset_sha256="cd" * 32, metrics={}, alias=CHAMPION,
                                manifest_sha256="ef" * 32)
    assert vouched.manifest_sha256 == "ef" * 32
    assert registry.version("m", 1).manifest_sha256 == "ef" * 32  # type: ignore[union-attr]
    assert registry.versions("m")[0].to_dict()["manifest_sha256"] == "ef" * 32
    # a record written without it (before manifests were vouched for) reads as None: serving refuses it
    assert _register(registry, "r2", CHALLENGER).manifest_sha256 is None


def test_looks_within_one_second_keep_their_order(registry: Registry) -> None:
    """A rollout looking every second records several looks with the same `at`: `mlops ab status` and the audit
    read them in the order they were taken, the decision last."""
    for number in range(1, 11):
        registry.record_look("m", 2, {"at": "2026-12-03T08:00:00+00:00", "number": number,
                                      "action": "promote" if number == 10 else "continue"})
    assert [look["number"] for look in registry.looks("m", 2)] == list(range(1, 11))
    assert registry.looks("m", 2)[-1]["action"] == "promote"

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION


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


# Items as the registry wrote them before its records were split into modules: a registry written then must read
# the same now (attribute names, DynamoDB types, key formats).
def _s(value: str) -> dict[str, str]:
    return {"S": value}


PK = _s("MODEL#m")
STORED: list[dict[str, Any]] = [
    {"pk": PK, "sk": _s("META"), "latest_version": {"N": "2"}},
    {"pk": PK, "sk": _s("VERSION#000001"), "version": {"N": "1"}, "run_id": _s("r1"), "status": _s("champion"),
     "created_at": _s("2026-12-01T09:00:00+00:00"), "artefacts_prefix": _s("s3://b/models/m/runs/r1/"),
     "onnx_sha256": _s("ab" * 32), "dataset_sha256": _s("cd" * 32), "metrics": _s('{"accuracy": 0.9}')},
    {"pk": PK, "sk": _s("VERSION#000002"), "version": {"N": "2"}, "run_id": _s("r2"), "status": _s("challenger"),
     "created_at": _s("2026-12-01T10:00:00+00:00"), "artefacts_prefix": _s("s3://b/models/m/runs/r2/"),
     "onnx_sha256": _s("12" * 32), "dataset_sha256": _s("34" * 32), "metrics": _s('{"accuracy": 0.95}'),
     "manifest_sha256": _s("ef" * 32), "lambda_version": _s("3")},
    {"pk": PK, "sk": _s("ALIAS#champion"), "version": {"N": "1"}},
    {"pk": PK, "sk": _s("ALIAS#challenger"), "version": {"N": "2"}},
    {"pk": PK, "sk": _s("RUN#r2"), "outcome": _s("registered"), "reason": _s("registered as version 2"),
     "at": _s("2026-12-01T10:00:00+00:00"), "details": _s('{"version": 2, "alias": "challenger"}')},
    {"pk": PK, "sk": _s("DATASET#" + "34" * 32), "run_id": _s("r2"), "at": _s("2026-12-01T09:59:00+00:00"),
     "claim_token": _s("0f" * 16)},
    {"pk": PK, "sk": _s("LOOK#000002#2026-12-01T11:00:00+00:00#000001#a1b2c3"),
     "look": _s('{"at": "2026-12-01T11:00:00+00:00", "number": 1, "action": "continue", "challenger": 2}')},
    {"pk": PK, "sk": _s("EVENT#2026-12-01T12:00:00+00:00#a1b2c3d4"), "at": _s("2026-12-01T12:00:00+00:00"),
     "action": _s("republish"), "who": _s("ops"), "why": _s("new code"), "details": _s('{"lambda_version": "3"}')},
    {"pk": PK, "sk": _s("LOCK#rollout"), "owner": _s("rollout:x"), "expires": {"N": "4102444800"}},
    {"pk": PK, "sk": _s("DRIFT#2026-12-01T13:00:00+00:00"), "window_end": _s("2026-12-01T13:00:00+00:00"),
     "status": _s("drift"), "drifted": {"BOOL": True}, "labelled_rows": {"N": "12"},
     "details": _s('{"drifted_features": ["x"]}')},
    {"pk": PK, "sk": _s("RETRAIN#LATEST"), "requested_at": _s("2026-12-01T13:00:00+00:00")},
    {"pk": PK, "sk": _s("RETRAINDECISION#2026-12-01T13:00:00+00:00#a1b2c3d4"),
     "at": _s("2026-12-01T13:00:00+00:00"), "requested": {"BOOL": True}, "reason": _s("drift"),
     "details": _s('{"windows": 1}')},
]


def test_items_written_before_read_the_same(registry: Registry) -> None:
    for item in STORED:
        registry.db.put_item(TableName="reg", Item=item)
    assert registry.latest_version("m") == 2
    assert registry.aliases("m") == {CHAMPION: 1, CHALLENGER: 2}
    champion, challenger = registry.versions("m")
    assert champion.to_dict() == {
        "model": "m", "version": 1, "run_id": "r1", "status": "champion", "aliases": [CHAMPION],
        "created_at": "2026-12-01T09:00:00+00:00", "model_uri": "s3://b/models/m/runs/r1/model.onnx",
        "manifest_uri": "s3://b/models/m/runs/r1/manifest.json", "baseline_uri": "s3://b/models/m/runs/r1/baseline.json",
        "onnx_sha256": "ab" * 32, "manifest_sha256": None, "dataset_sha256": "cd" * 32,
        "metrics": {"accuracy": 0.9}, "lambda_version": None}
    assert registry.alias("m", CHALLENGER) == challenger == registry.version("m", 2)
    assert (challenger.lambda_version, challenger.manifest_sha256) == ("3", "ef" * 32)
    assert challenger.aliases == (CHALLENGER,)
    run = registry.run("m", "r2")
    assert run is not None
    assert registry.runs("m") == [run]
    assert (run.outcome, run.at, run.details) == ("registered", "2026-12-01T10:00:00+00:00",
                                                  {"version": 2, "alias": "challenger"})
    assert registry.claim_dataset("m", "34" * 32, "r3") is False
    assert registry.looks("m", 2) == [{"at": "2026-12-01T11:00:00+00:00", "number": 1, "action": "continue",
                                       "challenger": 2}]
    assert registry.events("m") == [{"at": "2026-12-01T12:00:00+00:00", "action": "republish", "who": "ops",
                                     "why": "new code", "details": {"lambda_version": "3"}}]
    assert registry.acquire_lock("m", "rollout:y", ttl_seconds=60) is False  # held by rollout:x until 2100-01-01
    assert registry.drift_windows("m") == [{"window_end": "2026-12-01T13:00:00+00:00", "status": "drift",
                                            "drifted": True, "labelled_rows": 12,
                                            "details": {"drifted_features": ["x"]}}]
    assert registry.last_retrain_request("m") == "2026-12-01T13:00:00+00:00"
    assert registry.retrain_decisions("m") == [{"at": "2026-12-01T13:00:00+00:00", "requested": True,
                                                "reason": "drift", "details": {"windows": 1}}]


def test_writes_keep_the_stored_shapes(registry: Registry) -> None:
    """Each kind of item is written with the attribute names and DynamoDB types of ``STORED``."""
    registry.register(model="m", run_id="r1", artefacts_prefix="s3://b/models/m/runs/r1/", onnx_sha256="ab" * 32,
                      dataset_sha256="cd" * 32, metrics={"accuracy": 0.9}, alias=CHAMPION)
    registry.register(model="m", run_id="r2", artefacts_prefix="s3://b/models/m/runs/r2/", onnx_sha256="12" * 32,
                      dataset_sha256="34" * 32, metrics={}, alias=CHALLENGER, manifest_sha256="ef" * 32)
    registry.set_lambda_version("m", 2, "3")
    registry.claim_dataset("m", "34" * 32, "r2")
    registry.record_look("m", 2, {"at": "2026-12-01T11:00:00+00:00", "number": 1, "action": "continue"})
    registry.record_event("m", "republish", who="ops", why="new code", details={"lambda_version": "3"})
    registry.acquire_lock("m", "rollout:x")
    registry.record_drift_window("m", "2026-12-01T13:00:00+00:00", status="drift", drifted=True, labelled_rows=12,
                                 details={"drifted_features": ["x"]})
    registry.claim_retrain("m", "2026-12-01T13:00:00+00:00", not_after="2026-12-01T00:00:00+00:00")
    registry.record_retrain_decision("m", "2026-12-01T13:00:00+00:00", requested=True, reason="drift",
                                     details={"windows": 1})

    def shape(item: dict[str, Any]) -> tuple[str, dict[str, str]]:
        sk = item["sk"]["S"]
        kind = sk.split("#", 1)[0]
        # the keys of looks, events and decisions end in a random part: one of each is written
        return (kind if kind in ("LOOK", "EVENT", "RETRAINDECISION") else sk,
                {name: next(iter(value)) for name, value in item.items()})

    written = dict(shape(item) for item in registry.db.scan(TableName="reg")["Items"] if item["sk"]["S"] != "RUN#r1")
    assert written == dict(shape(item) for item in STORED)
    look = registry.db.scan(TableName="reg", FilterExpression="begins_with(sk, :p)",
                            ExpressionAttributeValues={":p": _s("LOOK#")})["Items"][0]
    assert look["sk"]["S"].startswith("LOOK#000002#2026-12-01T11:00:00+00:00#000001#")
    version = registry.db.get_item(TableName="reg", Key={"pk": PK, "sk": _s("VERSION#000002")})["Item"]
    assert {name: version[name] for name in ("version", "status", "metrics", "lambda_version")} == {
        "version": {"N": "2"}, "status": _s("challenger"), "metrics": _s("{}"), "lambda_version": _s("3")}

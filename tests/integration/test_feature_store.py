"""The feature store on the embedded cloud: a model declaring its features is trained by the real pipeline on the
point-in-time training set, ingest materialises the online store, and the API predicts from an entity id with
exactly the answer it gives for that entity's features."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from clouds import served_cloud

from mlops.cli.demo import FEATURE_MODEL as MODEL
from mlops.cli.demo import FEATURE_MODEL_TOML
from mlops.cli.demo import purchases_dataset as purchases
from mlops.core.config import load_config
from mlops.data.curated import newest_manifest
from mlops.data.frames import get_parquet
from mlops.features.offline import latest, materialize
from mlops.features.online import OnlineStore, definitions_sha256
from mlops.local.embedded import EmbeddedCloud

EVENTS = Path(__file__).resolve().parents[2] / "events"
CONFIG = f"""
[project]
project = "mlops"
{FEATURE_MODEL_TOML}"""
FEATURES = ["amount", "mean_amount", "purchases", "spent_7d", "channel"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    with served_cloud(tmp_path_factory.mktemp("features-config") / "mlops.toml",
                      {MODEL: purchases().to_csv(index=False).encode()}, config_text=CONFIG) as cloud:
        yield cloud


def online(cloud: EmbeddedCloud) -> OnlineStore:
    return OnlineStore(cloud.client("dynamodb"), cloud.deployment.names["features"])


def curated(cloud: EmbeddedCloud) -> tuple[dict[str, Any], pd.DataFrame]:
    manifest = newest_manifest(cloud.data, MODEL)
    assert manifest is not None
    return manifest, get_parquet(cloud.data, manifest["data_uri"].split("/", 3)[3])


def test_ingest_materialises_every_entitys_newest_features(shop: EmbeddedCloud) -> None:
    manifest, frame = curated(shop)
    definitions = load_config().model(MODEL).features
    assert definitions is not None
    expected = {entity: (as_of, values) for entity, as_of, values in latest(frame, definitions)}
    assert len(expected) == 150
    store = online(shop)
    for entity in ("1000", "1077", "1149"):
        item = store.get(MODEL, entity)
        assert item is not None
        assert (item.as_of, item.values) == expected[entity]
        assert item.dataset_sha256 == manifest["dataset_sha256"]
        assert item.definitions_sha256 == definitions_sha256(definitions)


def test_the_model_is_trained_on_the_declared_features(shop: EmbeddedCloud) -> None:
    status, body = shop.api("GET", f"/models/{MODEL}")
    assert status == 200, body
    assert [f["name"] for f in body["features"]] == FEATURES
    version = shop.registry.version(MODEL, 1)
    assert version is not None
    manifest = shop.models.get_json(version.manifest_uri.split("/", 3)[3])
    assert manifest["feature_store"]["entity_key"] == "customer"


def test_predict_by_entity_id_answers_as_for_its_features(shop: EmbeddedCloud) -> None:
    store = online(shop)
    for entity in (1003, "1042", 1120):
        status, by_entity = shop.api("POST", f"/models/{MODEL}/predict", {"entity_id": entity})
        assert status == 200, by_entity
        item = store.get(MODEL, str(entity))
        assert item is not None
        status, by_features = shop.predict(MODEL, item.values)
        assert status == 200, by_features
        assert by_entity["entity_id"] == str(entity)
        assert by_entity["features_as_of"] == item.as_of
        assert (by_entity["prediction"], by_entity["model_version"]) == (by_features["prediction"], 1)
        assert by_entity["probabilities"] == pytest.approx(by_features["probabilities"])


def test_an_unknown_entity_a_bad_id_and_stale_definitions_are_told_apart(shop: EmbeddedCloud) -> None:
    status, body = shop.api("POST", f"/models/{MODEL}/predict", {"entity_id": "nobody"})
    assert (status, body["error"], body["field"]) == (404, "EntityNotFound", "entity_id")
    assert "'nobody'" in body["message"]
    status, body = shop.api("POST", f"/models/{MODEL}/predict", {"entity_id": True})
    assert (status, body["field"]) == (422, "entity_id")
    status, body = shop.api("POST", f"/models/{MODEL}/predict", {"entity_id": 1000, "features": {}})
    assert (status, body["field"]) == (422, "body")
    online(shop).put_all(MODEL, [("stale", "2026-01-01T00:00:00+00:00", {f: 1.0 for f in FEATURES})],
                         dataset_sha256="0" * 64, definitions_sha256="f" * 64)
    status, body = shop.api("POST", f"/models/{MODEL}/predict", {"entity_id": "stale"})
    assert (status, body["error"]) == (409, "FeaturesOutOfDate")
    assert "mlops features materialize shop" in body["message"]


def test_an_older_dataset_processed_late_does_not_overwrite_newer_features(shop: EmbeddedCloud) -> None:
    manifest, _frame = curated(shop)
    model_cfg = load_config().model(MODEL)
    store = online(shop)
    before = store.get(MODEL, "1000")
    older = {**manifest, "dataset_sha256": "1" * 64, "created_at": "2000-01-01T00:00:00+00:00"}
    assert materialize(model_cfg, older, data=shop.data, online=store)["status"] == "skipped"
    assert store.get(MODEL, "1000") == before
    # the same dataset again (a retried ingest) is written again, harmlessly
    again = materialize(model_cfg, manifest, data=shop.data, online=store)
    assert (again["status"], again["entities"]) == ("materialized", 150)


def test_the_raw_columns_are_not_the_models_inputs(shop: EmbeddedCloud) -> None:
    raw = purchases(customers=2, per_customer=2).drop(columns="big").iloc[0].to_dict()
    status, body = shop.api("POST", f"/models/{MODEL}/predict",
                        {"features": json.loads(json.dumps(raw, default=str))})
    assert status == 422
    assert "missing feature(s) ['mean_amount', 'purchases', 'spent_7d']" in body["message"]


def test_the_cli_reads_and_rematerialises_the_online_store(shop: EmbeddedCloud,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main

    assert main(["features", "get", MODEL, "1000", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["entity_id"], sorted(shown["values"])) == ("1000", sorted(FEATURES))
    assert main(["features", "get", MODEL, "nobody"]) == 1
    assert "no entity 'nobody'" in capsys.readouterr().out
    assert main(["features", "materialize", MODEL]) == 0
    assert json.loads(capsys.readouterr().out)["entities"] == 150

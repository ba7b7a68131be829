"""ingest and train_trigger on moto, driven by real event payloads from events/ and by real uploads."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mlops.local.embedded import EmbeddedCloud

EVENTS = Path(__file__).resolve().parents[2] / "events"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_csvs"


def _invoke(cloud: EmbeddedCloud, function: str, event: dict[str, Any]) -> dict[str, Any]:
    response = cloud.client("lambda").invoke(FunctionName=cloud.deployment.function_arns[function],
                                             Payload=json.dumps(event).encode())
    payload: dict[str, Any] = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload


def _s3_event(cloud: EmbeddedCloud, key_encoded: str, body_key: str) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((EVENTS / "s3_object_created.json").read_text()))
    head = cloud.client("s3").head_object(Bucket=cloud.deployment.data_bucket, Key=body_key)
    obj = event["Records"][0]["s3"]["object"]
    obj.update(key=key_encoded, size=head["ContentLength"], eTag=head["ETag"].strip('"'),
               versionId=head.get("VersionId"))
    event["Records"][0]["s3"]["bucket"]["name"] = cloud.deployment.data_bucket
    return event


def _trigger_count(cloud: EmbeddedCloud) -> int:
    return sum(1 for i in cloud.runtime.invocations if i.function.endswith("train-trigger"))


def test_real_s3_event_with_encoded_key_is_decoded_and_processed_once(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes
) -> None:
    key = "incoming/breast-cancer/June export (final) été.csv"
    cloud.client("s3").put_object(Bucket=cloud.deployment.data_bucket, Key=key, Body=breast_cancer_csv)
    cloud.wait_for_executions(1)
    triggers = _trigger_count(cloud)
    event = _s3_event(cloud, json.loads((EVENTS / "s3_object_created.json").read_text())
                      ["Records"][0]["s3"]["object"]["key"], key)

    first = _invoke(cloud, "ingest", event)
    again = _invoke(cloud, "ingest", event)  # S3 delivers at least once
    [outcome] = first["results"]
    assert outcome["source"] == f"s3://{cloud.deployment.data_bucket}/{key}"
    assert outcome["status"] == "curated"
    assert outcome["rows_curated"] == 569
    assert again == first
    # the redelivered events did not curate again (which would re-trigger training)
    assert _trigger_count(cloud) == triggers


def test_train_request_event_retrains_on_the_newest_dataset_only_once(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes
) -> None:
    request = json.loads((EVENTS / "train_request.json").read_text())
    assert _invoke(cloud, "train_trigger", request)["status"] == "skipped"  # no data yet: says so

    cloud.upload("breast-cancer", "a.csv", breast_cancer_csv)
    cloud.wait_for_executions(1)
    result = _invoke(cloud, "train_trigger", request)
    assert result["status"] == "skipped"
    assert "already" in result["reason"]
    assert len(cloud.executions()) == 1


def test_unknown_model_prefix_gets_a_report_and_nothing_is_curated(cloud: EmbeddedCloud) -> None:
    cloud.upload("no-such-model", "x.csv", b"a,b\n1,2\n")
    [report_key] = [k for k in cloud.data.keys("quarantine/") if k.endswith("report.json")]
    report = cloud.data.get_json(report_key)
    assert report["code"] == "unknown_model"
    assert "breast-cancer" in report["reason"]  # it names the models that do exist
    assert report["what_to_do"]
    assert list(cloud.data.keys("curated/")) == []
    assert cloud.data.exists("incoming/no-such-model/x.csv")


def test_oversized_file_is_rejected_unread(cloud: EmbeddedCloud) -> None:
    from mlops.core.config import load_config
    from mlops.data.ingest import ingest_object

    config = load_config()
    cloud.client("s3").put_object(Bucket=cloud.deployment.data_bucket, Key="incoming/wine/big.csv", Body=b"a,b\n")
    outcome = ingest_object(bucket=cloud.deployment.data_bucket, key="incoming/wine/big.csv", version_id=None,
                            etag="abc", size=5000 * 2**20, config=config, store=cloud.data)
    assert outcome.status == "rejected"
    assert outcome.code == "too_large"
    assert "5000.0 MB" in outcome.reason


@pytest.mark.parametrize(("key", "status", "code"), [
    # `..` means nothing to S3, but would to whoever copies the keys to a file system: refused, and said why
    ("incoming/breast-cancer/../../curated/breast-cancer/x.csv", "rejected", "bad_key"),
    ("incoming/../curated/evil.csv", "rejected", "bad_key"),
    ("incoming/nobody/data.csv", "rejected", "unknown_model"),
    ("incoming/breast-cancer/数据 ✓ %41.csv", "curated", ""),
])
def test_hostile_keys_get_a_recorded_outcome_and_write_only_under_their_prefixes(
    cloud: EmbeddedCloud, breast_cancer_csv: bytes, key: str, status: str, code: str
) -> None:
    data = cloud.data
    data.put_bytes(key, breast_cancer_csv)
    [ingested] = [i for i in cloud.runtime.invocations if i.function.endswith("ingest")]
    [outcome] = ingested.result["results"]
    assert (outcome["status"], outcome["code"]) == (status, code)
    assert outcome["source"] == f"s3://{cloud.deployment.data_bucket}/{key}"  # decoded exactly, unicode included
    written = set(data.keys("")) - {key}
    assert written, "every outcome leaves a record"
    # what ingest wrote stays under its own prefixes, whatever the key spelled
    assert all(k.split("/", 1)[0] in ("curated", "quarantine", "contracts") for k in written), written
    assert data.exists(key)  # the original is never lost

"""The bad-CSV corpus (tests/data/bad_csvs, with its expected outcomes) through ingest on the local cloud: every
file gets a recorded outcome, and no row is lost. One cloud for the whole corpus."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops.local.embedded import EmbeddedCloud, embedded_cloud

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_csvs"


def _ingest_only(cloud: EmbeddedCloud) -> None:
    """Keep the ingest trigger, drop the curated -> training one: these tests are about ingest's outcome."""
    s3 = cloud.client("s3")
    bucket = cloud.deployment.data_bucket
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    kept = [c for c in config["LambdaFunctionConfigurations"]
            if c["LambdaFunctionArn"] == cloud.deployment.function_arns["ingest"]]
    s3.put_bucket_notification_configuration(Bucket=bucket,
                                             NotificationConfiguration={"LambdaFunctionConfigurations": kept})


def _declare_corpus_contract(cloud: EmbeddedCloud, model: str) -> None:
    cloud.data.put_bytes(f"contracts/{model}/v000001.json", (CORPUS / "contract.json").read_bytes())


# the size limit is a per-model setting in MB: test_oversized_file_is_rejected_unread covers it
CASES = sorted((name, case) for name, case in json.loads((CORPUS / "expected.json").read_text()).items()
               if "max_bytes" not in case)


CORPUS_MODEL = "strict"  # a model whose contract we declare: the corpus's


@pytest.fixture(scope="module")
def corpus_cloud(config_file: Path) -> Iterator[EmbeddedCloud]:
    """One cloud for the whole corpus: each file is its own upload, its own ingest and its own dataset (by sha256)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(config_file))
        with embedded_cloud(config_file) as cloud:
            _declare_corpus_contract(cloud, CORPUS_MODEL)
            _ingest_only(cloud)
            yield cloud


@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_files_get_a_recorded_outcome_and_no_row_is_lost(
    corpus_cloud: EmbeddedCloud, name: str, expected: dict[str, Any]
) -> None:
    cloud, model = corpus_cloud, CORPUS_MODEL
    before = len(cloud.runtime.invocations)
    cloud.upload(model, name, (CORPUS / name).read_bytes())
    [ingest] = [i for i in cloud.runtime.invocations[before:] if i.function.endswith("ingest")]
    assert not ingest.errored, ingest.result
    [outcome] = ingest.result["results"]
    assert cloud.data.exists(f"incoming/{model}/{name}")  # the original is never lost
    report = cloud.data.get_json(outcome["report_uri"].split("/", 3)[3]) if outcome["report_uri"] else None
    if "rejected" in expected:
        assert outcome["status"] == "rejected"
        assert outcome["code"] == expected["rejected"]
        assert report is not None
        assert report["reason"]
        if outcome["dataset_sha256"]:  # nothing of this file to train on
            assert list(cloud.data.keys(f"curated/{model}/{outcome['dataset_sha256']}/")) == []
    else:
        assert outcome["status"] == "curated"
        assert outcome["rows_curated"] == expected["good_rows"]
        assert outcome["rows_quarantined"] == len(expected["bad_rows"])
        assert outcome["rows_in"] == outcome["rows_curated"] + outcome["rows_quarantined"]
        if expected["bad_rows"]:
            text = cloud.data.get_bytes(outcome["quarantine_uri"].split("/", 3)[3]).decode()
            rows = {row["_line"]: row["_reason"] for row in csv.DictReader(io.StringIO(text))}
            assert set(rows) == set(expected["bad_rows"])
            for line, reason in expected["bad_rows"].items():
                assert reason in rows[line]

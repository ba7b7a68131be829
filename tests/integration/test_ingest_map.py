"""Ingest at scale on the local cloud: a file over its model's ingest_map_above_mb (1 MB here) is cut into byte ranges,
validated in parts by the ingest state machine's Distributed Map (the very ASL file the stack deploys, run by moto)
and merged into one curated dataset: the same rows curated and the same lines quarantined, for the same reasons, as
one function reading the same file gives; one manifest, one training trigger. A file over max_file_mb is rejected
whole, unread."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from project_configs import PROJECT, model_table

from mlops.core import layout
from mlops.data import ingest_map
from mlops.local.embedded import EmbeddedCloud, embedded_cloud

MAPPED, WHOLE, SMALL = "mapped", "whole", "small"  # the same file: by the Map, by one function; a small max_file_mb
CHUNKED = "chunked"  # the same file by one function, in chunks of 50 KB: about 32 of them
MOSTLY_BAD, RENAMED = "mostly-bad", "renamed"  # whole-file verdicts that only the merge can give
GAPPED, GAPPED_WHOLE = "gapped", "gapped-whole"  # a part with no good row, duplicates repeated: by the Map, by one
CONFIG = (PROJECT + model_table(MAPPED, "ingest_map_above_mb = 1") + model_table(WHOLE)
          + model_table(SMALL, "max_file_mb = 1") + model_table(CHUNKED, "ingest_chunk_mb = 0.05")
          + model_table(MOSTLY_BAD, "ingest_map_above_mb = 1") + model_table(RENAMED, "ingest_map_above_mb = 1")
          + model_table(GAPPED, "ingest_map_above_mb = 1") + model_table(GAPPED_WHOLE))
COLUMNS = [f"f{i}" for i in range(8)]
N_ROWS = 14_000


def _file() -> tuple[bytes, dict[int, str]]:
    """About 1.6 MB: 14,000 distinct rows with, at known lines, bad values, a ragged row, a missing target,
    duplicates of a good row and of a bad row across parts (far apart) and within one."""
    rng = random.Random(18)
    rows = [[f"{rng.uniform(-1000, 1000):.9f}" for _ in COLUMNS] + [str(rng.randint(0, 1))] for _ in range(N_ROWS)]
    expected: dict[int, str] = {}  # line -> a reason expected in the quarantine
    rows[10][3] = "abc"
    expected[12] = "f3: 'abc' is not a number"
    rows[4000][0] = "xyz"
    expected[4002] = "f0: 'xyz' is not a number"
    rows[6000][-1] = ""
    expected[6002] = "target: missing target value"
    rows[13000] = list(rows[5])  # a good row of the first part, again in the last one
    expected[13002] = "duplicate of line 7"
    rows[13500] = list(rows[10])  # a bad row of the first part, again in the last one: bad, and a duplicate
    expected[13502] = "duplicate of line 12"
    rows[2001] = list(rows[2000])  # within one part
    expected[2003] = "duplicate of line 2002"
    lines = [",".join([*COLUMNS, "target"])] + [",".join(r) for r in rows]
    lines[3001] = "1,2,3"  # ragged: line 3002
    expected[3002] = "fields"
    return ("\n".join(lines) + "\n").encode(), expected


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    config_file: Path = tmp_path_factory.mktemp("ingest-map") / "mlops.toml"
    config_file.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(config_file))
        with embedded_cloud(config_file) as embedded:
            yield embedded


def _manifests(cloud: EmbeddedCloud, model: str) -> list[str]:
    return [k for k in cloud.data.keys(f"{layout.CURATED}{model}/") if k.endswith("manifest.json")]


def _quarantine(cloud: EmbeddedCloud, model: str, sha: str) -> pd.DataFrame:
    body = cloud.data.get_bytes(f"{layout.QUARANTINE}{model}/{sha}/rows.csv")
    return pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)


def _curated_alike(cloud: EmbeddedCloud, model: str, reference: str) -> tuple[str, pd.DataFrame]:
    """The same file curated for ``model`` as for ``reference`` (one function, read whole): one dataset each, the same
    counts with no row lost, frame-equal curated rows and quarantined rows. The sha256 and the quarantined rows."""
    [manifest_key], [reference_key] = _manifests(cloud, model), _manifests(cloud, reference)
    manifest, expected = cloud.data.get_json(manifest_key), cloud.data.get_json(reference_key)
    assert manifest["dataset_sha256"] == expected["dataset_sha256"]
    rows = manifest["rows"]
    assert rows == expected["rows"]
    assert rows["in"] == N_ROWS == rows["curated"] + rows["quarantined"]
    sha = manifest["dataset_sha256"]
    ours, theirs = (pd.read_parquet(io.BytesIO(cloud.data.get_bytes(f"curated/{m}/{sha}/data.parquet")))
                    for m in (model, reference))
    pd.testing.assert_frame_equal(ours, theirs)
    quarantined = _quarantine(cloud, model, sha)
    pd.testing.assert_frame_equal(quarantined, _quarantine(cloud, reference, sha))
    return sha, quarantined


def test_a_file_over_the_map_threshold_is_validated_in_parts_and_curated_as_one_function_would(
    cloud: EmbeddedCloud,
) -> None:
    body, expected = _file()
    assert 1.3 * 2**20 < len(body) < 2 * 2**20
    ingest = cloud.deployment.ingest_arn

    cloud.upload(WHOLE, "data.csv", body)  # one function: the reference
    cloud.upload(MAPPED, "data.csv", body)
    [execution] = cloud.wait_for_executions(1, state_machine_arn=ingest)
    assert execution["status"] == "SUCCEEDED", cloud.history(execution["executionArn"])[-3:]
    cloud.wait_for_executions(2)  # both datasets went on to training

    invocations = [i for i in cloud.runtime.invocations if i.function == cloud.function("ingest")]
    parts = [i for i in invocations if isinstance(i.event, dict) and i.event.get("step") == "part"]
    merges = [i for i in invocations if isinstance(i.event, dict) and i.event.get("step") == "merge"]
    assert len(parts) >= 5, len(parts)  # ranges of a quarter MB
    assert not any(i.errored for i in invocations)
    [merged] = [m.result for m in merges]
    [planned] = [r for i in invocations if isinstance(i.result, dict)
                 for r in i.result.get("results", []) if r["status"] == "mapped"]
    assert planned["parts"] == len(parts)

    [manifest_key] = _manifests(cloud, MAPPED)
    [reference_key] = _manifests(cloud, WHOLE)
    manifest, reference = cloud.data.get_json(manifest_key), cloud.data.get_json(reference_key)
    assert manifest["dataset_sha256"] == reference["dataset_sha256"] == planned["dataset_sha256"]
    assert manifest["rows"] == reference["rows"]
    rows = manifest["rows"]
    assert rows["in"] == N_ROWS == rows["curated"] + rows["quarantined"]
    assert rows["quarantined"] == len(expected)
    assert merged["status"] == "curated"
    assert merged["rows_curated"] == rows["curated"]

    # the same curated rows, in the same order, with the same types
    curated = pd.read_parquet(io.BytesIO(cloud.data.get_bytes(f"curated/{MAPPED}/{manifest['dataset_sha256']}/"
                                                              "data.parquet")))
    whole = pd.read_parquet(io.BytesIO(cloud.data.get_bytes(f"curated/{WHOLE}/{reference['dataset_sha256']}/"
                                                            "data.parquet")))
    pd.testing.assert_frame_equal(curated, whole)
    # the same quarantined lines, verbatim, for the same reasons
    quarantined = _quarantine(cloud, MAPPED, manifest["dataset_sha256"])
    pd.testing.assert_frame_equal(quarantined, _quarantine(cloud, WHOLE, reference["dataset_sha256"]))
    reasons = dict(zip(quarantined["_line"].astype(int), quarantined["_reason"], strict=True))
    assert set(reasons) == set(expected)
    for line, reason in expected.items():
        assert reason in reasons[line], (line, reasons[line])
    assert reasons[13502] == "f3: 'abc' is not a number; duplicate of line 12"
    report = cloud.data.get_json(f"{layout.QUARANTINE}{MAPPED}/{manifest['dataset_sha256']}/report.json")
    assert report["rows_quarantined"] == len(expected)
    assert report["parts"] == len(parts)

    # one manifest, one training trigger, and the work files are gone
    triggers = [i for i in cloud.runtime.invocations if i.function == cloud.function("train_trigger")
                and MAPPED in str(i.event)]
    assert len(triggers) == 1
    assert list(cloud.data.keys(f"{layout.INGEST_RUNS}{MAPPED}/")) == []


def test_a_redelivered_object_starts_no_second_execution(cloud: EmbeddedCloud) -> None:
    """Past Powertools' idempotency (its record expired, or lost): the execution's name, after the content and the
    object version, still refuses a second run."""
    import json
    from functools import partial

    from botocore.exceptions import ClientError

    from mlops.core.config import load_config
    from mlops.data.ingest import ingest_object
    from mlops.data.ingest_map import plan

    key = f"incoming/{MAPPED}/data.csv"
    if not cloud.data.exists(key):
        cloud.upload(MAPPED, "data.csv", _file()[0])
    machine = cloud.deployment.ingest_arn
    cloud.wait_for_executions(1, state_machine_arn=machine)
    before = cloud.executions(machine)
    head = cloud.client("s3").head_object(Bucket=cloud.deployment.data_bucket, Key=key)

    def start(name: str, payload: dict[str, object]) -> str | None:
        try:
            return str(cloud.client("stepfunctions").start_execution(stateMachineArn=machine, name=name,
                                                                      input=json.dumps(payload))["executionArn"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
            return None

    outcome = ingest_object(bucket=cloud.deployment.data_bucket, key=key, version_id=head.get("VersionId"),
                            etag=head["ETag"].strip('"'), size=head["ContentLength"], config=load_config(),
                            store=cloud.data, plan_map=partial(plan, start_map=start))
    assert outcome.status == "mapped"
    assert "nothing started again" in outcome.reason
    assert len(cloud.executions(machine)) == len(before)
    assert list(cloud.data.keys(f"{layout.INGEST_RUNS}{MAPPED}/")) == []  # what it wrote is removed


def test_a_file_over_max_file_mb_is_rejected_whole_with_the_reason(cloud: EmbeddedCloud) -> None:
    body, _ = _file()
    cloud.upload(SMALL, "big.csv", body)
    [report_key] = [k for k in cloud.data.keys(f"{layout.QUARANTINE}{SMALL}/") if k.endswith("report.json")]
    report = cloud.data.get_json(report_key)
    assert report["code"] == "too_large"
    assert "max_file_mb (1 MB)" in report["reason"]
    assert report["rows_in"] == 0
    assert report["what_to_do"]
    assert _manifests(cloud, SMALL) == []


def test_a_file_of_many_chunks_is_curated_by_one_function_as_if_read_whole(cloud: EmbeddedCloud) -> None:
    body, expected = _file()
    cloud.upload(CHUNKED, "data.csv", body)
    if not _manifests(cloud, WHOLE):
        cloud.upload(WHOLE, "data.csv", body)
    sha, quarantined = _curated_alike(cloud, CHUNKED, WHOLE)
    reasons = dict(zip(quarantined["_line"].astype(int), quarantined["_reason"], strict=True))
    assert set(reasons) == set(expected)
    # a duplicate of a row read 30 chunks earlier is found
    assert "duplicate of line 7" in reasons[13002]
    # the function read it in chunks, one Parquet row group each
    import pyarrow.parquet as pq

    groups = pq.ParquetFile(io.BytesIO(cloud.data.get_bytes(f"curated/{CHUNKED}/{sha}/data.parquet"))).num_row_groups
    assert groups >= 25, groups


def test_too_many_bad_rows_over_the_whole_file_rejects_it_though_no_part_can_tell(cloud: EmbeddedCloud) -> None:
    """No part rejects for its share of bad rows; the merge does, on the whole file's counts, and leaves nothing
    curated and no work file behind."""
    body, _ = _file()
    lines = body.decode().splitlines()
    cloud.upload(MOSTLY_BAD, "first.csv", ("\n".join(lines[:200]) + "\n").encode())  # the contract: f0 numeric
    [first_manifest] = _manifests(cloud, MOSTLY_BAD)
    # 60% of the rows bad, spread over every part: over the default max_bad_row_fraction of 0.5
    damaged = [line if i == 0 or i % 5 in (1, 2) else "abc," + line.split(",", 1)[1] for i, line in enumerate(lines)]
    cloud.upload(MOSTLY_BAD, "data.csv", ("\n".join(damaged) + "\n").encode())
    cloud.wait_for_executions(1, state_machine_arn=cloud.deployment.ingest_arn)
    [report] = [r for r in (cloud.data.get_json(k) for k in cloud.data.keys(f"{layout.QUARANTINE}{MOSTLY_BAD}/")
                            if k.endswith("report.json")) if r.get("status") == "rejected"]
    assert report["code"] == "too_many_bad_rows"
    assert f"of {N_ROWS} rows" in str(report["reason"])
    assert "f0: not a number" in str(report["reason"])
    assert report["parts"] >= 5
    assert _manifests(cloud, MOSTLY_BAD) == [first_manifest]  # nothing curated of the rejected file
    assert list(cloud.data.keys(f"{layout.INGEST_RUNS}{MOSTLY_BAD}/")) == []


def test_a_large_file_whose_columns_are_not_the_contracts_is_rejected_whole(cloud: EmbeddedCloud) -> None:
    body, _ = _file()
    cloud.upload(RENAMED, "first.csv", b"\n".join(body.splitlines()[:200]) + b"\n")  # one function: the contract
    assert len(_manifests(cloud, RENAMED)) == 1
    renamed = body.replace(b"f3,", b"feature_3,", 1)
    cloud.upload(RENAMED, "renamed.csv", renamed)
    executions = cloud.executions(cloud.deployment.ingest_arn)
    cloud.wait_for_executions(len(executions), state_machine_arn=cloud.deployment.ingest_arn)
    [report] = [r for r in (cloud.data.get_json(k) for k in cloud.data.keys(f"{layout.QUARANTINE}{RENAMED}/")
                            if k.endswith("report.json")) if r.get("code") == "missing_columns"]
    assert "f3" in str(report["reason"])
    assert "feature_3" in str(report["reason"])  # the likely rename is named
    assert len(_manifests(cloud, RENAMED)) == 1  # only the first file's
    assert list(cloud.data.keys(f"{layout.INGEST_RUNS}{RENAMED}/")) == []


def test_a_part_without_a_good_row_and_repeated_duplicates_come_out_as_one_function_gives(cloud: EmbeddedCloud) -> None:
    body, _ = _file()
    lines = body.decode().splitlines()
    for i in range(9_501, 12_501):  # 3,000 rows without a target: at least one part holds no good row
        lines[i] = lines[i].rsplit(",", 1)[0] + ","
    lines[13_002] = lines[13_003] = lines[6]  # twice the same earlier part's row, in the last part
    data = ("\n".join(lines) + "\n").encode()
    cloud.upload(GAPPED_WHOLE, "data.csv", data)
    cloud.upload(GAPPED, "data.csv", data)
    cloud.wait_for_executions(1, state_machine_arn=cloud.deployment.ingest_arn)
    _sha, quarantined = _curated_alike(cloud, GAPPED, GAPPED_WHOLE)
    reasons = dict(zip(quarantined["_line"].astype(int), quarantined["_reason"], strict=True))
    assert reasons[13_003] == reasons[13_004] == "duplicate of line 7"


def _rejected(cloud: EmbeddedCloud, model: str, body: bytes) -> dict[str, object]:
    sha = hashlib.sha256(body).hexdigest()
    report: dict[str, object] = cloud.data.get_json(f"{layout.QUARANTINE}{model}/{sha}/report.json")
    assert report["status"] == "rejected"
    return report


def test_the_merge_failing_after_its_retries_abandons_the_file_with_the_error_and_leaves_nothing(
    cloud: EmbeddedCloud, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Catch runs Abandon: a rejection report naming the error, nothing curated, no work file, and the execution
    fails (the state machine's failure alarm). (RENAMED's model: each model adds about 44 resources to the stack, and 8
    models is what CloudFormation's 500 allow.)"""

    def merge_fails(*_args: object) -> None:
        raise OSError("No space left on device: /tmp")

    monkeypatch.setattr(ingest_map, "merge", merge_fails)
    before = {e["executionArn"] for e in cloud.executions(cloud.deployment.ingest_arn)}
    body = _file()[0]
    cloud.upload(RENAMED, "data.csv", body)
    [execution] = [e for e in cloud.wait_for_executions(len(before) + 1, state_machine_arn=cloud.deployment.ingest_arn)
                   if e["executionArn"] not in before]
    assert execution["status"] == "FAILED"
    assert [e for e in cloud.history(execution["executionArn"]) if e.get("stateEnteredEventDetails", {}).get("name")
            == "Abandon"]
    report = _rejected(cloud, RENAMED, body)
    assert report["code"] == "ingest_failed"
    assert "OSError" in str(report["reason"])
    assert "No space left on device" in str(report["reason"])
    assert "upload it again" in str(report["reason"])
    assert not cloud.data.exists(f"{layout.CURATED}{RENAMED}/{hashlib.sha256(body).hexdigest()}/manifest.json")
    assert list(cloud.data.keys(f"{layout.INGEST_RUNS}{RENAMED}/")) == []


def test_a_part_that_left_no_result_abandons_the_file_at_the_merge(
    cloud: EmbeddedCloud, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On AWS a failed part fails the Map (no failure tolerated) and Abandon runs; moto's Map goes on to the merge,
    which refuses to merge without every part's result (docs/local.md)."""
    real = ingest_map.run_part

    def third_part_fails(store: Any, job: dict[str, Any], part: dict[str, Any], work: Path) -> dict[str, Any]:
        if int(part["index"]) == 2:
            raise OSError("No space left on device: /tmp")
        return real(store, job, part, work)

    monkeypatch.setattr(ingest_map, "run_part", third_part_fails)
    started = len(cloud.executions(cloud.deployment.ingest_arn))
    body = _file()[0].replace(b"\n", b"\r\n")  # another file than the test above's
    cloud.upload(RENAMED, "other.csv", body)
    cloud.wait_for_executions(started + 1, state_machine_arn=cloud.deployment.ingest_arn)
    report = _rejected(cloud, RENAMED, body)
    assert report["code"] == "ingest_failed"
    assert "part(s) [2] left no result" in str(report["reason"])
    assert not cloud.data.exists(f"{layout.CURATED}{RENAMED}/{hashlib.sha256(body).hexdigest()}/manifest.json")
    assert list(cloud.data.keys(f"{layout.INGEST_RUNS}{RENAMED}/")) == []

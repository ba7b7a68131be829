"""Batch inference on the local cloud: the API route starts the batch state machine (the very ASL file the stack
deploys; moto runs its Distributed Map), the batch function scores the objects in chunks, the manifest counts every
row. The model is breast-cancer, trained and registered by the real pipeline."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.awsrequest import AWSResponse
from moto.core.botocore_stubber import MockRawResponse

from mlops import aws
from mlops.local.embedded import EmbeddedCloud, embedded_cloud

EVENTS = Path(__file__).resolve().parents[2] / "events"
MODEL = "breast-cancer"
CHUNK_ROWS = 2500  # 10k-row objects are scored in 4 chunks


@pytest.fixture(scope="module")
def served(config_file: Path, breast_cancer_csv: bytes) -> Iterator[EmbeddedCloud]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_CONFIG", str(config_file))
        with embedded_cloud(config_file) as cloud:
            cloud.upload(MODEL, "data.csv", breast_cancer_csv)
            [execution] = cloud.wait_for_executions(1)
            assert execution["status"] == "SUCCEEDED"
            lam = cloud.client("lambda")
            name = cloud.deployment.function_arns["batch"]
            variables = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
            lam.update_function_configuration(FunctionName=name, Environment={"Variables": {
                **variables, "BATCH_CHUNK_ROWS": str(CHUNK_ROWS)}})
            yield cloud


@pytest.fixture(scope="module")
def features() -> Any:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.drop(columns="target")


def _put(cloud: EmbeddedCloud, key: str, data: bytes) -> None:
    cloud.client("s3").put_object(Bucket=cloud.deployment.data_bucket, Key=key, Body=data)


def _parquet(frame: Any, row_group_size: int) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=row_group_size)
    return buffer.getvalue()


def _run(cloud: EmbeddedCloud, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Start a run through the API, wait for it; (the 202 answer, the final status, the manifest)."""
    status, started = cloud.api("POST", f"/models/{MODEL}/batch", body)
    assert status == 202, started
    arn = cloud.deployment.batch_arn
    [execution] = [e for e in cloud.wait_for_executions(1, timeout=300, state_machine_arn=arn)
                   if e["executionArn"] == started["execution_arn"]]
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    status, done = cloud.api("GET", f"/models/{MODEL}/batch/{started['batch_id']}")
    assert status == 200, done
    bucket, key = started["manifest"][5:].split("/", 1)
    manifest = json.loads(cloud.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    return started, done, manifest


def _read_output(cloud: EmbeddedCloud, uri: str) -> list[dict[str, Any]]:
    bucket, key = uri[5:].split("/", 1)
    data = cloud.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    if key.endswith(".parquet"):
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
        return rows
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_three_objects_of_10k_rows_are_scored_as_the_api_scores_them(served: EmbeddedCloud, features: Any) -> None:
    cloud = served
    frames = [features.sample(n=10_000, replace=True, random_state=seed).reset_index(drop=True) for seed in (1, 2, 3)]
    frames[0].insert(0, "customer_id", [f"c{i}" for i in range(10_000)])  # not a feature: carried through
    _put(cloud, "batch/big/a.csv", frames[0].to_csv(index=False).encode())
    _put(cloud, "batch/big/b.parquet", _parquet(frames[1], row_group_size=CHUNK_ROWS))
    _put(cloud, "batch/big/more/c.csv", frames[2].to_csv(index=False).encode())
    _put(cloud, "batch/big/readme.txt", b"not data")

    started, done, manifest = _run(cloud, {"input": f"s3://{cloud.deployment.data_bucket}/batch/big/"})

    output = f"s3://{cloud.deployment.data_bucket}/batch/big-predictions/{started['batch_id']}/"
    assert (started["output"], started["output_defaulted"], started["model_version"]) == (output, True, 1)
    assert done["status"] == "succeeded"
    assert done["summary"]["rows_in"] == done["summary"]["rows_out"] == 30_000
    # moto ran the Distributed Map itself: a map run of child executions, not an inline Map, its results in S3
    assert "MapRunStarted" in {e["type"] for e in cloud.history(started["execution_arn"])}
    work_bucket, work_prefix = manifest["work_prefix"][5:].split("/", 1)
    map_results = cloud.client("s3").list_objects_v2(Bucket=work_bucket, Prefix=work_prefix + "map/")
    assert map_results["KeyCount"] > 0
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_failed"]) == (30_000, 30_000, 0)
    assert manifest["status"] == "succeeded"
    by_name = {o["input"].rsplit("/big/", 1)[1]: o for o in manifest["objects"]}
    assert set(by_name) == {"a.csv", "b.parquet", "more/c.csv"}
    for name, report in by_name.items():
        assert (report["rows_in"], report["rows_out"], report["rows_failed"]) == (10_000, 10_000, 0), name
        assert report["output"] == output + name
        assert report["chunks"] == 4, name  # bounded chunks: 2,500 rows each
    assert by_name["a.csv"]["passthrough_columns"] == ["customer_id"]
    assert manifest["skipped"] == [{"input": f"s3://{cloud.deployment.data_bucket}/batch/big/readme.txt",
                                    "reason": "not CSV or Parquet by its name (.csv, .parquet or .pq)"}]

    names = list(features.columns)
    for name, rows in (("a.csv", [0, 4_321, 9_999]), ("b.parquet", [17, 5_000]), ("more/c.csv", [2_500])):
        scored = _read_output(cloud, output + name)
        assert len(scored) == 10_000
        for i in rows:
            row = scored[i]
            request = {n: float(row[n]) for n in names}
            status, answer = cloud.api("POST", f"/models/{MODEL}/predict", {"features": request})
            assert status == 200, answer
            assert str(row["prediction"]) == answer["prediction"], (name, i)
            assert {c: float(row[f"probability_{c}"]) for c in ("0", "1")} == answer["probabilities"], (name, i)
            assert int(row["model_version"]) == answer["model_version"] == 1
        if name == "a.csv":
            assert [r["customer_id"] for r in scored[:3]] == ["c0", "c1", "c2"]  # the input rows, in order


def _mixed_csv(features: Any) -> bytes:
    """50 rows, of which rows 3, 7, 12 and 20 cannot be scored."""
    lines = features.head(50).to_csv(index=False).splitlines()
    header = lines[0].split(",")
    broken = {3: ("mean radius", "abc"), 7: ("mean texture", ""), 12: ("worst area", "nan")}
    for row, (column, value) in broken.items():
        cells = lines[row].split(",")
        cells[header.index(column)] = value
        lines[row] = ",".join(cells)
    lines[20] = lines[20] + ",1.0"  # one field too many
    return ("\n".join(lines) + "\n").encode()


def test_invalid_rows_are_counted_and_reasoned_and_the_rest_scored(served: EmbeddedCloud, features: Any) -> None:
    cloud = served
    _put(cloud, "batch/mixed/rows.csv", _mixed_csv(features))

    _started, done, manifest = _run(cloud, {"input": f"s3://{cloud.deployment.data_bucket}/batch/mixed/",
                                            "output": f"s3://{cloud.deployment.data_bucket}/batch/mixed-out/"})

    [report] = manifest["objects"]
    assert (report["rows_in"], report["rows_out"], report["rows_failed"]) == (50, 46, 4)
    assert report["status"] == "partial"
    assert done["summary"]["status"] == "completed_with_failures"
    failures = {f["row"]: f for f in report["failures"]}
    assert set(failures) == {3, 7, 12, 20}
    assert failures[3]["field"] == "mean radius"
    assert "expected a number" in failures[3]["message"]
    assert failures[7]["field"] == "mean texture"
    assert "a value is required" in failures[7]["message"]
    assert failures[12]["field"] == "worst area"
    assert "finite" in failures[12]["message"]
    assert failures[20]["field"] is None
    assert "31 fields, the header has 30" in failures[20]["message"]
    assert len(_read_output(cloud, report["output"])) == 46


def test_a_failing_chunk_is_retried_then_reported(served: EmbeddedCloud, features: Any) -> None:
    """Reads of row group 1 always fail, the first read of row group 2 fails once: group 2 is scored on its retry,
    group 1 is reported with its rows as failed, and nothing else is lost."""
    cloud = served
    frame = features.sample(n=4_000, replace=True, random_state=7).reset_index(drop=True)
    data = _parquet(frame, row_group_size=1_000)
    key = "batch/faulty/rows.parquet"
    _put(cloud, key, data)
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    spans = []
    for group in range(metadata.num_row_groups):
        columns = [metadata.row_group(group).column(c) for c in range(metadata.num_columns)]
        starts = [c.dictionary_page_offset or c.data_page_offset for c in columns]
        spans.append((min(starts), max(s + c.total_compressed_size for s, c in zip(starts, columns, strict=True))))
    failed_once: set[int] = set()

    def hook(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        ranged = request.headers.get("Range")
        if event_name != "before-send.s3.GetObject" or key not in request.url or not ranged:
            return None
        start = int((ranged.decode() if isinstance(ranged, bytes) else ranged).split("=")[1].split("-")[0])
        group = next((g for g, (a, b) in enumerate(spans) if a <= start < b), None)
        if group == 1 or (group == 2 and 2 not in failed_once):
            failed_once.add(group)
            body = b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>"
            return AWSResponse(request.url, 403, {}, MockRawResponse(body))
        return None

    s3 = aws.client("s3")
    s3.meta.events.register_first("before-send", hook)
    try:
        _started, _done, manifest = _run(cloud, {"input": f"s3://{cloud.deployment.data_bucket}/batch/faulty/"})
    finally:
        s3.meta.events.unregister("before-send", hook)

    [report] = manifest["objects"]
    assert failed_once == {1, 2}
    assert (report["rows_in"], report["rows_out"], report["rows_failed"]) == (4_000, 3_000, 1_000)
    assert report["chunk_retries"] >= 3  # group 2 once, group 1 twice before it was given up
    [chunk] = report["failed_chunks"]
    assert (chunk["first_row"], chunk["rows"], chunk["attempts"]) == (1_001, 1_000, 3)
    assert "AccessDenied" in chunk["error"]
    assert report["failures"][0]["row"] == 1_001
    assert "rows 1001-2000" in report["failures"][0]["message"]
    assert len(_read_output(cloud, report["output"])) == 3_000


def test_an_input_that_cannot_be_listed_fails_the_run_with_the_reason(
        served: EmbeddedCloud, capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli import main

    assert main(["batch", MODEL, "s3://no-such-bucket-for-batch/in/", "--output",
                 f"s3://{served.deployment.data_bucket}/batch/unlisted/", "--wait", "--json"]) == 3
    done = json.loads(capsys.readouterr().out)
    assert (done["status"], done["error"]) == ("failed", "BatchInputError")
    assert done["cause"].startswith("cannot list s3://no-such-bucket-for-batch/in/: NoSuchBucket")


def test_an_empty_prefix_ends_with_an_empty_manifest(served: EmbeddedCloud) -> None:
    _started, done, manifest = _run(served, {"input": f"s3://{served.deployment.data_bucket}/batch/nothing/"})
    assert done["status"] == "succeeded"
    assert (manifest["status"], manifest["rows_in"], manifest["objects"]) == ("empty", 0, [])
    assert "no CSV or Parquet object under" in manifest["message"]


@pytest.mark.parametrize(("body", "status", "field", "words"), [
    ({"input": "s3://x/in/", "version": 99}, 404, "version", "has no version 99 (registered versions: 1)"),
    ({"input": "batch/in/"}, 422, "input", "expected s3://bucket/prefix/"),
    ({"input": "s3://x/batch/in"}, 422, "input", "end it with '/'"),
    ({"input": "s3://x/in/", "output": "s3://x/in/out/"}, 422, "output", "overlaps the input prefix"),
    ({"input": "s3://x/in/", "output": "s3://x/"}, 422, "output", "overlaps the input prefix"),
    ({"input": "s3://x/", "version": 1}, 422, "output", "the input is a whole bucket"),
    ({"input": "s3://x/in/", "colour": "red"}, 422, "colour", "Extra inputs are not permitted"),
])
def test_bad_requests_are_refused_with_the_field_at_fault(served: EmbeddedCloud, body: dict[str, Any], status: int,
                                                           field: str, words: str) -> None:
    before = len(served.executions(served.deployment.batch_arn))
    code, answer = served.api("POST", f"/models/{MODEL}/batch", body)
    assert (code, answer["field"]) == (status, field), answer
    assert words in answer["message"]
    assert len(served.executions(served.deployment.batch_arn)) == before  # nothing started


def test_status_of_an_unknown_batch_is_404(served: EmbeddedCloud) -> None:
    code, answer = served.api("GET", f"/models/{MODEL}/batch/{MODEL}-20260101T000000-deadbeef")
    assert (code, answer["field"]) == (404, "batch_id")


def test_an_object_that_cannot_be_read_is_reported_failed_and_the_others_scored(served: EmbeddedCloud,
                                                                                  features: Any) -> None:
    _put(served, "batch/corrupt/broken.parquet", b"this is not parquet")
    _put(served, "batch/corrupt/good.csv", features.head(10).to_csv(index=False).encode())
    _put(served, "batch/corrupt/missing.csv", features.drop(columns="mean radius").head(5).to_csv(index=False).encode())
    _started, done, manifest = _run(served, {"input": f"s3://{served.deployment.data_bucket}/batch/corrupt/"})
    by_name = {o["input"].rsplit("/", 1)[1]: o for o in manifest["objects"]}
    missing = by_name["missing.csv"]
    assert (missing["status"], missing["rows_in"], missing["rows_failed"], missing["output"]) == ("failed", 5, 5, None)
    assert missing["failures"][0]["field"] == "mean radius"
    assert "missing feature column(s) ['mean radius']" in missing["failures"][0]["message"]
    assert (by_name["good.csv"]["status"], by_name["good.csv"]["rows_out"]) == ("scored", 10)
    broken = by_name["broken.parquet"]
    assert (broken["status"], broken["output"], broken["complete"]) == ("failed", None, False)
    assert "could not be scored" in broken["failures"][0]["message"]
    assert done["summary"]["objects_failed"] == 2


def test_the_cli_runs_the_same_batch_and_its_exit_code_tells_the_outcome(
        served: EmbeddedCloud, features: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli import main

    bucket = served.deployment.data_bucket
    _put(served, "batch/cli/rows.csv", features.head(20).to_csv(index=False).encode())
    assert main(["batch", MODEL, f"s3://{bucket}/batch/cli/", "--version", "1", "--wait", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["status"], done["summary"]["rows_out"], done["model_version"]) == ("succeeded", 20, 1)
    assert len(_read_output(served, done["output"] + "rows.csv")) == 20

    _put(served, "batch/cli-mixed/in/rows.csv", _mixed_csv(features))
    assert main(["batch", MODEL, f"s3://{bucket}/batch/cli-mixed/in/", "--output",
                 f"s3://{bucket}/batch/cli-mixed/out/", "--wait"]) == 1
    printed = capsys.readouterr().out
    assert "rows: 50 in, 46 scored, 4 failed" in printed
    assert f"manifest: s3://{bucket}/batch/cli-mixed/out/manifest.json" in printed
    assert main(["batch", MODEL, f"s3://{bucket}/batch/nothing-here/", "--wait"]) == 4
    assert main(["batch", MODEL, f"s3://{bucket}/batch/cli"]) == 2  # not a prefix: nothing started
    assert "end it with '/'" in capsys.readouterr().err


def test_the_local_gateway_routes_the_batch_routes_as_the_api_declares_them() -> None:
    from mlops.local.gateway import ApiGateway

    gateway = ApiGateway(None, {MODEL: f"mlops-infer-{MODEL}"}, log=lambda line: None)
    assert gateway.route("POST", f"/models/{MODEL}/batch") == (MODEL, f"/models/{MODEL}/batch")
    assert gateway.route("GET", f"/models/{MODEL}/batch/b-1") == (MODEL, f"/models/{MODEL}/batch/b-1")
    assert gateway.route("GET", f"/models/{MODEL}/batch") is None
    assert gateway.route("POST", f"/models/{MODEL}/batch/b-1") is None
    assert gateway.route("POST", f"/models/{MODEL}/predict/b-1") is None

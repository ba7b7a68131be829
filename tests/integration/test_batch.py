"""Batch inference on the local cloud: the API route starts the batch state machine (the very ASL file the stack
deploys; moto runs its Distributed Map), the batch function scores the objects in chunks, the manifest counts every
row. The model is breast-cancer, trained and registered by the real pipeline. A run reads only where its model may
read and writes only under a prefix of its own, create-only."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.awsrequest import AWSResponse
from clouds import served_cloud
from moto.core.botocore_stubber import MockRawResponse

from mlops import aws
from mlops.aws import platform
from mlops.local.embedded import EmbeddedCloud

MODEL = "breast-cancer"
OTHER = "wine"
CHUNK_ROWS = 2500  # 10k-row objects are scored in 4 chunks
PARTNER = "partner-exports"  # a bucket outside the platform, where the model declares a batch input
UNLISTABLE = "s3://no-such-bucket-for-batch/in/"  # declared too, but there is no such bucket
MAX_CONCURRENCY = 3
CONFIG = f"""
[project]
project = "mlops"

[[model]]
name = "{MODEL}"
target = "target"
task = "binary"
family = "logistic_regression"
test_size = 0.25
thresholds = {{ accuracy = 0.9 }}
primary_metric = "accuracy"
batch_inputs = ["s3://{PARTNER}/{MODEL}/", "{UNLISTABLE}"]
batch_max_concurrency = {MAX_CONCURRENCY}

[[model]]
name = "{OTHER}"
target = "target"
task = "multiclass"
family = "random_forest"
thresholds = {{ accuracy = 0.9 }}
primary_metric = "accuracy"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, breast_cancer_csv: bytes) -> Iterator[EmbeddedCloud]:
    with served_cloud(tmp_path_factory.mktemp("batch") / "mlops.toml", {MODEL: breast_cancer_csv},
                      config_text=CONFIG) as cloud:
        lam = cloud.client("lambda")
        name = cloud.deployment.function_arns["batch"]
        variables = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {
            **variables, "BATCH_CHUNK_ROWS": str(CHUNK_ROWS)}})
        cloud.client("s3").create_bucket(Bucket=PARTNER)
        yield cloud


@pytest.fixture(scope="module")
def features() -> Any:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.drop(columns="target")


def _inputs(cloud: EmbeddedCloud, folder: str) -> str:
    """The model's own input folder in the data bucket: batch/<model>/<folder>/."""
    return f"s3://{cloud.deployment.data_bucket}/batch/{MODEL}/{folder}/"


def _put(cloud: EmbeddedCloud, uri: str, data: bytes) -> None:
    bucket, key = uri[5:].split("/", 1)
    cloud.client("s3").put_object(Bucket=bucket, Key=key, Body=data)


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
    manifest = json.loads(_get(cloud, started["manifest"]))
    return started, done, manifest


def _get(cloud: EmbeddedCloud, uri: str) -> bytes:
    bucket, key = uri[5:].split("/", 1)
    data: bytes = cloud.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def _read_output(cloud: EmbeddedCloud, uri: str) -> list[dict[str, Any]]:
    data = _get(cloud, uri)
    if uri.endswith(".parquet"):
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
        return rows
    return list(csv.DictReader(io.StringIO(data.decode())))


def _own_prefix(cloud: EmbeddedCloud, batch_id: str) -> str:
    return f"s3://{cloud.deployment.data_bucket}/batch-runs/{MODEL}/{batch_id}/"


def test_three_objects_of_10k_rows_are_scored_as_the_api_scores_them(served: EmbeddedCloud, features: Any) -> None:
    cloud = served
    frames = [features.sample(n=10_000, replace=True, random_state=seed).reset_index(drop=True) for seed in (1, 2, 3)]
    frames[0].insert(0, "customer_id", [f"c{i}" for i in range(10_000)])  # not a feature: carried through
    inputs = _inputs(cloud, "big")
    _put(cloud, inputs + "a.csv", frames[0].to_csv(index=False).encode())
    _put(cloud, inputs + "b.parquet", _parquet(frames[1], row_group_size=CHUNK_ROWS))
    _put(cloud, inputs + "more/c.csv", frames[2].to_csv(index=False).encode())
    _put(cloud, inputs + "readme.txt", b"not data")

    started, done, manifest = _run(cloud, {"input": inputs})

    output = _own_prefix(cloud, started["batch_id"])
    assert (started["output"], started["model_version"]) == (output, 1)
    assert done["status"] == "succeeded"
    assert done["summary"]["rows_in"] == done["summary"]["rows_out"] == 30_000
    # moto ran the Distributed Map itself: a map run of child executions, not an inline Map, its results in S3
    assert "MapRunStarted" in {e["type"] for e in cloud.history(started["execution_arn"])}
    assert manifest["work_prefix"] == output + "_batch/"
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
    assert manifest["skipped"] == [{"input": inputs + "readme.txt",
                                    "reason": "not CSV or Parquet by its name (.csv, .parquet or .pq)"}]

    names = list(features.columns)
    for name, rows in (("a.csv", [0, 4_321, 9_999]), ("b.parquet", [17, 5_000]), ("more/c.csv", [2_500])):
        scored = _read_output(cloud, output + name)
        assert len(scored) == 10_000
        for i in rows:
            row = scored[i]
            request = {n: float(row[n]) for n in names}
            status, answer = cloud.predict(MODEL, request)
            assert status == 200, answer
            assert str(row["prediction"]) == answer["prediction"], (name, i)
            assert {c: float(row[f"probability_{c}"]) for c in ("0", "1")} == answer["probabilities"], (name, i)
            assert int(row["model_version"]) == answer["model_version"] == 1
        if name == "a.csv":
            assert [r["customer_id"] for r in scored[:3]] == ["c0", "c1", "c2"]  # the input rows, in order


def test_a_run_scores_at_most_the_models_batch_max_concurrency_objects_at_once(served: EmbeddedCloud,
                                                                               features: Any) -> None:
    """The Distributed Map's concurrency is the model's batch_max_concurrency, not Step Functions' default (no
    limit): a run cannot take the account's Lambda concurrency from the API."""
    inputs = _inputs(served, "bounded")
    for i in range(2):
        _put(served, inputs + f"part-{i}.csv", features.head(5).to_csv(index=False).encode())
    started, _done, _manifest = _run(served, {"input": inputs})
    sfn = served.client("stepfunctions")
    [map_run] = sfn.list_map_runs(executionArn=started["execution_arn"])["mapRuns"]
    assert sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])["maxConcurrency"] == MAX_CONCURRENCY


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
    _put(cloud, _inputs(cloud, "mixed") + "rows.csv", _mixed_csv(features))

    _started, done, manifest = _run(cloud, {"input": _inputs(cloud, "mixed")})

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
    uri = _inputs(cloud, "faulty") + "rows.parquet"
    key = uri[5:].split("/", 1)[1]
    _put(cloud, uri, data)
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
        _started, _done, manifest = _run(cloud, {"input": _inputs(cloud, "faulty")})
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


def test_a_prefix_the_model_declares_outside_the_platform_is_scored_into_the_runs_own_prefix(
        served: EmbeddedCloud, features: Any) -> None:
    inputs = f"s3://{PARTNER}/{MODEL}/2026-11-27/"
    _put(served, inputs + "clinic.csv", features.head(30).to_csv(index=False).encode())

    started, done, manifest = _run(served, {"input": inputs})

    assert done["summary"]["rows_out"] == 30
    [report] = manifest["objects"]
    assert report["output"] == _own_prefix(served, started["batch_id"]) + "clinic.csv"
    assert len(_read_output(served, report["output"])) == 30
    # the partner's bucket is read, never written
    keys = [o["Key"] for o in served.client("s3").list_objects_v2(Bucket=PARTNER)["Contents"]]
    assert keys == [f"{MODEL}/2026-11-27/clinic.csv"]


def test_an_input_that_cannot_be_listed_fails_the_run_with_the_reason(
        served: EmbeddedCloud, capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main

    assert main(["batch", MODEL, UNLISTABLE, "--wait", "--json"]) == 3
    done = json.loads(capsys.readouterr().out)
    assert (done["status"], done["error"]) == ("failed", "BatchInputError")
    assert done["cause"].startswith(f"cannot list {UNLISTABLE}: NoSuchBucket")


def test_an_empty_prefix_ends_with_an_empty_manifest(served: EmbeddedCloud) -> None:
    _started, done, manifest = _run(served, {"input": _inputs(served, "nothing")})
    assert done["status"] == "succeeded"
    assert (manifest["status"], manifest["rows_in"], manifest["objects"]) == ("empty", 0, [])
    assert "no CSV or Parquet object under" in manifest["message"]


DATA, MODELS = "mlops-data", "mlops-models"  # the local cloud's buckets for project "mlops"


@pytest.mark.parametrize("uri", [
    f"s3://{MODELS}/models/",  # registered models' artefacts
    f"s3://{MODELS}/models/{OTHER}/",
    f"s3://{DATA}/curated/",  # curated datasets
    f"s3://{DATA}/incoming/{MODEL}/",  # what ingest reads
    f"s3://{DATA}/batch/{OTHER}/",  # another model's batch inputs
    f"s3://{DATA}/batch/",  # every model's
    f"s3://{DATA}/batch-runs/{MODEL}/",  # runs' outputs and manifests
    f"s3://{DATA}/",  # the whole data bucket
    f"s3://{PARTNER}/",  # beyond the declared prefix
    f"s3://{PARTNER}/{MODEL}-archive/",
])
def test_an_input_the_model_may_not_read_is_refused_before_a_run_starts(served: EmbeddedCloud, uri: str) -> None:
    before = len(served.executions(served.deployment.batch_arn))
    code, answer = served.api("POST", f"/models/{MODEL}/batch", {"input": uri})
    assert (code, answer["error"], answer["field"]) == (403, "BatchInputForbidden", "input"), answer
    assert f"may not read {uri!r}" in answer["message"]
    # the message names where the model's runs may read
    for allowed in (f"s3://{DATA}/batch/{MODEL}/", f"s3://{PARTNER}/{MODEL}/", UNLISTABLE):
        assert allowed in answer["message"]
    assert len(served.executions(served.deployment.batch_arn)) == before  # nothing started


@pytest.mark.parametrize(("body", "status", "field", "words"), [
    ({"input": f"s3://{DATA}/batch/{MODEL}/in/", "version": 99}, 404, "version",
     "has no version 99 (registered versions: 1)"),
    ({"input": "batch/in/"}, 422, "input", "expected s3://bucket/prefix/"),
    ({"input": f"s3://{DATA}/batch/{MODEL}/in"}, 422, "input", "end it with '/'"),
    ({"input": f"s3://{DATA}/batch/{MODEL}/in/", "output": f"s3://{DATA}/batch/{MODEL}/out/"}, 422, "output",
     "remove `output` from the request"),
    ({"input": f"s3://{DATA}/batch/{MODEL}/in/", "colour": "red"}, 422, "colour", "Extra inputs are not permitted"),
])
def test_bad_requests_are_refused_with_the_field_at_fault(served: EmbeddedCloud, body: dict[str, Any], status: int,
                                                           field: str, words: str) -> None:
    before = len(served.executions(served.deployment.batch_arn))
    code, answer = served.api("POST", f"/models/{MODEL}/batch", body)
    assert (code, answer["field"]) == (status, field), answer
    assert words in answer["message"]
    assert len(served.executions(served.deployment.batch_arn)) == before  # nothing started


def test_a_runs_outputs_never_overwrite_an_existing_object(served: EmbeddedCloud, features: Any,
                                                           tmp_path: Path) -> None:
    """Whatever is already at a key a run writes stays as it was: the object's step fails instead (and is reported
    failed by the state machine's Catch); a finished run's manifest is not rewritten by a step run again."""
    from mlops.batch.run import finish, score_object
    from mlops.batch.start import BatchObject, BatchSpec
    from mlops.core.errors import RegistryConflict
    from mlops.registry.store import Registry
    from mlops.serving.cache import ModelCache

    s3 = served.client("s3")
    registry = Registry(served.client("dynamodb"), served.deployment.names["registry"])
    batch_id = f"{MODEL}-20261127T080000-0bad0bad"
    output = _own_prefix(served, batch_id)
    spec = BatchSpec(batch_id=batch_id, model=MODEL, model_version=1, input=_inputs(served, "planted"), output=output,
                     manifest=output + "manifest.json", started_at="2026-11-27T08:00:00.000+00:00")
    data = features.head(10).to_csv(index=False).encode()
    _put(served, spec.input + "rows.csv", data)
    _put(served, output + "rows.csv", b"precious")
    item = BatchObject(index=0, key=f"batch/{MODEL}/planted/rows.csv", relative="rows.csv", format="csv",
                       size=len(data))

    with pytest.raises(RegistryConflict, match="already exists"):
        score_object(spec, item, s3=s3, registry=registry, cache=ModelCache(s3, tmp_path))
    assert _get(served, output + "rows.csv") == b"precious"

    inputs = _inputs(served, "finished")
    _put(served, inputs + "rows.csv", data)
    started, _done, manifest = _run(served, {"input": inputs})
    ran = BatchSpec.model_validate({key: manifest[key] for key in BatchSpec.model_fields})
    written = _get(served, started["manifest"])
    summary = finish(ran, s3, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert _get(served, started["manifest"]) == written
    assert summary["finished_at"] == manifest["finished_at"]


def test_status_of_an_unknown_batch_is_404(served: EmbeddedCloud) -> None:
    code, answer = served.api("GET", f"/models/{MODEL}/batch/{MODEL}-20260101T000000-deadbeef")
    assert (code, answer["field"]) == (404, "batch_id")


def test_an_object_that_cannot_be_read_is_reported_failed_and_the_others_scored(served: EmbeddedCloud,
                                                                                  features: Any) -> None:
    inputs = _inputs(served, "corrupt")
    _put(served, inputs + "broken.parquet", b"this is not parquet")
    _put(served, inputs + "good.csv", features.head(10).to_csv(index=False).encode())
    _put(served, inputs + "missing.csv", features.drop(columns="mean radius").head(5).to_csv(index=False).encode())
    _started, done, manifest = _run(served, {"input": inputs})
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
    from mlops.cli.main import main

    _put(served, _inputs(served, "cli") + "rows.csv", features.head(20).to_csv(index=False).encode())
    assert main(["batch", MODEL, _inputs(served, "cli"), "--version", "1", "--wait", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["status"], done["summary"]["rows_out"], done["model_version"]) == ("succeeded", 20, 1)
    assert done["output"] == _own_prefix(served, done["batch_id"])
    assert len(_read_output(served, done["output"] + "rows.csv")) == 20

    _put(served, _inputs(served, "cli-mixed") + "rows.csv", _mixed_csv(features))
    assert main(["batch", MODEL, _inputs(served, "cli-mixed"), "--wait"]) == 1
    printed = capsys.readouterr().out
    assert "rows: 50 in, 46 scored, 4 failed" in printed
    assert f"manifest: s3://{DATA}/batch-runs/{MODEL}/" in printed
    assert main(["batch", MODEL, _inputs(served, "nothing-here"), "--wait"]) == 4
    assert main(["batch", MODEL, _inputs(served, "cli")[:-1]]) == 2  # not a prefix: nothing started
    assert "end it with '/'" in capsys.readouterr().err
    assert main(["batch", MODEL, f"s3://{DATA}/curated/"]) == 2  # not the model's to read: nothing started
    assert f"may not read 's3://{DATA}/curated/'" in capsys.readouterr().err


def test_the_local_gateway_routes_the_batch_routes_as_the_api_declares_them() -> None:
    from mlops.local.gateway import ApiGateway

    gateway = ApiGateway(None, {MODEL: platform.infer_function_name("mlops", MODEL)}, log=lambda line: None)
    assert gateway.route("POST", f"/models/{MODEL}/batch") == (MODEL, f"/models/{MODEL}/batch")
    assert gateway.route("GET", f"/models/{MODEL}/batch/b-1") == (MODEL, f"/models/{MODEL}/batch/b-1")
    assert gateway.route("GET", f"/models/{MODEL}/batch") is None
    assert gateway.route("POST", f"/models/{MODEL}/batch/b-1") is None
    assert gateway.route("POST", f"/models/{MODEL}/predict/b-1") is None

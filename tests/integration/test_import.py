"""`mlops models import` for a model with no data on the platform yet: there is nothing to measure it on, so the
metrics given are gated and recorded as declared (said so in the answer and the lineage); a first model that passes
becomes the champion at 100% and serves through the gateway, one that fails is recorded as a rejected run. The CLI
writes only the candidate (under candidates/, as the train step does); the platform's register function, its role
checked by the guard against the synthesized template, writes under models/ and records the version, which the
models bucket's policy lets no person do on AWS (moto does not evaluate bucket policies: the test checks the CLI's own
calls against the template's protected prefixes)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clouds import served_cloud

from mlops.local.embedded import EmbeddedCloud

MODEL = "breast-cancer"  # conftest.TEST_CONFIG: binary, thresholds accuracy 0.9, canary_weight 0.1 (the default)


@pytest.fixture(scope="module")
def cloud(config_file: Path) -> Iterator[EmbeddedCloud]:
    with served_cloud(config_file, {}) as cloud:  # nothing uploaded: no curated data, no contract yet
        yield cloud


@pytest.fixture(autouse=True)
def _handlers_print_on_their_own_threads(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollout's looks run on a Step Functions thread while the CLI prints its answer: with pytest's stdout routed
    per thread, as the runtime routes the process's own, a handler's prints do not swap the CLI's stdout away."""
    from mlops.local.lambda_runtime import ThreadRoutedStdout

    monkeypatch.setattr(sys, "stdout", ThreadRoutedStdout(sys.stdout))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model of the breast-cancer data trained elsewhere (inputs named after the columns, spaces and all), its
    contract written by hand, and two metrics files."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folder = tmp_path_factory.mktemp("import")
    frame = load_breast_cancer(as_frame=True).frame
    columns = [c for c in frame.columns if c != "target"]
    classifier = LogisticRegression(max_iter=1000)
    pipeline = make_pipeline(ColumnTransformer([("x", StandardScaler(), columns)]), classifier)
    pipeline.fit(frame[columns], frame["target"])
    model = convert_sklearn(pipeline, initial_types=[(c, DoubleTensorType([None, 1])) for c in columns],
                            options={id(classifier): {"zipmap": False}})
    # a double model's classes are a tensor skl2onnx does not name: the file says them in its metadata_props
    entry = model.metadata_props.add()
    entry.key, entry.value = "classes", '["0", "1"]'
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    contract = {"target": "target", "columns": [{"name": c, "kind": "numeric"} for c in columns]
                + [{"name": "target", "kind": "integer"}]}
    (folder / "contract.json").write_text(json.dumps(contract))
    (folder / "good.json").write_text(json.dumps({"accuracy": 0.97, "f1": 0.98, "evaluated_on": "our own split"}))
    (folder / "poor.json").write_text(json.dumps({"accuracy": 0.5}))
    # a second model of the same data, as good: the challenger of the first
    other = LogisticRegression(max_iter=1000, C=0.1)
    second = make_pipeline(ColumnTransformer([("x", StandardScaler(), columns)]), other).fit(frame[columns],
                                                                                              frame["target"])
    model = convert_sklearn(second, initial_types=[(c, DoubleTensorType([None, 1])) for c in columns],
                            options={id(other): {"zipmap": False}})
    entry = model.metadata_props.add()
    entry.key, entry.value = "classes", '["0", "1"]'
    (folder / "second.onnx").write_bytes(model.SerializeToString())
    (folder / "second.json").write_text(json.dumps({"metrics": {"accuracy": 0.975}}))
    return {"folder": folder, "pipeline": pipeline, "frame": frame, "columns": columns}


def _import(files: dict[str, Any], *extra: str, onnx: str = "model.onnx") -> list[str]:
    folder = files["folder"]
    return ["models", "import", MODEL, "--onnx", str(folder / onnx), "--contract", str(folder / "contract.json"),
            *extra]


@contextmanager
def calls_outside_handlers(cloud: EmbeddedCloud) -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """Every AWS call made outside a handler meanwhile (the CLI's, with a person's credentials on AWS): (service,
    operation, parameters)."""
    from botocore.client import BaseClient

    assert cloud.guard is not None
    guard, inner, seen = cloud.guard, BaseClient._make_api_call, []

    def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if guard.caller() is None:
            seen.append((client.meta.service_model.service_name, operation, dict(params)))
        return inner(client, operation, params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseClient, "_make_api_call", recording)
        yield seen


def _writes_a_person_may_not_make(cloud: EmbeddedCloud, calls: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """The S3 writes among ``calls`` that the stack's bucket policy denies every principal but its writer roles
    (infra/constructs/storage.py PROTECTED_PREFIXES, which the template tests check the bucket policies against)."""
    from infra.constructs.storage import PROTECTED_PREFIXES

    buckets = {cloud.deployment.data_bucket: "data", cloud.deployment.models_bucket: "models"}
    writes = [f"{params['Bucket']}/{params['Key']}" for service, operation, params in calls
              if service == "s3" and operation in ("PutObject", "DeleteObject", "CopyObject", "CreateMultipartUpload")
              and any(params["Key"].startswith(prefix)
                      for prefix in PROTECTED_PREFIXES.get(buckets.get(params["Bucket"], ""), ()))]
    return writes


def test_without_data_the_metrics_must_be_given(cloud: EmbeddedCloud, files: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main

    assert main(_import(files)) == 2
    err = capsys.readouterr().err
    assert f"{MODEL} has no curated data yet to measure the model on: give its metrics with --metrics m.json" in err
    assert cloud.registry.versions(MODEL) == []


def test_declared_metrics_the_gate_refuses_are_recorded_as_a_rejected_run(
        cloud: EmbeddedCloud, files: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main

    assert main(_import(files, "--metrics", str(files["folder"] / "poor.json"))) == 1
    out = capsys.readouterr().out
    assert "rejected by the gate" in out
    assert "metrics DECLARED, not measured" in out
    assert "  - accuracy 0.5 is below the threshold 0.9" in out
    [run] = cloud.registry.runs(MODEL)
    assert (run.outcome, run.reason) == ("rejected", "accuracy 0.5 is below the threshold 0.9")
    assert run.details["source"] == "external"
    assert cloud.registry.versions(MODEL) == []


def test_a_first_import_on_declared_metrics_becomes_the_champion_and_serves(
        cloud: EmbeddedCloud, files: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main

    invocations = len(cloud.runtime.invocations)
    with calls_outside_handlers(cloud) as calls:
        assert main(_import(files, "--metrics", str(files["folder"] / "good.json"), "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["version"], result["aliases"]) == ("registered", 1, ["champion"])
    # the CLI left the candidate where train leaves one, and the register function did the rest, as its role allows
    assert _writes_a_person_may_not_make(cloud, calls) == []
    written = sorted(params["Key"] for service, operation, params in calls if operation == "PutObject")
    assert written == [f"candidates/{MODEL}/{result['run_id']}/{name}" for name in
                       ("contract.json", "model.onnx", "train.json")]
    assert [i.function for i in cloud.runtime.invocations[invocations:] if i.function.endswith("-register")] == [
        cloud.function("register")]
    assert cloud.guard is not None
    assert cloud.guard.denials == []
    assert result["split"]["weights"] == {"champion": 1.0, "challenger": 0.0}
    assert result["rollout"] is None  # nothing to compare it with
    assert result["evaluation"]["metrics_from"] == "declared"
    assert result["evaluation"]["candidate"]["metrics"] == {"accuracy": 0.97, "f1": 0.98}
    assert result["evaluation"]["candidate"]["latency_ms"]["p95"] > 0
    assert (result["classes"], result["classes_from"]) == (["0", "1"], "metadata_props")
    # skl2onnx named the inputs as identifiers: each takes its column's name back
    assert result["changes"][0].startswith("inputs named after their columns: mean_radius -> mean radius, ")
    manifest = cloud.models.get_json(result["manifest_uri"].split("/", 3)[3])
    assert manifest["source"] == "external"
    assert manifest["external"]["metrics_declared"] is True
    assert manifest["external"]["metrics_file"] == {"accuracy": 0.97, "f1": 0.98, "evaluated_on": "our own split"}
    assert manifest["evaluation"]["holdout"] is None
    assert "not measured" in manifest["evaluation"]["note"]
    assert manifest["baseline"] is None  # no data: no drift reference
    [version] = cloud.registry.versions(MODEL)
    assert version.metrics["metrics_declared"] is True
    assert version.dataset_sha256 == "external"
    # served through the gateway, as scikit-learn predicts
    frame = files["frame"]
    row = frame.iloc[7]
    status, answer = cloud.predict(MODEL, {c: float(row[c]) for c in files["columns"]})
    assert status == 200, answer
    assert (answer["model_version"], answer["variant"]) == (1, "champion")
    expected = files["pipeline"].predict_proba(frame[files["columns"]].iloc[[7]])[0, 1]
    assert answer["probabilities"]["1"] == pytest.approx(expected, abs=1e-9)


def test_the_drift_check_says_an_imported_champion_without_data_has_no_baseline(cloud: EmbeddedCloud) -> None:
    assert cloud.registry.alias(MODEL, "champion") is not None  # the test above imported it
    response = cloud.client("lambda").invoke(FunctionName=cloud.function("drift_check"),
                                             Payload=json.dumps({"model": MODEL}).encode())
    assert "FunctionError" not in response
    summary = json.loads(response["Payload"].read())
    assert summary["status"] == "skipped"
    assert summary["reason"] == (f"{MODEL} v1 was imported with no data to take a drift baseline from "
                                 "(mlops models import)")


def test_a_second_import_as_good_becomes_the_challenger_at_the_canary_weight(
        cloud: EmbeddedCloud, files: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main

    with calls_outside_handlers(cloud) as calls:
        assert main(_import(files, "--metrics", str(files["folder"] / "second.json"), "--json",
                            onnx="second.onnx")) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["version"], result["aliases"]) == ("registered", 2, ["challenger"])
    assert result["split"]["weights"] == {"champion": 0.9, "challenger": 0.1}
    assert result["rollout"].endswith(f":{MODEL}-v2-rollout")
    assert _writes_a_person_may_not_make(cloud, calls) == []
    challenger = cloud.registry.version(MODEL, 2)
    assert challenger is not None
    assert cloud.live_alias(MODEL)["RoutingConfig"]["AdditionalVersionWeights"] == {challenger.lambda_version: 0.1}
    # the rollout's first look is over before the next test (then it waits rollout_interval_seconds, 300 s here)
    deadline = time.monotonic() + 60
    while not any(i.function == cloud.function("rollout") for i in cloud.runtime.invocations):
        assert time.monotonic() < deadline, "the rollout did not look"
        time.sleep(0.1)


def test_importing_the_champions_file_again_leaves_the_canary_and_names_its_first_importer(
        cloud: EmbeddedCloud, files: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli import models
    from mlops.cli.main import main

    before = cloud.live_alias(MODEL)
    [first] = [v for v in cloud.registry.versions(MODEL) if v.version == 1]
    manifest = cloud.models.get_json(first.manifest_uri.split("/", 3)[3])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "_who", lambda: "arn:aws:iam::123456789012:user/someone-else")
        assert main(_import(files, "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["version"], result["aliases"]) == ("exists", 1, ["champion"])
    # the live alias as it was: the challenger keeps its share, and the registry agrees with it
    after = cloud.live_alias(MODEL)
    assert (after["FunctionVersion"], after["RoutingConfig"]) == (before["FunctionVersion"], before["RoutingConfig"])
    assert result["split"]["weights"] == {"champion": 0.9, "challenger": 0.1}
    assert result["rollout"] is None
    challenger = cloud.registry.alias(MODEL, "challenger")
    assert challenger is not None
    assert challenger.version == 2
    # who imported it, and when, is the first import's
    assert (result["imported_by"], result["imported_at"]) == (manifest["external"]["imported_by"],
                                                              manifest["external"]["imported_at"])
    assert result["imported_by"] != "arn:aws:iam::123456789012:user/someone-else"
    assert f"{MODEL} v1 was imported from this file before (champion)" == result["message"]


def test_an_import_whose_deployment_stopped_is_finished_by_importing_it_again(
        cloud: EmbeddedCloud, files: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main
    from mlops.release.deploy import ServingDeployer

    model = "canary"  # conftest.TEST_CONFIG: binary, no data and no declared contract: the one given is taken
    folder = files["folder"]
    command = ["models", "import", model, "--onnx", str(folder / "model.onnx"), "--contract",
               str(folder / "contract.json"), "--metrics", str(folder / "good.json"), "--json"]

    def lost(self: ServingDeployer, function: str, model_version: int) -> str:
        raise RuntimeError("the publish was lost")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ServingDeployer, "publish", lost)  # register stops between the registry and the alias
        assert main(command) == 2
    assert "RuntimeError: the publish was lost" in capsys.readouterr().err
    [stopped] = cloud.registry.versions(model)
    assert (list(stopped.aliases), stopped.lambda_version) == (["champion"], None)
    assert main(command) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["version"], result["aliases"]) == ("exists", 1, ["champion"])
    assert result["split"]["weights"] == {"champion": 1.0, "challenger": 0.0}
    deployed = cloud.registry.version(model, 1)
    assert deployed is not None
    assert deployed.lambda_version == result["split"]["champion_lambda_version"]
    assert cloud.guard is not None
    assert cloud.guard.denials == []

"""`mlops models import` on `mlops local up`, as a user runs it: a model trained outside the platform (a plain
scikit-learn LogisticRegression, converted here with skl2onnx, one float32 input per column) is refused when its inputs
do not fit the contract; otherwise it is measured on the model's held-out rows against the champion, served through
the gateway as the challenger at the canary weight, promoted with `mlops models promote`, and its lineage says where it
came from and who brought it. The CLI only leaves the candidate under candidates/ and invokes the platform's register
function, which writes under models/ (what the bucket policy lets only the platform's roles write on AWS). A model
exported with one input for all its features (as tf2onnx and torch export) becomes the next challenger; importing the
champion's file again then leaves that canary on the live alias. The tests run in order on one server (a story, each
step building on the one before)."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = pytest.mark.slow

MODEL = "e2e"
FEATURES = ("x1", "x2", "x3", "x4")  # as in conftest.world_rows
CANARY_WEIGHT = 0.5  # as in conftest.E2E_CONFIG


@pytest.fixture(scope="module")
def config(workdir: Path, held_canary_config: str) -> Path:
    """The e2e model, its canary held (the rollout looks first after a day, so the promotion here is a person's), and a
    margin that lets a model as good as the champion, give or take a few held-out rows, pass the gate."""
    text = held_canary_config.replace("champion_margin = 0.02", "champion_margin = 0.1")
    assert text != held_canary_config
    path = workdir / "import.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def server(start_local_up: Callable[..., LocalUp], config: Path) -> LocalUp:
    return start_local_up(None, config=config)


def mlops(server: LocalUp, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlops.cli", *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=300, check=False, env=server.env)


def _describe(server: LocalUp) -> dict[str, Any]:
    status, body = server.http("GET", f"/models/{MODEL}")
    return body if status == 200 else {}


def _trained_elsewhere(rows: list[dict[str, Any]], features: tuple[str, ...], *,
                       one_input: bool = False) -> tuple[bytes, Any]:
    """What a data scientist brings: scikit-learn on their own copy of the data, exported with skl2onnx (one input per
    column; ``one_input``: one float input [N, F] of the columns in order, as tf2onnx and torch export a model)."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame = pd.DataFrame(rows)
    classifier = LogisticRegression(C=10.0)
    if one_input:
        classifier.fit(frame[list(features)].to_numpy(), frame["label"])
        model = convert_sklearn(classifier, initial_types=[("input", FloatTensorType([None, len(features)]))],
                                options={id(classifier): {"zipmap": False}})
        return model.SerializeToString(), classifier
    pipeline = make_pipeline(ColumnTransformer([("x", "passthrough", list(features))]), classifier)
    pipeline.fit(frame[list(features)], frame["label"])
    model = convert_sklearn(pipeline, initial_types=[(f, FloatTensorType([None, 1])) for f in features],
                            options={id(classifier): {"zipmap": False}})
    return model.SerializeToString(), pipeline


@pytest.fixture(scope="module")
def files(workdir: Path, world: Callable[..., list[dict[str, Any]]]) -> dict[str, Any]:
    rows = world("a", 3000, seed=11)
    onnx_bytes, pipeline = _trained_elsewhere(rows, FEATURES)
    (workdir / "model.onnx").write_bytes(onnx_bytes)
    (workdir / "three_columns.onnx").write_bytes(_trained_elsewhere(rows, FEATURES[:3])[0])
    (workdir / "one_input.onnx").write_bytes(_trained_elsewhere(world("a", 3000, seed=21), FEATURES,
                                                                one_input=True)[0])
    metrics = {"metrics": {"accuracy": 0.97}, "trained_on": "a laptop, 3000 rows"}
    (workdir / "metrics.json").write_text(json.dumps(metrics))
    return {"onnx": workdir / "model.onnx", "sha256": hashlib.sha256(onnx_bytes).hexdigest(), "pipeline": pipeline,
            "three_columns": workdir / "three_columns.onnx", "one_input": workdir / "one_input.onnx",
            "metrics": metrics, "contract": workdir / "contract.json"}


def test_a_champion_is_trained_from_an_upload_and_its_contract_fetched(
        server: LocalUp, world: Callable[..., list[dict[str, Any]]], csv_of: Callable[..., bytes],
        files: dict[str, Any]) -> None:
    [model] = [m for m in server.info["models"] if m["name"] == MODEL]
    champion = server.serve(model, "world_a.csv", csv_of(world("a", 600, seed=1)))
    assert champion["version"] == 1
    # the contract the platform inferred from the first file: what an outside model is built against
    server.aws("s3", "cp", f"s3://{server.info['data_bucket']}/contracts/{MODEL}/v000001.json", str(files["contract"]))
    assert json.loads(files["contract"].read_text())["target"] == "label"


def test_a_model_whose_inputs_do_not_fit_the_contract_is_refused_and_nothing_recorded(
        server: LocalUp, config: Path, files: dict[str, Any]) -> None:
    done = mlops(server, config, "models", "import", MODEL, "--onnx", str(files["three_columns"]),
                 "--contract", str(files["contract"]))
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"mlops models: error: three_columns.onnx cannot be imported as {MODEL}:\n")
    assert "  - missing input 'x4': the contract's numeric column 'x4' is fed as an input of its name, a float or " \
           "double tensor [N, 1]" in done.stderr
    listed = mlops(server, config, "models", "list", MODEL, "--json")
    assert [v["version"] for v in json.loads(listed.stdout)] == [1]


def test_an_imported_model_is_measured_against_the_champion_and_becomes_the_canary(
        server: LocalUp, config: Path, files: dict[str, Any]) -> None:
    done = mlops(server, config, "models", "import", MODEL, "--onnx", str(files["onnx"]), "--contract",
                 str(files["contract"]), "--metrics", str(Path(files["onnx"]).with_name("metrics.json")), "--json")
    assert done.returncode == 0, done.stderr + server.log()
    result = json.loads(done.stdout)
    files["result"] = result
    assert (result["status"], result["version"], result["aliases"]) == ("registered", 2, ["challenger"])
    assert result["file"]["sha256"] == files["sha256"]
    evaluation = result["evaluation"]
    # measured on the rows a training run of the newest dataset holds out (600 rows, test_size 0.25), the champion too
    assert evaluation["metrics_from"] == "holdout"
    assert evaluation["holdout"]["rows"] == 150
    assert evaluation["candidate"]["metrics"]["accuracy"] > 0.9
    assert evaluation["champion"]["version"] == 1
    assert evaluation["champion"]["rows"] == 150
    assert evaluation["meets_thresholds"]
    assert evaluation["beats_champion"]
    assert result["split"]["weights"] == {"champion": pytest.approx(1 - CANARY_WEIGHT),
                                          "challenger": pytest.approx(CANARY_WEIGHT)}
    assert result["rollout"].endswith(f":{MODEL}-v2-rollout")
    # the CLI left the candidate where train leaves one; register copied it under models/
    listed = server.aws("s3", "ls", f"s3://{server.info['models_bucket']}/candidates/{MODEL}/{result['run_id']}/")
    assert sorted(line.split()[-1] for line in listed.stdout.splitlines()) == [
        "baseline.json", "contract.json", "model.onnx", "test.parquet", "train.json"]
    assert result["manifest_uri"].startswith(f"s3://{server.info['models_bucket']}/models/{MODEL}/runs/")


def test_the_gateway_serves_it_as_the_challenger_as_it_predicts(
        server: LocalUp, world: Callable[..., list[dict[str, Any]]], features: Callable[..., dict[str, Any]],
        files: dict[str, Any]) -> None:
    import pandas as pd

    assert _describe(server)["challenger"]["version"] == 2
    rows = world("a", 200, seed=12)
    answers = []
    for row in rows:
        status, answer = server.http("POST", f"/models/{MODEL}/predict", {"features": features(row)})
        assert status == 200, answer
        answers.append(answer)
    challenger = [(row, a) for row, a in zip(rows, answers, strict=True) if a["model_version"] == 2]
    assert {a["variant"] for _, a in challenger} == {"challenger"}
    tolerance = 4.5 * math.sqrt(len(rows) * CANARY_WEIGHT * (1 - CANARY_WEIGHT))
    assert abs(len(challenger) - len(rows) * CANARY_WEIGHT) <= tolerance
    # the float32 model answers, through the cast the import put in front of it, what scikit-learn answers
    frame = pd.DataFrame([features(row) for row, _ in challenger])[list(FEATURES)]
    expected = files["pipeline"].predict_proba(frame)[:, 1]
    served = [a["probabilities"]["1"] for _, a in challenger]
    assert max(abs(s - e) for s, e in zip(served, expected, strict=True)) < 1e-5


def test_mlops_models_promote_makes_it_the_champion(server: LocalUp, config: Path,
                                                    world: Callable[..., list[dict[str, Any]]],
                                                    features: Callable[..., dict[str, Any]]) -> None:
    done = mlops(server, config, "models", "promote", MODEL, "--reason", "the imported model is as good")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nlog:\n{server.log()}"
    described = _describe(server)
    assert described["champion"]["version"] == 2
    assert described["challenger"] is None
    alias = server.aws_json("lambda", "get-alias", "--function-name", f"mlops-infer-{MODEL}", "--name", "live")
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    versions = {server.http("POST", f"/models/{MODEL}/predict", {"features": features(row)})[1]["model_version"]
                for row in world("a", 20, seed=13)}
    assert versions == {2}


def test_its_lineage_says_it_is_external_with_the_files_sha256_and_who_imported_it(
        server: LocalUp, files: dict[str, Any]) -> None:
    manifest = json.loads(server.aws("s3", "cp", files["result"]["manifest_uri"], "-").stdout)
    importer = server.aws_json("sts", "get-caller-identity")["Arn"]
    assert manifest["source"] == "external"
    assert manifest["family"] == "external"
    external = manifest["external"]
    assert external["sha256"] == files["sha256"]
    assert external["imported_by"] == importer
    assert external["imported_at"]
    assert external["metrics_file"] == files["metrics"]
    assert external["metrics_declared"] is False
    assert manifest["evaluation"]["metrics_from"] == "holdout"
    assert manifest["champion_at_evaluation"]["version"] == 1
    # the copy stored is what serves, and it is not the file: its changes are said
    assert manifest["onnx"]["sha256"] != files["sha256"]
    assert any("declared double" in change for change in external["changes"])


def test_a_model_with_one_input_for_all_its_features_becomes_the_next_challenger(
        server: LocalUp, config: Path, files: dict[str, Any]) -> None:
    done = mlops(server, config, "models", "import", MODEL, "--onnx", str(files["one_input"]), "--contract",
                 str(files["contract"]), "--json")
    assert done.returncode == 0, done.stderr + server.log()
    result = json.loads(done.stdout)
    assert (result["status"], result["version"], result["aliases"]) == ("registered", 3, ["challenger"])
    assert result["changes"][0].startswith("input 'input' (tensor(float) [N, 4]) fed from one double input [N, 1] per "
                                           "feature column, concatenated in the contract's order (x1, x2, x3, x4)")
    assert result["split"]["weights"]["challenger"] == pytest.approx(CANARY_WEIGHT)


def test_importing_the_same_file_again_finds_its_version(server: LocalUp, config: Path, files: dict[str, Any]) -> None:
    before = server.aws_json("lambda", "get-alias", "--function-name", f"mlops-infer-{MODEL}", "--name", "live")
    done = mlops(server, config, "models", "import", MODEL, "--onnx", str(files["onnx"]), "--contract",
                 str(files["contract"]))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nlog:\n{server.log()}"
    assert f"{MODEL} v2 was imported from this file before (champion)" in done.stdout, done.stdout
    # the champion's file again: the canary keeps its share of the live alias
    after = server.aws_json("lambda", "get-alias", "--function-name", f"mlops-infer-{MODEL}", "--name", "live")
    assert (after["FunctionVersion"], after.get("RoutingConfig")) == (before["FunctionVersion"],
                                                                      before.get("RoutingConfig"))
    assert after["RoutingConfig"]["AdditionalVersionWeights"]
    listed = mlops(server, config, "models", "list", MODEL, "--json")
    assert [(v["version"], v["status"]) for v in json.loads(listed.stdout)] == [
        (1, "retired"), (2, "champion"), (3, "challenger")], listed.stdout

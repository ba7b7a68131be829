"""The model cache never serves another run's model: two local clouds one after the other, with the same model name
and different schemas, each serve their own; every execution environment of the local runtime has its own cache
directory inside the runtime's workdir, as each Lambda environment has its own /tmp; and a version whose artefacts
cannot be verified against the registry is refused, as a server error (not the client's fault)."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from clouds import served_cloud
from moto import mock_aws
from project_configs import one_model_config

from mlops import aws
from mlops.local.embedded import embedded_cloud
from mlops.local.lambda_runtime import InProcessRuntime

EVENTS = Path(__file__).resolve().parents[2] / "events"
MODEL = "twins"
CONFIG = one_model_config(MODEL)


def _frame(prefix: str) -> Any:
    """breast-cancer, its feature columns renamed with a prefix: the same data under another schema."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    return frame.rename(columns={c: f"{prefix}{c}" for c in frame.columns if c != "target"})


def _serve(config_file: Path, prefix: str, other: str) -> None:
    """A fresh local cloud trains the model on the data with this schema, and must serve that model."""
    frame = _frame(prefix)
    row = {k: float(v) for k, v in frame.drop(columns="target").iloc[0].items()}
    with served_cloud(config_file, {MODEL: frame.to_csv(index=False).encode()}) as cloud:
        status, answer = cloud.predict(MODEL, row)
        assert status == 200, answer
        assert (answer["model_version"], answer["prediction"]) == (1, "0")  # the first row is malignant
        status, described = cloud.api("GET", f"/models/{MODEL}")
        assert status == 200, described
        assert {f["name"] for f in described["features"]} == set(row)
        stale = {f"{other}{k.removeprefix(prefix)}": v for k, v in row.items()}
        status, answer = cloud.predict(MODEL, stale)
        assert (status, answer["error"]) == (422, "InvalidInput"), "the other cloud's schema is not this model's"
        # the cache of this cloud's functions is in this cloud's runtime, nowhere else
        lam = cloud.client("lambda")
        for version in ("$LATEST", "1"):
            env = lam.get_function_configuration(FunctionName=cloud.deployment.infer_function(MODEL),
                                                 Qualifier=version)["Environment"]["Variables"]
            assert "MODEL_CACHE_DIR" not in env, "no function declares a cache directory: the runtime gives one"
        # (an environment's folder is named after its code's base64 sha256, which may hold a '/': searched deep)
        cached = [p for p in cloud.runtime.workdir.rglob("*")
                  if p.parent.name == "models" and p.parent.parent.name.endswith(".tmp")]
        assert cached, "the served model was cached in the runtime's workdir"


def test_two_clouds_one_after_the_other_serve_their_own_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "mlops.toml"
    config_file.write_text(CONFIG)
    monkeypatch.setenv("MLOPS_CONFIG", str(config_file))
    _serve(config_file, prefix="", other="renamed ")
    _serve(config_file, prefix="renamed ", other="")
    _serve(config_file, prefix="", other="renamed ")


CACHE_DIR_ECHO = """
import os

def handler(event, context):
    return {"cache_dir": os.environ.get("MODEL_CACHE_DIR")}
"""


def _zip(code: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", code)
    return buffer.getvalue()


def test_each_execution_environment_has_its_own_cache_directory_in_the_runtimes_workdir() -> None:
    with mock_aws(), InProcessRuntime() as runtime:
        aws.client.cache_clear()
        role = aws.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = aws.client("lambda")
        for name in ("a", "b"):
            # a function that declares a cache directory of its own still gets its environment's
            lam.create_function(FunctionName=name, Runtime="python3.12", Role=role, Handler="handler.handler",
                                Code={"ZipFile": _zip(CACHE_DIR_ECHO)},
                                Environment={"Variables": {"MODEL_CACHE_DIR": "/tmp/models"}})
        lam.publish_version(FunctionName="a")
        lam.update_function_code(FunctionName="a", ZipFile=_zip(CACHE_DIR_ECHO + "\n# new code\n"))
        lam.publish_version(FunctionName="a")
        seen = {}
        for qualified in ("a", "a:1", "a:2", "b"):
            seen[qualified] = json.loads(lam.invoke(FunctionName=qualified)["Payload"].read())["cache_dir"]
        assert seen["a"] == json.loads(lam.invoke(FunctionName="a")["Payload"].read())["cache_dir"], "stable"
        assert len(set(seen.values())) == len(seen), f"one directory per environment: {seen}"
        for directory in seen.values():
            assert Path(directory).is_relative_to(runtime.workdir), directory
    aws.client.cache_clear()


def test_a_version_the_registry_cannot_vouch_for_is_refused_as_a_server_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breast_cancer_csv: bytes) -> None:
    config_file = tmp_path / "mlops.toml"
    config_file.write_text(CONFIG)
    monkeypatch.setenv("MLOPS_CONFIG", str(config_file))
    row = {k: float(v) for k, v in _frame("").drop(columns="target").iloc[0].items()}
    with embedded_cloud(config_file) as cloud:
        cloud.upload(MODEL, "data.csv", breast_cancer_csv)
        cloud.wait_for_executions(1)
        assert cloud.predict(MODEL, row)[0] == 200
        # a record from before manifests were vouched for: nothing says which manifest (so which schema) is its
        cloud.client("dynamodb").update_item(
            TableName=cloud.deployment.names["registry"],
            Key={"pk": {"S": f"MODEL#{MODEL}"}, "sk": {"S": "VERSION#000001"}},
            UpdateExpression="REMOVE manifest_sha256")
        event = json.loads((EVENTS / "apigw_predict.json").read_text())
        event["path"], event["body"] = f"/models/{MODEL}/predict", json.dumps({"features": row})
        # $LATEST is an execution environment that has not loaded the model yet
        payload = json.loads(cloud.client("lambda").invoke(FunctionName=cloud.deployment.infer_function(MODEL),
                                                           Payload=json.dumps(event).encode())["Payload"].read())
        answer = json.loads(payload["body"])
        assert (payload["statusCode"], answer["error"], answer["field"]) == (500, "UnverifiableModel", None), answer
        assert f"{MODEL} v1's manifest cannot be verified" in answer["message"]
        assert "register the model again" in answer["message"]


def test_outside_a_runtime_each_process_gets_a_cache_directory_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # an infer or batch handler imported where no runtime names its environment's directory (a script, a debugger):
    # a folder of its own under the temporary directory, never one every run on the machine shares
    from mlops.serving.cache import ModelCache

    monkeypatch.delenv("MODEL_CACHE_DIR", raising=False)
    first, second = ModelCache.for_environment(None), ModelCache.for_environment(None)
    assert first.cache_dir != second.cache_dir
    for cache in (first, second):
        assert cache.cache_dir.is_dir()
        assert cache.cache_dir.parent == Path(tempfile.gettempdir())
        assert cache.cache_dir.name.startswith("mlops-models-")
    monkeypatch.setenv("MODEL_CACHE_DIR", str(first.cache_dir / "given"))
    assert ModelCache.for_environment(None).cache_dir == first.cache_dir / "given"
    for cache in (first, second):
        shutil.rmtree(cache.cache_dir)

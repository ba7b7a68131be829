"""infer on moto: API Gateway proxy events from events/ through the in-process runtime, against a model
that the real pipeline registered."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clouds import served_cloud

from mlops import aws
from mlops.aws import platform
from mlops.local.embedded import EmbeddedCloud

INFER = platform.infer_function_name("mlops", "breast-cancer")  # the test project's
EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(scope="module")
def served(config_file: Path, breast_cancer_csv: bytes) -> Iterator[tuple[EmbeddedCloud, Any]]:
    """breast-cancer trained by the real pipeline, and deployed by register behind the `live` alias."""
    with served_cloud(config_file, {"breast-cancer": breast_cancer_csv}) as cloud:
        yield cloud, cloud.client("lambda")


def _call(lam: Any, method: str, path: str, body: Any = None, raw: str | None = None) -> tuple[int, Any]:
    event = copy.deepcopy(json.loads((EVENTS / "apigw_predict.json").read_text()))
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["body"] = raw if raw is not None else (json.dumps(body) if body is not None else None)
    response = lam.invoke(FunctionName=f"{INFER}:live", Payload=json.dumps(event).encode())
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload["statusCode"], json.loads(payload["body"])


def _row(cloud: EmbeddedCloud) -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    return {k: float(v) for k, v in frame.drop(columns="target").iloc[0].items()}


def test_predict_answers_with_label_probabilities_version_variant_and_id(served: Any) -> None:
    cloud, lam = served
    status, body = _call(lam, "POST", "/models/breast-cancer/predict", {"features": _row(cloud)})
    assert status == 200, body
    assert body["prediction"] == "0"  # the first row of breast-cancer is malignant (class 0)
    assert set(body["probabilities"]) == {"0", "1"}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-9
    assert body["model_version"] == 1
    assert body["variant"] == "champion"
    assert len(body["request_id"]) == 36


def test_batch_answers_one_prediction_per_instance(served: Any) -> None:
    cloud, lam = served
    status, body = _call(lam, "POST", "/models/breast-cancer/predict", {"instances": [_row(cloud)] * 3})
    assert status == 200
    assert len(body["predictions"]) == 3
    assert len({p["request_id"] for p in body["predictions"]}) == 3


def test_feedback_and_describe_and_health(served: Any) -> None:
    cloud, lam = served
    _, answer = _call(lam, "POST", "/models/breast-cancer/predict", {"features": _row(cloud)})
    status, body = _call(lam, "POST", "/models/breast-cancer/feedback",
                         {"request_id": answer["request_id"], "label": 0})
    assert (status, body["accepted"]) == (200, True)
    status, body = _call(lam, "GET", "/models/breast-cancer")
    assert status == 200
    assert body["champion"]["version"] == 1
    assert body["challenger"] is None
    assert body["champion"]["metrics"]["accuracy"] > 0.9
    assert _call(lam, "GET", "/health")[0] == 200


def test_predictions_and_feedback_are_captured_and_joinable(served: Any) -> None:
    cloud, lam = served
    _, answer = _call(lam, "POST", "/models/breast-cancer/predict", {"features": _row(cloud)})
    _call(lam, "POST", "/models/breast-cancer/feedback", {"request_id": answer["request_id"], "label": "1"})
    cloud.flush_captures()  # the log group's subscription delivers within a second; now, here
    s3, bucket = aws.client("s3"), cloud.deployment.names["captures"]
    lines = [json.loads(line) for obj in s3.list_objects_v2(Bucket=bucket, Prefix="captures/")["Contents"]
             for line in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode().splitlines()]
    by_id = {}
    for record in lines:
        by_id.setdefault(record["request_id"], {})[record["type"]] = record
    joined = by_id[answer["request_id"]]
    assert joined["prediction"]["model_version"] == 1
    assert joined["prediction"]["features"]["mean radius"] == _row(cloud)["mean radius"]
    assert joined["feedback"]["label"] == "1"


BAD = [
    ("malformed json", None, '{"features": ', 400, "body"),
    ("not an object", [1, 2], None, 400, "body"),
    ("neither features nor instances", {"rows": []}, None, 422, "body"),
    ("missing feature", "drop:mean radius", None, 422, "features.mean radius"),
    ("extra feature", "add:colour", None, 422, "features.colour"),
    ("string for a number", "set:mean radius=big", None, 422, "features.mean radius"),
    ("boolean for a number", "set:mean radius=True", None, 422, "features.mean radius"),
    ("NaN", None, '{"features": {"mean radius": NaN}}', 422, "features.mean radius"),
    ("infinity", None, "INF", 422, "features.mean radius"),
    ("negative for a non-negative feature", "set:mean radius=-1", None, 422, "features.mean radius"),
    ("batch too large", "batch:101", None, 413, "instances"),
    ("empty batch", {"instances": []}, None, 422, "instances"),
]


@pytest.mark.parametrize(("case", "body", "raw", "status", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_the_right_status_and_names_the_field(
    served: Any, case: str, body: Any, raw: str | None, status: int, field: str
) -> None:
    cloud, lam = served
    row = _row(cloud)
    if isinstance(body, str):
        op, _, arg = body.partition(":")
        if op == "drop":
            row.pop(arg)
        elif op == "add":
            row[arg] = "red"
        elif op == "set":
            key, _, value = arg.partition("=")
            row[key] = {"big": "big", "True": True}.get(value, float(value) if value not in ("big", "True") else value)
        body = {"instances": [row] * int(arg)} if op == "batch" else {"features": row}
    if raw == "INF":
        row["mean radius"] = float("inf")
        raw = json.dumps({"features": row})  # Python writes Infinity, as some clients do
    elif raw and "NaN" in raw:
        row["mean radius"] = float("nan")
        raw = json.dumps({"features": row})
    got_status, got = _call(lam, "POST", "/models/breast-cancer/predict", body, raw)
    assert got_status == status, got
    assert got["field"] == field
    assert got["message"]


def test_unknown_model_is_404(served: Any) -> None:
    _, lam = served
    status, body = _call(lam, "POST", "/models/nope/predict", {"features": {}})
    assert status == 404
    assert "nope" in body["message"]


def test_no_model_deployed_yet_is_503(served: Any) -> None:
    _, lam = served
    event = copy.deepcopy(json.loads((EVENTS / "apigw_predict.json").read_text()))
    event["path"], event["body"] = "/models/wine/predict", json.dumps({"features": {"alcohol": 13.0}})
    payload = json.loads(lam.invoke(FunctionName=platform.infer_function_name("mlops", "wine"),
                                    Payload=json.dumps(event).encode())["Payload"]
                         .read())
    assert payload["statusCode"] == 503
    assert "no version of 'wine' is deployed yet" in json.loads(payload["body"])["message"]


def test_register_deployed_the_champion_at_full_weight(served: Any) -> None:
    cloud, lam = served
    alias = lam.get_alias(FunctionName=INFER, Name="live")
    [v1] = cloud.registry.versions("breast-cancer")
    assert alias["FunctionVersion"] == v1.lambda_version
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    config = lam.get_function_configuration(FunctionName=INFER, Qualifier=v1.lambda_version)
    assert config["Environment"]["Variables"]["MODEL_VERSION"] == "1"


def test_the_serving_path_imports_neither_sklearn_nor_pandas(tmp_path: Path) -> None:
    import subprocess
    import sys

    handler = Path(__file__).resolve().parents[2] / "functions" / "infer" / "handler.py"
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({str(handler)!r})\n"
        "import mlops.serving.onnx_model\n"
        "heavy = sorted(m for m in ('sklearn', 'pandas', 'skl2onnx', 'scipy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = {"MODEL_NAME": "m", "REGISTRY_TABLE": "t", "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin",
           "POWERTOOLS_TRACE_DISABLED": "true"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_artefacts_are_verified_against_the_registry_and_manifest_before_serving(served: Any, tmp_path: Path) -> None:
    from mlops.core.errors import IntegrityError
    from mlops.serving.cache import ModelCache

    cloud, _ = served
    version = cloud.registry.version("breast-cancer", 1)
    assert version is not None
    manifest = cloud.models.get_json(version.manifest_uri.split("/", 3)[3])
    assert len(manifest["contract"]["sha256"]) == 64  # the manifest records what serving will check
    assert len(manifest["baseline"]["sha256"]) == 64  # ...and what drift_check will
    contract_key = version.artefacts_prefix.split("/", 3)[3] + "contract.json"
    original = cloud.models.get_bytes(contract_key)
    assert ModelCache(cloud.client("s3"), tmp_path / "a").get(version).schema  # intact: it loads
    try:
        cloud.models.put_bytes(contract_key, original + b"\n")  # still valid JSON, not the same bytes
        with pytest.raises(IntegrityError, match=r"contract\.json does not match"):
            ModelCache(cloud.client("s3"), tmp_path / "b").get(version)
    finally:
        cloud.models.put_bytes(contract_key, original)


def test_a_model_trained_without_declared_features_refuses_an_entity_id(served: Any) -> None:
    _cloud, lam = served
    status, body = _call(lam, "POST", "/models/breast-cancer/predict", {"entity_id": "c-1"})
    assert (status, body["error"], body["field"]) == (422, "InvalidInput", "entity_id")
    assert "not trained from declared features" in body["message"]


def test_a_hostile_cache_directory_does_not_change_what_is_served(served: Any, tmp_path: Path) -> None:
    """Files left in the cache directory by another run, version or cloud: in the old layout (model name and version)
    and under the sha256 names of this version's artefacts, with other bytes. Neither is served."""
    import hashlib

    from mlops.serving.cache import ModelCache
    from mlops.serving.requests import validate_row
    from mlops.serving.scoring import score

    cloud, _ = served
    version = cloud.registry.version("breast-cancer", 1)
    assert version is not None
    key = version.artefacts_prefix.split("/", 3)[3]
    manifest_bytes = cloud.models.get_bytes(key + "manifest.json")
    assert version.manifest_sha256 == hashlib.sha256(manifest_bytes).hexdigest(), "register vouched for it"
    manifest = json.loads(manifest_bytes)
    # another model's: a contract with other columns, and a manifest that vouches for it
    other_contract = json.dumps({"target": "target", "columns": [
        {"name": "colour", "kind": "categorical", "categories": ["red"]}, {"name": "target", "kind": "integer"}]})
    other_manifest = json.dumps({**manifest, "contract": {
        "sha256": hashlib.sha256(other_contract.encode()).hexdigest()}})
    old_layout = tmp_path / "breast-cancer" / "v1"
    old_layout.mkdir(parents=True)
    (old_layout / "manifest.json").write_text(other_manifest)
    (old_layout / "contract.json").write_text(other_contract)
    (old_layout / "model.onnx").write_bytes(b"not this model")
    named = {hashlib.sha256(manifest_bytes).hexdigest(): other_manifest.encode(),
             manifest["contract"]["sha256"]: other_contract.encode(), version.onnx_sha256: b"not this model"}
    for sha256, wrong in named.items():
        (tmp_path / sha256).write_bytes(wrong)

    loaded = ModelCache(cloud.client("s3"), tmp_path).get(version)
    row = _row(cloud)
    assert [spec.name for spec in loaded.schema] == list(row)
    [answer] = score(loaded.model, [validate_row(row, loaded.schema, "features")])
    assert answer is not None
    assert answer["prediction"] == "0"
    for sha256 in named:  # the wrong bytes were replaced by the verified ones
        assert hashlib.sha256((tmp_path / sha256).read_bytes()).hexdigest() == sha256


def test_a_manifest_that_does_not_vouch_for_the_contract_is_refused(served: Any, tmp_path: Path) -> None:
    import dataclasses
    import hashlib

    from mlops.serving.cache import ModelCache
    from mlops.serving.errors import UnverifiableModel

    cloud, _ = served
    version = cloud.registry.version("breast-cancer", 1)
    assert version is not None
    key = version.artefacts_prefix.split("/", 3)[3]
    manifest = cloud.models.get_json(key + "manifest.json")
    del manifest["contract"]  # as manifests were before they recorded the contract's sha256
    copy_key = "models/breast-cancer/runs/unvouched/"
    data = json.dumps(manifest).encode()
    cloud.models.put_bytes(copy_key + "manifest.json", data)
    for name in ("model.onnx", "contract.json"):
        cloud.models.put_bytes(copy_key + name, cloud.models.get_bytes(key + name))
    unvouched = dataclasses.replace(version, artefacts_prefix=cloud.models.uri(copy_key),
                                    manifest_sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(UnverifiableModel, match=r"breast-cancer v1's contract \(in its manifest\) cannot be verified"):
        ModelCache(cloud.client("s3"), tmp_path).get(unvouched)
    assert UnverifiableModel.status == 500, "not the client's fault"

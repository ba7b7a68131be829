"""infer answers POST /models/<name>/predict before Powertools' resolver: the same answers as the resolver's route,
byte for byte (status, body, headers), errors included, and the same metrics, without entering the resolver.

The deployed handler module is loaded in this process with its function's environment, so that one event can be
answered both ways: by ``handler`` (the entry point Lambda calls) and by ``resolved`` (the resolver's path, which
every other request takes). Bodies: the hostile ones of test_hostile_input, and one example of each answer."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clouds import served_cloud
from hypothesis import given
from project_configs import one_model_config
from test_hostile_input import HYPOTHESIS, PREDICT, ROW, _frame

from mlops.local.embedded import EmbeddedCloud
from mlops.local.gateway import proxy_event
from mlops.local.lambda_runtime import LambdaContext
from mlops.serving.errors import UnverifiableModel

MODEL = "hostile"
ROOT = Path(__file__).resolve().parents[2]
REQUEST_ID = re.compile(r'"request_id":"[0-9a-f-]{36}"')


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    config_file = tmp_path_factory.mktemp("predict-path") / "mlops.toml"
    body = _frame().to_csv(index=False).encode()
    with served_cloud(config_file, {MODEL: body}, config_text=one_model_config(MODEL)) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def infer(cloud: EmbeddedCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The infer handler module of the model's version 1, loaded here with that version's environment."""
    name = cloud.deployment.infer_function(MODEL)
    fn = cloud.client("lambda").get_function(FunctionName=name, Qualifier="1")
    os.environ.push({**fn["Configuration"]["Environment"]["Variables"],  # type: ignore[attr-defined]
                     "AWS_LAMBDA_FUNCTION_NAME": name, "POWERTOOLS_TRACE_DISABLED": "true",
                     "MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("models"))})
    try:
        spec = importlib.util.spec_from_file_location(f"infer_{uuid.uuid4().hex}", ROOT / "functions/infer/handler.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        with contextlib.redirect_stdout(io.StringIO()):
            spec.loader.exec_module(module)
        yield module
    finally:
        os.environ.pop_layer()  # type: ignore[attr-defined]


CONTEXT = LambdaContext("infer", "1", "arn:aws:lambda:us-east-1:123456789012:function:infer", 1024, 30)


def _event(body: str | bytes, *, path: str = f"/models/{MODEL}/predict", method: str = "POST") -> dict[str, Any]:
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return proxy_event(method=method, raw_path=path, headers=[("Content-Type", "application/json")], body=data,
                       resource=path, source_ip="127.0.0.1", request_id="predict-path")


def _answer(entry: Any, event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The answer (request ids masked: each call draws its own) and the EMF documents printed meanwhile."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        answer = dict(entry(event, CONTEXT))
    answer["body"] = REQUEST_ID.sub('"request_id":"-"', answer["body"])
    documents = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith('{"_aws"')]
    return answer, documents


def _metrics(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each document's namespace, dimensions and metrics (name, unit, value; the latency only as positive)."""
    out = []
    for document in documents:
        [directive] = document["_aws"]["CloudWatchMetrics"]
        [dimensions] = directive["Dimensions"]
        metrics = {m["Name"]: (m["Unit"], document[m["Name"]]) for m in directive["Metrics"]}
        if "Latency" in metrics:
            unit, [value] = metrics["Latency"]
            assert value > 0
            metrics["Latency"] = (unit, "positive")
        out.append({"namespace": directive["Namespace"], "dimensions": {d: document[d] for d in sorted(dimensions)},
                    "metrics": dict(sorted(metrics.items()))})
    return out


@contextlib.contextmanager
def _resolver_calls(infer: Any) -> Iterator[list[Any]]:
    calls: list[Any] = []
    resolve = infer.app.resolve

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return resolve(*args, **kwargs)

    infer.app.resolve = counted
    try:
        yield calls
    finally:
        del infer.app.resolve


def _same_both_ways(infer: Any, event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with _resolver_calls(infer) as calls:
        first, first_metrics = _answer(infer.handler, event)
    assert calls == [], "a prediction went through the resolver"
    second, second_metrics = _answer(infer.resolved, event)
    assert first == second
    assert _metrics(first_metrics) == _metrics(second_metrics)
    return first, _metrics(first_metrics)


ROW_JSON = json.dumps({"features": ROW})
EXAMPLES = {
    "one row": (ROW_JSON, 200),
    "a batch": (json.dumps({"instances": [ROW, ROW, ROW]}), 200),
    "whole numbers as integers": (json.dumps({"features": {
        k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ROW.items()}}), 200),
    "not UTF-8, base64-encoded": (b'{"features": "\xff"}', 400),
    "malformed JSON": ('{"features": ', 400),
    "no body": ("", 400),
    "not an object": ("[1, 2]", 400),
    "nested too deeply": ("[" * 100_000 + "]" * 100_000, 400),
    # deep enough to exhaust a deeper caller's stack but not a shallower one's: the answer must not depend on it
    "nested 600 levels": ("[" * 600 + "]" * 600, 400),
    # the parser goes down the first value of a repeated key before the last one replaces it
    "a deep value hidden by a repeated key": ('{"features": ' + "[" * 600 + "]" * 600 + ', "features": null}', 400),
    "an integer too long to read": ('{"features": ' + "9" * 5000 + "}", 400),
    "too big a body": (json.dumps({"features": ROW, "pad": "x" * 300_000}), 413),
    "neither features nor instances": ('{"rows": []}', 422),
    "missing and wrong at once": (json.dumps({"features": {**dict(list(ROW.items())[:-1]), "site": 1.5}}), 422),
    "an unknown category": (json.dumps({"features": {**ROW, "site": "west"}}), 422),
    "NaN": (json.dumps({"features": {**ROW, "mean radius": float("nan")}}), 422),
    "infinity": (json.dumps({"features": {**ROW, "mean radius": float("inf")}}), 422),
    "a boolean for a number": (json.dumps({"features": {**ROW, "mean radius": True}}), 422),
    "an extra feature": (json.dumps({"features": {**ROW, "colour": "red"}}), 422),
    "an entity id": ('{"entity_id": "c-1"}', 422),
    "too many instances": (json.dumps({"instances": [ROW] * 101}), 413),
}


@pytest.mark.parametrize(("case", "body", "status"), [(k, *v) for k, v in EXAMPLES.items()], ids=list(EXAMPLES))
def test_a_prediction_is_answered_as_the_resolver_answers_it(infer: Any, case: str, body: str | bytes,
                                                             status: int) -> None:
    answer, metrics = _same_both_ways(infer, _event(body))
    assert answer["statusCode"] == status, answer
    assert answer["multiValueHeaders"] == {"Content-Type": ["application/json"]}
    [guardrails] = [m for m in metrics if "Requests" in m["metrics"]]
    assert guardrails["dimensions"] == {"model": MODEL, "model_version": "1", "service": "infer"}
    assert guardrails["metrics"]["Requests"] == ("Count", [1.0])
    assert guardrails["metrics"]["ServerErrors"] == ("Count", [0.0])
    assert guardrails["metrics"]["Latency"] == ("Milliseconds", "positive")
    if status == 200:
        count = len(json.loads(body)["instances"]) if "instances" in json.loads(body) else 1
        assert guardrails["metrics"]["Predictions"] == ("Count", [float(count)])
    else:
        assert guardrails["metrics"][f"Http{status}"] == ("Count", [1.0])


def test_a_base64_body_and_an_unknown_model_are_answered_as_the_resolver_answers_them(infer: Any) -> None:
    event = _event(ROW_JSON)
    event["body"], event["isBase64Encoded"] = base64.b64encode(ROW_JSON.encode()).decode(), True
    assert _same_both_ways(infer, event)[0]["statusCode"] == 200
    event["body"] = "not base64!"
    assert _same_both_ways(infer, event)[0]["statusCode"] == 400
    assert _same_both_ways(infer, _event(ROW_JSON, path="/models/nope/predict"))[0]["statusCode"] == 404


def test_server_faults_are_answered_and_counted_as_the_resolver_does(infer: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def unverifiable() -> Any:
        raise UnverifiableModel("hostile v1's manifest cannot be verified")

    monkeypatch.setattr(infer.server, "loaded", unverifiable)
    answer, metrics = _same_both_ways(infer, _event(ROW_JSON))
    assert answer["statusCode"] == 500
    assert json.loads(answer["body"])["error"] == "UnverifiableModel"
    assert [m["metrics"]["ServerErrors"] for m in metrics] == [("Count", [1.0])]

    def broken(name: str, body: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(infer.server, "predict", broken)
    answer, metrics = _same_both_ways(infer, _event(ROW_JSON))
    assert (answer["statusCode"], json.loads(answer["body"])) == (500, {
        "error": "InternalError", "message": "the model server failed: RuntimeError", "field": None})
    assert [sorted(m["metrics"]) for m in metrics] == [["Latency", "Requests", "ServerErrors"]]


@pytest.mark.parametrize(("method", "path"), [
    ("post", f"/models/{MODEL}/predict"), ("POST", f"/models/{MODEL}/predict/"),
    ("POST", f"/models/{MODEL}%20/predict"), ("GET", f"/models/{MODEL}")])
def test_what_is_not_plainly_a_prediction_goes_through_the_resolver(infer: Any, method: str, path: str) -> None:
    event = _event(ROW_JSON, path=path, method=method)
    with _resolver_calls(infer) as calls:
        _answer(infer.handler, event)
    assert len(calls) == 1


@HYPOTHESIS
@given(body=PREDICT)
def test_hostile_bodies_are_answered_as_the_resolver_answers_them(infer: Any, body: str | bytes) -> None:
    _same_both_ways(infer, _event(body))

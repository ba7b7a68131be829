"""infer: API Gateway REST proxy -> the model's ONNX champion or challenger (this version's MODEL_VERSION).

Routes: POST /models/<name>/predict, POST /models/<name>/feedback, GET /models/<name>, GET /health.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.observability import instrumented, powertools
from mlops.registry import Registry
from mlops.serving import CaptureSink, MalformedRequest, ModelCache, ModelServer, PayloadTooLarge, ServingError
from mlops.settings import resources

logger, tracer, metrics = powertools()
app = APIGatewayRestResolver(enable_validation=True)
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", str(256 * 1024)))


def _error(description: str) -> dict[str, Any]:
    schema = {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NOT_FOUND: dict[int, Any] = {404: _error("no such model is served here")}
REQUEST_ERRORS: dict[int, Any] = {
    400: _error("the body is not JSON, or not a JSON object"),
    413: _error("too many instances, or too large a body"),
    422: _error("a feature is missing, unexpected, mistyped, not finite, out of range or an unknown category"),
    503: _error("no version of the model is deployed yet"),
    **NOT_FOUND,
}


def _capture_failed(exc: Exception) -> None:
    logger.warning("capture failed; the prediction was still answered", extra={"error": repr(exc)})
    metrics.add_metric(name="CaptureErrors", unit=MetricUnit.Count, value=1)


def _server() -> ModelServer:
    version = os.environ.get("MODEL_VERSION")
    return ModelServer(
        model=os.environ["MODEL_NAME"],
        version=int(version) if version else None,
        registry=Registry(aws.client("dynamodb"), resources.registry_table),
        cache=ModelCache(aws.client("s3"), Path(os.environ.get("MODEL_CACHE_DIR", "/tmp/models"))),  # noqa: S108
        capture=CaptureSink(aws.client("firehose"), os.environ.get("CAPTURE_STREAM"), _capture_failed),
        max_batch=int(os.environ.get("MAX_BATCH", "100")),
    )


server = _server()


def _body() -> Any:
    raw = app.current_event.body or ""
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {len(raw.encode())} bytes; at most {MAX_BODY_BYTES}", "body")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                               "body") from exc


@app.get("/health", summary="Liveness of the function", tags=["operations"])
def health() -> dict[str, Any]:
    return {"status": "ok", "model": server.model_name, "version": server.pinned_version}


@app.get("/models/<name>", summary="Champion, challenger, their metrics and the feature schema", tags=["models"],
         responses={**NOT_FOUND, 503: REQUEST_ERRORS[503]})
def describe(name: str) -> dict[str, Any]:
    return server.describe(name)


@app.post("/models/<name>/predict", tags=["models"], responses=REQUEST_ERRORS,
          summary="Predict one row ({'features': {...}}) or a batch ({'instances': [...]})")
def predict(name: str) -> dict[str, Any]:
    answer = server.predict(name, _body())
    metrics.add_metric(name="Predictions", unit=MetricUnit.Count, value=len(answer.get("predictions", [answer])))
    return answer


@app.post("/models/<name>/feedback", tags=["models"], responses={k: REQUEST_ERRORS[k] for k in (400, 404, 413, 422)},
          summary="The observed label ({'request_id', 'label'}) or reward ({'request_id', 'reward'}) of a prediction")
def feedback(name: str) -> dict[str, Any]:
    answer = server.feedback(name, _body())
    metrics.add_metric(name="Feedback", unit=MetricUnit.Count, value=1)
    return answer


@app.exception_handler(ServingError)
def serving_error(exc: ServingError) -> Response[dict[str, Any]]:
    metrics.add_metric(name=f"Http{exc.status}", unit=MetricUnit.Count, value=1)
    return Response(status_code=exc.status, content_type=content_types.APPLICATION_JSON, body=exc.body())


@app.exception_handler(RequestValidationError)
def request_invalid(exc: RequestValidationError) -> Response[dict[str, Any]]:
    first = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(p) for p in first.get("loc", ()))
    return Response(status_code=422, content_type=content_types.APPLICATION_JSON,
                    body={"error": "InvalidInput", "message": f"{field}: {first.get('msg', 'invalid')}",
                          "field": field})


@instrumented(logger, tracer, metrics)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

"""infer: API Gateway REST proxy -> the model's ONNX champion or challenger (this version's MODEL_VERSION).

Routes: POST /models/<name>/predict, POST /models/<name>/feedback, GET /models/<name>, GET /health; and
POST /models/<name>/batch, GET /models/<name>/batch/<batch_id>, which start and describe batch runs (mlops.batch.start).
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.batch import start as batch
from mlops.serving import openapi
from mlops.serving.errors import MalformedRequest, PayloadTooLarge, ServingError
from mlops.serving.requests import parse_json
from mlops.serving.server import ModelServer

logger, tracer, metrics = powertools()
app = APIGatewayRestResolver(enable_validation=True)
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", str(256 * 1024)))


def _request_body(schema: dict[str, Any]) -> dict[str, Any]:
    # The handler reads the raw body itself (to answer 400 and 413 in its own words), so the body is declared for
    # the document only, through the operation's extra fields, rather than as a validated Powertools parameter.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _capture_failed(exc: Exception) -> None:
    logger.warning("capture failed; the prediction was still answered", extra={"error": repr(exc)})
    metrics.add_metric(name="CaptureErrors", unit=MetricUnit.Count, value=1)


server = ModelServer.from_environment(_capture_failed)


def _body() -> Any:
    event = app.current_event
    raw = event.body or ""
    if event.is_base64_encoded:  # API Gateway's (and the local gateway's) way to pass a body that is not UTF-8
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise MalformedRequest("the body is marked base64-encoded but is not base64", "body") from exc
    else:
        data = raw.encode("utf-8", "surrogatepass")  # as sent: parse_json says what is wrong with it
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {len(data)} bytes; at most {MAX_BODY_BYTES}", "body")
    return parse_json(data)


@app.get("/health", summary="Liveness of the function", tags=["operations"])
def health() -> dict[str, Any]:
    return {"status": "ok", "model": server.model_name, "version": server.pinned_version}


@app.get("/models/<name>", summary="Champion, challenger, their metrics and the feature schema", tags=["models"],
         responses=openapi.DESCRIBE_RESPONSES)
def describe(name: str) -> dict[str, Any]:
    return server.describe(name)


@app.post("/models/<name>/predict", tags=["models"], openapi_extensions=_request_body(openapi.PREDICT_REQUEST),
          responses=openapi.PREDICT_RESPONSES,
          summary="Predict one row ({'features': {...}}), a batch ({'instances': [...]}) or an entity's row from the "
                  "feature store ({'entity_id': ...})")
def predict(name: str) -> dict[str, Any]:
    answer = server.predict(name, _body())
    metrics.add_metric(name="Predictions", unit=MetricUnit.Count, value=len(answer.get("predictions", [answer])))
    return answer


@app.post("/models/<name>/feedback", tags=["models"], openapi_extensions=_request_body(openapi.FEEDBACK_REQUEST),
          responses=openapi.FEEDBACK_RESPONSES,
          summary="The observed label ({'request_id', 'label'}) or reward ({'request_id', 'reward'}) of a prediction")
def feedback(name: str) -> dict[str, Any]:
    answer = server.feedback(name, _body())
    metrics.add_metric(name="Feedback", unit=MetricUnit.Count, value=1)
    return answer


@app.post("/models/<name>/batch", tags=["batch"], openapi_extensions=_request_body(openapi.BATCH_REQUEST),
          responses=openapi.BATCH_START_RESPONSES,
          summary="Score every CSV and Parquet object under an S3 prefix ({'input', 'version'?})")
def start_batch(name: str) -> Response[dict[str, Any]]:
    # only this route reads mlops.toml (bundled with the function): where the model's runs may read
    from mlops.aws.environment import DATA_BUCKET
    from mlops.core.config import load_config

    answer = batch.start(name, _body(), registry=server.registry, sfn=aws.client("stepfunctions"),
                         state_machine_arn=resources.batch_state_machine_arn, config=load_config(),
                         data_bucket=os.environ.get(DATA_BUCKET), served=server.model_name)
    metrics.add_metric(name="BatchRuns", unit=MetricUnit.Count, value=1)
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=answer)


@app.get("/models/<name>/batch/<batch_id>", tags=["batch"], summary="A batch run's status, and its summary when done",
         responses=openapi.BATCH_STATUS_RESPONSES)
def batch_status(name: str, batch_id: str) -> dict[str, Any]:
    return batch.status(name, batch_id, sfn=aws.client("stepfunctions"),
                        state_machine_arn=resources.batch_state_machine_arn, served=server.model_name)


@app.exception_handler(ServingError)
def serving_error(exc: ServingError) -> Response[dict[str, Any]]:
    if exc.status >= 500:  # ours to fix (e.g. artefacts that fail verification): said where an operator looks
        logger.error("cannot serve", extra={"error": type(exc).__name__, "reason": exc.message})
    metrics.add_metric(name=f"Http{exc.status}", unit=MetricUnit.Count, value=1)
    return Response(status_code=exc.status, content_type=content_types.APPLICATION_JSON, body=exc.body())


@app.exception_handler(RequestValidationError)
def request_invalid(exc: RequestValidationError) -> Response[dict[str, Any]]:
    first = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(p) for p in first.get("loc", ()))
    return Response(status_code=422, content_type=content_types.APPLICATION_JSON,
                    body={"error": "InvalidInput", "message": f"{field}: {first.get('msg', 'invalid')}",
                          "field": field})


@app.exception_handler(Exception)
def server_fault(exc: Exception) -> Response[dict[str, Any]]:
    # Our fault, not the client's: a JSON 500 (counted as a server error by the guardrails), never a crash
    # that API Gateway would turn into an opaque 502.
    logger.exception("unhandled error while serving")
    return Response(status_code=500, content_type=content_types.APPLICATION_JSON,
                    body={"error": "InternalError", "message": f"the model server failed: {type(exc).__name__}",
                          "field": None})


@instrumented(logger, tracer, metrics)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.perf_counter()
    answer: dict[str, Any] = app.resolve(event, context)
    if str(event.get("path", "")).endswith("/predict"):
        # what the rollout's guardrails read: latency (p95) and server errors per model version
        metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000)
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=int(answer.get("statusCode", 200) >= 500))
    if metrics.metric_set:
        # Every metric of this environment belongs to one model version (its Lambda version pins it): the
        # rollout's guardrails compare champion and challenger on these dimensions. Added per flush, because
        # Powertools shares dimensions between Metrics instances of one process.
        metrics.add_dimension(name="model", value=server.model_name)
        metrics.add_dimension(name="model_version", value=str(server.pinned_version or "latest"))
    return answer

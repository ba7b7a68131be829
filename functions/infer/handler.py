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
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.batch import start as batch
from mlops.serving.server import MalformedRequest, ModelServer, PayloadTooLarge, ServingError, parse_json

logger, tracer, metrics = powertools()
app = APIGatewayRestResolver(enable_validation=True)
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", str(256 * 1024)))


# The document (`mlops openapi`) is generated from these declarations: every answer a route gives is declared
# here with its schema, because a declared `responses=` replaces Powertools' default 200. Request schemas spell
# unions with anyOf: Powertools' OpenAPI model takes one string per "type" there.
ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}}
ROW = {"type": "object", "description": "feature name: value, as the model's contract (GET /models/{name}) says",
       "additionalProperties": {"anyOf": [{"type": kind} for kind in ("number", "string", "boolean", "null")]}}
PREDICTION = {"type": "object", "required": ["request_id", "model_version", "variant", "prediction", "probabilities"],
              "properties": {
                  "request_id": {"type": "string"}, "model_version": {"type": "integer"},
                  "variant": {"enum": ["champion", "challenger", "retired"]},
                  "prediction": {"type": ["string", "number"]},
                  "probabilities": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
                  "entity_id": {"type": "string"}, "features_as_of": {"type": "string"}}}
VERSION = {"type": ["object", "null"], "required": ["version", "created_at", "metrics", "dataset_sha256"],
           "properties": {"version": {"type": "integer"}, "created_at": {"type": "string"},
                          "metrics": {"type": "object"}, "dataset_sha256": {"type": "string"}}}
FEATURE = {"type": "object", "required": ["name", "kind", "nullable"], "properties": {
    "name": {"type": "string"}, "kind": {"enum": ["numeric", "integer", "boolean", "categorical"]},
    "nullable": {"type": "boolean"}, "min": {"type": "number"}, "max": {"type": "number"},
    "categories": {"type": "array", "items": {"type": "string"}}}}


def _json(description: str, schema: dict[str, Any]) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _request_body(schema: dict[str, Any]) -> dict[str, Any]:
    # The handler reads the raw body itself (to answer 400 and 413 in its own words), so the body is declared for
    # the document only, through the operation's extra fields, rather than as a validated Powertools parameter.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _error(description: str) -> OpenAPIResponse:
    return _json(description, ERROR)


NOT_FOUND: dict[int, OpenAPIResponse] = {
    404: _error("no such model is served here, or no such entity in the feature store")}
SERVER_FAULT: dict[int, OpenAPIResponse] = {500: _error("the model server failed (a bug of ours, logged)")}
NOT_DEPLOYED: dict[int, OpenAPIResponse] = {503: _error("no version of the model is deployed yet")}
REQUEST_ERRORS: dict[int, OpenAPIResponse] = {
    400: _error("the body is not JSON, or not a JSON object"),
    413: _error("too many instances, or too large a body"),
    422: _error("a feature is missing, unexpected, mistyped, not finite, out of range or an unknown category"),
    **NOT_DEPLOYED,
    **NOT_FOUND,
    **SERVER_FAULT,
}
PREDICT_REQUEST = {"oneOf": [
    {"type": "object", "required": ["features"], "additionalProperties": False, "properties": {"features": ROW}},
    {"type": "object", "required": ["instances"], "additionalProperties": False,
     "properties": {"instances": {"type": "array", "minItems": 1, "items": ROW}}},
    {"type": "object", "required": ["entity_id"], "additionalProperties": False,
     "properties": {"entity_id": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}],
                                  "description": "the entity whose features the feature store holds"}}}]}
FEEDBACK_REQUEST = {
    "type": "object", "required": ["request_id"],
    "properties": {"request_id": {"type": "string", "minLength": 1},
                   "label": {"anyOf": [{"type": kind} for kind in ("string", "number", "boolean")]},
                   "reward": {"type": "number"}},
    "oneOf": [{"required": ["label"]}, {"required": ["reward"]}]}


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
         responses={200: _json("the model's versions in service and its request schema", {
             "type": "object", "required": ["model", "champion", "challenger"], "properties": {
                 "model": {"type": "string"}, "champion": VERSION, "challenger": VERSION,
                 "features": {"type": "array", "items": FEATURE}}}),
                    **NOT_FOUND, **NOT_DEPLOYED, **SERVER_FAULT})
def describe(name: str) -> dict[str, Any]:
    return server.describe(name)


@app.post("/models/<name>/predict", tags=["models"], openapi_extensions=_request_body(PREDICT_REQUEST),
          responses={200: _json("one answer for 'features', a list of them for 'instances'", {"oneOf": [
              PREDICTION, {"type": "object", "required": ["predictions"],
                           "properties": {"predictions": {"type": "array", "items": PREDICTION}}}]}),
                     **REQUEST_ERRORS,
                     409: _error("the entity's online features come from other feature definitions than the model's")},
          summary="Predict one row ({'features': {...}}), a batch ({'instances': [...]}) or an entity's row from the "
                  "feature store ({'entity_id': ...})")
def predict(name: str) -> dict[str, Any]:
    answer = server.predict(name, _body())
    metrics.add_metric(name="Predictions", unit=MetricUnit.Count, value=len(answer.get("predictions", [answer])))
    return answer


@app.post("/models/<name>/feedback", tags=["models"], openapi_extensions=_request_body(FEEDBACK_REQUEST),
          responses={200: _json("the feedback was captured", {
              "type": "object", "required": ["request_id", "accepted"],
              "properties": {"request_id": {"type": "string"}, "accepted": {"const": True}}}),
                     **REQUEST_ERRORS},
          summary="The observed label ({'request_id', 'label'}) or reward ({'request_id', 'reward'}) of a prediction")
def feedback(name: str) -> dict[str, Any]:
    answer = server.feedback(name, _body())
    metrics.add_metric(name="Feedback", unit=MetricUnit.Count, value=1)
    return answer


# The caller names the input only: a run writes under a prefix the platform chooses for it (the answer's `output`)
BATCH_REQUEST = {"type": "object", "required": ["input"], "additionalProperties": False, "properties": {
    "input": {"type": "string", "description": "s3://bucket/prefix/ under s3://<data bucket>/batch/<name>/ or a prefix "
                                               "the model declares (batch_inputs): every CSV and Parquet object under "
                                               "it is scored"},
    "version": {"type": "integer", "minimum": 1, "description": "the model version (default: the champion)"}}}
BATCH_RUN_FIELDS = {"batch_id": {"type": "string"}, "execution_arn": {"type": "string"}, "model": {"type": "string"},
                    "model_version": {"type": "integer"}, "input": {"type": "string"},
                    "output": {"type": "string", "description": "the run's own prefix: predictions, manifest"},
                    "manifest": {"type": "string", "description": "where the manifest is written when the run ends"},
                    "status": {"enum": ["running", "succeeded", "failed"]}}
BATCH_RUN = {"type": "object", "required": list(BATCH_RUN_FIELDS), "properties": {
    **BATCH_RUN_FIELDS,
    "summary": {"type": "object", "description": "the manifest's counts, once succeeded (docs/batch.md)"},
    "error": {"type": "string"}, "cause": {"type": "string"}}}


@app.post("/models/<name>/batch", tags=["batch"], openapi_extensions=_request_body(BATCH_REQUEST),
          responses={202: _json("the run started; its manifest is written to `manifest` when it ends", BATCH_RUN),
                     400: _error("the body is not JSON, or not a JSON object"),
                     403: _error("the input is not under a prefix the model's runs may read (the message names "
                                 "them)"),
                     404: _error("no such model is served here, or no such version of it"),
                     413: _error("too large a body"),
                     422: _error("input is not an s3://bucket/prefix/ URI, `output` was given (the platform chooses "
                                 "it), an unknown field or a mistyped version"),
                     503: _error("the model has no champion yet, or batch runs are not deployed"), **SERVER_FAULT},
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
         responses={200: _json("running, succeeded (with the manifest's summary) or failed (with the error)",
                               BATCH_RUN),
                    404: _error("no such model, or no such batch run of it"), 422: _error("not a batch id"),
                    **SERVER_FAULT})
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

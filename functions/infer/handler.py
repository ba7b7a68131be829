"""infer: API Gateway REST proxy -> the model's ONNX champion or challenger (this version's MODEL_VERSION).

Routes: POST /models/<name>/predict, POST /models/<name>/feedback, GET /models/<name>, GET /health; and
POST /models/<name>/batch, GET /models/<name>/batch/<batch_id>, which start and describe batch runs (mlops.batch.start).

A prediction is recognised before Powertools' resolver and answered by the same core with the same answers, headers
and metrics: the resolver's routing and validation, and Powertools' metrics, cost several times the model's own
prediction (docs/architecture.md, "Model format"). Every other request goes through the resolver.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import MetricLine, instrumented, lean, powertools
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
    return _read_body(event.body, event.is_base64_encoded)


def _read_body(body: str | None, base64_encoded: Any) -> Any:
    raw = body or ""
    data: str | bytes
    if base64_encoded:  # API Gateway's (and the local gateway's) way to pass a body that is not UTF-8
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise MalformedRequest("the body is marked base64-encoded but is not base64", "body") from exc
    else:  # as sent: parse_json says what is wrong with it (ASCII text is its own UTF-8, as long)
        data = raw if raw.isascii() else raw.encode("utf-8", "surrogatepass")
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


def _refused(exc: ServingError) -> dict[str, Any]:
    if exc.status >= 500:  # ours to fix (e.g. artefacts that fail verification): said where an operator looks
        logger.error("cannot serve", extra={"error": type(exc).__name__, "reason": exc.message})
    return exc.body()


@app.exception_handler(ServingError)
def serving_error(exc: ServingError) -> Response[dict[str, Any]]:
    metrics.add_metric(name=f"Http{exc.status}", unit=MetricUnit.Count, value=1)
    return Response(status_code=exc.status, content_type=content_types.APPLICATION_JSON, body=_refused(exc))


@app.exception_handler(RequestValidationError)
def request_invalid(exc: RequestValidationError) -> Response[dict[str, Any]]:
    first = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(p) for p in first.get("loc", ()))
    return Response(status_code=422, content_type=content_types.APPLICATION_JSON,
                    body={"error": "InvalidInput", "message": f"{field}: {first.get('msg', 'invalid')}",
                          "field": field})


def _fault(exc: Exception) -> dict[str, Any]:
    # Our fault, not the client's: a JSON 500 (counted as a server error by the guardrails), never a crash
    # that API Gateway would turn into an opaque 502.
    logger.exception("unhandled error while serving")
    return {"error": "InternalError", "message": f"the model server failed: {type(exc).__name__}", "field": None}


@app.exception_handler(Exception)
def server_fault(exc: Exception) -> Response[dict[str, Any]]:
    return Response(status_code=500, content_type=content_types.APPLICATION_JSON, body=_fault(exc))


# POST /models/<name>/predict, recognised before the resolver. The name's characters are some of those the resolver's
# route takes, so a request matched here is one the resolver would route to predict; anything else (another
# route, a trailing slash, another spelling of the method, a name with other characters) goes through the resolver.
# In its debug mode the resolver prints every event: then every request goes through it.
PREDICT_PATH = re.compile(r"/models/([-.\w]+)/predict")
_PREDICT_FIRST = not getattr(app, "_debug", True)
# Every metric of this environment belongs to one model version (its Lambda version pins it): the rollout's
# guardrails compare champion and challenger on these dimensions.
_DIMENSIONS = {"model": server.model_name, "model_version": str(server.pinned_version or "latest")}
_GUARDRAILS = {"Latency": MetricUnit.Milliseconds, "Requests": MetricUnit.Count, "ServerErrors": MetricUnit.Count}
_ANSWERED = MetricLine(metrics, _DIMENSIONS, Predictions=MetricUnit.Count, **_GUARDRAILS)
_FAILED = MetricLine(metrics, _DIMENSIONS, **_GUARDRAILS)
_REFUSED: dict[int, MetricLine] = {}  # per status: the same metrics the resolver's serving_error adds


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    path = event.get("path") if _PREDICT_FIRST and event.get("httpMethod") == "POST" else None
    found = PREDICT_PATH.fullmatch(path) if isinstance(path, str) else None
    if found is None:
        return resolved(event, context)
    return predicted(event, context, name=found.group(1))


@lean(logger, tracer)
def predicted(event: dict[str, Any], context: LambdaContext, name: str) -> dict[str, Any]:
    """What the resolver answers for POST /models/<name>/predict, with the metrics it adds, in one line."""
    started = time.perf_counter()
    try:
        answer = server.predict(name, _read_body(event.get("body"), event.get("isBase64Encoded")))
        status, line, counted = 200, _ANSWERED, [len(answer.get("predictions", [answer]))]
    except ServingError as exc:
        answer, status = _refused(exc), exc.status
        line, counted = _refused_line(status), [1]
    except Exception as exc:
        answer, status, line, counted = _fault(exc), 500, _FAILED, []
    body = json.dumps(answer, separators=(",", ":"))  # the resolver's serializer
    line.write(*counted, (time.perf_counter() - started) * 1000, 1, status >= 500)
    if metrics.metric_set:  # anything counted through Powertools meanwhile (a capture that failed)
        _add_dimensions()
        metrics.flush_metrics()
        metrics.clear_metrics()  # flushing leaves them while Powertools' metrics are disabled
    # a fresh headers object per answer: whoever changes one answer's headers changes no other
    return {"statusCode": status, "body": body, "isBase64Encoded": False,
            "multiValueHeaders": {"Content-Type": [content_types.APPLICATION_JSON]}}


def _refused_line(status: int) -> MetricLine:
    line = _REFUSED.get(status)
    if line is None:
        line = _REFUSED[status] = MetricLine(metrics, _DIMENSIONS, **{f"Http{status}": MetricUnit.Count},
                                             **_GUARDRAILS)
    return line


def _add_dimensions() -> None:
    # Added per flush, because Powertools shares dimensions between Metrics instances of one process.
    for dimension, value in _DIMENSIONS.items():
        metrics.add_dimension(name=dimension, value=value)


@instrumented(logger, tracer, metrics)
def resolved(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Every other request, through Powertools' resolver."""
    started = time.perf_counter()
    answer: dict[str, Any] = app.resolve(event, context)
    if str(event.get("path", "")).endswith("/predict"):
        # what the rollout's guardrails read: latency (p95) and server errors per model version
        metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000)
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=int(answer.get("statusCode", 200) >= 500))
    if metrics.metric_set:  # flushed by instrumented's log_metrics
        _add_dimensions()
    return answer

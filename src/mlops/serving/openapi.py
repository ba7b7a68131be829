"""The model API's answers and request bodies as OpenAPI schemas, next to the code that gives them: the ``infer``
function declares its routes with these, and `mlops openapi` prints the document they make.

Every answer a route gives is declared with its schema, because a declared ``responses=`` replaces Powertools'
default 200. Request schemas spell unions with anyOf: Powertools' OpenAPI model takes one string per "type" there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

# -- schemas ----------------------------------------------------------------------------------------------------
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
                  # a clustering's: cluster id -> distance to its centre (its prediction is a cluster id)
                  "distances": {"type": "object", "additionalProperties": {"type": "number"}},
                  "entity_id": {"type": "string"}, "features_as_of": {"type": "string"}}}
VERSION = {"type": ["object", "null"], "required": ["version", "created_at", "metrics", "dataset_sha256"],
           "properties": {"version": {"type": "integer"}, "created_at": {"type": "string"},
                          "metrics": {"type": "object"}, "dataset_sha256": {"type": "string"}}}
FEATURE = {"type": "object", "required": ["name", "kind", "nullable"], "properties": {
    "name": {"type": "string"}, "kind": {"enum": ["numeric", "integer", "boolean", "categorical"]},
    "nullable": {"type": "boolean"}, "min": {"type": "number"}, "max": {"type": "number"},
    "categories": {"type": "array", "items": {"type": "string"}}}}
MODEL = {"type": "object", "required": ["model", "champion", "challenger"], "properties": {
    "model": {"type": "string"}, "champion": VERSION, "challenger": VERSION,
    "features": {"type": "array", "items": FEATURE}}}
PREDICTIONS = {"oneOf": [
    PREDICTION, {"type": "object", "required": ["predictions"],
                 "properties": {"predictions": {"type": "array", "items": PREDICTION}}}]}
FEEDBACK_ACCEPTED = {"type": "object", "required": ["request_id", "accepted"],
                     "properties": {"request_id": {"type": "string"}, "accepted": {"const": True}}}
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


# -- responses --------------------------------------------------------------------------------------------------
def json_response(description: str, schema: dict[str, Any]) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_response(description: str) -> OpenAPIResponse:
    return json_response(description, ERROR)


NOT_FOUND: dict[int, OpenAPIResponse] = {
    404: error_response("no such model is served here, or no such entity in the feature store")}
SERVER_FAULT: dict[int, OpenAPIResponse] = {500: error_response("the model server failed (a bug of ours, logged)")}
NOT_DEPLOYED: dict[int, OpenAPIResponse] = {503: error_response("no version of the model is deployed yet")}
REQUEST_ERRORS: dict[int, OpenAPIResponse] = {
    400: error_response("the body is not JSON, or not a JSON object"),
    413: error_response("too many instances, or too large a body"),
    422: error_response("a feature is missing, unexpected, mistyped, not finite, out of range or an unknown category"),
    **NOT_DEPLOYED,
    **NOT_FOUND,
    **SERVER_FAULT,
}

# each route's answers, in the order the document lists them
DESCRIBE_RESPONSES: dict[int, OpenAPIResponse] = {
    200: json_response("the model's versions in service and its request schema", MODEL),
    **NOT_FOUND, **NOT_DEPLOYED, **SERVER_FAULT}
PREDICT_RESPONSES: dict[int, OpenAPIResponse] = {
    200: json_response("one answer for 'features', a list of them for 'instances'", PREDICTIONS),
    **REQUEST_ERRORS,
    409: error_response("the entity's online features come from other feature definitions than the model's")}
FEEDBACK_RESPONSES: dict[int, OpenAPIResponse] = {
    200: json_response("the feedback was captured", FEEDBACK_ACCEPTED), **REQUEST_ERRORS}
BATCH_START_RESPONSES: dict[int, OpenAPIResponse] = {
    202: json_response("the run started; its manifest is written to `manifest` when it ends", BATCH_RUN),
    400: error_response("the body is not JSON, or not a JSON object"),
    403: error_response("the input is not under a prefix the model's runs may read (the message names them)"),
    404: error_response("no such model is served here, or no such version of it"),
    413: error_response("too large a body"),
    422: error_response("input is not an s3://bucket/prefix/ URI, `output` was given (the platform chooses it), an "
                        "unknown field or a mistyped version"),
    503: error_response("the model has no champion yet, or batch runs are not deployed"), **SERVER_FAULT}
BATCH_STATUS_RESPONSES: dict[int, OpenAPIResponse] = {
    200: json_response("running, succeeded (with the manifest's summary) or failed (with the error)", BATCH_RUN),
    404: error_response("no such model, or no such batch run of it"), 422: error_response("not a batch id"),
    **SERVER_FAULT}

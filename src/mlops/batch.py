"""Batch inference: start a run that scores every CSV and Parquet object under an S3 prefix, and read its status.

The API route (``POST /models/<name>/batch``, the infer function) and ``mlops batch`` both call :func:`start`;
the run itself is the batch state machine (``infra/batch.asl.json``), whose steps are in ``mlops.batch_run``.
This module stays light (pydantic and the registry only): the infer function imports it on its cold-start path.

Where things go, for a run with output prefix ``O`` (an ``s3://bucket/prefix/``):
``O<relative name>``, one output object per input object; ``Omanifest.json``, the manifest; and the run's working
files under ``O_batch/<batch_id>/`` (the object list the Distributed Map reads, one report per object).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops.registry import CHAMPION, Registry
from mlops.serving import InvalidInput, MalformedRequest, ModelNotFound, NoModelDeployed, ServingError

MANIFEST = "manifest.json"
WORK_PREFIX = "_batch/"  # under the output prefix; Hadoop's convention: a leading underscore is not data
OUTPUT_SUFFIX = "-predictions"  # the default output: a sibling of the input prefix, <input>-predictions/<batch_id>/
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")  # what an execution name allows, and no more


class BatchUnavailable(ServingError):
    status = 503


class BatchRequest(BaseModel):
    """The body of ``POST /models/<name>/batch`` (and the arguments of ``mlops batch``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: str = Field(description="s3://bucket/prefix/: every CSV and Parquet object under it is scored")
    output: str | None = Field(default=None, description="s3://bucket/prefix/ (default: <input>-predictions/<id>/)")
    version: int | None = Field(default=None, ge=1, description="the model version (default: the champion)")


class BatchSpec(BaseModel):
    """One run, as the state machine's input carries it to every step."""

    batch_id: str
    model: str
    model_version: int
    input: str
    output: str
    manifest: str
    started_at: str

    def work_uri(self, name: str) -> str:
        return f"{self.output}{WORK_PREFIX}{self.batch_id}/{name}"


class BatchObject(BaseModel):
    """One object to score: an item of the Distributed Map."""

    index: int
    key: str  # in the input bucket
    relative: str  # below the input prefix; the output object has the same relative name
    format: Literal["csv", "parquet"]
    size: int


class PlanStep(BaseModel):
    step: Literal["plan"]
    batch: BatchSpec


class ScoreStep(BaseModel):
    step: Literal["score"]
    batch: BatchSpec
    object: BatchObject


class ObjectFailedStep(BaseModel):
    """The Catch of a score step: the object could not be scored at all (its function failed after its retries)."""

    step: Literal["object_failed"]
    batch: BatchSpec
    object: BatchObject
    error: dict[str, Any]


class FinishStep(BaseModel):
    step: Literal["finish"]
    batch: BatchSpec


class BatchEvent(BaseModel):
    """What the batch function receives from the state machine: one of its steps."""

    event: PlanStep | ScoreStep | ObjectFailedStep | FinishStep = Field(discriminator="step")


def split_prefix(uri: str, field: str) -> tuple[str, str]:
    """(bucket, key prefix) of an ``s3://bucket/prefix/`` URI; the prefix ends with ``/`` or is empty."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise InvalidInput(f"{field}: expected s3://bucket/prefix/, got {uri!r}", field)
    bucket, _, prefix = uri[5:].partition("/")
    if prefix and not prefix.endswith("/"):
        raise InvalidInput(f"{field}: {uri!r} is not a prefix; end it with '/' (every object under it is read "
                           "or written), e.g. s3://bucket/batch/in/", field)
    return bucket, prefix


def _parse(body: Any) -> BatchRequest:
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object: {\"input\": \"s3://bucket/prefix/\", ...}", "body")
    try:
        return BatchRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{field}: {first['msg']}", field) from exc


def new_batch_id(model: str, now: datetime) -> str:
    return f"{model}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def plan_run(model: str, body: Any, registry: Registry, now: datetime | None = None) -> tuple[BatchSpec, bool]:
    """The run a request asks for, checked: (spec, whether the output prefix was defaulted)."""
    request = _parse(body)
    in_bucket, in_prefix = split_prefix(request.input, "input")
    if request.version is None:
        version = registry.aliases(model).get(CHAMPION)
        if version is None:
            raise NoModelDeployed(f"{model} has no champion yet; upload data to train one, or give a version")
    else:
        version = request.version
        if registry.version(model, version) is None:
            known = ", ".join(str(v.version) for v in registry.versions(model)) or "none"
            raise ModelNotFound(f"{model} has no version {version} (registered versions: {known})", "version")
    now = now or datetime.now(UTC)
    batch_id = new_batch_id(model, now)
    if request.output is None:
        if not in_prefix:
            raise InvalidInput("output: the input is a whole bucket, so there is no sibling prefix to default to; "
                               "give an output prefix in another bucket", "output")
        output = f"s3://{in_bucket}/{in_prefix.rstrip('/')}{OUTPUT_SUFFIX}/{batch_id}/"
    else:
        out_bucket, out_prefix = split_prefix(request.output, "output")
        if out_bucket == in_bucket and (out_prefix.startswith(in_prefix) or in_prefix.startswith(out_prefix)):
            raise InvalidInput(f"output: {request.output} overlaps the input prefix {request.input} (one is inside "
                               "the other); predictions would be read as input by a later run. Choose a prefix "
                               "beside it", "output")
        output = f"s3://{out_bucket}/{out_prefix}"
    spec = BatchSpec(batch_id=batch_id, model=model, model_version=version, input=request.input, output=output,
                     manifest=output + MANIFEST, started_at=now.isoformat(timespec="milliseconds"))
    return spec, request.output is None


def _machine(model: str, served: str | None, state_machine_arn: str | None) -> str:
    if served is not None and model != served:
        raise ModelNotFound(f"no model named {model!r} is served here", "name")
    if not state_machine_arn:
        raise BatchUnavailable("batch runs are not deployed here (no BATCH_STATE_MACHINE_ARN); deploy the stack "
                               "with its batch state machine", None)
    return state_machine_arn


def start(model: str, body: Any, *, registry: Registry, sfn: Any, state_machine_arn: str | None,
          served: str | None = None) -> dict[str, Any]:
    """Start a batch run of ``model``: the answer of ``POST /models/<name>/batch`` (202). ``served``: the model of
    the infer function answering, when the caller is one."""
    state_machine_arn = _machine(model, served, state_machine_arn)
    spec, defaulted = plan_run(model, body, registry)
    # where the Distributed Map's ResultWriter puts the child executions' outputs, beside the object list; read
    # from the execution's input ($$.Execution.Input) because moto evaluates ResultWriter paths against the results
    results_bucket, results_prefix = spec.work_uri("map/")[5:].split("/", 1)
    execution = sfn.start_execution(stateMachineArn=state_machine_arn, name=spec.batch_id, input=json.dumps({
        "batch": spec.model_dump(), "results": {"bucket": results_bucket, "prefix": results_prefix}}))
    return {"batch_id": spec.batch_id, "execution_arn": execution["executionArn"], "model": model,
            "model_version": spec.model_version, "input": spec.input, "output": spec.output,
            "output_defaulted": defaulted, "manifest": spec.manifest, "status": "running"}


def execution_arn(state_machine_arn: str, batch_id: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{batch_id}"


STATUSES = {"RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed", "TIMED_OUT": "failed",
            "ABORTED": "failed", "PENDING_REDRIVE": "failed"}


def status(model: str, batch_id: str, *, sfn: Any, state_machine_arn: str | None,
           served: str | None = None) -> dict[str, Any]:
    """``GET /models/<name>/batch/<batch_id>``: running | succeeded | failed, and the manifest's summary when done."""
    state_machine_arn = _machine(model, served, state_machine_arn)
    if not _BATCH_ID.match(batch_id):
        raise InvalidInput(f"batch_id: {batch_id!r} is not a batch id (letters, digits, - and _)", "batch_id")
    arn = execution_arn(state_machine_arn, batch_id)
    try:
        execution = sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist:
        execution = None
    spec = BatchSpec.model_validate(json.loads(execution["input"])["batch"]) if execution else None
    if spec is None or spec.model != model:
        raise ModelNotFound(f"{model} has no batch run {batch_id!r}", "batch_id")
    answer: dict[str, Any] = {"batch_id": batch_id, "execution_arn": arn, "model": model,
                              "model_version": spec.model_version, "input": spec.input, "output": spec.output,
                              "manifest": spec.manifest, "status": STATUSES.get(execution["status"], "failed")}
    if execution["status"] == "SUCCEEDED":
        answer["summary"] = json.loads(execution.get("output") or "{}")
    elif answer["status"] == "failed":
        answer["error"] = execution.get("error") or execution["status"]
        answer["cause"] = _message(execution.get("cause")) or "the run did not finish; see its execution history"
    return answer


def _message(cause: str | None) -> str | None:
    """A failed Lambda task's cause is its error as JSON: the message is what a person needs."""
    try:
        return str(json.loads(cause or "")["errorMessage"])
    except (ValueError, TypeError, KeyError):
        return cause

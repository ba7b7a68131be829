"""Batch inference: start a run that scores every CSV and Parquet object under an S3 prefix, and read its status.

The API route (``POST /models/<name>/batch``, the infer function) and ``mlops batch`` both call :func:`start`;
the run itself is the batch state machine (``infra/batch.asl.json``), whose steps are in ``mlops.batch.run``.
This module stays light (pydantic, the configuration and the registry): the infer function imports it on its
cold-start path.

The caller holds no S3 permission of its own, the batch function does: so a run reads only where its model may read,
``s3://<data bucket>/batch/<model>/`` or a prefix the model declares in mlops.toml (``batch_inputs``), and anything
else is refused (403) before a run starts. It writes only where the platform chooses, a prefix of its own,
``O = s3://<data bucket>/batch-runs/<model>/<batch_id>/``: ``O<relative name>``, one output object per input object;
``Omanifest.json``, the manifest; and its working files under ``O_batch/`` (the object list the Distributed Map reads,
one report per object, the map's results). Every object of a run is written create-only: nothing is overwritten.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops.core import layout
from mlops.core.config import ModelConfig, ProjectConfig
from mlops.core.errors import UnknownModel
from mlops.registry.store import Registry
from mlops.registry.versions import CHAMPION
from mlops.serving.errors import InvalidInput, MalformedRequest, ModelNotFound, NoModelDeployed, ServingError, shown

MANIFEST = "manifest.json"
WORK_PREFIX = "_batch/"  # under the run's prefix; Hadoop's convention: a leading underscore is not data
MAP_RESULTS = "map/"  # under the work prefix: where the Distributed Map's ResultWriter writes
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")  # what an execution name allows, and no more


class BatchUnavailable(ServingError):
    status = 503


class BatchInputForbidden(ServingError):
    """The input is not under a prefix the model's runs may read."""

    status = 403


class BatchRequest(BaseModel):
    """The body of ``POST /models/<name>/batch`` (and the arguments of ``mlops batch``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # s3:// + a bucket name (63) + / + a key (1024): anything longer names no S3 prefix
    input: str = Field(max_length=1100,
                       description="s3://bucket/prefix/ under s3://<data bucket>/batch/<name>/ or a prefix the model "
                                   "declares (batch_inputs): every CSV and Parquet object under it is scored")
    # no longer chosen by the caller: recognised only to refuse it in words (plan_run)
    output: Any = Field(default=None, exclude=True)
    # bounded: the version is part of a DynamoDB key, which AWS limits to 1024 bytes (a longer one would be a 500)
    version: int | None = Field(default=None, ge=1, le=10**9, description="the model version (default: the champion)")


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
        return f"{self.output}{WORK_PREFIX}{name}"


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
        raise InvalidInput(f"{field}: expected s3://bucket/prefix/, got {shown(uri)}", field)
    bucket, _, prefix = uri[5:].partition("/")
    if prefix and not prefix.endswith("/"):
        raise InvalidInput(f"{field}: {shown(uri)} is not a prefix; end it with '/' (every object under it is read "
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


def input_prefixes(config: ModelConfig, data_bucket: str) -> list[str]:
    """Where a model's runs may read: its own folder under batch/ in the data bucket, and what it declares."""
    return [f"s3://{data_bucket}/{layout.BATCH}{config.name}/", *config.batch_inputs]


def runs_prefix(model: str, data_bucket: str) -> str:
    return f"s3://{data_bucket}/{layout.BATCH_RUNS}{model}/"


def plan_run(config: ModelConfig, body: Any, registry: Registry, *, data_bucket: str,
             now: datetime | None = None) -> BatchSpec:
    """The run a request asks for, checked before anything starts: where it reads, which version, where it writes."""
    model = config.name
    request = _parse(body)
    if "output" in request.model_fields_set:
        raise InvalidInput(f"output: runs of {model} write their predictions and manifest where the platform chooses, "
                           f"a prefix of their own under {runs_prefix(model, data_bucket)} (the answer's `output`); "
                           "remove `output` from the request", "output")
    split_prefix(request.input, "input")
    allowed = input_prefixes(config, data_bucket)
    if not any(request.input.startswith(prefix) for prefix in allowed):
        raise BatchInputForbidden(f"input: runs of {model} may not read {shown(request.input)}; they read under "
                                  f"{' or '.join(allowed)}. Put the objects there, or declare their prefix for "
                                  f"{model} in mlops.toml (batch_inputs) and deploy", "input")
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
    # a prefix no other run shares, which no run reads inputs from
    output = f"{runs_prefix(model, data_bucket)}{batch_id}/"
    return BatchSpec(batch_id=batch_id, model=model, model_version=version, input=request.input, output=output,
                     manifest=output + MANIFEST, started_at=now.isoformat(timespec="milliseconds"))


def _machine(model: str, served: str | None, state_machine_arn: str | None) -> str:
    if served is not None and model != served:
        raise ModelNotFound(f"no model named {model!r} is served here", "name")
    if not state_machine_arn:
        raise BatchUnavailable("batch runs are not deployed here (no BATCH_STATE_MACHINE_ARN); deploy the stack "
                               "with its batch state machine", None)
    return state_machine_arn


def start(model: str, body: Any, *, registry: Registry, sfn: Any, state_machine_arn: str | None,
          config: ProjectConfig, data_bucket: str | None, served: str | None = None) -> dict[str, Any]:
    """Start a batch run of ``model``: the answer of ``POST /models/<name>/batch`` (202). ``served``: the model of
    the infer function answering, when the caller is one; ``data_bucket``: where runs read and write."""
    state_machine_arn = _machine(model, served, state_machine_arn)
    if not data_bucket:
        raise BatchUnavailable("batch runs are not deployed here (no DATA_BUCKET: where runs read and write); "
                               "deploy the stack with its batch state machine", None)
    try:
        declared = config.model(model)
    except UnknownModel as exc:
        raise ModelNotFound(str(exc), "name") from exc
    spec = plan_run(declared, body, registry, data_bucket=data_bucket)
    # where the Distributed Map's ResultWriter puts the child executions' outputs, beside the object list; read
    # from the execution's input ($$.Execution.Input) because moto evaluates ResultWriter paths against the results
    results_bucket, results_prefix = spec.work_uri(MAP_RESULTS)[5:].split("/", 1)
    execution = sfn.start_execution(stateMachineArn=state_machine_arn, name=spec.batch_id, input=json.dumps({
        "batch": spec.model_dump(), "results": {"bucket": results_bucket, "prefix": results_prefix}}))
    return {"batch_id": spec.batch_id, "execution_arn": execution["executionArn"], "model": model,
            "model_version": spec.model_version, "input": spec.input, "output": spec.output,
            "manifest": spec.manifest, "status": "running"}


def execution_arn(state_machine_arn: str, batch_id: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{batch_id}"


STATUSES = {"RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed", "TIMED_OUT": "failed",
            "ABORTED": "failed", "PENDING_REDRIVE": "failed"}


def status(model: str, batch_id: str, *, sfn: Any, state_machine_arn: str | None,
           served: str | None = None) -> dict[str, Any]:
    """``GET /models/<name>/batch/<batch_id>``: running | succeeded | failed, and the manifest's summary when done."""
    state_machine_arn = _machine(model, served, state_machine_arn)
    if not _BATCH_ID.match(batch_id):
        raise InvalidInput(f"batch_id: {shown(batch_id)} is not a batch id (letters, digits, - and _)", "batch_id")
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

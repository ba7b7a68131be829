"""The ``infer`` function's core: validate a request against the model's contract, score it with
onnxruntime, capture it, answer.

Imports stay light on purpose (numpy, onnxruntime, pydantic, boto3 through injected clients): this is
the cold-start path, and onnxruntime is imported with the module so that its cost falls in Lambda's init
phase rather than on the first request. The data contract is read as plain JSON here, never through
``mlops.data.reading`` (which needs pandas).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import reprlib
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlops.aws.storage import parse_s3_uri
from mlops.core.errors import IntegrityError, MlopsError
from mlops.features.offline import OnlineFeatures, OnlineStore, entity_text
from mlops.registry.store import CHALLENGER, CHAMPION, ModelVersion, Registry
from mlops.serving.onnx_model import OnnxModel

# What a client may send, bounded: identifiers travel into DynamoDB keys, SQS and SNS attributes and captures,
# strings into the model's input tensors.
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 1024
_FIELD_CHARS = 200
_MESSAGE_CHARS = 1000


def printable(text: str) -> str:
    """``text`` with what a terminal, an SQS attribute or a strict JSON reader refuses (control characters, lone
    surrogates) written as escapes: a client's key or value can end up in an error message."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlevel = 60, 60, 40, 2


def shown(value: Any) -> str:
    """A client's value as an error message quotes it: shortened, so an answer never echoes a whole body back."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {len(str(abs(value)))} digits"
    return printable(_REPR.repr(value))


class ServingError(MlopsError):
    """An answer for the client: ``status`` is the HTTP status, ``field`` the part of the request at fault."""

    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        message = printable(message)
        if len(message) > _MESSAGE_CHARS:  # a message quoting a client's value in full (batch URIs do) is cut short
            message = message[:_MESSAGE_CHARS - 13] + "… (shortened)"
        super().__init__(message)
        self.message = message
        # a field names a key the client chose: kept short and printable too
        self.field = None if field is None else printable(field)[:_FIELD_CHARS]

    def body(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, "field": self.field}


class MalformedRequest(ServingError):
    status = 400


class InvalidInput(ServingError):
    status = 422


class PayloadTooLarge(ServingError):
    status = 413


class ModelNotFound(ServingError):
    status = 404


class NoModelDeployed(ServingError):
    status = 503


class UnverifiableModel(ServingError, IntegrityError):
    """A version whose artefacts cannot be verified against what the registry recorded: ours to fix, never served."""

    status = 500


class CaptureIncomplete(MlopsError):
    """Firehose kept refusing some capture records: the predictions were answered, their capture is lost."""


class EntityNotFound(ServingError):
    status = 404


class FeaturesOutOfDate(ServingError):
    """The online features were computed by other definitions than the served model was trained with."""

    status = 409


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str  # numeric | integer | boolean | categorical
    nullable: bool
    minimum: float | None
    maximum: float | None
    categories: frozenset[str] | None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.categories is not None:
            out["categories"] = sorted(self.categories)
        return out


def schema_from_contract(contract: Mapping[str, Any]) -> list[FeatureSpec]:
    return [
        FeatureSpec(
            name=c["name"], kind=c["kind"], nullable=bool(c.get("nullable")), minimum=c.get("min"),
            maximum=c.get("max"),
            categories=frozenset(str(v) for v in c["categories"]) if c.get("categories") is not None else None,
        )
        for c in contract["columns"]
        if c["name"] != contract["target"]
    ]


def parse_json(data: str | bytes, what: str = "the body") -> Any:
    """A client's JSON document. What the parser gives up on (not UTF-8, not JSON, nested too deeply, an integer
    literal too long to read) is the client's to fix: a MalformedRequest naming the body, never a crash."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"{what} is not UTF-8 text: byte {exc.start} is {data[exc.start:exc.start + 1]!r}; "
                               "send JSON encoded as UTF-8", "body") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                               "body") from exc
    except RecursionError as exc:
        raise MalformedRequest(f"{what} is nested too deeply to read; a request is an object of fields with plain "
                               "values", "body") from exc
    except ValueError as exc:  # an integer literal longer than Python converts (sys.get_int_max_str_digits())
        raise MalformedRequest(f"{what} holds an integer literal of more than {sys.get_int_max_str_digits()} digits; "
                               "no field takes a number that long", "body") from exc


def finite_number(value: Any, field: str) -> float:
    """A JSON number as a finite float: an integer beyond a float's range (10**400) is as infinite as 1e400."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{field}: expected a number, got {type(value).__name__} {shown(value)}", field)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(f"{field}: expected a finite number, got {shown(value)}", field)
    return number


def bounded_text(value: str | int, field: str, limit: int = MAX_TEXT_CHARS) -> str:
    """A string (or an integer written as one) of at most ``limit`` characters that UTF-8 can carry."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # more digits than the limit: not worth writing
        raise InvalidInput(f"{field}: {shown(value)}; at most {limit} characters", field)
    text = str(value)
    if len(text) > limit:
        raise InvalidInput(f"{field}: {len(text)} characters; at most {limit}", field)
    if re.search(r"[\ud800-\udfff]", text):  # "\ud800" in JSON decodes to a code point UTF-8 cannot encode
        raise InvalidInput(f"{field}: {shown(text)} holds an unpaired surrogate (\\ud800-\\udfff); send valid "
                           "Unicode", field)
    return text


def identifier(value: Any, field: str, what: str) -> str:
    """An id a client names something by: a non-empty, printable string of at most MAX_ID_CHARS characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"'{field}' ({what}) must be a string, got {type(value).__name__}", field)
    if not value.strip():
        raise InvalidInput(f"'{field}' ({what}) must not be empty", field)
    text = bounded_text(value, field, MAX_ID_CHARS)
    if not text.isprintable():
        raise InvalidInput(f"'{field}' must be printable, got {shown(text)}", field)
    return text


_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def _check_value(spec: FeatureSpec, value: Any, where: str) -> Any:
    field = f"{where}.{spec.name}"
    if value is None:
        if spec.nullable:
            return None
        raise InvalidInput(f"{field}: a value is required (the model was not trained with missing values here)", field)
    if spec.kind == "categorical":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidInput(f"{field}: expected a string category, got {type(value).__name__}", field)
        text = bounded_text(value, field)
        if spec.categories is not None and text not in spec.categories:
            known = ", ".join(sorted(spec.categories)[:20])
            raise InvalidInput(f"{field}: unknown category {shown(text)} (known: {known})", field)
        return text
    if spec.kind == "boolean":
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, float | str) or (isinstance(value, int) and abs(value) <= 1):
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return 1.0 if text in _TRUE else 0.0
        raise InvalidInput(f"{field}: expected true or false, got {shown(value)}", field)
    number = finite_number(value, field)
    if spec.kind == "integer" and not number.is_integer():
        raise InvalidInput(f"{field}: expected a whole number, got {shown(value)}", field)
    if spec.minimum is not None and number < spec.minimum:
        raise InvalidInput(f"{field}: {shown(value)} is below the allowed minimum {spec.minimum}", field)
    if spec.maximum is not None and number > spec.maximum:
        raise InvalidInput(f"{field}: {shown(value)} is above the allowed maximum {spec.maximum}", field)
    return number


def validate_row(row: Any, schema: Sequence[FeatureSpec], where: str) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise InvalidInput(f"{where}: expected an object of feature: value, got {type(row).__name__}", where)
    names = [s.name for s in schema]
    missing = [n for n in names if n not in row]
    if missing:
        raise InvalidInput(f"{where}: missing feature(s) {shown(missing)}", f"{where}.{missing[0]}")
    extra = sorted(set(row) - set(names))
    if extra:
        raise InvalidInput(f"{where}: unexpected feature(s) {shown(extra)}; the model takes {names}",
                           f"{where}.{extra[0]}")
    return {spec.name: _check_value(spec, row[spec.name], where) for spec in schema}


def score(model: OnnxModel, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | None]:
    """Each validated row's ``prediction`` and ``probabilities`` (None for a regression), or None for a row the
    model gives no finite answer for: finite inputs can still overflow its arithmetic (1e308 times a coefficient),
    and a NaN probability behind a made-up label is no answer. Every serving mode (API, batch, push) scores here."""
    prediction = model.predict_records(list(rows))
    scores = prediction.labels if prediction.probabilities is None else prediction.probabilities
    finite = np.isfinite(np.asarray(scores, dtype=float).reshape(len(rows), -1)).all(axis=1)
    out: list[dict[str, Any] | None] = []
    for i in range(len(rows)):
        if not finite[i]:
            out.append(None)
        elif prediction.probabilities is not None:
            out.append({"prediction": str(prediction.labels[i]), "probabilities": {
                c: float(p) for c, p in zip(prediction.classes, prediction.probabilities[i], strict=True)}})
        else:
            out.append({"prediction": float(prediction.labels[i]), "probabilities": None})
    return out


@dataclass
class LoadedModel:
    version: ModelVersion
    model: OnnxModel
    schema: list[FeatureSpec]
    loaded_seconds: float
    # the sha256 of the feature definitions it was trained from (mlops.features.offline); None: trained on raw columns
    features_sha256: str | None = None


_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelCache:
    """Models loaded once per execution environment. Each artefact is kept on disk under its sha256, and verified
    against what the registry recorded every time it is loaded: the manifest against the version record, the
    contract against the manifest, the model against the record. A file left by another run, another version or
    another cloud in the same directory is never taken for this version's (a name is a claim, its bytes the proof)."""

    def __init__(self, s3: Any, cache_dir: Path) -> None:
        self.s3 = s3
        self.cache_dir = cache_dir
        self._models: dict[tuple[str, int], LoadedModel] = {}

    def cached(self, model: str, version: int) -> LoadedModel | None:
        return self._models.get((model, version))

    def _artefact(self, uri: str, sha256: str | None, what: str) -> bytes:
        if not sha256 or not _SHA256.fullmatch(sha256):
            raise UnverifiableModel(f"{what} cannot be verified: no sha256 of {uri} was recorded for it; register "
                                    "the model again (a new training run) to serve it")
        path = self.cache_dir / sha256
        if path.exists() and hashlib.sha256(data := path.read_bytes()).hexdigest() == sha256:
            return data
        bucket, key = parse_s3_uri(uri)
        data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise UnverifiableModel(f"{uri} does not match the sha256 recorded for {what}; the artefact changed "
                                    "after it was registered: register the model again, or roll this version back")
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{sha256}.{uuid.uuid4().hex}.part")  # two writers never share a partial file
        part.write_bytes(data)
        part.replace(path)
        return data

    def get(self, version: ModelVersion) -> LoadedModel:
        key = (version.model, version.version)
        if key in self._models:
            return self._models[key]
        started = time.perf_counter()
        what = f"{version.model} v{version.version}"
        manifest = json.loads(self._artefact(version.manifest_uri, version.manifest_sha256, f"{what}'s manifest"))
        onnx_bytes = self._artefact(version.model_uri, version.onnx_sha256, what)
        # the contract is the request schema: checked against the manifest, whose sha256 of it is immutable
        contract_sha256 = (manifest.get("contract") or {}).get("sha256")
        contract_bytes = self._artefact(version.artefacts_prefix + "contract.json", contract_sha256,
                                        f"{what}'s contract (in its manifest)")
        loaded = LoadedModel(version, OnnxModel(onnx_bytes), schema_from_contract(json.loads(contract_bytes)),
                             time.perf_counter() - started,
                             (manifest.get("feature_store") or {}).get("definitions_sha256"))
        self._models[key] = loaded
        return loaded


class CaptureSink:
    """Every prediction and feedback, as JSON lines to a Firehose stream. Never fails the request."""

    def __init__(self, firehose: Any, stream: str | None, on_error: Callable[[Exception], None]) -> None:
        self.firehose = firehose
        self.stream = stream
        self.on_error = on_error

    def put(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not self.stream or not records:
            return
        try:
            for start in range(0, len(records), 500):  # PutRecordBatch takes at most 500 records
                batch = [{"Data": (json.dumps(r, default=str) + "\n").encode()} for r in records[start:start + 500]]
                self._put_batch(batch)
        except Exception as exc:  # capture is best effort by design: the prediction has been made
            self.on_error(exc)

    def _put_batch(self, batch: list[dict[str, bytes]], attempts: int = 3) -> None:
        # PutRecordBatch succeeds as a call while refusing some records (throttled, one by one): those are sent
        # again, and what is still refused after that is reported, never dropped silently
        for _attempt in range(attempts):
            answer = self.firehose.put_record_batch(DeliveryStreamName=self.stream, Records=batch)
            if not answer.get("FailedPutCount"):
                return
            batch = [record for record, result in zip(batch, answer["RequestResponses"], strict=True)
                     if result.get("ErrorCode")]
        raise CaptureIncomplete(f"Firehose refused {len(batch)} capture record(s) after {attempts} attempts")


class ModelServer:
    def __init__(self, *, model: str, version: int | None, registry: Registry, cache: ModelCache,
                 capture: CaptureSink, max_batch: int = 100, features: OnlineStore | None = None) -> None:
        self.model_name = model
        self.features = features
        self.pinned_version = version
        self.registry = registry
        self.cache = cache
        self.capture = capture
        self.max_batch = max_batch
        self._aliases: tuple[float, dict[str, int]] = (0.0, {})

    # -- which model ---------------------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if name != self.model_name:
            raise ModelNotFound(f"no model named {shown(name)} is served here", "name")

    @classmethod
    def from_environment(cls, on_capture_error: Callable[[Exception], None]) -> ModelServer:
        """An infer or push function's server: its model (MODEL_NAME), the version its Lambda version pins
        (MODEL_VERSION; none: the champion) and its resources, from its environment."""
        import os

        from mlops import aws
        from mlops.aws.environment import CAPTURE_STREAM, resources

        version = os.environ.get("MODEL_VERSION")
        features = resources.features_table
        return cls(
            model=os.environ["MODEL_NAME"],
            version=int(version) if version else None,
            registry=Registry(aws.client("dynamodb"), resources.registry_table),
            cache=ModelCache(aws.client("s3"), Path(os.environ.get("MODEL_CACHE_DIR", "/tmp/models"))),  # noqa: S108
            capture=CaptureSink(aws.client("firehose"), os.environ.get(CAPTURE_STREAM), on_capture_error),
            max_batch=int(os.environ.get("MAX_BATCH", "100")),
            features=OnlineStore(aws.client("dynamodb"), features) if features else None,
        )

    def _not_deployed(self) -> NoModelDeployed:
        return NoModelDeployed(f"no version of {self.model_name!r} is deployed yet: upload a dataset under "
                               f"incoming/{self.model_name}/ in the data bucket and wait for the training pipeline")

    def _aliases_now(self) -> dict[str, int]:
        # Promotions move aliases while this environment stays warm: re-read them at most every 30 s, and at once
        # while there is no champion yet (the first one must be served as soon as it is registered).
        at, aliases = self._aliases
        if time.monotonic() - at > 30 or CHAMPION not in aliases:
            aliases = self.registry.aliases(self.model_name)
            self._aliases = (time.monotonic(), aliases)
        return aliases

    def _variant(self, version: int) -> str:
        aliases = self._aliases_now()
        if aliases.get(CHAMPION) == version:
            return CHAMPION
        if aliases.get(CHALLENGER) == version:
            return CHALLENGER
        return "retired"

    def loaded(self) -> LoadedModel:
        version = self.pinned_version or self._aliases_now().get(CHAMPION)
        if version is None:
            raise self._not_deployed()
        warm = self.cache.cached(self.model_name, version)
        if warm is not None:  # a version record never changes what it serves: no registry read per request
            return warm
        record = self.registry.version(self.model_name, version)
        if record is None:
            raise NoModelDeployed(f"{self.model_name} v{version} is not in the registry")
        return self.cache.get(record)

    # -- routes --------------------------------------------------------------------------------------------
    def predict(self, name: str, body: Any) -> dict[str, Any]:
        self._check_name(name)
        if not isinstance(body, Mapping):
            raise MalformedRequest("the body must be a JSON object", "body")
        given = [field for field in ("features", "instances", "entity_id") if field in body]
        unexpected = sorted(set(body) - {"features", "instances", "entity_id"})
        if len(given) != 1 or unexpected:
            raise InvalidInput("give one of 'features' (one row), 'instances' (a list of rows) or 'entity_id' (the "
                               "entity whose features the feature store holds)"
                               + (f"; unexpected field(s) {shown(unexpected)}" if unexpected else ""), "body")
        has_features = given[0] != "instances"
        loaded = self.loaded()
        online = self._online(loaded, body["entity_id"]) if given == ["entity_id"] else None
        rows = [online.values if online else body["features"]] if has_features else body["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("'instances' must be a non-empty list of objects", "instances")
        if len(rows) > self.max_batch:
            raise PayloadTooLarge(f"{len(rows)} instances; at most {self.max_batch} per request", "instances")
        where = [given[0]] if has_features else [f"instances[{i}]" for i in range(len(rows))]
        clean = [validate_row(row, loaded.schema, w) for row, w in zip(rows, where, strict=True)]
        scored = score(loaded.model, clean)
        if None in scored:
            at = where[scored.index(None)]
            raise InvalidInput(f"{at}: the model gives no finite answer for these values; they are far outside the "
                               "range it was trained on", at)
        version = loaded.version.version
        variant = self._variant(version)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        answers = [{"request_id": str(uuid.uuid4()), "model_version": version, "variant": variant, **one}
                   for one in scored if one is not None]
        if online is not None:
            answers[0].update(entity_id=online.entity_id, features_as_of=online.as_of)
        self.capture.put([
            {"type": "prediction", "model": self.model_name, "time": now, "features": row, **answer}
            for row, answer in zip(clean, answers, strict=True)
        ])
        return answers[0] if has_features else {"predictions": answers}

    def _online(self, loaded: LoadedModel, entity: Any) -> OnlineFeatures:
        """The entity's features from the online store, checked to come from the served model's definitions."""
        if isinstance(entity, bool) or not isinstance(entity, str | int):
            raise InvalidInput("'entity_id' must be a non-empty string or an integer", "entity_id")
        # the id is a key of the online store: bounded before it is looked up
        entity = identifier(entity_text(bounded_text(entity, "entity_id", MAX_ID_CHARS)), "entity_id",
                            "the entity whose features the feature store holds")
        what = f"{self.model_name} v{loaded.version.version}"
        if self.features is None or loaded.features_sha256 is None:
            raise InvalidInput(f"{what} was not trained from declared features ([model.features] in mlops.toml), so "
                               "it cannot look an entity up; send 'features'", "entity_id")
        found = self.features.get(self.model_name, entity)
        if found is None:
            raise EntityNotFound(f"the feature store has no entity {shown(entity)} for {self.model_name}: "
                                 "it is in no ingested dataset yet", "entity_id")
        if found.definitions_sha256 != loaded.features_sha256:
            raise FeaturesOutOfDate(
                f"the features of entity {found.entity_id!r} were computed by other definitions than {what} was "
                f"trained with (online store: {found.definitions_sha256[:12]}, "
                f"model: {loaded.features_sha256[:12]}); "
                f"they refresh with the next ingest, or now with `mlops features materialize {self.model_name}`",
                "entity_id")
        return found

    def feedback(self, name: str, body: Any) -> dict[str, Any]:
        self._check_name(name)
        if not isinstance(body, Mapping):
            raise MalformedRequest("the body must be a JSON object", "body")
        if "request_id" not in body:
            raise InvalidInput("'request_id' (the id a prediction answered with) is required", "request_id")
        request_id = identifier(body["request_id"], "request_id", "the id a prediction answered with")
        has_label, has_reward = "label" in body, "reward" in body
        if has_label == has_reward:
            raise InvalidInput("give either 'label' (the observed outcome) or 'reward' (a number)", "body")
        label = self._label(body["label"]) if has_label else None
        reward = finite_number(body["reward"], "reward") if has_reward else None
        record = {"type": "feedback", "model": self.model_name, "request_id": request_id,
                  "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "label": label, "reward": reward}
        self.capture.put([record])
        return {"request_id": request_id, "accepted": True}

    def _label(self, label: Any) -> str:
        """The observed outcome as the rollout and drift_check compare it with predictions: one of the served
        model's classes for a classifier (1, 1.0 and "1" name the same class), a finite number for a regression."""
        loaded = self.loaded()
        if not loaded.model.is_classifier:
            finite_number(label, "label")
            return str(label)
        classes = loaded.model.classes
        text: str | None = None
        if isinstance(label, bool):
            text = next((t for t in (str(label), str(label).lower(), str(int(label))) if t in classes), str(label))
        elif isinstance(label, str | int):
            text = bounded_text(label, "label")
        elif isinstance(label, float):
            text = str(int(label)) if label.is_integer() else str(label)
        if text not in classes:
            raise InvalidInput(f"'label' must be one of the classes of {self.model_name} "
                               f"v{loaded.version.version}: {', '.join(classes[:20])}; got {shown(label)}", "label")
        return text

    def describe(self, name: str) -> dict[str, Any]:
        self._check_name(name)
        aliases = self.registry.aliases(self.model_name)
        if CHAMPION not in aliases:
            # a fresh stack: the API says so plainly, on every route of the model (the deploy made `live` answer)
            raise self._not_deployed()
        out: dict[str, Any] = {"model": self.model_name}
        for alias in (CHAMPION, CHALLENGER):
            version = self.registry.version(self.model_name, aliases[alias]) if alias in aliases else None
            out[alias] = None if version is None else {
                "version": version.version, "created_at": version.created_at,
                "metrics": version.metrics.get("metrics", {}), "dataset_sha256": version.dataset_sha256,
            }
        if out[CHAMPION] is not None:
            out["features"] = [f.describe() for f in self.loaded().schema]
        return out

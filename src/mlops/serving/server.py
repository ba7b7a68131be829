"""The ``infer`` and ``push`` functions' core (``ModelServer``): which model answers, validate a request against
its contract, score it with onnxruntime, capture it, answer.

Imports stay light on purpose (numpy, onnxruntime, pydantic, boto3 through injected clients): this is the
cold-start path, and onnxruntime is imported with the module so that its cost falls in Lambda's init phase rather
than on the first request. Its parts each have their module: ``errors``, ``requests`` (parsing and validation),
``cache`` (loading verified models), ``scoring``, ``capture``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from mlops.features.online import OnlineFeatures, OnlineStore, entity_text
from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION
from mlops.serving.cache import LoadedModel, ModelCache
from mlops.serving.capture import CaptureSink
from mlops.serving.errors import (
    EntityNotFound,
    FeaturesOutOfDate,
    InvalidInput,
    MalformedRequest,
    ModelNotFound,
    NoModelDeployed,
    PayloadTooLarge,
    shown,
)
from mlops.serving.requests import MAX_ID_CHARS, bounded_text, finite_number, identifier, validate_row
from mlops.serving.scoring import score


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
        from mlops.aws.environment import MODEL_NAME, resources

        version = os.environ.get("MODEL_VERSION")
        features = resources.features_table
        model = os.environ[MODEL_NAME]
        return cls(
            model=model,
            version=int(version) if version else None,
            registry=Registry(aws.client("dynamodb"), resources.registry_table),
            cache=ModelCache.for_environment(aws.client("s3")),
            capture=CaptureSink.from_environment(model, on_capture_error),
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

    @staticmethod
    def _variant(version: int, aliases: dict[str, int]) -> str:
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
        aliases = self._aliases_now()
        variant = self._variant(version, aliases)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        answers = [{"request_id": str(uuid.uuid4()), "model_version": version, "variant": variant, **one}
                   for one in scored if one is not None]
        if online is not None:
            answers[0].update(entity_id=online.entity_id, features_as_of=online.as_of)
        # capture_sample_rate applies to the champion alone, and only while no challenger holds traffic: a canary's
        # rollout joins every prediction of both arms with its feedback (docs/capture.md)
        self.capture.put([
            {"type": "prediction", "model": self.model_name, "time": now, "features": row, **answer}
            for row, answer in zip(clean, answers, strict=True)
        ], sampling=variant == CHAMPION and CHALLENGER not in aliases)
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
        loaded = self.loaded()
        if loaded.model.is_clustering:
            raise InvalidInput(f"{self.model_name} is a clustering model: its predictions are cluster ids, which no "
                               "observed outcome can confirm or refute, so it takes no feedback (its canary is "
                               "decided on the guardrails alone)", "label" if has_label else "reward")
        label = self._label(body["label"], loaded) if has_label else None
        reward = finite_number(body["reward"], "reward") if has_reward else None
        record = {"type": "feedback", "model": self.model_name, "request_id": request_id,
                  "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "label": label, "reward": reward}
        self.capture.put([record])
        return {"request_id": request_id, "accepted": True}

    def _label(self, label: Any, loaded: LoadedModel) -> str:
        """The observed outcome as the rollout and drift_check compare it with predictions: one of the ``loaded``
        model's classes for a classifier (1, 1.0 and "1" name the same class), a finite number for a regression."""
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

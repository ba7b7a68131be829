"""Where a function finds its resources: environment variables set by the CDK app and the local cloud
from the same description (``mlops.aws.platform``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlops.core.errors import ConfigError

DATA_BUCKET = "DATA_BUCKET"
MODELS_BUCKET = "MODELS_BUCKET"
REGISTRY_TABLE = "REGISTRY_TABLE"
IDEMPOTENCY_TABLE = "IDEMPOTENCY_TABLE"
FEATURES_TABLE = "FEATURES_TABLE"  # the online feature store (mlops.features.online)
NOTIFICATIONS_TOPIC_ARN = "NOTIFICATIONS_TOPIC_ARN"
TRAINING_STATE_MACHINE_ARN = "TRAINING_STATE_MACHINE_ARN"
CAPTURE_STREAM = "CAPTURE_STREAM"
CAPTURES_BUCKET = "CAPTURES_BUCKET"
ROLLOUT_STATE_MACHINE_ARN = "ROLLOUT_STATE_MACHINE_ARN"
BATCH_STATE_MACHINE_ARN = "BATCH_STATE_MACHINE_ARN"  # the infer function starts batch runs (mlops.batch.start)
# the register function's name, for `mlops models import`, which hands its candidate to it (mlops.pipeline.external)
REGISTER_FUNCTION = "REGISTER_FUNCTION"
API_SOURCE_ARN = "API_SOURCE_ARN"
# ingest starts the ingest state machine for a file above its model's ingest_map_above_mb (mlops.data.ingest_map)
INGEST_STATE_MACHINE_ARN = "INGEST_STATE_MACHINE_ARN"
# JSON object: model name -> the name (or ARN) of that model's infer function
INFER_FUNCTIONS = "INFER_FUNCTIONS"
# A model's push function (mlops.serving.push): where its answers go (sns | s3), its topic, its queue's dead-letter
# queue
PUSH_OUTPUT = "PUSH_OUTPUT"
PREDICTIONS_TOPIC_ARN = "PREDICTIONS_TOPIC_ARN"
DEAD_LETTER_QUEUE_URL = "DEAD_LETTER_QUEUE_URL"
# An infer or push function's model, and the share of its champion's predictions it captures (mlops.serving.capture)
MODEL_NAME = "MODEL_NAME"
CAPTURE_SAMPLE_RATE = "CAPTURE_SAMPLE_RATE"
# Where an execution environment keeps its verified model artefacts (mlops.serving.cache): the local runtimes give each
# environment its own; on Lambda the environment's /tmp is its own anyway
MODEL_CACHE_DIR = "MODEL_CACHE_DIR"


def require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set; the function is not deployed with its resources")
    return value


@dataclass(frozen=True)
class Resources:
    """Resource names read lazily, so a function only needs the variables it uses."""

    @property
    def data_bucket(self) -> str:
        return require(DATA_BUCKET)

    @property
    def models_bucket(self) -> str:
        return require(MODELS_BUCKET)

    @property
    def registry_table(self) -> str:
        return require(REGISTRY_TABLE)

    @property
    def idempotency_table(self) -> str:
        return require(IDEMPOTENCY_TABLE)

    @property
    def features_table(self) -> str | None:
        return os.environ.get(FEATURES_TABLE) or None

    @property
    def notifications_topic_arn(self) -> str:
        return require(NOTIFICATIONS_TOPIC_ARN)

    @property
    def training_state_machine_arn(self) -> str:
        return require(TRAINING_STATE_MACHINE_ARN)

    @property
    def captures_bucket(self) -> str:
        return require(CAPTURES_BUCKET)

    @property
    def api_source_arn(self) -> str | None:
        return os.environ.get(API_SOURCE_ARN) or None

    @property
    def batch_state_machine_arn(self) -> str | None:
        return os.environ.get(BATCH_STATE_MACHINE_ARN) or None

    @property
    def ingest_state_machine_arn(self) -> str | None:
        return os.environ.get(INGEST_STATE_MACHINE_ARN) or None

    @property
    def rollout_state_machine_arn(self) -> str | None:
        return os.environ.get(ROLLOUT_STATE_MACHINE_ARN) or None

    @property
    def infer_functions(self) -> dict[str, str]:
        import json

        value: dict[str, str] = json.loads(os.environ.get(INFER_FUNCTIONS) or "{}")
        return value


resources = Resources()

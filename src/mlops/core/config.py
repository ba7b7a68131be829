"""The project's configuration: every model (use case) is declared once in ``mlops.toml``.

The same file is read by the handlers (bundled next to them), the CLI, the local cloud and the CDK app,
so a model's name, target and thresholds cannot differ between them.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.core import layout
from mlops.core.errors import ConfigError, UnknownModel
from mlops.core.families import DEFAULT_FAMILIES, FAMILIES, families_for, is_user_code
from mlops.core.tasks import Task

CONFIG_ENV = "MLOPS_CONFIG"
CONFIG_FILE = "mlops.toml"

# A receive that Lambda's poller makes while the function is throttled counts towards the queue's maxReceiveCount: AWS
# advises at least 5 on a queue that is a Lambda event source, or messages that never failed reach the dead-letter queue
PUSH_MIN_RECEIVES = 5
# A Step Functions execution times out after a year, Catch or not: a rollout execution's waits take at most half of that
# (mlops.release.rollout hands over to a new execution sooner), so one wait may not be longer
ROLLOUT_MAX_INTERVAL_SECONDS = 365 * 24 * 3600 // 2


class DriftConfig(BaseModel):
    """How ``drift_check`` watches a model (``[model.drift]`` in mlops.toml; every field has a default).

    A feature drifts when its effect size reaches its threshold AND its Benjamini-Hochberg adjusted p-value
    is below ``alpha``; retraining is asked for only when ``retrain_windows`` of the last
    ``retrain_window_of`` windows drifted, ``retrain_min_labels`` new labelled rows exist and
    ``retrain_cooldown_hours`` have passed since the last request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    schedule: str = Field(default="rate(1 hour)", pattern=r"^(rate|cron)\(.+\)$")  # EventBridge expression
    window_hours: float = Field(default=1.0, gt=0.0)  # the captures one check reads
    # feedback arrives after its prediction: predictions this far before the window are joined too
    feedback_lookback_hours: float = Field(default=24.0, ge=0.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    min_samples: int = Field(default=200, ge=10)
    wasserstein_threshold: float = Field(default=0.1, gt=0.0)  # in training standard deviations
    psi_threshold: float = Field(default=0.2, gt=0.0)
    js_threshold: float = Field(default=0.05, gt=0.0, le=1.0)
    min_feedback: int = Field(default=100, ge=1)
    concept_threshold: float = Field(default=0.05, gt=0.0)  # accuracy points lost (relative MAE increase)
    retrain: bool = True
    retrain_cooldown_hours: float = Field(default=24.0, ge=0.0)
    retrain_min_labels: int = Field(default=200, ge=0)
    retrain_windows: int = Field(default=3, ge=1)
    retrain_window_of: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _n_of_m(self) -> DriftConfig:
        if self.retrain_windows > self.retrain_window_of:
            raise ValueError(f"retrain_windows ({self.retrain_windows}) cannot exceed retrain_window_of "
                             f"({self.retrain_window_of})")
        return self


class FeatureDefinition(BaseModel):
    """One model input computed from the curated data: an aggregate of ``source`` over the entity's rows up to the
    row's time (inclusive), within ``window`` before it when given. ``last`` is the entity's latest value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    source: str | None = None  # a column of the curated data; the feature's own name when absent
    aggregate: Literal["last", "mean", "sum", "min", "max", "count"] = "last"
    window: str | None = Field(default=None, pattern=r"^[1-9][0-9]*(s|min|h|d)$")  # e.g. "30d", "12h"

    @property
    def column(self) -> str:
        return self.source or self.name


class FeatureStoreConfig(BaseModel):
    """A model's features, declared once (``[model.features]``): ``mlops.features.offline`` builds the training set from
    them (point in time on ``timestamp``, else in file order) and materialises the online store after each ingest, so
    the API can predict from ``{"entity_id": ...}`` with exactly the values the model was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_key: str = Field(min_length=1)
    timestamp: str | None = None
    columns: list[FeatureDefinition] = Field(min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> FeatureStoreConfig:
        names = [f.name for f in self.columns]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"features declared twice: {dupes}")
        keys = {self.entity_key} | ({self.timestamp} if self.timestamp else set())
        if clash := sorted(keys & (set(names) | {f.column for f in self.columns})):
            raise ValueError(f"{clash}: the entity key and the timestamp cannot be features or features' sources")
        if self.timestamp is None and (windowed := [f.name for f in self.columns if f.window]):
            raise ValueError(f"features {windowed} have a window, which needs a `timestamp` column")
        return self


# batch runs: a run scores this many objects at once unless the model says otherwise (it fits the 10 concurrent
# executions of a new account, with room left: docs/batch.md); AWS runs at most 10,000 child executions of a
# Distributed Map at once
BATCH_MAX_CONCURRENCY = 5
DISTRIBUTED_MAP_MAX_CONCURRENCY = 10_000
# ingest (ModelConfig.max_file_mb, ingest_map_above_mb): the largest file accepted, and the size above which a file is
# validated in parts by a Distributed Map rather than by one function (docs/architecture.md, "Ingest at scale")
INGEST_MAX_FILE_MB = 4096
INGEST_MAP_ABOVE_MB = 1024
# ingest reads a file this many MB at a time (mlops.data.reading.DEFAULT_CHUNK_BYTES)
INGEST_CHUNK_MB = 16
# s3://bucket/prefix/: an S3 bucket name, then one or more non-empty key segments ending with /, without what IAM
# would read in a resource ARN (the wildcards * and ?, ${...} policy variables)
_S3_FOLDER = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/((?:[^/*?$]+/)+)$")


class ModelConfig(BaseModel):
    """One model: what it predicts, how it is trained and when a candidate is good enough."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
    # the column it predicts; a clustering has none (every column is a feature, a prediction is a cluster id)
    target: str | None = Field(default=None, min_length=1)
    task: Task = Task.BINARY
    # absent: the task's default (mlops.core.families.DEFAULT_FAMILIES), so that a regression model needs no family
    family: str
    params: dict[str, Any] = Field(default_factory=dict)
    # with `family = "package.module:build"` (a build function of the project's own code, mlops.training.user_code):
    # the directory holding that package, relative to mlops.toml; it is packaged with the training image
    code: str | None = None
    seed: int = 42
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)
    # metric -> minimum value a candidate must reach (absolute gate)
    thresholds: dict[str, float] = Field(default_factory=dict)
    # the metric compared against the champion; a candidate may be at most `champion_margin` worse (absent: accuracy,
    # silhouette for a clustering)
    primary_metric: str = "accuracy"
    champion_margin: float = Field(default=0.01, ge=0.0)
    canary_weight: float = Field(default=0.1, gt=0.0, lt=1.0)
    # the canary's sequential test on feedback accuracy: smallest change worth detecting, error rates,
    # how often to look, and when to give up (keep the champion)
    rollout_mde: float = Field(default=0.05, gt=0.0, lt=1.0)
    rollout_alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    rollout_power: float = Field(default=0.8, gt=0.5, lt=1.0)
    rollout_interval_seconds: int = Field(default=300, ge=1)
    rollout_max_hours: float = Field(default=72.0, gt=0.0)
    # what the canary is judged on: feedback labels (accuracy) or feedback rewards (mean reward, where a
    # change of `rollout_mde` in the mean is worth detecting; at most `rollout_max_samples` per arm)
    rollout_metric: Literal["accuracy", "reward"] = "accuracy"
    rollout_max_samples: int = Field(default=20000, ge=100)
    # operational guardrails, read from the infer function's CloudWatch metrics: the challenger is rolled
    # back at once when its server-error rate exceeds the champion's by more than this (absolute), or its
    # p95 latency exceeds this multiple of the champion's, once it has served `guardrail_min_requests`
    guardrail_max_error_rate_increase: float = Field(default=0.01, ge=0.0, le=1.0)
    guardrail_max_p95_ratio: float = Field(default=1.5, gt=1.0)
    guardrail_min_requests: int = Field(default=200, ge=1)
    # a model without labels (a clustering) has no feedback to test its canary on: its rollout promotes the challenger
    # once it served `guardrail_min_requests` requests over at least this long without breaching a guardrail
    guardrail_min_hours: float = Field(default=1.0, ge=0.0)
    # a declared data contract (see mlops.data.schema.DataContract); inferred from the first file when absent
    contract: dict[str, Any] | None = None
    # the largest file ingest accepts at all: a larger one is rejected whole, unread, with the reason. Up to
    # `ingest_map_above_mb` one ingest function streams it; above, a Distributed Map validates it in parts in parallel
    # and one merge writes the single curated dataset (mlops.data.ingest_map, docs/architecture.md "Ingest at scale").
    # 4 GiB: what the merge can write into the ingest function's 10 GB of /tmp (curated Parquet and quarantined rows)
    # and move through S3 well within its 600 s timeout
    max_file_mb: int = Field(default=INGEST_MAX_FILE_MB, gt=0)
    # above this size a file is validated by the ingest Distributed Map, in parts of a quarter of it each. 1 GiB: one
    # function streaming at 20-40 MB/s (make bench) reads it in 25-50 s, and a messy file at 5 MB/s in about 200 s,
    # a third of its 600 s timeout
    ingest_map_above_mb: int = Field(default=INGEST_MAP_ABOVE_MB, gt=0)
    # ingest reads a file this much at a time (mlops.data.reading.CsvReader): its memory is a few times this, whatever
    # the file's size (docs/ingest.md). Smaller chunks only cost speed; tests use a few KB to cross chunk boundaries
    ingest_chunk_mb: float = Field(default=INGEST_CHUNK_MB, gt=0, le=256)
    # a file with more bad rows than this share is rejected whole rather than half-curated
    max_bad_row_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    # drift monitoring and drift-driven retraining (see DriftConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    # where the train step runs: in the `train` function (4,096 MB, 15 minutes: mlops.aws.platform) or, for data that
    # outgrows it, as a SageMaker training job started by the same state machine from the same image, on this
    # instance type with this much disk, stopped after this long (432000 s, 5 days, is SageMaker's default limit).
    # "auto" decides per dataset when train_trigger starts the run (mlops.pipeline.backend): SageMaker when the data's
    # size in memory (curated rows x encoded columns x 8 bytes) is above `sagemaker_above_mb`; "lambda" and "sagemaker"
    # force one path
    training_backend: Literal["auto", "lambda", "sagemaker"] = "auto"
    # 400 MB: the train step peaks at 7-8x that estimate (numeric columns; one-hot encoded ones cost less) above the
    # 0.25-0.45 GB its runtime holds, so data of 400 MB peaks near 3.5 GB, under the train function's 4,096 MB
    # (measured, docs/deploy.md section 8)
    sagemaker_above_mb: int = Field(default=400, gt=0)
    sagemaker_instance_type: str = Field(default="ml.m5.xlarge", pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
    sagemaker_max_runtime_seconds: int = Field(default=3600, ge=60, le=432000)
    sagemaker_volume_size_gb: int = Field(default=30, ge=1, le=16384)
    # push mode (mlops.serving.push): the model's queue moves a message that failed this many receives to its
    # dead-letter
    # queue (at least PUSH_MIN_RECEIVES, see _push_receives), and the answers go to the model's SNS topic or, as JSON
    # lines, under predictions/<model>/ in the data bucket
    push_max_receives: int = Field(default=PUSH_MIN_RECEIVES, le=1000)
    push_output: Literal["sns", "s3"] = "sns"
    # the model's inputs computed from curated data by declared definitions (see FeatureStoreConfig); absent: the
    # curated columns themselves are the inputs
    features: FeatureStoreConfig | None = None
    # batch runs (mlops.batch.start): the prefixes outside s3://<data bucket>/batch/<name>/ its runs may also read, as
    # s3://bucket/prefix/ URIs (see _batch_inputs), and how many objects one run scores at once (the Distributed Map's
    # MaxConcurrency; the CDK app checks it against the stage's Lambda concurrency, docs/batch.md)
    batch_inputs: tuple[str, ...] = ()
    batch_max_concurrency: int = Field(default=BATCH_MAX_CONCURRENCY, ge=1, le=DISTRIBUTED_MAP_MAX_CONCURRENCY)
    # the share of the champion's predictions captured while no challenger holds traffic (mlops.serving.capture), for
    # high-volume models; a canary's predictions and all feedback are always captured (see _capture_sample_rate)
    capture_sample_rate: float = 1.0

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """What the task gives a model that leaves them out: its family (DEFAULT_FAMILIES) and, for a clustering (no
        accuracy to measure), silhouette as its primary_metric."""
        if not isinstance(data, dict):
            return data
        task = data.get("task", Task.BINARY)
        if data.get("family") is None:
            # an unknown task is reported by the task field: any family here keeps that the only error
            data = {**data, "family": DEFAULT_FAMILIES.get(task, DEFAULT_FAMILIES[Task.BINARY])}
        if task == Task.CLUSTERING and "primary_metric" not in data:
            data = {**data, "primary_metric": "silhouette"}
        return data

    @model_validator(mode="after")
    def _family_fits_task(self) -> ModelConfig:
        if is_user_code(self.family):
            if self.code is None:
                raise ValueError(f"family {self.family!r} is a build function of your own code: say where its package "
                                 "is with code = \"<directory relative to mlops.toml>\"")
            return self
        if self.code is not None:
            raise ValueError(f"code = {self.code!r} is for a family of your own code "
                             f"(family = \"package.module:build\"); {self.family!r} is one of the platform's")
        if not FAMILIES[self.family].supports(self.task):
            raise ValueError(f"family {self.family!r} cannot be trained for a {self.task} model; use one of "
                             f"{families_for(self.task)}, or leave family out to get {DEFAULT_FAMILIES[self.task]}")
        if problems := FAMILIES[self.family].param_problems(self.task, self.params):
            raise ValueError(f"params of this {self.task} {self.family} model: {'; '.join(problems)}")
        return self

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        if value not in FAMILIES and not is_user_code(value):
            raise ValueError(f"unknown model family {value!r}; choose one of {sorted(FAMILIES)}, or name a build "
                             "function of your own code as \"package.module:function\"")
        return value

    @field_validator("code")
    @classmethod
    def _code_inside_the_project(cls, value: str | None) -> str | None:
        if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts or not Path(value).parts):
            raise ValueError(f"code = {value!r} must be a subdirectory of the project, relative to mlops.toml (it is "
                             "copied into the training image at the same place; the project's own directory would "
                             "copy everything, .venv included)")
        return value

    @field_validator("batch_inputs")
    @classmethod
    def _batch_inputs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each declared prefix becomes an IAM grant of the batch function (mlops.aws.access.batch_access): it names a
        folder of one bucket, literally, and nothing the platform keeps in its own buckets."""
        reserved = layout.RESERVED
        for uri in value:
            match = _S3_FOLDER.match(uri)
            segments = match.group(2).split("/")[:-1] if match else []
            if not match or {".", ".."} & set(segments):
                raise ValueError(
                    f"{uri!r} is not an s3://bucket/prefix/ URI of a folder: give the bucket, then a key prefix "
                    "ending with '/' (e.g. s3://partner-exports/scoring/). A whole bucket, '*', '?' and '$' (IAM "
                    "wildcards and variables), empty, '.' and '..' segments are refused: the prefix is granted to the "
                    "batch function as written")
            if (first := f"{segments[0]}/") in reserved:
                raise ValueError(
                    f"{uri} starts with {first}, a prefix the platform keeps in its own buckets "
                    f"({', '.join(reserved)}); CloudFormation names those buckets, so the key is what is checked, in "
                    "any bucket. A model's runs always read s3://<data bucket>/batch/<name>/; for data elsewhere, "
                    "declare another prefix")
        if duplicated := sorted({uri for uri in value if value.count(uri) > 1}):
            raise ValueError(f"declared twice: {duplicated}")
        return value

    @field_validator("capture_sample_rate")
    @classmethod
    def _capture_sample_rate(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(
                f"capture_sample_rate = {value} must be more than 0 and at most 1 (the default, every prediction): it "
                "is the share of the champion's predictions captured while no canary runs, which drift_check reads; "
                "0 would leave it nothing to check. A canary's predictions and all feedback are captured whatever "
                "it is")
        return value

    @field_validator("push_max_receives")
    @classmethod
    def _push_receives(cls, value: int) -> int:
        if value < PUSH_MIN_RECEIVES:
            raise ValueError(
                f"push_max_receives = {value} is too low: set it to at least {PUSH_MIN_RECEIVES} (the default). "
                "Lambda's poller receives a push queue's messages even while the push function is throttled, and those "
                "receives count like failed ones, so a smaller value moves messages that never failed to the "
                f"dead-letter queue (AWS advises at least {PUSH_MIN_RECEIVES} for a queue a Lambda function consumes)")
        return value

    @model_validator(mode="after")
    def _rollout_can_decide(self) -> ModelConfig:
        interval, longest = self.rollout_interval_seconds, self.rollout_max_hours * 3600
        if interval > longest:
            raise ValueError(
                f"rollout_interval_seconds = {interval} is longer than rollout_max_hours = {self.rollout_max_hours} "
                f"({longest:.0f} s): the rollout would get one look at the feedback, already past its maximum "
                "duration, and roll the challenger back unless that look decides; lower rollout_interval_seconds or "
                "raise rollout_max_hours")
        if interval > ROLLOUT_MAX_INTERVAL_SECONDS:
            raise ValueError(
                f"rollout_interval_seconds = {interval} is longer than {ROLLOUT_MAX_INTERVAL_SECONDS} s (half a "
                "year): a Step Functions execution times out after a year, and each of the rollout's executions waits "
                "at least once")
        return self

    @model_validator(mode="after")
    def _target_fits_task(self) -> ModelConfig:
        if self.task.has_labels and self.target is None:
            raise ValueError(f"a {self.task} model needs a target: the column of its data it learns to predict")
        if not self.task.has_labels:
            if self.target is not None:
                raise ValueError(f"a clustering model has no target: every column of its data is a feature and a "
                                 f"prediction is a cluster id; remove target = {self.target!r}, or declare the task "
                                 "that predicts it")
            if "rollout_metric" in self.model_fields_set:
                raise ValueError("rollout_metric does not apply to a clustering model: it takes no feedback (no "
                                 "labels to test on), so its canary is decided on the guardrails alone "
                                 "(guardrail_min_requests, guardrail_min_hours); remove rollout_metric")
            if self.guardrail_min_hours > self.rollout_max_hours:
                raise ValueError(f"guardrail_min_hours = {self.guardrail_min_hours} is longer than rollout_max_hours "
                                 f"= {self.rollout_max_hours}: the guardrail-only rollout could never promote")
        return self

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> ModelConfig:
        known = self.task.metrics
        for metric in [*self.thresholds, self.primary_metric]:
            if metric not in known:
                raise ValueError(f"metric {metric!r} does not apply to a {self.task} model; use one of {known}")
        if self.features and self.target is not None and self.target in {
                self.features.entity_key, self.features.timestamp, *(f.column for f in self.features.columns)}:
            raise ValueError(f"the target {self.target!r} cannot be the entity key, the timestamp or a feature's "
                             "source: the model would be trained on its own label")
        return self

    @property
    def incoming_prefix(self) -> str:
        return f"incoming/{self.name}/"


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = "mlops"
    models: list[ModelConfig]

    @model_validator(mode="after")
    def _unique_names(self) -> ProjectConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; declared twice: {dupes}")
        return self

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise UnknownModel(f"no model named {name!r} is declared; known: {[m.name for m in self.models]}")


def config_path() -> Path:
    """``$MLOPS_CONFIG``, else ``mlops.toml`` next to the handler (Lambda), else in the working directory."""
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    for candidate in (Path(os.environ.get("LAMBDA_TASK_ROOT", "/var/task")) / CONFIG_FILE, Path.cwd() / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return Path(__file__).resolve().parents[3] / CONFIG_FILE


def load_config(path: Path | str | None = None) -> ProjectConfig:
    path = Path(path) if path else config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} not found; set {CONFIG_ENV} or create {CONFIG_FILE}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return ProjectConfig.model_validate({"models": raw.get("model", []), **raw.get("project", {})})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'models'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc

"""The platform, declared once: its functions, their environment and triggers, its buckets, tables, topic
and state machine. The local cloud provisions from this description and the CDK app reads it too, so the
two cannot drift apart silently (a parity test compares them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.aws import environment

if TYPE_CHECKING:
    from mlops.core.config import ProjectConfig

ROOT = Path(__file__).resolve().parents[3]
FUNCTIONS_DIR = ROOT / "functions"
TRAINING_ASL = ROOT / "infra" / "training_pipeline.asl.json"
ROLLOUT_ASL = ROOT / "infra" / "rollout.asl.json"
BATCH_ASL = ROOT / "infra" / "batch.asl.json"
INGEST_ASL = ROOT / "infra" / "ingest.asl.json"


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # the one name: functions/<name>/, the handler's service name, metrics dimension, docs
    description: str
    env: tuple[str, ...]  # which resource variables (mlops.aws.environment) it needs
    memory_mb: int
    timeout_s: int
    # the scientific stack (sklearn, skl2onnx, scipy) exceeds the 250 MB zip limit: those run from the
    # container image; the others fit a zip with a slim layer (see docs/architecture.md, "Size").
    image: bool = False
    # a zip function's layers beyond Powertools' (layers/builder.py LAYERS), e.g. onnxruntime + numpy for infer
    layers: tuple[str, ...] = ()
    # its /tmp (Lambda's ephemeral storage, 512-10,240 MB): ingest writes a file's curated Parquet and quarantined rows
    # there before uploading them
    ephemeral_mb: int = 512

    @property
    def code_dir(self) -> Path:
        return FUNCTIONS_DIR / self.name

    def physical_name(self, project: str) -> str:
        return f"{project}-{self.name.replace('_', '-')}"


@dataclass(frozen=True)
class S3Trigger:
    function: str
    bucket: str  # "data" | "models"
    prefix: str
    suffix: str = ""


FUNCTIONS: tuple[FunctionSpec, ...] = (
    # a file above its model's ingest_map_above_mb is planned here and validated by the ingest state machine's
    # Distributed Map, whose parts and merge are steps of this same function (mlops.data.ingest_map); 10 GB of /tmp
    # holds the merged dataset of a file at the largest max_file_mb the documentation advises (docs/architecture.md)
    FunctionSpec("ingest", "Validates a CSV under incoming/<model>/ and curates it (or quarantines it)",
                 (environment.DATA_BUCKET, environment.IDEMPOTENCY_TABLE, environment.FEATURES_TABLE,
                  environment.INGEST_STATE_MACHINE_ARN), memory_mb=3008,
                 timeout_s=600, ephemeral_mb=10240,
                 layers=("data",)),
    FunctionSpec("train_trigger", "Starts the training pipeline once per curated dataset",
                 (environment.DATA_BUCKET, environment.REGISTRY_TABLE, environment.TRAINING_STATE_MACHINE_ARN),
                 memory_mb=512, timeout_s=60),
    FunctionSpec("train", "Fits the model's scikit-learn pipeline and exports it to ONNX",
                 (environment.MODELS_BUCKET,), memory_mb=4096, timeout_s=900, image=True),
    FunctionSpec("evaluate", "Measures a candidate and the champion on the same held-out rows",
                 (environment.MODELS_BUCKET, environment.REGISTRY_TABLE), memory_mb=2048, timeout_s=600, image=True),
    FunctionSpec("register", "Records a model version with its lineage and deploys it behind the live alias",
                 (environment.MODELS_BUCKET, environment.REGISTRY_TABLE, environment.INFER_FUNCTIONS,
                  environment.ROLLOUT_STATE_MACHINE_ARN, environment.API_SOURCE_ARN), memory_mb=1024, timeout_s=120,
                 image=True),
    FunctionSpec("record_outcome", "Records a rejected or failed pipeline run",
                 (environment.REGISTRY_TABLE,), memory_mb=512, timeout_s=30),
    FunctionSpec("rollout", "Looks at a canary: sequential test on feedback, then promote, roll back or wait",
                 (environment.REGISTRY_TABLE, environment.CAPTURES_BUCKET, environment.INFER_FUNCTIONS),
                 memory_mb=512, timeout_s=300),
    # image: it reads the curated parquet (pandas/pyarrow) to build the retraining dataset; the drift
    # statistics themselves need numpy only. Reads captures, writes reports (models bucket), labelled rows
    # and retraining files (data bucket: labelled/, incoming/), alerts on the topic.
    FunctionSpec("drift_check", "Compares a window of captured inputs and feedback with the champion's baseline",
                 (environment.DATA_BUCKET, environment.MODELS_BUCKET, environment.CAPTURES_BUCKET,
                  environment.REGISTRY_TABLE, environment.NOTIFICATIONS_TOPIC_ARN), memory_mb=3008, timeout_s=900,
                 image=True),
    # image: pyarrow + onnxruntime + numpy is ~370 MB unzipped (layers data + infer), over the zip limit. Each
    # invocation scores one object in bounded chunks; where it reads and writes is decided per run (mlops.batch.start).
    FunctionSpec("batch", "Scores the CSV and Parquet objects of a batch run with a registered model version",
                 (environment.REGISTRY_TABLE,), memory_mb=3008, timeout_s=900, image=True),
)

# One per declared model ("one-click model service"): its versions pin model versions, its `live` alias is
# the A/B split. onnxruntime + numpy only: a zip function, no scientific stack.
INFER = FunctionSpec("infer", "Serves a model's champion and challenger (ONNX) behind API Gateway",
                     (environment.REGISTRY_TABLE, environment.CAPTURE_STREAM, environment.FEATURES_TABLE),
                     memory_mb=1024, timeout_s=30, layers=("infer",))


def infer_function_name(project: str, model: str) -> str:
    return f"{project}-infer-{model}"


# Push mode (mlops.serving.push): one queue per declared model, consumed by the model's own push function, which scores
# with the same serving core as infer (so it needs what infer needs) and answers on the model's topic or bucket.
PUSH = FunctionSpec("push", "Answers a model's queued prediction requests (ONNX champion) on its topic or bucket",
                    INFER.env, memory_mb=1024, timeout_s=30, layers=("infer",))
PUSH_BATCH_SIZE = 10  # messages per invocation (Lambda's default for SQS)
PUSH_VISIBILITY_TIMEOUT_S = 6 * PUSH.timeout_s  # what AWS advises for a queue behind a function
PUSH_DLQ_RETENTION_S = 14 * 24 * 3600  # SQS's longest: time to read, fix and redrive


@dataclass(frozen=True)
class PushQueue:
    """A model's push queue, its dead-letter queue, its function and where its answers go: physical names
    derived from the project and the model, read by the CDK app and the local cloud alike."""

    model: str
    queue: str
    dead_letter_queue: str
    function: str
    max_receives: int
    output: str  # sns | s3
    topic: str | None  # the model's predictions topic when output is sns
    capture_sample_rate: float = 1.0

    @property
    def output_variable(self) -> str:
        """The push function's variable naming where answers go: the topic's ARN, or the data bucket."""
        return environment.PREDICTIONS_TOPIC_ARN if self.output == "sns" else environment.DATA_BUCKET


def serving_env(model: str, capture_sample_rate: float) -> dict[str, str]:
    """What an infer or push function is told of the model it serves (the CDK app and the local cloud alike): its
    name, and its capture_sample_rate, read once at start rather than from the bundled mlops.toml."""
    return {environment.MODEL_NAME: model, environment.CAPTURE_SAMPLE_RATE: repr(capture_sample_rate)}


def push_queues(config: ProjectConfig) -> list[PushQueue]:
    out = []
    for model in config.models:
        base = f"{config.project}-push-{model.name}"
        out.append(PushQueue(model.name, base, f"{base}-dlq", base, model.push_max_receives, model.push_output,
                             f"{config.project}-predictions-{model.name}" if model.push_output == "sns" else None,
                             model.capture_sample_rate))
    return out


S3_TRIGGERS: tuple[S3Trigger, ...] = (
    # No suffix filter: every object under incoming/ gets an outcome, a wrongly named file included.
    S3Trigger("ingest", "data", "incoming/"),
    S3Trigger("train_trigger", "data", "curated/", "manifest.json"),
)

BUCKETS = ("data", "models", "captures")
CAPTURE_STREAM = "captures"  # Firehose delivery stream into the captures bucket
TABLES = ("registry", "idempotency", "features")


@dataclass(frozen=True)
class TableKey:
    partition: str
    sort: str | None = None
    # Powertools idempotency writes its expiry under `expiration` (DynamoDBPersistenceLayer's default)
    ttl: str | None = None

    def schema(self) -> list[tuple[str, str]]:
        """(attribute, HASH | RANGE), as DynamoDB's KeySchema lists them; every key attribute is a string."""
        return [(self.partition, "HASH"), *([(self.sort, "RANGE")] if self.sort else [])]


# each table's key, read by the CDK app (infra/constructs/storage.py) and the local cloud alike
TABLE_KEYS: dict[str, TableKey] = {
    "registry": TableKey("pk", "sk"),
    "idempotency": TableKey("id", ttl="expiration"),
    "features": TableKey("pk", "sk"),  # the online feature store: model, entity id
}
TOPIC = "notifications"
STATE_MACHINE = "training"

# The ASL file's ${...} placeholders, filled by the CDK app and the local cloud alike.
ASL_SUBSTITUTIONS = {
    "TrainFunctionArn": "train",
    "EvaluateFunctionArn": "evaluate",
    "RegisterFunctionArn": "register",
    "RecordOutcomeFunctionArn": "record_outcome",
}
ASL_TOPIC_SUBSTITUTION = "NotificationsTopicArn"
# The training pipeline's SageMaker path (TrainOnSageMaker and the states after it): placeholder -> what it stands
# for, by platform name: the train function's image, the training jobs' execution role, and the bucket and key of the
# candidates the job writes
ASL_TRAINING_JOB_SUBSTITUTIONS = {
    "TrainingImageUri": "image:train",
    "SageMakerRoleArn": "role:sagemaker",
    "ModelsBucketName": "bucket:models",
    "DataKeyArn": "key:data",
}
ROLLOUT_STATE_MACHINE = "rollout"
ROLLOUT_SUBSTITUTIONS = {"RolloutFunctionArn": "rollout"}
# Batch inference (mlops.batch.start): a Distributed Map over the objects under an input prefix; the infer function
# starts it
BATCH_STATE_MACHINE = "batch"
BATCH_SUBSTITUTIONS = {"BatchFunctionArn": "batch"}
# Ingest at scale (mlops.data.ingest_map): a Distributed Map over a large file's byte ranges, then one merge; the ingest
# function starts it, and runs its parts and merge
INGEST_STATE_MACHINE = "ingest"
INGEST_SUBSTITUTIONS = {"IngestFunctionArn": "ingest"}


@dataclass(frozen=True)
class Schedule:
    """A function run by EventBridge rules, one per declared model: the expression and the on/off switch are
    read from each model's configuration (dotted attribute paths of ``ModelConfig``)."""

    function: str
    expression_field: str
    enabled_field: str


@dataclass(frozen=True)
class ScheduledRule:
    function: str
    model: str
    expression: str  # rate(...) | cron(...)
    rule_name: str  # physical EventBridge rule name (at most 64 characters)
    input: dict[str, str]  # the rule's constant input: the event the function receives


SCHEDULES: tuple[Schedule, ...] = (Schedule("drift_check", "drift.schedule", "drift.enabled"),)


def scheduled_rules(config: ProjectConfig) -> list[ScheduledRule]:
    """Every schedule of every model that has it enabled; the CDK app and the local cloud both read this."""
    rules = []
    for schedule in SCHEDULES:
        for model in config.models:
            if not _attribute(model, schedule.enabled_field):
                continue
            name = f"{config.project}-{schedule.function.replace('_', '-')}-{model.name}"[:64]
            rules.append(ScheduledRule(schedule.function, model.name, str(_attribute(model, schedule.expression_field)),
                                       name, {"model": model.name}))
    return rules


def _attribute(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def function(name: str) -> FunctionSpec:
    for spec in FUNCTIONS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def resource_names(project: str) -> dict[str, str]:
    """Physical names used where the stack does not let CloudFormation pick them (the local cloud)."""
    return {
        "data": f"{project}-data",
        "models": f"{project}-models",
        "registry": f"{project}-registry",
        "idempotency": f"{project}-idempotency",
        "features": f"{project}-features",
        "notifications": f"{project}-notifications",
        "training": f"{project}-training",
        "captures": f"{project}-captures",
        "rollout": f"{project}-rollout",
        "batch": f"{project}-batch",
        "ingest": f"{project}-ingest",
    }

"""The platform, declared once: its functions, their environment and triggers, its buckets, tables, topic
and state machine. The local cloud provisions from this description and the CDK app reads it too, so the
two cannot drift apart silently (a parity test compares them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlops import settings

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
TRAINING_ASL = ROOT / "infra" / "training_pipeline.asl.json"
ROLLOUT_ASL = ROOT / "infra" / "rollout.asl.json"


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # the one name: functions/<name>/, the handler's service name, metrics dimension, docs
    description: str
    env: tuple[str, ...]  # which resource variables (mlops.settings) it needs
    memory_mb: int
    timeout_s: int
    # the scientific stack (sklearn, skl2onnx, pandas) exceeds the 250 MB zip limit: those run from the
    # container image; the others fit a zip with a slim layer (see DESIGN.md, "Size").
    image: bool = False

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
    FunctionSpec("ingest", "Validates a CSV under incoming/<model>/ and curates it (or quarantines it)",
                 (settings.DATA_BUCKET, settings.IDEMPOTENCY_TABLE), memory_mb=3008, timeout_s=600, image=True),
    FunctionSpec("train_trigger", "Starts the training pipeline once per curated dataset",
                 (settings.DATA_BUCKET, settings.REGISTRY_TABLE, settings.TRAINING_STATE_MACHINE_ARN),
                 memory_mb=512, timeout_s=60),
    FunctionSpec("train", "Fits the model's scikit-learn pipeline and exports it to ONNX",
                 (settings.MODELS_BUCKET,), memory_mb=4096, timeout_s=900, image=True),
    FunctionSpec("evaluate", "Measures a candidate and the champion on the same held-out rows",
                 (settings.MODELS_BUCKET, settings.REGISTRY_TABLE), memory_mb=2048, timeout_s=600, image=True),
    FunctionSpec("register", "Records a model version with its lineage and deploys it behind the live alias",
                 (settings.MODELS_BUCKET, settings.REGISTRY_TABLE, settings.INFER_FUNCTIONS,
                  settings.ROLLOUT_STATE_MACHINE_ARN), memory_mb=1024, timeout_s=120, image=True),
    FunctionSpec("record_outcome", "Records a rejected or failed pipeline run",
                 (settings.REGISTRY_TABLE,), memory_mb=512, timeout_s=30),
    FunctionSpec("rollout", "Looks at a canary: sequential test on feedback, then promote, roll back or wait",
                 (settings.REGISTRY_TABLE, settings.CAPTURES_BUCKET, settings.INFER_FUNCTIONS),
                 memory_mb=512, timeout_s=300),
)

# One per declared model ("one-click model service"): its versions pin model versions, its `live` alias is
# the A/B split. onnxruntime + numpy only: a zip function, no scientific stack.
INFER = FunctionSpec("infer", "Serves a model's champion and challenger (ONNX) behind API Gateway",
                     (settings.REGISTRY_TABLE, settings.CAPTURE_STREAM), memory_mb=1024, timeout_s=30)


def infer_function_name(project: str, model: str) -> str:
    return f"{project}-infer-{model}"


S3_TRIGGERS: tuple[S3Trigger, ...] = (
    # No suffix filter: every object under incoming/ gets an outcome, a wrongly named file included.
    S3Trigger("ingest", "data", "incoming/"),
    S3Trigger("train_trigger", "data", "curated/", "manifest.json"),
)

BUCKETS = ("data", "models", "captures")
CAPTURE_STREAM = "captures"  # Firehose delivery stream into the captures bucket
TABLES = ("registry", "idempotency")
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
ROLLOUT_STATE_MACHINE = "rollout"
ROLLOUT_SUBSTITUTIONS = {"RolloutFunctionArn": "rollout"}


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
        "notifications": f"{project}-notifications",
        "training": f"{project}-training",
        "captures": f"{project}-captures",
        "rollout": f"{project}-rollout",
    }

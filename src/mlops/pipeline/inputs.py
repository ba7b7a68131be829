"""What a training pipeline execution carries from step to step: ``train_trigger`` starts it with a
:class:`PipelineInput`, and every step (and the SageMaker training job) receives it, plus earlier results.

Light on purpose (pydantic only): the zip functions train_trigger and record_outcome read it too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from mlops.core.config import ModelConfig


class Dataset(BaseModel):
    model_config = ConfigDict(extra="ignore")

    uri: str
    manifest_uri: str
    sha256: str
    rows: int
    contract_version: int


class TrainingJobResources(BaseModel):
    """A SageMaker training job's ResourceConfig and StoppingCondition, as the state machine reads them."""

    instance_type: str
    volume_size_gb: int
    max_runtime_seconds: int

    @classmethod
    def of(cls, model_cfg: ModelConfig) -> TrainingJobResources:
        return cls(instance_type=model_cfg.sagemaker_instance_type, volume_size_gb=model_cfg.sagemaker_volume_size_gb,
                   max_runtime_seconds=model_cfg.sagemaker_max_runtime_seconds)


class PipelineInput(BaseModel):
    """What ``train_trigger`` starts an execution with; every step receives it (plus earlier results)."""

    model_config = ConfigDict(extra="allow")

    model: str
    run_id: str
    reason: str
    dataset: Dataset
    # the state machine's TrainingBackend choice, never "auto": train_trigger applies the model's rule
    # (mlops.pipeline.backend) and says why here; `sagemaker` comes with the training job's resources
    training_backend: Literal["lambda", "sagemaker"] = "lambda"
    training_backend_reason: str = ""
    sagemaker: TrainingJobResources | None = None

    @model_validator(mode="before")
    @classmethod
    def _backend_as_started(cls, data: Any) -> Any:
        """Register, RecordRejection and RecordFailure name the fields they pass (the ASL's Parameters), and a path to
        a field an input lacks fails the execution: an input started by hand may lack the backend. They pass the
        execution's input whole instead (``execution_input``, ``$$.Execution.Input``); the backend is read there."""
        if isinstance(data, dict) and isinstance(started := data.get("execution_input"), dict):
            backend = {key: started[key] for key in _BACKEND_FIELDS if key in started}
            return {**backend, **{key: value for key, value in data.items() if key != "execution_input"}}
        return data


_BACKEND_FIELDS = ("training_backend", "training_backend_reason", "sagemaker")

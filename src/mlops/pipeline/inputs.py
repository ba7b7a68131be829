"""What a training pipeline execution carries from step to step: ``train_trigger`` starts it with a
:class:`PipelineInput`, and every step (and the SageMaker training job) receives it, plus earlier results.

Light on purpose (pydantic only): the zip functions train_trigger and record_outcome read it too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

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
    # the state machine's TrainingBackend choice; `sagemaker` comes with the training job's resources
    training_backend: Literal["lambda", "sagemaker"] = "lambda"
    sagemaker: TrainingJobResources | None = None

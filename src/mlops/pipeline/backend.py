"""Where a training run's train step runs, decided when ``train_trigger`` starts it (mlops.pipeline.trigger).

A model's ``training_backend`` (mlops.core.config) is ``"lambda"`` or ``"sagemaker"``, which force one path, or
``"auto"`` (the default), which sends a dataset to a SageMaker training job when its size in memory is above the model's
``sagemaker_above_mb``, and to the ``train`` function otherwise. The size in memory is estimated without reading the
data: the curated rows (the dataset's manifest) x the columns the model is fitted on (the dataset's data contract, a
categorical column counting as many columns as it has categories: the one-hot encoding is dense) x 8 bytes, as float64.
Why this estimate and the default threshold: docs/deploy.md, section 8.

Light on purpose (pydantic and the contract only): the train_trigger zip function runs it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from mlops.aws.storage import ObjectStore
from mlops.core.config import ModelConfig
from mlops.data.schema import ColumnKind, ColumnSpec, DataContract, contract_key

MB = 2**20  # as Lambda counts its memory and mlops.toml its *_mb settings
FLOAT64_BYTES = 8

Backend = Literal["lambda", "sagemaker"]


class BackendChoice(BaseModel):
    """The path a run trains on, and why: carried by the pipeline input, so each execution shows it."""

    backend: Backend
    reason: str
    in_memory_mb: float | None = None  # the estimate, when the rule ("auto") was applied


def encoded_columns(contract: DataContract) -> int:
    """The columns a model is fitted on: one per numeric, integer or boolean column and for the target; one per
    category for a categorical column (dense one-hot, mlops.training.train.build_pipeline), one for an open one (any
    value accepted, its width unknown until the data is read)."""
    def width(column: ColumnSpec) -> int:
        if column.kind is ColumnKind.CATEGORICAL and column.name != contract.target:
            return max(1, len(column.categories or ()))
        return 1

    return sum(width(column) for column in contract.columns)


def in_memory_mb(rows: int, columns: int) -> float:
    return rows * columns * FLOAT64_BYTES / MB


def choose(model_cfg: ModelConfig, *, rows: int, columns: int) -> BackendChoice:
    """The rule: ``auto`` trains on SageMaker strictly above ``sagemaker_above_mb``, on Lambda up to it."""
    if model_cfg.training_backend != "auto":
        return BackendChoice(backend=model_cfg.training_backend,
                             reason=f"{model_cfg.training_backend}: training_backend = "
                                    f'"{model_cfg.training_backend}" in mlops.toml')
    size, limit = in_memory_mb(rows, columns), model_cfg.sagemaker_above_mb
    sizes = f"{size:,.1f} MB in memory ({rows:,} rows x {columns:,} columns as float64)"
    if size > limit:
        return BackendChoice(backend="sagemaker", in_memory_mb=size,
                             reason=f"auto: {sizes} > sagemaker_above_mb {limit:,}")
    return BackendChoice(backend="lambda", in_memory_mb=size, reason=f"auto: {sizes} <= sagemaker_above_mb {limit:,}")


def for_dataset(model_cfg: ModelConfig, manifest: dict[str, Any], data: ObjectStore) -> BackendChoice:
    """The choice for a curated dataset, from its manifest (rows) and its data contract (columns), read only for
    ``auto``."""
    if model_cfg.training_backend != "auto":
        return choose(model_cfg, rows=0, columns=0)
    contract = DataContract.from_json(data.get_bytes(contract_key(model_cfg.name, manifest["contract_version"])))
    return choose(model_cfg, rows=manifest["rows"]["curated"], columns=encoded_columns(contract))

"""The training backend as configured (mlops.core.config.ModelConfig) and as the pipeline input carries it to the state
machine's TrainingBackend choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.core.config import load_config
from mlops.core.errors import ConfigError
from mlops.pipeline.inputs import Dataset, PipelineInput, TrainingJobResources

MODEL = '[[model]]\nname = "m1"\ntarget = "y"\n'
DATASET = Dataset(uri="s3://b/curated/m1/x/data.parquet", manifest_uri="s3://b/curated/m1/x/manifest.json",
                  sha256="0" * 64, rows=10, contract_version=1)


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mlops.toml"
    path.write_text(MODEL + extra)
    return path


def test_models_train_on_lambda_unless_configured_otherwise(tmp_path: Path) -> None:
    [model] = load_config(_config(tmp_path)).models
    assert model.training_backend == "lambda"
    [model] = load_config(_config(tmp_path, 'training_backend = "sagemaker"\nsagemaker_instance_type = '
                                            '"ml.c5.9xlarge"\nsagemaker_max_runtime_seconds = 600\n')).models
    assert TrainingJobResources.of(model) == TrainingJobResources(
        instance_type="ml.c5.9xlarge", volume_size_gb=30, max_runtime_seconds=600)


@pytest.mark.parametrize("extra", ['training_backend = "ec2"\n', 'sagemaker_instance_type = "m5.xlarge"\n',
                                   "sagemaker_max_runtime_seconds = 10\n"])
def test_an_impossible_training_backend_is_a_configuration_error(tmp_path: Path, extra: str) -> None:
    with pytest.raises(ConfigError, match=extra.split(" ")[0]):
        load_config(_config(tmp_path, extra))


def test_pipeline_inputs_without_a_backend_stay_valid_and_train_on_lambda() -> None:
    old = PipelineInput(model="m1", run_id="r", reason="new_data", dataset=DATASET).model_dump(mode="json")
    del old["training_backend"], old["sagemaker"]
    assert PipelineInput.model_validate(old).training_backend == "lambda"

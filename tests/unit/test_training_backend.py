"""The training backend as configured (mlops.core.config.ModelConfig), as train_trigger decides it for a dataset
(mlops.pipeline.backend) and as the pipeline input carries it to the state machine's TrainingBackend choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.core.config import ModelConfig, load_config
from mlops.core.errors import ConfigError
from mlops.data.schema import ColumnKind, ColumnSpec, DataContract
from mlops.pipeline import backend as backends
from mlops.pipeline.inputs import Dataset, PipelineInput, TrainingJobResources

MODEL = '[[model]]\nname = "m1"\ntarget = "y"\n'
DATASET = Dataset(uri="s3://b/curated/m1/x/data.parquet", manifest_uri="s3://b/curated/m1/x/manifest.json",
                  sha256="0" * 64, rows=10, contract_version=1)


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mlops.toml"
    path.write_text(MODEL + extra)
    return path


def test_models_choose_their_backend_by_size_unless_configured_otherwise(tmp_path: Path) -> None:
    [model] = load_config(_config(tmp_path)).models
    assert (model.training_backend, model.sagemaker_above_mb) == ("auto", 400)
    [model] = load_config(_config(tmp_path, 'training_backend = "sagemaker"\nsagemaker_instance_type = '
                                            '"ml.c5.9xlarge"\nsagemaker_max_runtime_seconds = 600\n')).models
    assert TrainingJobResources.of(model) == TrainingJobResources(
        instance_type="ml.c5.9xlarge", volume_size_gb=30, max_runtime_seconds=600)


@pytest.mark.parametrize("extra", ['training_backend = "ec2"\n', 'sagemaker_instance_type = "m5.xlarge"\n',
                                   "sagemaker_max_runtime_seconds = 10\n", "sagemaker_above_mb = 0\n"])
def test_an_impossible_training_backend_is_a_configuration_error(tmp_path: Path, extra: str) -> None:
    with pytest.raises(ConfigError, match=extra.split(" ")[0]):
        load_config(_config(tmp_path, extra))


def test_pipeline_inputs_without_a_backend_stay_valid_and_train_on_lambda() -> None:
    old = PipelineInput(model="m1", run_id="r", reason="new_data", dataset=DATASET).model_dump(mode="json")
    del old["training_backend"], old["sagemaker"]
    assert PipelineInput.model_validate(old).training_backend == "lambda"


# -- "auto": the size rule -------------------------------------------------------------------------------------------
def _model(**settings: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "m1", "target": "y", **settings})


ONE_MB_OF_FLOAT64 = 2**20 // 8  # cells


@pytest.mark.parametrize(("rows", "columns", "backend"), [
    (ONE_MB_OF_FLOAT64, 1, "lambda"),              # exactly at the threshold: still the function
    (ONE_MB_OF_FLOAT64 + 1, 1, "sagemaker"),       # one cell above it
    (ONE_MB_OF_FLOAT64 // 4, 4, "lambda"),         # rows x columns, not rows alone
    (ONE_MB_OF_FLOAT64 // 4 + 1, 4, "sagemaker"),
    (0, 31, "lambda"),
])
def test_auto_trains_on_sagemaker_strictly_above_the_threshold(rows: int, columns: int, backend: str) -> None:
    choice = backends.choose(_model(sagemaker_above_mb=1), rows=rows, columns=columns)
    assert choice.backend == backend
    assert choice.in_memory_mb == rows * columns * 8 / 2**20


def test_the_reason_says_the_estimate_and_the_threshold() -> None:
    big = backends.choose(_model(), rows=2_000_000, columns=31)
    assert big.reason == ("auto: 473.0 MB in memory (2,000,000 rows x 31 columns as float64) > sagemaker_above_mb "
                          "400")
    small = backends.choose(_model(), rows=569, columns=31)
    assert small.backend == "lambda"
    assert small.reason == "auto: 0.1 MB in memory (569 rows x 31 columns as float64) <= sagemaker_above_mb 400"


@pytest.mark.parametrize("forced", ["lambda", "sagemaker"])
def test_lambda_and_sagemaker_force_their_path_whatever_the_size(forced: str) -> None:
    for rows in (0, 10**9):
        choice = backends.choose(_model(training_backend=forced, sagemaker_above_mb=1), rows=rows, columns=100)
        assert (choice.backend, choice.in_memory_mb) == (forced, None)
        assert choice.reason == f'{forced}: training_backend = "{forced}" in mlops.toml'


def test_the_columns_are_the_ones_the_model_is_fitted_on() -> None:
    contract = DataContract(target="y", columns=[
        ColumnSpec(name="x", kind=ColumnKind.NUMERIC), ColumnSpec(name="n", kind=ColumnKind.INTEGER),
        ColumnSpec(name="b", kind=ColumnKind.BOOLEAN),
        ColumnSpec(name="colour", kind=ColumnKind.CATEGORICAL, categories=["blue", "green", "red"]),  # one-hot: 3
        ColumnSpec(name="empty", kind=ColumnKind.CATEGORICAL, categories=[]),  # still a column
        ColumnSpec(name="id", kind=ColumnKind.CATEGORICAL),  # open: its width is unknown before the data is read
        ColumnSpec(name="y", kind=ColumnKind.CATEGORICAL, categories=["a", "b", "c", "d"]),  # the target: one column
    ])
    assert backends.encoded_columns(contract) == 3 + 3 + 1 + 1 + 1


class _Store:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects, self.read = objects, []

    def get_bytes(self, key: str) -> bytes:
        self.read.append(key)
        return self.objects[key]


MANIFEST = {"rows": {"in": 140_000, "curated": 131_072, "quarantined": 8_928}, "contract_version": 3}


def test_a_dataset_is_sized_from_its_manifest_and_its_contract_version() -> None:
    contract = DataContract(version=3, target="y", columns=[ColumnSpec(name="x", kind=ColumnKind.NUMERIC),
                                                            ColumnSpec(name="y", kind=ColumnKind.INTEGER)])
    store = _Store({"contracts/m1/v000003.json": contract.to_json().encode()})
    choice = backends.for_dataset(_model(sagemaker_above_mb=1), MANIFEST, store)
    # the curated rows, not the rows in: 131,072 x 2 x 8 bytes = 2 MB
    assert (choice.backend, choice.in_memory_mb) == ("sagemaker", 2.0)
    assert store.read == ["contracts/m1/v000003.json"]


def test_a_forced_backend_reads_nothing() -> None:
    store = _Store({})
    assert backends.for_dataset(_model(training_backend="lambda"), MANIFEST, store).backend == "lambda"
    assert store.read == []

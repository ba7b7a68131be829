"""The training pipeline's SageMaker path on moto: the TrainingBackend choice, and the training job's entrypoint
(mlops.pipeline.sagemaker) run in process on a curated dataset. moto cannot run a training job, so the job itself is
played by calling the entrypoint the image runs, with the hyperparameters the ASL hands it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from mlops.aws import platform
from mlops.core.config import load_config
from mlops.local.embedded import EmbeddedCloud as Cloud
from mlops.pipeline import sagemaker as sagemaker_train
from mlops.pipeline.inputs import Dataset, PipelineInput, TrainingJobResources
from mlops.pipeline.steps import evaluate_step

ASL = json.loads(platform.TRAINING_ASL.read_text())
RESOURCES = TrainingJobResources(instance_type="ml.m5.xlarge", volume_size_gb=30, max_runtime_seconds=3600)


def entered(cloud: Cloud, execution_arn: str) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in cloud.history(execution_arn)
            if e["type"].endswith("StateEntered")]


def state_output(cloud: Cloud, execution_arn: str, state: str) -> dict[str, Any]:
    [output] = [json.loads(e["stateExitedEventDetails"]["output"]) for e in cloud.history(execution_arn)
                if e["type"].endswith("StateExited") and e["stateExitedEventDetails"]["name"] == state]
    return output


def key_read_by_the_state_machine(inp: PipelineInput) -> str:
    """The key LoadTrainingJobResult reads: its States.Format template filled with the execution's model and run."""
    parameters = ASL["States"]["LoadTrainingJobResult"]["Parameters"]
    match = re.fullmatch(r"States\.Format\('([^']*)', \$\.model, \$\.run_id\)", parameters["Key.$"])
    assert match, parameters
    return match.group(1).replace("{}", inp.model, 1).replace("{}", inp.run_id, 1)


def shape(value: Any) -> Any:
    """Keys and types, not values: what a consumer of the train result relies on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def test_training_job_entrypoint_leaves_what_the_train_task_returns(
        cloud: Cloud, breast_cancer_csv: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud.upload("breast-cancer", "data.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert entered(cloud, execution["executionArn"])[:2] == ["TrainingBackend", "Train"]
    on_lambda = state_output(cloud, execution["executionArn"], "Train")["train"]

    # the same curated dataset, as another run on SageMaker
    started = PipelineInput.model_validate_json(execution["input"])
    inp = started.model_copy(update={"run_id": "breast-cancer-on-sagemaker", "training_backend": "sagemaker",
                                     "sagemaker": RESOURCES})
    # what SageMaker writes from the task's HyperParameters (`States.JsonToString($)`), and the job's environment
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({sagemaker_train.PIPELINE_INPUT: inp.model_dump_json()}))
    monkeypatch.setenv("MODELS_BUCKET", cloud.deployment.models_bucket)

    assert sagemaker_train.run(hyperparameters, failure=tmp_path / "failure") == 0
    on_sagemaker = cloud.models.get_json(key_read_by_the_state_machine(inp))
    assert shape(on_sagemaker) == shape(on_lambda)
    assert on_sagemaker["candidate_prefix"] == cloud.models.uri(f"candidates/breast-cancer/{inp.run_id}/")
    for same in ("family", "params", "seed", "classes", "rows"):
        assert on_sagemaker[same] == on_lambda[same], same
    # and the next step takes it as it takes the train function's result
    evaluation = evaluate_step(inp, on_sagemaker, config=load_config(), models=cloud.models, registry=cloud.registry)
    assert evaluation["meets_thresholds"] is True


def test_training_job_entrypoint_reports_a_failure_for_sagemaker(tmp_path: Path) -> None:
    failure = tmp_path / "output" / "failure"
    assert sagemaker_train.run(tmp_path / "missing.json", failure=failure) == 1
    assert failure.read_text().startswith("FileNotFoundError: ")


def _pipeline_input(run_id: str) -> dict[str, Any]:
    dataset = Dataset(uri="s3://nowhere/curated/breast-cancer/x/data.parquet",
                      manifest_uri="s3://nowhere/curated/breast-cancer/x/manifest.json", sha256="0" * 64, rows=1,
                      contract_version=1)
    return PipelineInput(model="breast-cancer", run_id=run_id, reason="test", dataset=dataset).model_dump(mode="json")


def test_an_input_without_a_backend_trains_on_lambda(cloud: Cloud) -> None:
    """Executions started before the field existed (or by hand) keep the Lambda path."""
    payload = _pipeline_input("breast-cancer-no-backend")
    del payload["training_backend"], payload["sagemaker"]
    cloud.client("stepfunctions").start_execution(stateMachineArn=cloud.deployment.state_machine_arn,
                                                  name=payload["run_id"], input=json.dumps(payload))
    [execution] = cloud.wait_for_executions(1)
    assert entered(cloud, execution["executionArn"])[:2] == ["TrainingBackend", "Train"]
    # its dataset is nowhere: the failure is recorded all the same, the run's backend by default
    [run] = cloud.registry.runs("breast-cancer")
    assert run.outcome == "failed"
    assert run.details["training_backend"] == {"backend": "lambda", "reason": ""}


# -- the whole SageMaker path, the training job played in process ----------------------------------------------
SAGEMAKER_MODEL = "big-data"
AUTO_MODEL = "growing"  # training_backend left to its default, "auto", with a threshold of 1 MB in memory


@pytest.fixture(scope="module")
def config_file(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test configuration plus a model that trains on SageMaker."""
    path = tmp_path_factory.mktemp("sagemaker") / "mlops.toml"
    path.write_text(config_file.read_text() + f"""
[[model]]
name = "{SAGEMAKER_MODEL}"
target = "target"
task = "binary"
test_size = 0.25
thresholds = {{ accuracy = 0.9 }}
training_backend = "sagemaker"
sagemaker_instance_type = "ml.m5.4xlarge"
sagemaker_volume_size_gb = 50
sagemaker_max_runtime_seconds = 7200

[[model]]
name = "{AUTO_MODEL}"
target = "target"
task = "binary"
test_size = 0.25
thresholds = {{ accuracy = 0.9 }}
sagemaker_above_mb = 1
""")
    return path


@dataclass
class PlayedTrainingJobs:
    """moto forwards createTrainingJob to its SageMaker (which records the job) but cannot wait for it (.sync):
    here the wait runs the job as SageMaker would run the image, `python -m mlops.pipeline.sagemaker`, with the
    request's hyperparameters in /opt/ml/input/config/hyperparameters.json and its environment."""

    workdir: Path
    requests: list[dict[str, Any]] = field(default_factory=list)

    def resolver(self, parameters: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        def wait_for_the_job() -> dict[str, Any]:
            self.requests.append(parameters)
            job = self.workdir / parameters["TrainingJobName"]
            job.mkdir()
            (job / "hyperparameters.json").write_text(json.dumps(parameters["HyperParameters"]))
            with mock.patch.dict(os.environ, parameters["Environment"]):
                failed = sagemaker_train.run(job / "hyperparameters.json", failure=job / "failure")
            if failed:
                raise RuntimeError((job / "failure").read_text())
            return {"TrainingJobName": parameters["TrainingJobName"], "TrainingJobStatus": "Completed",
                    "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{job.name}"}

        return wait_for_the_job


@pytest.fixture
def training_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlayedTrainingJobs:
    """What moto's Step Functions lacks for this path: waiting for a training job, and the aws-sdk integration's
    S3 GetObject returning the Body as text (moto hands over the stream)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported import (
        StateTaskServiceUnsupported,
    )

    sdk_call = StateTaskServiceAwsSdk._eval_service_task

    def body_as_text(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
        sdk_call(self, env, *args, **kwargs)
        if hasattr(env.stack[-1].get("Body"), "read"):
            env.stack[-1]["Body"] = env.stack[-1]["Body"].read().decode()

    monkeypatch.setattr(StateTaskServiceAwsSdk, "_eval_service_task", body_as_text)

    played = PlayedTrainingJobs(tmp_path)
    original = StateTaskServiceUnsupported.__init__

    def with_sync(self: Any) -> None:
        original(self)
        self._supported_integration_patterns = {ResourceCondition.WaitForTaskToken, ResourceCondition.Sync}

    monkeypatch.setattr(StateTaskServiceUnsupported, "__init__", with_sync)
    monkeypatch.setattr(StateTaskServiceUnsupported, "_build_sync_resolver",
                        lambda self, env, resource_runtime_part, normalised_parameters, state_credentials:
                        played.resolver(normalised_parameters))
    return played


def test_a_model_on_the_sagemaker_backend_trains_in_a_training_job_and_registers(
        cloud: Cloud, breast_cancer_csv: bytes, training_jobs: PlayedTrainingJobs) -> None:
    cloud.upload(SAGEMAKER_MODEL, "data.csv", breast_cancer_csv)
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    states = entered(cloud, execution["executionArn"])
    assert states[:5] == ["TrainingBackend", "TrainOnSageMaker", "LoadTrainingJobResult", "UseTrainingJobResult",
                          "Evaluate"]
    assert "Train" not in states
    assert [(v.version, v.aliases) for v in cloud.registry.versions(SAGEMAKER_MODEL)] == [(1, ("champion",))]

    # the job: the train function's image, the configured resources, its output next to the candidate
    inp = PipelineInput.model_validate_json(execution["input"])
    [job] = training_jobs.requests
    values = cloud.deployment.training_job_values()
    assert job["AlgorithmSpecification"]["TrainingImage"] == values["TrainingImageUri"]
    assert job["RoleArn"] == values["SageMakerRoleArn"]
    assert job["ResourceConfig"] == {"InstanceCount": 1, "InstanceType": "ml.m5.4xlarge", "VolumeSizeInGB": 50}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    candidate = f"candidates/{SAGEMAKER_MODEL}/{inp.run_id}/"
    assert job["OutputDataConfig"]["S3OutputPath"] == cloud.models.uri(f"{candidate}sagemaker/")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", job["TrainingJobName"]), "SageMaker's name rule"
    assert job["Environment"]["AWS_DEFAULT_REGION"] == cloud.deployment.region
    assert {"Key": "mlops:run_id", "Value": inp.run_id} in job["Tags"]
    # Evaluate got the job's result where the Train task leaves its own
    train = state_output(cloud, execution["executionArn"], "UseTrainingJobResult")["train"]
    assert train == cloud.models.get_json(f"{candidate}train.json")
    assert train["candidate_prefix"] == cloud.models.uri(candidate)


def test_a_failed_training_job_is_recorded_as_a_failed_run(
        cloud: Cloud, breast_cancer_csv: bytes, training_jobs: PlayedTrainingJobs) -> None:
    lines = breast_cancer_csv.decode().splitlines()
    one_class = [lines[0]] + [line for line in lines[1:] if line.endswith(",1")]
    cloud.upload(SAGEMAKER_MODEL, "one-class.csv", ("\n".join(one_class) + "\n").encode())
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "FAILED"
    assert entered(cloud, execution["executionArn"])[1:3] == ["TrainOnSageMaker", "RecordFailure"]
    [run] = cloud.registry.runs(SAGEMAKER_MODEL)
    assert run.outcome == "failed"
    assert "InvalidDataset" in run.reason
    assert run.details["training_backend"] == {"backend": "sagemaker",
                                               "reason": 'sagemaker: training_backend = "sagemaker" in mlops.toml'}
    assert cloud.registry.versions(SAGEMAKER_MODEL) == []


def grown(csv: bytes, copies: int) -> bytes:
    """``copies`` copies of a dataset's rows, each shifted by a little on every feature (so that none is a duplicate
    ingest would quarantine), under one header."""
    header, *rows = csv.decode().strip().splitlines()
    target = header.split(",").index("target")
    out = [header]
    for copy in range(copies):
        for row in rows:
            cells = row.split(",")
            out.append(",".join(cell if i == target else repr(float(cell) + copy * 1e-6)
                                for i, cell in enumerate(cells)))
    return ("\n".join(out) + "\n").encode()


def test_auto_trains_small_data_in_the_function_and_data_above_the_threshold_in_a_training_job(
        cloud: Cloud, breast_cancer_csv: bytes, training_jobs: PlayedTrainingJobs) -> None:
    """One model, no setting changed between its two datasets: the size of each decides where it trains."""
    cloud.upload(AUTO_MODEL, "small.csv", breast_cancer_csv)  # 569 rows x 31 columns: 0.13 MB as float64
    [small] = cloud.wait_for_executions(1)
    assert small["status"] == "SUCCEEDED", small.get("cause")
    inp = PipelineInput.model_validate_json(small["input"])
    assert (inp.training_backend, inp.sagemaker) == ("lambda", None)
    assert inp.training_backend_reason == (
        "auto: 0.1 MB in memory (569 rows x 31 columns as float64) <= sagemaker_above_mb 1")
    assert entered(cloud, small["executionArn"])[:2] == ["TrainingBackend", "Train"]
    assert training_jobs.requests == []

    cloud.upload(AUTO_MODEL, "bigger.csv", grown(breast_cancer_csv, copies=8))  # 4,552 rows: 1.08 MB
    [big] = [e for e in cloud.wait_for_executions(2) if e["executionArn"] != small["executionArn"]]
    assert big["status"] == "SUCCEEDED", big.get("cause")
    inp = PipelineInput.model_validate_json(big["input"])
    assert inp.training_backend == "sagemaker"
    assert inp.training_backend_reason == (
        "auto: 1.1 MB in memory (4,552 rows x 31 columns as float64) > sagemaker_above_mb 1")
    assert inp.sagemaker == TrainingJobResources.of(load_config().model(AUTO_MODEL))
    states = entered(cloud, big["executionArn"])
    assert states[:2] == ["TrainingBackend", "TrainOnSageMaker"]
    assert "Train" not in states
    [job] = training_jobs.requests
    # the whole input, the reason included, is one hyperparameter: SageMaker takes values of at most 2,500 characters
    assert len(job["HyperParameters"][sagemaker_train.PIPELINE_INPUT]) <= 2500

    # and each registered version says where it was trained and why
    versions = cloud.registry.versions(AUTO_MODEL)
    assert [v.version for v in versions] == [1, 2]
    trained = {v.run_id: cloud.models.get_json(v.manifest_uri.split("/", 3)[3])["training_backend"] for v in versions}
    assert trained == {
        PipelineInput.model_validate_json(e["input"]).run_id: {"backend": i.training_backend,
                                                              "reason": i.training_backend_reason}
        for e, i in ((e, PipelineInput.model_validate_json(e["input"])) for e in (small, big))}

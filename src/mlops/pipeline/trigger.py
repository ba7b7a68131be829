"""Starting the training pipeline: what the ``train_trigger`` function runs when a dataset is curated (or a retraining
is asked for), at most once per dataset.

A zip function without the scientific stack runs it, so nothing here imports pandas or scikit-learn, not even inside a
function (the light-functions contract in pyproject.toml checks it).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.core.config import ProjectConfig
from mlops.data.curated import newest_manifest
from mlops.pipeline import backend as backends
from mlops.pipeline.inputs import Dataset, PipelineInput, TrainingJobResources
from mlops.registry.store import Registry


def execution_name(model: str, dataset_sha256: str) -> str:
    # Step Functions names are at most 80 characters and unique per state machine: the same dataset maps to
    # the same name, so a replayed trigger cannot start a second training of it.
    return f"{model}-{dataset_sha256[:32]}"


def request_training(*, model: str, manifest: dict[str, Any] | None, reason: str, config: ProjectConfig,
                     data: ObjectStore, registry: Registry, sfn: Any, state_machine_arn: str) -> dict[str, Any]:
    """Start the pipeline for a curated dataset (the newest one when none is given), at most once per dataset."""
    model_cfg = config.model(model)
    manifest = manifest or newest_manifest(data, model)
    if manifest is None:
        return {"status": "skipped", "model": model, "reason": f"no curated data for {model} yet"}
    run_id = execution_name(model, manifest["dataset_sha256"])
    # before the claim: a read that fails leaves the dataset unclaimed, and the trigger's retry decides again
    backend = backends.for_dataset(model_cfg, manifest, data)
    if not registry.claim_dataset(model, manifest["dataset_sha256"], run_id):
        return {"status": "skipped", "model": model, "run_id": run_id,
                "reason": f"dataset {manifest['dataset_sha256'][:12]} was already sent to training"}
    payload = PipelineInput(
        model=model, run_id=run_id, reason=reason,
        dataset=Dataset(
            uri=manifest["data_uri"],
            manifest_uri=data.uri(f"{layout.CURATED}{model}/{manifest['dataset_sha256']}/manifest.json"),
            sha256=manifest["dataset_sha256"],
            rows=manifest["rows"]["curated"],
            contract_version=manifest["contract_version"],
        ),
        training_backend=backend.backend,
        training_backend_reason=backend.reason,
        sagemaker=TrainingJobResources.of(model_cfg) if backend.backend == "sagemaker" else None,
    )
    try:
        execution = sfn.start_execution(stateMachineArn=state_machine_arn, name=run_id, input=payload.model_dump_json())
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
            return {"status": "skipped", "model": model, "run_id": run_id, "reason": "execution already exists"}
        registry.release_dataset(model, manifest["dataset_sha256"])
        raise
    return {"status": "started", "model": model, "run_id": run_id, "execution_arn": execution["executionArn"],
            "training_backend": backend.backend, "training_backend_reason": backend.reason}

"""A process killed between two writes of a pipeline step, then restarted: the state it left, built exactly,
and the start-up re-drive (``mlops.local.recovery``) run on it. tests/e2e/test_restart.py kills a real
server at points along the pipeline; these two points are too short to be hit there every time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlops import aws
from mlops.aws import platform
from mlops.core.config import load_config
from mlops.local.embedded import EmbeddedCloud
from mlops.local.recovery import Recovery, s3_created_event
from mlops.pipeline.steps import run_artefacts_prefix
from mlops.pipeline.trigger import execution_name
from mlops.registry.versions import CHALLENGER, CHAMPION
from mlops.release.deploy import ServingDeployer

MODEL = "breast-cancer"
INFER = platform.infer_function_name("mlops", MODEL)  # the test project's


def _restart(cloud: EmbeddedCloud, config_file: Path) -> list[str]:
    """The re-drive a restarted local cloud runs; its log lines."""
    lines: list[str] = []
    Recovery(deployment=cloud.deployment, config=load_config(config_file), client=aws.client, log=lines.append).run()
    return lines


def _live(cloud: EmbeddedCloud) -> dict[str, float]:
    alias = cloud.client("lambda").get_alias(FunctionName=INFER, Name="live")
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return {alias["FunctionVersion"]: 1 - sum(weights.values()), **weights}


def test_killed_between_the_challenger_record_and_the_alias_move(cloud: EmbeddedCloud, config_file: Path) -> None:
    """Registered and published, not yet routed: the live alias still sends the canary's share to the previous
    challenger. After the restart it routes as the registry says."""
    registry, deployer = cloud.registry, ServingDeployer(cloud.client("lambda"))
    for n, alias in enumerate((CHAMPION, CHALLENGER, CHALLENGER)):
        version = registry.register(model=MODEL, run_id=f"run-{n}", artefacts_prefix=f"s3://m/run-{n}/",
                                    onnx_sha256="0" * 64, dataset_sha256=f"{n}" * 64,
                                    metrics={"metrics": {"accuracy": 0.95}}, alias=alias)
        if n < 2:
            _restart(cloud, config_file)  # each deployed, as register does
        else:  # the kill: after its function version was recorded, before the alias moved
            registry.set_lambda_version(MODEL, version.version, deployer.publish(INFER, version.version))
    champion, challenger = registry.version(MODEL, 1), registry.version(MODEL, 3)
    assert champion is not None
    assert challenger is not None
    assert challenger.lambda_version not in _live(cloud)

    lines = _restart(cloud, config_file)
    weight = load_config(config_file).model(MODEL).canary_weight
    assert _live(cloud) == {champion.lambda_version: 1 - weight, challenger.lambda_version: weight}
    assert any("not as the registry says" in line for line in lines)
    assert not any("not as the registry says" in line for line in _restart(cloud, config_file))


def test_killed_while_register_copied_the_artefacts(cloud: EmbeddedCloud, config_file: Path,
                                                    breast_cancer_csv: bytes) -> None:
    """Curated, its run cut short after register had copied some artefacts (another training's, here) and
    before the registry record: the re-driven run registers its own artefacts, not the ones it found."""
    s3, bucket = cloud.client("s3"), cloud.deployment.data_bucket
    notifications = s3.get_bucket_notification_configuration(Bucket=bucket)
    notifications.pop("ResponseMetadata", None)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    key = cloud.upload(MODEL, "bc.csv", breast_cancer_csv)
    head = s3.head_object(Bucket=bucket, Key=key)
    cloud.client("lambda").invoke(FunctionName=cloud.deployment.function_arns["ingest"], Payload=json.dumps(
        s3_created_event(bucket, key, head["ContentLength"], head["ETag"], head.get("VersionId"))).encode())
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=notifications)
    run_id = execution_name(MODEL, hashlib.sha256(breast_cancer_csv).hexdigest())
    stale = run_artefacts_prefix(MODEL, run_id)
    cloud.models.put_bytes(stale + "model.onnx", b"the model of a run that never registered")

    assert any("training it again" in line for line in _restart(cloud, config_file))
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED"
    [version] = cloud.registry.versions(MODEL)
    assert hashlib.sha256(cloud.models.get_bytes(stale + "model.onnx")).hexdigest() == version.onnx_sha256

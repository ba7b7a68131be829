"""Re-driving the work a stopped local cloud was in the middle of, after its state was restored.

Step Functions executions and queued S3 events do not survive a restart (``mlops.local.state``); the data
they were working on does. At start-up nothing is running yet, so everything unfinished belonged to the
old process and can be started again. Each step relies on the platform's own idempotency, so a re-drive
of finished work does nothing, and nothing is trained or registered twice:

1. ingest's in-progress idempotency markers are dropped (their owner is gone);
2. every curated dataset without a recorded run outcome loses its claim and goes to train_trigger again
   (the same dataset gives the same run id; ``Registry.register`` is idempotent per run); what the
   interrupted run had copied under its own prefix goes first (nothing points at it yet, and register
   keeps what it finds there, which need not be what the new training makes);
3. every incoming file whose content has no curated dataset goes to ingest again (ingest is idempotent
   per object version, so a file it already rejected is not processed twice);
4. a registered version holding an alias but not yet deployed is deployed; the live alias is pointed where
   the registry's aliases say (a kill between the registry record and the alias move leaves it behind); a
   challenger gets its rollout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.core.config import ProjectConfig
from mlops.local.cloud import Deployment
from mlops.pipeline.steps import deploy, run_artefacts_prefix
from mlops.pipeline.trigger import execution_name
from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION
from mlops.release.deploy import ServingDeployer
from mlops.release.rollout import start_rollout


def s3_created_event(bucket: str, key: str, size: int, etag: str, version_id: str | None) -> dict[str, Any]:
    """The S3 ObjectCreated notification of an existing object (what the bucket sent when it was written)."""
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": etag.strip('"'), "sequencer": "0"}
    if version_id and version_id != "null":
        obj["versionId"] = version_id
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "1970-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:LOCAL"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "REDRIVE", "x-amz-id-2": "REDRIVE"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "redrive",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "LOCAL"}, "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }]}


class Recovery:
    def __init__(self, *, deployment: Deployment, config: ProjectConfig, client: Callable[[str], Any],
                 log: Callable[[str], None]) -> None:
        self.d = deployment
        self.config = config
        self.s3, self.ddb, self.lam = client("s3"), client("dynamodb"), client("lambda")
        self.sfn = client("stepfunctions")
        self.data = ObjectStore(self.s3, deployment.data_bucket)
        self.models = ObjectStore(self.s3, deployment.models_bucket)
        self.registry = Registry(self.ddb, deployment.names["registry"])
        self.log = log

    def run(self) -> None:
        self.drop_stale_idempotency()
        curated = self.redrive_training()
        self.redrive_ingest(curated)
        self.redeploy()

    def _invoke(self, function: str, event: dict[str, Any]) -> None:
        response = self.lam.invoke(FunctionName=self.d.function_arns[function], Payload=json.dumps(event).encode())
        if response.get("FunctionError"):
            self.log(f"[recovery] {function} failed: {response['Payload'].read()[:300]!r}")

    def drop_stale_idempotency(self) -> None:
        table = self.d.names["idempotency"]
        for page in self.ddb.get_paginator("scan").paginate(TableName=table):
            for item in page.get("Items", []):
                if item.get("status", {}).get("S") == "INPROGRESS":
                    self.ddb.delete_item(TableName=table, Key={"id": item["id"]})

    def redrive_training(self) -> set[str]:
        """Curated datasets whose run has no outcome go to train_trigger again; returns every curated sha256."""
        seen: set[str] = set()
        for key in list(self.data.keys("curated/")):
            if not key.endswith("/manifest.json"):
                continue
            manifest = self.data.get_json(key)
            model, sha = manifest["model"], manifest["dataset_sha256"]
            run_id = execution_name(model, sha)
            seen.add(sha)
            if self.registry.run(model, run_id) is not None:
                continue
            self.log(f"[recovery] {model}: dataset {sha[:12]} has no finished run: training it again")
            self.models.delete(list(self.models.keys(run_artefacts_prefix(model, run_id))))
            self.registry.release_dataset(model, sha)
            head = self.s3.head_object(Bucket=self.d.data_bucket, Key=key)
            self._invoke("train_trigger", s3_created_event(self.d.data_bucket, key, head["ContentLength"],
                                                           head["ETag"], head.get("VersionId")))
        return seen

    def redrive_ingest(self, curated: set[str]) -> None:
        for key in list(self.data.keys(layout.INCOMING)):
            found = self.s3.get_object(Bucket=self.d.data_bucket, Key=key)
            if hashlib.sha256(found["Body"].read()).hexdigest() in curated:
                continue
            self.log(f"[recovery] {key} has no curated dataset: ingesting it again")
            self._invoke("ingest", s3_created_event(self.d.data_bucket, key, found["ContentLength"], found["ETag"],
                                                    found.get("VersionId")))

    def redeploy(self) -> None:
        deployer = ServingDeployer(self.lam)
        for model in self.config.models:
            if model.name not in self.d.models:
                continue
            function = self.d.infer_function(model.name)
            for alias in (CHAMPION, CHALLENGER):
                version = self.registry.alias(model.name, alias)
                if version is not None and version.lambda_version is None:
                    self.log(f"[recovery] {model.name} v{version.version} ({alias}) was registered, not deployed: "
                             "deploying it")
                    deploy(version, model, registry=self.registry, deployer=deployer, function=function)
            champion = self.registry.alias(model.name, CHAMPION)
            challenger = self.registry.alias(model.name, CHALLENGER)
            newest = challenger or champion
            if newest is not None:
                before = deployer.split(function)
                _version, split = deploy(newest, model, registry=self.registry, deployer=deployer, function=function)
                if split != before:
                    self.log(f"[recovery] {model.name}: the live alias routed {before.to_dict()}, not as the "
                             f"registry says: now {split.to_dict()}")
            if champion and challenger:
                self.log(f"[recovery] {model.name}: resuming the rollout of challenger v{challenger.version}")
                start_rollout(self.sfn, self.d.rollout_arn, model=model.name, champion=champion.version,
                              challenger=challenger.version)

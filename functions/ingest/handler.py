"""ingest: S3 object-created events under incoming/<model>/ -> curated/ or quarantine/; and the steps of the ingest
state machine (a file above its model's ingest_map_above_mb, validated in parts: mlops.data.ingest_map)."""

from __future__ import annotations

import json
from functools import partial
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from mlops import aws
from mlops.aws import environment
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.aws.storage import ObjectStore
from mlops.core.config import ProjectConfig, load_config
from mlops.core.errors import ConfigError
from mlops.data.ingest import IngestOutcome, ingest_object
from mlops.data.ingest_map import plan, run_step
from mlops.features.offline import materialize_curated
from mlops.features.online import OnlineStore

logger, tracer, metrics = powertools()
# One S3 event redelivered (same object, version and etag) is processed once.
idempotency = IdempotencyConfig(event_key_jmespath="[bucket, key, version_id, etag]", expires_after_seconds=7 * 86400)
persistence = DynamoDBPersistenceLayer(table_name=resources.idempotency_table, boto3_client=aws.client("dynamodb"))


@idempotent_function(data_keyword_argument="obj", config=idempotency, persistence_store=persistence)
def ingest_one(obj: dict[str, Any]) -> dict[str, Any]:
    config, store = load_config(), ObjectStore(aws.client("s3"), obj["bucket"])
    outcome = ingest_object(
        bucket=obj["bucket"], key=obj["key"], version_id=obj["version_id"], etag=obj["etag"], size=obj["size"],
        config=config, store=store, plan_map=partial(plan, start_map=start_map),
        progress=lambda done: logger.info("ingest progress", extra={"key": obj["key"], **done}),
    )
    logger.info("ingested", extra=outcome.to_dict())
    return _finished(outcome, config, store)


def _finished(outcome: IngestOutcome, config: ProjectConfig, store: ObjectStore) -> dict[str, Any]:
    if outcome.status == "curated" and outcome.model and resources.features_table:
        materialized = materialize_curated(config.model(outcome.model), outcome, data=store,
                                           online=OnlineStore(aws.client("dynamodb"), resources.features_table))
        logger.info("features materialised", extra=materialized)
        metrics.add_metric(name="EntitiesMaterialized", unit=MetricUnit.Count, value=materialized.get("entities", 0))
    metrics.add_metric(name=f"Files{outcome.status.capitalize()}", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="RowsCurated", unit=MetricUnit.Count, value=outcome.rows_curated)
    metrics.add_metric(name="RowsQuarantined", unit=MetricUnit.Count, value=outcome.rows_quarantined)
    return outcome.to_dict()


def start_map(name: str, payload: dict[str, Any]) -> str | None:
    """Start the ingest state machine's execution `name` (mlops.data.ingest_map); None when one of that name exists
    already: this object version is being, or was, validated in parts."""
    arn = resources.ingest_state_machine_arn
    if arn is None:
        raise ConfigError(f"{environment.INGEST_STATE_MACHINE_ARN} is not set: the function is not deployed with the "
                          "ingest state machine")
    try:
        execution: str = aws.client("stepfunctions").start_execution(stateMachineArn=arn, name=name,
                                                                     input=json.dumps(payload))["executionArn"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
            return None
        raise
    return execution


def map_step(event: dict[str, Any]) -> dict[str, Any]:
    """A step of the ingest state machine: one part of a large file, the merge, or its abandonment."""
    config, store = load_config(), ObjectStore(aws.client("s3"), event["job"]["bucket"])
    result = run_step(event, store=store, config=config)
    logger.info(f"ingest {event['step']}", extra=result)
    if event["step"] == "part":
        return result
    outcome = IngestOutcome(**result) if "status" in result and "source" in result else None
    if outcome is None:
        return result
    answer = _finished(outcome, config, store)
    # the state's output stays far below Step Functions' 256 KiB: the new categories are in the report and the logs
    answer["new_categories"] = {column: len(values) for column, values in outcome.new_categories.items()}
    return answer


@instrumented(logger, tracer, metrics)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("step") in ("part", "merge", "abandon"):  # the ingest state machine (infra/ingest.asl.json)
        return map_step(event)
    idempotency.register_lambda_context(context)
    results = []
    for record in parse(event=event, model=S3Model).Records:
        obj = record.s3.object
        if obj is None:  # not an object event (e.g. a test event): nothing to ingest
            continue
        results.append(ingest_one(obj={
            "bucket": record.s3.bucket.name,
            "key": unquote_plus(obj.key),  # S3 event keys arrive URL-encoded
            "version_id": obj.versionId,
            "etag": obj.eTag,
            "size": obj.size,
        }))
    return {"results": results}

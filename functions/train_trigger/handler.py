"""train_trigger: a curated manifest (S3 event) or a request {model, reason} -> one pipeline execution."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3Model
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.aws.storage import ObjectStore
from mlops.core.config import load_config
from mlops.pipeline.trigger import request_training
from mlops.registry.store import Registry

logger, tracer, metrics = powertools()


class TrainRequest(BaseModel):
    """Retraining asked for by drift_check, a schedule or a person; trains on the newest curated data."""

    model: str
    reason: str = "requested"


def _start(model: str, manifest: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    store = ObjectStore(aws.client("s3"), resources.data_bucket)
    result = request_training(
        model=model, manifest=manifest, reason=reason, config=load_config(), data=store,
        registry=Registry(aws.client("dynamodb"), resources.registry_table), sfn=aws.client("stepfunctions"),
        state_machine_arn=resources.training_state_machine_arn,
    )
    logger.info("training request", extra=result)
    metrics.add_metric(name=f"Training{result['status'].capitalize()}", unit=MetricUnit.Count, value=1)
    return result


@instrumented(logger, tracer, metrics)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" in event:
        results = []
        for record in parse(event=event, model=S3Model).Records:
            if record.s3.object is None:
                continue
            key = unquote_plus(record.s3.object.key)
            store = ObjectStore(aws.client("s3"), record.s3.bucket.name)
            manifest = store.get_json(key)
            results.append(_start(manifest["model"], manifest, "new_data"))
        return {"results": results}
    request = TrainRequest.model_validate(event)
    return _start(request.model, None, request.reason)

"""drift_check: one window of a model's captured traffic against its champion's baseline.

Events: an EventBridge scheduled event (every model with drift monitoring on, window ending at the event's
time), or ``{"model": "<name>", "window_end": "<ISO time>"?, "window_hours": <float>?}`` from a per-model
rule's input or a person.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.aws.storage import ObjectStore
from mlops.core.config import load_config
from mlops.drift.check import Notifier, check_drift, metric_points
from mlops.registry.store import Registry

logger, tracer, metrics = powertools()
COUNTS = ("DriftedFeatures", "DriftWindowRows", "ConceptFeedback")


class DriftRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    window_end: datetime | None = None
    window_hours: float | None = Field(default=None, gt=0)


def _check(model: str, window_end: datetime, window_hours: float | None) -> dict[str, Any]:
    s3 = aws.client("s3")
    summary = check_drift(
        model, config=load_config(), window_end=window_end, window_hours=window_hours,
        registry=Registry(aws.client("dynamodb"), resources.registry_table),
        models=ObjectStore(s3, resources.models_bucket), captures=ObjectStore(s3, resources.captures_bucket),
        data=ObjectStore(s3, resources.data_bucket),
        notifier=Notifier(aws.client("sns"), resources.notifications_topic_arn),
    )
    # one metric set per (model[, feature]): per-feature scores need their own dimension
    for name, value, dimensions in metric_points(summary):
        unit = MetricUnit.Count if name in COUNTS else MetricUnit.NoUnit
        with single_metric(name=name, unit=unit, value=value, namespace=metrics.namespace) as metric:
            metric.add_dimension(name="service", value=metrics.service or "drift_check")
            metric.add_dimension(name="model", value=model)
            for key, dim in dimensions.items():
                metric.add_dimension(name=key, value=dim)
    metrics.add_metric(name="DriftChecks", unit=MetricUnit.Count, value=1)
    logger.info("drift checked", extra={k: summary.get(k) for k in (
        "model", "status", "window_start", "window_end", "rows", "late_records", "drifted_features", "retrain",
        "report")})
    return summary


@instrumented(logger, tracer, metrics)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "detail-type" in event:
        scheduled = EventBridgeModel.model_validate(event)
        end = scheduled.time.astimezone(UTC)
        models = [m.name for m in load_config().models if m.drift.enabled]
        return {"results": [_check(name, end, None) for name in models]}
    request = DriftRequest.model_validate(event)
    end = (request.window_end or datetime.now(UTC)).astimezone(UTC)
    return _check(request.model, end, request.window_hours)

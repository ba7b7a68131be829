"""train: the pipeline's first step; fits, exports to ONNX and checks parity."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.aws.storage import ObjectStore
from mlops.core.config import load_config
from mlops.pipeline.inputs import PipelineInput
from mlops.pipeline.steps import train_step

logger, tracer, metrics = powertools()


@instrumented(logger, tracer, metrics, step=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = PipelineInput.model_validate(event)
    result = train_step(state, config=load_config(), s3=aws.client("s3"),
                        models=ObjectStore(aws.client("s3"), resources.models_bucket))
    metrics.add_metric(name="FitSeconds", unit=MetricUnit.Seconds, value=result["timings"]["fit_seconds"])
    logger.info("trained", extra={"model": state.model, "run_id": state.run_id, "rows": result["rows"],
                                  "parity_max_abs_diff": result["parity_max_abs_diff"]})
    return result

"""evaluate: candidate and champion measured on the same held-out rows; shapes the gate's verdicts."""

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
from mlops.pipeline.steps import evaluate_step
from mlops.registry.store import Registry

logger, tracer, metrics = powertools()


class EvaluateInput(PipelineInput):
    train: dict[str, Any]




@instrumented(logger, tracer, metrics, step=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = EvaluateInput.model_validate(event)
    result = evaluate_step(state, state.train, config=load_config(),
                           models=ObjectStore(aws.client("s3"), resources.models_bucket),
                           registry=Registry(aws.client("dynamodb"), resources.registry_table))
    passed = result["meets_thresholds"] and result["beats_champion"]
    metrics.add_metric(name="CandidatesPassed" if passed else "CandidatesRejected", unit=MetricUnit.Count, value=1)
    logger.info("evaluated", extra={"model": state.model, "run_id": state.run_id,
                                    "metrics": result["candidate"]["metrics"], "reasons": result["reasons"]})
    return result

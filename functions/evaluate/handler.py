"""evaluate: candidate and champion measured on the same held-out rows; shapes the gate's verdicts."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.config import load_config
from mlops.pipeline import PipelineInput, evaluate_step
from mlops.registry import Registry
from mlops.settings import resources
from mlops.step_errors import translate_step_errors
from mlops.storage import ObjectStore

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class EvaluateInput(PipelineInput):
    train: dict[str, Any]




@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@translate_step_errors
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

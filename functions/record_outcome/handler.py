"""record_outcome: a rejected candidate or a failed run, recorded in the registry for people to read."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.pipeline.inputs import PipelineInput
from mlops.pipeline.outcomes import record_outcome
from mlops.registry.store import Registry

logger, tracer, metrics = powertools()


class OutcomeInput(PipelineInput):
    outcome: Literal["rejected", "failed"]
    evaluation: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@instrumented(logger, tracer, metrics, step=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = OutcomeInput.model_validate(event)
    result = record_outcome(state, outcome=state.outcome, evaluation=state.evaluation, error=state.error,
                            registry=Registry(aws.client("dynamodb"), resources.registry_table))
    metrics.add_metric(name=f"Runs{state.outcome.capitalize()}", unit=MetricUnit.Count, value=1)
    logger.warning("run not registered", extra={"model": state.model, "outcome": result})
    return result

"""register: a candidate that passed the gate becomes a registered version with its lineage."""

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
from mlops.pipeline.steps import register_step
from mlops.registry.store import Registry
from mlops.release.deploy import ServingDeployer
from mlops.release.rollout import start_rollout

logger, tracer, metrics = powertools()


class RegisterInput(PipelineInput):
    train: dict[str, Any]
    evaluation: dict[str, Any]
    execution_arn: str | None = None


@instrumented(logger, tracer, metrics, step=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = RegisterInput.model_validate(event)
    rollout_arn = resources.rollout_state_machine_arn

    def rollout(champion: int, challenger: int) -> str:
        assert rollout_arn is not None
        return start_rollout(aws.client("stepfunctions"), rollout_arn, model=state.model, champion=champion,
                             challenger=challenger)

    result = register_step(state, state.train, state.evaluation, config=load_config(),
                           models=ObjectStore(aws.client("s3"), resources.models_bucket),
                           registry=Registry(aws.client("dynamodb"), resources.registry_table),
                           execution_arn=state.execution_arn,
                           deployer=ServingDeployer(aws.client("lambda"), api_source_arn=resources.api_source_arn),
                           infer_function=resources.infer_functions.get(state.model),
                           start_rollout=rollout if rollout_arn else None)
    metrics.add_metric(name="ModelsRegistered", unit=MetricUnit.Count, value=1)
    logger.info("registered", extra={"model": state.model, "registration": result})
    return result

"""rollout: one look at the canary of a model, called by the rollout state machine after every wait."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.aws.storage import ObjectStore
from mlops.core.config import load_config
from mlops.registry.store import Registry
from mlops.release.deploy import ServingDeployer
from mlops.release.guardrails import ServingMetrics
from mlops.release.lifecycle import Lifecycle
from mlops.release.rollout import (
    MAX_LOOKS_VARIABLE,
    RolloutExecutions,
    RolloutState,
    analyze,
    looks_per_execution,
    rollout_name,
)

logger, tracer, metrics = powertools()


@instrumented(logger, tracer, metrics, step=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # the state machine passes {"state": <payload>, "state_machine": <its ARN>}; a person may pass the payload alone
    state = RolloutState.model_validate(event["state"] if "state_machine" in event else event)
    registry = Registry(aws.client("dynamodb"), resources.registry_table)
    lifecycle = Lifecycle(registry=registry, deployer=ServingDeployer(aws.client("lambda")),
                          function=resources.infer_functions[state.model])
    model_cfg = load_config().model(state.model)
    result = analyze(state, model_cfg=model_cfg, registry=registry, lifecycle=lifecycle,
                     captures=ObjectStore(aws.client("s3"), resources.captures_bucket),
                     # one owner for every execution of the rollout: a hand-over does not let go of the model
                     lock_owner=rollout_name(state.model, state.challenger),
                     health=ServingMetrics(aws.client("cloudwatch"), os.environ["POWERTOOLS_METRICS_NAMESPACE"]),
                     executions=(RolloutExecutions(aws.client("stepfunctions"), event["state_machine"])
                                 if "state_machine" in event else None),
                     max_looks=looks_per_execution(model_cfg.rollout_interval_seconds,
                                                   os.environ.get(MAX_LOOKS_VARIABLE)))
    metrics.add_metric(name=f"Rollout{result['action'].capitalize()}", unit=MetricUnit.Count, value=1)
    logger.info("rollout look", extra={"model": state.model, "look": result["history"][-1] if result.get("history")
                                       else None, "action": result["action"],
                                       "continued_as": result.get("continued_as")})
    return result

"""Powertools wiring shared by every handler: one logger, tracer and metrics set per function, and one
decorator that applies them in the same order everywhere (and, for pipeline steps, the error translation
that Step Functions Retry/Catch rely on)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer

from mlops.aws.step_errors import translate_step_errors

F = TypeVar("F", bound=Callable[..., Any])

# A read (GET /models/<name>, a batch run's status) or a step with nothing to count has no metric to publish, and
# that is fine: Powertools would warn on stderr at every such invocation.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


def powertools() -> tuple[Logger, Tracer, Metrics]:
    """Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE."""
    return Logger(), Tracer(), Metrics()


def instrumented(logger: Logger, tracer: Tracer, metrics: Metrics, *, step: bool = False) -> Callable[[F], F]:
    def decorate(handler: F) -> F:
        inner = translate_step_errors(handler) if step else handler
        wrapped = logger.inject_lambda_context(tracer.capture_lambda_handler(metrics.log_metrics(inner)))
        return wrapped  # type: ignore[return-value]

    return decorate

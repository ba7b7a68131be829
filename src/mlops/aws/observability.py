"""Powertools wiring shared by every handler: one logger, tracer and metrics set per function, and one
decorator that applies them in the same order everywhere (and, for pipeline steps, the error translation
that Step Functions Retry/Catch rely on). For a hot path whose own work is a fraction of a millisecond (infer's
predictions), ``lean`` and ``MetricLine`` do the same for less."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, SchemaValidationError
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

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


def lean(logger: Logger, tracer: Tracer) -> Callable[[F], F]:
    """``instrumented`` for a handler that writes its metrics itself (``MetricLine``): the same logger context, and the
    tracer's subsegment when tracing is on (when it is off, Powertools' tracer only makes dummy segments)."""

    def decorate(handler: F) -> F:
        traced = handler if tracer.disabled else tracer.capture_lambda_handler(handler)
        return logger.inject_lambda_context(traced)  # type: ignore[return-value]

    return decorate


class MetricLine:
    """One invocation's metrics as one line of Embedded Metric Format: the document ``Metrics.log_metrics`` prints for
    the same metrics (its namespace, its ``service`` dimension, each metric a list of one value; nothing while
    Powertools' metrics are disabled), without what Powertools repeats per metric and per call (checking units,
    building and serializing the document), which costs as much as a small model's prediction. The line's fixed
    part, everything but the timestamp and the values, is rendered once.

    ``MetricLine(metrics, {"model": "m"}, Requests=MetricUnit.Count, ...)``, then ``write(1, ...)`` with one finite
    number per metric, in the order they were named."""

    def __init__(self, metrics: Metrics, dimensions: Mapping[str, str], **units: MetricUnit) -> None:
        self.disabled = is_metrics_disabled()
        self.namespace: str | None = metrics.namespace
        named = {**dimensions, **({"service": metrics.service} if metrics.service else {})}
        directive = {"Namespace": metrics.namespace, "Dimensions": [list(named)],
                     "Metrics": [{"Name": name, "Unit": unit.value} for name, unit in units.items()]}

        def text(value: Any) -> str:
            return json.dumps(value, separators=(",", ":")).replace("%", "%%")

        # %d: the timestamp (epoch milliseconds); %r: each value (a finite float's repr is its JSON)
        self._template = ('{"_aws":{"Timestamp":%d,"CloudWatchMetrics":[' + text(directive) + "]},"
                          + text(named)[1:-1] + "".join(f",{text(name)}:[%r]" for name in units) + "}")

    def write(self, *values: float) -> None:
        if self.disabled:
            return
        if self.namespace is None:  # as Powertools refuses to flush
            raise SchemaValidationError("Must contain a metric namespace.")
        print(self._template % (int(time.time() * 1000), *map(float, values)))

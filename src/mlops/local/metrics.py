"""CloudWatch's side of Lambda metrics, which moto lacks.

On AWS a handler's metrics are lines of Embedded Metric Format (EMF) JSON on stdout, which CloudWatch Logs
turns into metrics; moto runs no such extraction, and its statistics know no percentiles (a ``p95`` query
answers nothing). :class:`EmfBridge` is the handlers' stdout in the local cloud: it passes every line on
and puts each EMF document's metrics into CloudWatch; :func:`percentiles_in_moto` teaches moto's statistics
``pNN`` so the rollout's latency guardrail reads the same query on both.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO


def emf_metric_data(document: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(namespace, PutMetricData entries) for one EMF document; [] for any other log line."""
    aws = document.get("_aws")
    if not isinstance(aws, dict):
        return []
    timestamp = datetime.fromtimestamp(float(aws.get("Timestamp", 0)) / 1000, UTC)
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for directive in aws.get("CloudWatchMetrics", []):
        entries = []
        for dimension_set in directive.get("Dimensions", [[]]) or [[]]:
            dimensions = [{"Name": d, "Value": str(document[d])} for d in dimension_set if d in document]
            for metric in directive.get("Metrics", []):
                value = document.get(metric["Name"])
                values = value if isinstance(value, list) else [value]
                numbers = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
                if numbers:
                    entries.append({"MetricName": metric["Name"], "Values": numbers, "Timestamp": timestamp,
                                    "Unit": metric.get("Unit", "None"), "Dimensions": dimensions})
        if entries:
            out.append((directive["Namespace"], entries))
    return out


Publish = Callable[[str, list[dict[str, Any]]], None]  # (namespace, PutMetricData entries)


def moto_publisher(region: str) -> Publish:
    """Straight into moto's CloudWatch backend of this process: a PutMetricData round trip through botocore
    per printed line costs several times the prediction it measures."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    def publish(namespace: str, entries: list[dict[str, Any]]) -> None:
        # moto keeps naive UTC timestamps (what its API parser hands it) and compares queries against them
        naive = [{**e, "Timestamp": e["Timestamp"].astimezone(UTC).replace(tzinfo=None)} for e in entries]
        cloudwatch_backends[DEFAULT_ACCOUNT_ID][region].put_metric_data(namespace, naive)

    return publish


class EmfBridge(io.TextIOBase):
    """A text stream that forwards everything to ``target`` (stderr when None) and publishes the EMF lines."""

    def __init__(self, publish: Publish, target: TextIO | None = None) -> None:
        self._publish_metrics = publish
        self.target = target
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        (self.target or sys.stderr).write(text)
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            if line.startswith("{") and '"_aws"' in line:
                self._publish(line)
        return len(text)

    def flush(self) -> None:
        (self.target or sys.stderr).flush()

    def _publish(self, line: str) -> None:
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            return
        for namespace, entries in emf_metric_data(document):
            for start in range(0, len(entries), 20):  # PutMetricData's limit per call
                self._publish_metrics(namespace, entries[start:start + 20])


def _percentile(values: list[float], stat: str) -> float | None:
    try:
        q = float(stat[1:]) / 100
    except ValueError:
        return None
    if not values or not 0 <= q <= 1:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank, as CloudWatch


@contextlib.contextmanager
def percentiles_in_moto() -> Iterator[None]:
    from moto.cloudwatch.models import Statistics

    original = Statistics.get_statistics_for_type

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        if stat.startswith("p") and stat[1:2].isdigit():
            return _percentile(list(self.metric_single_values_list), stat)
        return original(self, stat)

    Statistics.get_statistics_for_type = get_statistics_for_type  # type: ignore[method-assign]
    try:
        yield
    finally:
        Statistics.get_statistics_for_type = original  # type: ignore[method-assign]

"""CloudWatch Logs' side of Lambda's output, which moto lacks: metrics and subscription filters.

On AWS a handler's stdout goes to its log group. Its metrics are lines of Embedded Metric Format (EMF) JSON, which
CloudWatch Logs turns into metrics; moto runs no such extraction, and its statistics know no percentiles (a ``p95``
query answers nothing). Its capture lines (mlops.serving.capture) reach the capture stream through the log group's
subscription filter; moto delivers every event of a log group to its subscriptions, matched or not, and only when
``PutLogEvents`` is called. :class:`EmfBridge` is the handlers' stdout in the local cloud: it passes every line on,
puts each EMF document's metrics into CloudWatch, and hands each line to :class:`LogSubscriptions`, which delivers the
lines a subscription's filter pattern matches to its Firehose stream, asynchronously and in batches, as CloudWatch
Logs does. :func:`percentiles_in_moto` teaches moto's statistics ``pNN`` so the rollout's latency guardrail reads the
same query on both.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


# A filter pattern of CloudWatch Logs' JSON syntax comparing one field with a number or a string: the only kind the
# platform subscribes with (mlops.serving.capture.FILTER_PATTERN), and the only kind evaluated here
_JSON_EQUALS = re.compile(r'^\{\s*\$\.([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(-?\d+(?:\.\d+)?|"[^"*]*")\s*\}$')


def json_filter(pattern: str) -> Callable[[str], bool]:
    """Whether a log event's message matches ``pattern``, as CloudWatch Logs decides: ``{ $.field = 1 }`` matches a
    JSON object whose ``field`` is the number 1, ``{ $.field = "text" }`` one whose ``field`` is that string; a
    message that is not a JSON object matches neither."""
    found = _JSON_EQUALS.match(pattern.strip())
    if found is None:
        raise ValueError(f"the local cloud evaluates subscription filter patterns of the form {{ $.field = value }} "
                         f"only (a number, or a string without wildcards), not {pattern!r}")
    field, text = found.groups()
    wanted: Any = text[1:-1] if text.startswith('"') else float(text)

    def matches(message: str) -> bool:
        if not message.startswith("{"):
            return False
        try:
            document = json.loads(message)
        except ValueError:
            return False
        value = document.get(field) if isinstance(document, dict) else None
        if isinstance(wanted, str):
            return value == wanted
        return isinstance(value, int | float) and not isinstance(value, bool) and float(value) == wanted

    return matches


@dataclass(frozen=True)
class _Subscription:
    name: str
    destination_arn: str
    matches: Callable[[str], bool]


class LogSubscriptions:
    """The subscription filters of the log groups in moto's CloudWatch Logs, played for the handlers' output: a line a
    filter matches is delivered to the filter's Firehose stream, gzipped in a ``DATA_MESSAGE`` as CloudWatch Logs
    sends it. Delivery runs on a thread of its own, every ``interval_s``: a slow or failing stream never slows the
    function that logged, as on AWS. ``flush`` delivers what waits, now."""

    def __init__(self, region: str, *, interval_s: float = 0.2, log: Callable[[str], None] | None = None) -> None:
        self.region = region
        self.interval_s = interval_s
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._pending: list[tuple[str, str, str, int]] = []  # (log group, log stream, message, timestamp in ms)
        self._lock = threading.Lock()
        self._delivering = threading.Lock()  # one delivery at a time: batches reach the stream in order
        self._patterns: dict[str, Callable[[str], bool]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-subscriptions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(10)
        self.flush()

    def _group(self, log_group: str) -> Any:
        """The log group as moto's CloudWatch Logs holds it now, or None."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.logs.models import logs_backends

        return logs_backends[DEFAULT_ACCOUNT_ID][self.region].groups.get(log_group)

    def subscriptions(self, log_group: str) -> list[_Subscription]:
        """The group's subscription filters, as moto's CloudWatch Logs holds them now."""
        group = self._group(log_group)
        if group is None:
            return []
        out = []
        for found in list(group.subscription_filters.values()):
            if found.filter_pattern not in self._patterns:
                self._patterns[found.filter_pattern] = json_filter(found.filter_pattern) if found.filter_pattern \
                    else (lambda _message: True)  # an empty pattern matches every event, as on AWS
            out.append(_Subscription(found.name, found.destination_arn, self._patterns[found.filter_pattern]))
        return out

    def subscribed(self, log_group: str) -> bool:
        group = self._group(log_group)
        return bool(group is not None and group.subscription_filters)

    def put(self, log_group: str, messages: list[str], version: str = "$LATEST") -> None:
        """Log events of ``log_group`` (of a function's ``version``): those a subscription matches wait for the next
        delivery, which evaluates the filters off the writer's thread."""
        if not messages or not self.subscribed(log_group):
            return
        now = datetime.now(UTC)
        stream, timestamp = f"{now:%Y/%m/%d}/[{version}]local", int(now.timestamp() * 1000)
        with self._lock:
            self._pending.extend((log_group, stream, message, timestamp) for message in messages)

    def flush(self) -> None:
        with self._delivering:
            with self._lock:
                pending, self._pending = self._pending, []
            if pending:
                self._deliver(pending)

    def _deliver(self, pending: list[tuple[str, str, str, int]]) -> None:
        from moto.firehose.models import firehose_backends

        batches: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
        for log_group, log_stream, message, timestamp in pending:
            for subscription in self.subscriptions(log_group):
                if subscription.matches(message):
                    event = {"id": uuid.uuid4().hex, "timestamp": timestamp, "message": message}
                    key = (log_group, log_stream, subscription.name, subscription.destination_arn)
                    batches.setdefault(key, []).append(event)
        for (log_group, log_stream, name, arn), events in batches.items():
            service, region, account = arn.split(":")[2:5]
            if service != "firehose":  # the platform subscribes its capture stream only
                self.log(f"[logs] subscription {name} of {log_group}: {service} destinations are not played locally")
                continue
            try:
                firehose_backends[account][region].send_log_event(arn, name, log_group, log_stream, events)
            except Exception as exc:  # a failed delivery is said and dropped; it would fail again
                self.log(f"[logs] delivery of {len(events)} event(s) from {log_group} to {arn} failed: {exc!r}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()


class EmfBridge(io.TextIOBase):
    """A text stream that forwards everything to ``target`` (stderr when None), publishes the EMF lines, and hands
    every line to ``subscriptions`` as a log event of the writing function's log group."""

    def __init__(self, publish: Publish, target: TextIO | None = None,
                 subscriptions: LogSubscriptions | None = None) -> None:
        self._publish_metrics = publish
        self.target = target
        self.subscriptions = subscriptions
        self._partial: dict[str, str] = {}  # per log group: the start of a line not ended yet
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        (self.target or sys.stderr).write(text)
        # the runtime runs a handler with its function's environment on this thread (mlops.local.lambda_runtime)
        function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        log_group = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME") or f"/aws/lambda/{function}"
        with self._lock:
            lines = (self._partial.pop(log_group, "") + text).split("\n")
            if lines[-1]:
                self._partial[log_group] = lines[-1]
            lines.pop()
        for line in lines:
            if line.startswith("{") and '"_aws"' in line:
                self._publish(line)
        if self.subscriptions is not None and function and lines:
            self.subscriptions.put(log_group, [line for line in lines if line],
                                   os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"))
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

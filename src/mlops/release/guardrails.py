"""What the rollout's guardrails read: each model version's requests, server errors and p95 latency, from
the CloudWatch metrics the infer function publishes (``Requests``, ``ServerErrors``, ``Latency`` with the
dimensions service=infer, model, model_version; see functions/infer/handler.py), and how a rollout with no feedback
labels to test on (a clustering) decides on them alone (``guardrail_only_decision``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

INFER_SERVICE = "infer"


@dataclass(frozen=True)
class ArmHealth:
    requests: float
    server_errors: float
    p95_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


class ServingMetrics:
    def __init__(self, cloudwatch: Any, namespace: str) -> None:
        self.cloudwatch = cloudwatch
        self.namespace = namespace

    def _query(self, qid: str, model: str, version: int, metric: str, stat: str, period: int) -> dict[str, Any]:
        dimensions = [{"Name": "service", "Value": INFER_SERVICE}, {"Name": "model", "Value": model},
                      {"Name": "model_version", "Value": str(version)}]
        return {"Id": qid, "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": self.namespace, "MetricName": metric, "Dimensions": dimensions},
            "Period": period, "Stat": stat}}

    def health(self, model: str, versions: tuple[int, ...], since: datetime, until: datetime) -> dict[int, ArmHealth]:
        """Each version's totals over [since, until): one period spans the window, so a p95 is the window's."""
        seconds = max(60, math.ceil((until - since).total_seconds() / 60) * 60)
        queries = []
        for v in versions:
            queries += [self._query(f"r{v}", model, v, "Requests", "Sum", seconds),
                        self._query(f"e{v}", model, v, "ServerErrors", "Sum", seconds),
                        self._query(f"p{v}", model, v, "Latency", "p95", seconds)]
        values: dict[str, list[float]] = {}
        # EndTime a minute ahead: CloudWatch (and moto) cut the end to whole seconds or periods, and the
        # newest requests are the ones a guardrail must not miss
        kwargs: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": since,
                                  "EndTime": until + timedelta(minutes=1)}
        while True:
            page = self.cloudwatch.get_metric_data(**kwargs)
            for result in page["MetricDataResults"]:
                values.setdefault(result["Id"], []).extend(v for v in result.get("Values", []) if v is not None)
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return {v: ArmHealth(requests=sum(values.get(f"r{v}", [])), server_errors=sum(values.get(f"e{v}", [])),
                             # the window may straddle two periods: the worse of the two is the safe reading
                             p95_ms=max(values[f"p{v}"]) if values.get(f"p{v}") else None)
                for v in versions}


# the `metric` of a guardrail-only rollout's looks (a model without labels: a clustering), in the registry and in
# `mlops ab status`
GUARDRAILS_ONLY = "guardrails"


def guardrail_only_decision(health: dict[str, Any], *, elapsed_hours: float, min_requests: int, min_hours: float,
                            max_hours: float) -> tuple[str, str]:
    """(action, reason) of one look of a rollout with no feedback labels to test on (a clustering: its predictions are
    cluster ids, which no outcome confirms), from ``health`` ({"champion": ArmHealth.to_dict(), "challenger": ...},
    or empty without serving metrics); a breached guardrail has rolled the challenger back before this is asked.
    Promote once the challenger served ``min_requests`` requests and ``min_hours`` passed within the guardrails; keep
    the champion after ``max_hours`` without that much traffic; otherwise wait. The reason says so, plainly."""
    plain = "guardrail-only rollout (a clustering has no feedback labels: no quality test, only error rate and p95)"
    champion, challenger = health.get("champion"), health.get("challenger")
    if challenger is None:
        served = "no serving metrics to read"
    else:
        served = f"challenger served {challenger['requests']:.0f} requests (at least {min_requests} needed)"
        if champion is not None:
            served += (f", error rate {_rate(challenger['error_rate'])} vs champion {_rate(champion['error_rate'])}, "
                       f"p95 {_ms(challenger['p95_ms'])} vs champion {_ms(champion['p95_ms'])}")
    enough = challenger is not None and challenger["requests"] >= min_requests
    if enough and elapsed_hours >= min_hours:
        return "promote", f"{plain}: {served} over {elapsed_hours:.2f} h, within the guardrails"
    if elapsed_hours > max_hours:
        return "stop_no_difference", (f"{plain}: {served} after {elapsed_hours:.1f} h (maximum duration), not enough "
                                      "to judge the guardrails; keep the champion")
    waiting = [] if enough else [f"{min_requests} requests"]
    waiting += [] if elapsed_hours >= min_hours else [f"{min_hours:g} h (now {elapsed_hours:.2f} h)"]
    return "continue", f"{plain}: {served}; waiting for {' and '.join(waiting)}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"

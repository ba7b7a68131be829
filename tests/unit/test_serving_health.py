"""The guardrails' data path on moto: EMF lines printed by a handler become CloudWatch metrics (the local
cloud's stand-in for CloudWatch Logs), and each model version's requests, errors and p95 come back."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mlops.local.metrics import EmfBridge, emf_metric_data, percentiles_in_moto
from mlops.release.guardrails import ServingMetrics


def _emf(version: int, latency_ms: float, error: bool) -> str:
    return json.dumps({
        "_aws": {"Timestamp": int(datetime.now(UTC).timestamp() * 1000), "CloudWatchMetrics": [{
            "Namespace": "mlops", "Dimensions": [["service", "model", "model_version"]],
            "Metrics": [{"Name": "Latency", "Unit": "Milliseconds"}, {"Name": "Requests", "Unit": "Count"},
                        {"Name": "ServerErrors", "Unit": "Count"}]}]},
        "service": "infer", "model": "m", "model_version": str(version),
        "Latency": latency_ms, "Requests": 1, "ServerErrors": int(error)})


@pytest.fixture
def cloudwatch() -> Any:
    with mock_aws(), percentiles_in_moto():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def test_each_version_reads_back_its_requests_errors_and_p95(cloudwatch: Any) -> None:
    started = datetime.now(UTC) - timedelta(seconds=5)
    shown = io.StringIO()
    bridge = EmfBridge(lambda ns, entries: cloudwatch.put_metric_data(Namespace=ns, MetricData=entries), shown)
    for i in range(100):
        print(_emf(1, latency_ms=1.0 + i / 100, error=False), file=bridge)  # p95 = 1.94
        print(_emf(2, latency_ms=10.0 + i, error=i % 10 == 0), file=bridge)  # p95 = 104, 10% errors
    print("a plain log line", file=bridge)
    health = ServingMetrics(cloudwatch, "mlops").health("m", (1, 2), started, datetime.now(UTC) + timedelta(seconds=1))
    assert health[1].requests == 100
    assert health[1].error_rate == 0
    assert health[1].p95_ms == pytest.approx(1.94)
    assert health[2].requests == 100
    assert health[2].error_rate == pytest.approx(0.1)
    assert health[2].p95_ms == pytest.approx(104)
    assert "a plain log line" in shown.getvalue()  # the bridge passes everything on


def test_a_version_without_traffic_reads_as_unknown_not_as_healthy(cloudwatch: Any) -> None:
    now = datetime.now(UTC)
    health = ServingMetrics(cloudwatch, "mlops").health("m", (3,), now - timedelta(minutes=5), now)
    assert health[3].requests == 0
    assert health[3].error_rate is None
    assert health[3].p95_ms is None


def test_only_emf_documents_become_metrics() -> None:
    assert emf_metric_data({"message": "hello"}) == []
    [(namespace, entries)] = emf_metric_data(json.loads(_emf(1, 2.5, True)))
    assert namespace == "mlops"
    assert {e["MetricName"]: e["Values"] for e in entries} == {"Latency": [2.5], "Requests": [1.0],
                                                               "ServerErrors": [1.0]}
    assert entries[0]["Dimensions"] == [{"Name": "service", "Value": "infer"}, {"Name": "model", "Value": "m"},
                                        {"Name": "model_version", "Value": "1"}]


def test_a_slow_challenger_breaches_the_latency_guardrail(cloudwatch: Any) -> None:
    from mlops.core.config import ModelConfig
    from mlops.release.rollout import RolloutState, _guardrails

    started = datetime.now(UTC) - timedelta(seconds=5)
    bridge = EmfBridge(lambda ns, entries: cloudwatch.put_metric_data(Namespace=ns, MetricData=entries), io.StringIO())
    for i in range(250):
        print(_emf(1, latency_ms=2.0, error=False), file=bridge)
        print(_emf(2, latency_ms=2.0 if i < 200 else 9.0, error=False), file=bridge)  # the tail is slow
    state = RolloutState(model="m", champion=1, challenger=2, started_at=started.isoformat())
    cfg = ModelConfig(name="mm", target="y", guardrail_min_requests=200, guardrail_max_p95_ratio=1.5)
    breach, numbers = _guardrails(state, cfg, ServingMetrics(cloudwatch, "mlops"), datetime.now(UTC))
    assert breach is not None
    assert "p95 latency 9.0 ms vs champion 2.0 ms" in breach
    assert numbers["challenger"]["requests"] == 250
    # below the minimum number of requests nothing is judged, however slow
    strict = cfg.model_copy(update={"guardrail_min_requests": 1000})
    assert _guardrails(state, strict, ServingMetrics(cloudwatch, "mlops"), datetime.now(UTC))[0] is None


def test_the_local_clouds_direct_publisher_reads_back_like_the_api(cloudwatch: Any) -> None:
    from mlops.local.metrics import moto_publisher

    started = datetime.now(UTC) - timedelta(seconds=5)
    bridge = EmfBridge(moto_publisher("us-east-1"), io.StringIO())
    for _ in range(10):
        print(_emf(4, latency_ms=3.0, error=True), file=bridge)
    health = ServingMetrics(cloudwatch, "mlops").health("m", (4,), started, datetime.now(UTC))
    assert (health[4].requests, health[4].error_rate, health[4].p95_ms) == (10, 1.0, 3.0)

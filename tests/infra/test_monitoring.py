"""Monitoring in the synthesized template: per declared model a dashboard and alarms on its API route, its infer
function and drift_check's metrics; platform alarms on failed runs and on failure queues; every alarm notifies the
notifications topic, whose key lets CloudWatch publish."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.app import CONFIG_CONTEXT, FALLBACK_ACCOUNT, STAGE_CONTEXT, STAGES, cdk_json_context
from infra.constructs.monitoring import DRIFT_SERVICE
from infra.constructs.serving import API_STAGE
from mlops.aws import platform
from mlops.core.config import load_config

CONFIG = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
STAGE = cdk_json_context()[STAGE_CONTEXT]
THRESHOLDS = STAGES[STAGE].alarms
NAMESPACE = f"{CONFIG.project}-{STAGE}"  # the project in its stage, as the functions publish
MODEL_ALARMS = {"latency_p95", "error_rate", "errors", "throttles", "duration", "memory"}
Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


def alarm(synthesized: Synthesized, model: str, kind: str) -> dict[str, Any]:
    props: dict[str, Any] = synthesized.resources[synthesized.logical_id(
        synthesized.stack.monitoring.alarms[model][kind])]["Properties"]
    return props


def dimensions(props: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}


def test_every_model_has_its_alarms(synthesized: Synthesized) -> None:
    alarms = synthesized.stack.monitoring.alarms
    assert set(alarms) == {m.name for m in CONFIG.models} | {"platform"}
    for model in CONFIG.models:
        expected = set(MODEL_ALARMS)
        if model.drift.enabled:
            expected |= {"drift"} | ({"concept"} if "accuracy" in model.thresholds else set())
        assert set(alarms[model.name]) == expected, model.name


def test_every_alarm_notifies_the_topic(synthesized: Synthesized) -> None:
    topic = {"Ref": synthesized.logical_id(synthesized.stack.storage.topic)}
    found = synthesized.of_type("AWS::CloudWatch::Alarm")
    assert len(found) == sum(len(a) for a in synthesized.stack.monitoring.alarms.values())
    for lid, resource in found.items():
        props = resource["Properties"]
        assert props["AlarmActions"] == [topic], lid
        assert props["OKActions"] == [topic], lid
        assert props["TreatMissingData"] == "notBreaching", lid
    # the topic is encrypted: CloudWatch may use its key, for this account's alarms only
    [key] = synthesized.of_type("AWS::KMS::Key").values()
    statements = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                  if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert [sorted(s["Action"]) for s in statements] == [["kms:Decrypt", "kms:GenerateDataKey"]]
    assert statements[0]["Condition"]["StringEquals"] == {"aws:SourceAccount": FALLBACK_ACCOUNT}
    assert synthesized.render(statements[0]["Condition"]["ArnLike"]["aws:SourceArn"]) == (
        f"arn:aws:cloudwatch:us-east-1:{FALLBACK_ACCOUNT}:alarm:*")
    # the topic's policy replaces SNS's default one: CloudWatch may publish, for this account's alarms only
    [policy] = [p["Properties"] for p in synthesized.of_type("AWS::SNS::TopicPolicy").values()
                if topic in p["Properties"]["Topics"]]
    [allow] = [s for s in policy["PolicyDocument"]["Statement"]
               if s["Effect"] == "Allow" and s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert allow["Action"] == "sns:Publish"
    assert allow["Resource"] == topic
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": FALLBACK_ACCOUNT}
    assert ":alarm:*" in synthesized.render(allow["Condition"]["ArnLike"]["aws:SourceArn"])


def test_model_alarms_watch_that_models_route_and_function(synthesized: Synthesized) -> None:
    [api] = synthesized.of_type("AWS::ApiGateway::RestApi").values()
    for model in CONFIG.models:
        function_lid, function = synthesized.serving()[model.name]
        latency = alarm(synthesized, model.name, "latency_p95")
        assert latency["MetricName"] == "Latency"
        assert latency["ExtendedStatistic"] == "p95"
        assert latency["Threshold"] == THRESHOLDS.latency_p95_ms
        assert latency["EvaluationPeriods"] == THRESHOLDS.evaluation_periods
        stage = dimensions(latency)["Stage"]["Ref"]
        assert synthesized.resources[stage]["Properties"]["StageName"] == API_STAGE
        assert dimensions(latency) == {"ApiName": api["Properties"]["Name"], "Stage": {"Ref": stage},
                                       "Method": "POST", "Resource": f"/models/{model.name}/predict"}
        rate = alarm(synthesized, model.name, "error_rate")
        assert {q["Id"] for q in rate["Metrics"]} >= {"requests", "errors"}
        assert rate["Threshold"] == THRESHOLDS.error_rate
        for kind, metric in (("errors", "Errors"), ("throttles", "Throttles"), ("duration", "Duration")):
            props = alarm(synthesized, model.name, kind)
            assert props["MetricName"] == metric
            assert props["Namespace"] == "AWS/Lambda"
            assert dimensions(props) == {"FunctionName": {"Ref": function_lid}}, kind
        timeout_ms = function["Properties"]["Timeout"] * 1000
        duration = alarm(synthesized, model.name, "duration")
        assert duration["Threshold"] == timeout_ms * THRESHOLDS.duration_share_of_timeout


def test_memory_is_read_from_the_report_line(synthesized: Synthesized) -> None:
    filters = synthesized.of_type("AWS::Logs::MetricFilter")
    for model in CONFIG.models:
        function = synthesized.stack.serving.functions[model.name]
        memory = alarm(synthesized, model.name, "memory")
        [props] = [f["Properties"] for f in filters.values()
                   if f["Properties"]["LogGroupName"] == {"Ref": synthesized.logical_id(function.log_group)}]
        [transformation] = props["MetricTransformations"]
        assert (transformation["MetricNamespace"], transformation["MetricName"]) == (memory["Namespace"],
                                                                                   memory["MetricName"])
        assert transformation["MetricValue"] == "$max_memory_used"
        assert props["FilterPattern"].startswith('[report="REPORT"')
        assert memory["Threshold"] == function.spec.memory_mb * THRESHOLDS.memory_share


def test_drift_alarms_read_drift_checks_metrics(synthesized: Synthesized) -> None:
    for model in (m for m in CONFIG.models if m.drift.enabled):
        drift = alarm(synthesized, model.name, "drift")
        assert (drift["Namespace"], drift["MetricName"]) == (NAMESPACE, "DriftDetected")
        assert dimensions(drift) == {"service": DRIFT_SERVICE, "model": model.name}
        if "accuracy" in model.thresholds:
            concept = alarm(synthesized, model.name, "concept")
            assert concept["MetricName"] == "ConceptMetric"
            assert dimensions(concept) == {"service": DRIFT_SERVICE, "model": model.name, "metric": "accuracy"}
            assert concept["Threshold"] == model.thresholds["accuracy"]
            assert concept["ComparisonOperator"] == "LessThanThreshold"


def test_each_model_has_a_dashboard_with_the_traffic_split(synthesized: Synthesized) -> None:
    dashboards = synthesized.of_type("AWS::CloudWatch::Dashboard")
    assert len(dashboards) == len(CONFIG.models) + 1  # and the overview
    for model in CONFIG.models:
        props = synthesized.resources[synthesized.logical_id(
            synthesized.stack.monitoring.dashboards[model.name])]["Properties"]
        assert props["DashboardName"].endswith(f"-{model.name}")
        body = json.dumps(props["DashboardBody"])
        # invocations by executed version: the `live` alias's split between champion and challenger
        assert "ExecutedVersion" in body
        assert f"/models/{model.name}/predict" in body
        if model.drift.enabled:
            assert "FeatureDriftScore" in body
            assert "ConceptMetric" in body


def test_one_overview_dashboard_shows_every_model_and_every_alarm(synthesized: Synthesized) -> None:
    monitoring = synthesized.stack.monitoring
    props = synthesized.resources[synthesized.logical_id(monitoring.overview)]["Properties"]
    assert props["DashboardName"].endswith("-overview")
    parts = props["DashboardBody"]["Fn::Join"][1]
    text = "".join(part for part in parts if isinstance(part, str))
    for model in CONFIG.models:  # a line per model on the API graphs
        assert text.count(f"/models/{model.name}/predict") == 3, model.name
    drifting = [model.name for model in CONFIG.models if model.drift.enabled]
    assert text.count("DriftDetected") == len(drifting)
    # every alarm of the stack, the models' and the platform's, in the status widget
    alarms = {synthesized.logical_id(alarm) for group in monitoring.alarms.values() for alarm in group.values()}
    shown = {part["Fn::GetAtt"][0] for part in parts if isinstance(part, dict) and "Fn::GetAtt" in part}
    assert alarms <= shown


def search_schemas(synthesized: Synthesized) -> list[str]:
    """The metric schema (between the braces) of every SEARCH expression of the dashboards."""
    schemas = []
    for dashboard in synthesized.of_type("AWS::CloudWatch::Dashboard").values():
        body = dashboard["Properties"]["DashboardBody"]
        # a JSON document in a string, joined with the tokens CloudFormation fills in (function names)
        text = "".join(part for part in body["Fn::Join"][1] if isinstance(part, str))
        schemas += re.findall(r"SEARCH\('\{(.*?)\}", text.replace('\\"', '"'))
    return schemas


def test_dashboard_searches_quote_names_with_other_characters(synthesized: Synthesized) -> None:
    """CloudWatch's search syntax: a namespace or dimension name with characters other than letters, digits and
    underscores must be double-quoted in the metric schema (the project's namespace, `mlops-dev`, has a hyphen)."""
    schemas = search_schemas(synthesized)
    assert any(f'"{NAMESPACE}"' in schema for schema in schemas), schemas
    for schema in schemas:
        for name in schema.split(","):
            assert re.fullmatch(r'\w+|"[^"]+"', name), (name, schema)


def test_platform_alarms_on_failed_runs_and_failure_queues(synthesized: Synthesized) -> None:
    platform_alarms = synthesized.stack.monitoring.alarms["platform"]
    machines = set(synthesized.stack.pipeline.state_machines)
    queues = {name for name, f in synthesized.stack.pipeline.functions.items() if f.failures is not None}
    dead_letters = {f"push_{m}_dead_letters" for m in synthesized.stack.push.dead_letter_queues}
    assert dead_letters
    assert set(platform_alarms) == ({f"{m}_failed" for m in machines} | {f"{q}_failures" for q in queues}
                                    | dead_letters)
    assert queues >= {t.function for t in platform.S3_TRIGGERS}

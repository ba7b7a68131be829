"""CloudWatch alarms in the local cloud: created from mlops.aws.alarms like the CDK app does, and evaluated
here, because moto stores alarms but never moves one out of INSUFFICIENT_DATA.

The evaluation follows CloudWatch's for these alarms: the statistic of the last `evaluation_periods`
periods against the threshold, missing data not breaching; a change of state is recorded on the alarm
(``set_alarm_state``) and, on entering ALARM or OK, published to the alarm's actions (the SNS topic) as a
CloudWatch alarm notification.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops.aws import platform
from mlops.aws.alarms import PERIOD_SECONDS, model_alarms
from mlops.core.config import ProjectConfig

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge, "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt, "LessThanOrEqualToThreshold": operator.le,
}


def create_alarms(cloudwatch: Any, config: ProjectConfig, topic_arn: str) -> list[str]:
    names = []
    for model in config.models:
        for spec in model_alarms(model):
            name = spec.alarm_name(config.project, model.name)
            cloudwatch.put_metric_alarm(
                AlarmName=name, AlarmDescription=spec.description, Namespace=config.project,
                MetricName=spec.metric, Dimensions=[{"Name": k, "Value": v} for k, v in spec.dimensions.items()],
                Statistic=spec.statistic, Period=PERIOD_SECONDS, EvaluationPeriods=spec.evaluation_periods,
                Threshold=spec.threshold, ComparisonOperator=spec.comparison, TreatMissingData="notBreaching",
                AlarmActions=[topic_arn], OKActions=[topic_arn])
            names.append(name)
    return names


def _state(cloudwatch: Any, alarm: dict[str, Any], now: datetime) -> tuple[str, str]:
    window = timedelta(seconds=int(alarm["Period"]) * int(alarm["EvaluationPeriods"]))
    points = cloudwatch.get_metric_statistics(
        Namespace=alarm["Namespace"], MetricName=alarm["MetricName"], Dimensions=alarm.get("Dimensions", []),
        StartTime=now - window, EndTime=now + timedelta(seconds=1), Period=int(alarm["Period"]),
        Statistics=[alarm["Statistic"]]).get("Datapoints", [])
    if not points:  # missing data is not breaching: a platform that scales to zero is quiet most of the time
        return "OK", "no datapoints in the evaluation window (treated as not breaching)"
    values = [float(p[alarm["Statistic"]]) for p in points]
    compare = COMPARE[alarm["ComparisonOperator"]]
    breaching = [v for v in values if compare(v, float(alarm["Threshold"]))]
    if breaching:
        return "ALARM", (f"Threshold Crossed: datapoint [{breaching[-1]}] was {alarm['ComparisonOperator']} "
                         f"the threshold ({alarm['Threshold']})")
    return "OK", f"Threshold not crossed: datapoints {values}"


def evaluate_alarms(cloudwatch: Any, sns: Any, names: list[str], now: datetime | None = None) -> dict[str, str]:
    """Evaluate the given alarms now; returns each alarm's state."""
    now = now or datetime.now(UTC)
    states = {}
    for alarm in cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", []):
        state, reason = _state(cloudwatch, alarm, now)
        states[alarm["AlarmName"]] = state
        if state == alarm.get("StateValue"):
            continue
        cloudwatch.set_alarm_state(AlarmName=alarm["AlarmName"], StateValue=state, StateReason=reason)
        actions = alarm.get("AlarmActions", []) if state == "ALARM" else alarm.get("OKActions", [])
        message = {"AlarmName": alarm["AlarmName"], "AlarmDescription": alarm.get("AlarmDescription"),
                   "NewStateValue": state, "OldStateValue": alarm.get("StateValue"), "NewStateReason": reason,
                   "StateChangeTime": now.isoformat(), "Trigger": {
                       "MetricName": alarm["MetricName"], "Namespace": alarm["Namespace"],
                       "Statistic": alarm["Statistic"], "Threshold": alarm["Threshold"],
                       "ComparisonOperator": alarm["ComparisonOperator"]}}
        for arn in actions:
            if arn.startswith("arn:aws:sns:"):
                sns.publish(TopicArn=arn, Subject=f'{state}: "{alarm["AlarmName"]}"'[:100],
                            Message=json.dumps(message))
    return states



def alarm_watcher(deployment: Any, client: Callable[[str], Any]) -> Callable[[Any], None]:
    """A runtime listener: after each drift_check invocation (whose metrics the alarms watch), evaluate the
    deployment's alarms, as CloudWatch would once the datapoints arrive."""
    drift_check = next(spec for spec in platform.FUNCTIONS if spec.name == "drift_check")
    name = drift_check.physical_name(deployment.project)

    def listener(invocation: Any) -> None:
        if invocation.function == name and deployment.alarms:
            evaluate_alarms(client("cloudwatch"), client("sns"), deployment.alarms)

    return listener

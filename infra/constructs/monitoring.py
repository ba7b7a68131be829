"""Monitoring: per model, a CloudWatch dashboard and alarms on what serving and drift_check publish; for the
platform, alarms on failed pipeline runs and on events kept in a failure queue. Every alarm notifies the
notifications topic, where the platform's own notices (rejected candidates, drift reports) go too.

Where each metric comes from:
- API Gateway (per method, the stage's detailed metrics): requests, 4XX/5XX, latency as the client sees it;
- AWS/Lambda on the model's infer function: errors, throttles, duration, and invocations by `ExecutedVersion`, which
  is the `live` alias's traffic split between champion and challenger;
- the infer handler (Powertools, namespace = project, service=infer, model, model_version): requests, server
  errors and latency per version, the numbers the rollout's guardrails read (mlops.release.guardrails);
- the function's REPORT log line (a metric filter): the memory it used, which Lambda publishes nowhere else;
- drift_check (namespace = project, service=drift_check, model): data drift, per-feature scores, the live concept
  metric from feedback (accuracy or MAE) and retraining requests (mlops.drift.check.metric_points).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.function import PlatformFunction
from infra.constructs.storage import Storage
from mlops.aws.alarms import DRIFT_SERVICE, PERIOD_SECONDS, model_alarms
from mlops.core.config import ModelConfig
from mlops.release.guardrails import INFER_SERVICE

PERIOD = Duration.seconds(PERIOD_SECONDS)
# An alarm status widget lists 1 to 100 alarm ARNs (CloudWatch's dashboard body structure, "alarm" widget)
OVERVIEW_ALARMS_PER_WIDGET: Final = 100
# The REPORT line Lambda writes after each invocation (text log format): "REPORT RequestId: <id> Duration: <n> ms
# Billed Duration: <n> ms Memory Size: <n> MB Max Memory Used: <n> MB ...". Space-delimited: one name per word.
REPORT_PATTERN = (
    '[report="REPORT", request_id_label, request_id, duration_label, duration, duration_unit, billed_label, '
    "billed_duration_label, billed_duration, billed_unit, memory_label, memory_size_label, memory_size, "
    'memory_unit, max_label="Max", max_memory_label="Memory", used_label="Used:", max_memory_used, ...]'
)
MEMORY_METRIC: Final = "MaxMemoryUsedMB"


def search(schema: Sequence[str], metric: str, statistic: str, **dimensions: str) -> str:
    """A CloudWatch SEARCH expression over the metrics of exactly `schema` (namespace, then dimension names) named
    `metric`, with these dimension values. CloudWatch requires a namespace or dimension name with characters other
    than letters, digits and underscores (the project's namespace `mlops-dev`, `AWS/Lambda`) to be double-quoted in
    the schema; values are quoted as exact matches."""
    names = ",".join(part if re.fullmatch(r"\w+", part) else f'"{part}"' for part in schema)
    terms = " ".join(f'{key}="{value}"' for key, value in {"MetricName": metric, **dimensions}.items())
    return f"SEARCH('{{{names}}} {terms}', '{statistic}', {PERIOD.to_seconds()})"


@dataclass(frozen=True)
class AlarmThresholds:
    """What pages someone; a stage may be stricter or looser (infra.app STAGES)."""

    latency_p95_ms: float = 1000.0  # API Gateway latency of /predict, as the caller sees it
    error_rate: float = 0.05  # share of /predict answers that are 5XX
    duration_share_of_timeout: float = 0.8  # p95 duration against the function's timeout
    memory_share: float = 0.9  # max memory used against the function's memory size
    evaluation_periods: int = 3  # consecutive 5-minute periods before an alarm fires


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: str,
        storage: Storage,
        models: Sequence[ModelConfig],
        infer_functions: Mapping[str, PlatformFunction],
        pipeline_functions: Mapping[str, PlatformFunction],
        state_machines: Mapping[str, sfn.StateMachine],
        dead_letter_queues: Mapping[str, sqs.Queue],
        api_name: str,
        api_stage: str,
        thresholds: AlarmThresholds,
    ) -> None:
        super().__init__(scope, construct_id)
        self.project, self.api_name, self.api_stage, self.thresholds = project, api_name, api_stage, thresholds
        self.action = cw_actions.SnsAction(storage.topic)
        stack = Stack.of(self)
        # CloudWatch acts for an alarm of this account and region, never for another account's (the confused deputy)
        alarms_here = {"StringEquals": {"aws:SourceAccount": stack.account},
                       "ArnLike": {"aws:SourceArn": f"arn:{stack.partition}:cloudwatch:{stack.region}:"
                                                    f"{stack.account}:alarm:*"}}
        # The topic has its own policy (TLS only), which replaces SNS's default one: CloudWatch, a service
        # principal, must be let in explicitly, for this account's alarms only.
        storage.topic.add_to_resource_policy(iam.PolicyStatement(
            actions=["sns:Publish"],
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            resources=[storage.topic.topic_arn],
            conditions=alarms_here,
        ))
        # and the topic is encrypted with the platform's key, which also encrypts the data: what SNS asks of
        # CloudWatch's side, under the same conditions (a key policy statement for a service principal without them
        # would let CloudWatch use the key on behalf of anyone's alarm)
        storage.key.add_to_resource_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            resources=["*"],  # in a key policy, "*" is this key
            conditions=alarms_here,
        ))
        self.alarms: dict[str, dict[str, cw.Alarm]] = {}
        self.dashboards: dict[str, cw.Dashboard] = {}
        for model in models:
            scope_ = Construct(self, model.name)
            alarms = self._model_alarms(scope_, model, infer_functions[model.name])
            self.alarms[model.name] = alarms
            self.dashboards[model.name] = self._dashboard(scope_, model, infer_functions[model.name], alarms)
        self.alarms["platform"] = self._platform_alarms(Construct(self, "platform"), pipeline_functions,
                                                        state_machines, dead_letter_queues)
        self.overview = self._overview(Construct(self, "overview"), models)

    # -- metrics --------------------------------------------------------------------------------------------
    def _api(self, model: str, metric: str, statistic: str, path: str = "predict", method: str = "POST") -> cw.Metric:
        return cw.Metric(namespace="AWS/ApiGateway", metric_name=metric, statistic=statistic, period=PERIOD,
                         dimensions_map={"ApiName": self.api_name, "Stage": self.api_stage, "Method": method,
                                         "Resource": f"/models/{model}/{path}"})

    def _custom(self, service: str, model: str, name: str, statistic: str,
                extra: Mapping[str, str] | None = None) -> cw.Metric:
        return cw.Metric(namespace=self.project, metric_name=name, statistic=statistic, period=PERIOD,
                         dimensions_map={"service": service, "model": model, **(extra or {})})

    def _per_version(self, model: str, metric: str, statistic: str, label: str) -> cw.MathExpression:
        """One line per model version the infer function served (the dimension its handler sets)."""
        return cw.MathExpression(
            expression=search([self.project, "service", "model", "model_version"], metric, statistic,
                              service=INFER_SERVICE, model=model),
            label=label, period=PERIOD)

    def _memory(self, function: PlatformFunction, name: str) -> cw.Metric:
        metric_name = f"{name}-{MEMORY_METRIC}"
        logs.MetricFilter(
            function, "MemoryFilter", log_group=function.log_group, metric_namespace=f"{self.project}/lambda",
            metric_name=metric_name, metric_value="$max_memory_used",
            filter_pattern=logs.FilterPattern.literal(REPORT_PATTERN),
        )
        return cw.Metric(namespace=f"{self.project}/lambda", metric_name=metric_name, statistic="Maximum",
                         period=PERIOD)

    def _alarm(self, scope: Construct, construct_id: str, metric: cw.Metric | cw.MathExpression, *, threshold: float,
               description: str, comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
               periods: int | None = None) -> cw.Alarm:
        alarm = metric.create_alarm(
            scope, construct_id, threshold=threshold, comparison_operator=comparison, alarm_description=description,
            evaluation_periods=periods or self.thresholds.evaluation_periods,
            # no traffic is not an incident: a platform that scales to zero is quiet most of the time
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self.action)
        alarm.add_ok_action(self.action)
        return alarm

    # -- per model ------------------------------------------------------------------------------------------
    def _model_alarms(self, scope: Construct, model: ModelConfig, function: PlatformFunction) -> dict[str, cw.Alarm]:
        t, fn, name = self.thresholds, function.function, model.name
        spec = function.spec
        requests = self._api(name, "Count", "SampleCount")
        errors = self._api(name, "5XXError", "Sum")
        alarms = {
            "latency_p95": self._alarm(
                scope, "LatencyP95", self._api(name, "Latency", "p95"), threshold=t.latency_p95_ms,
                description=f"{name}: p95 latency of POST /predict above {t.latency_p95_ms:.0f} ms"),
            "error_rate": self._alarm(
                scope, "ErrorRate",
                cw.MathExpression(expression="IF(requests > 0, errors / requests, 0)",
                                  using_metrics={"requests": requests, "errors": errors},
                                  label="5XX share of /predict", period=PERIOD),
                threshold=t.error_rate,
                description=f"{name}: more than {t.error_rate:.0%} of POST /predict answers are 5XX"),
            "errors": self._alarm(
                scope, "FunctionErrors", fn.metric_errors(period=PERIOD, statistic="Sum"), threshold=0,
                periods=1, description=f"{name}: the infer function raised (an unhandled error or a timeout)"),
            "throttles": self._alarm(
                scope, "Throttles", fn.metric_throttles(period=PERIOD, statistic="Sum"), threshold=0, periods=1,
                description=f"{name}: invocations of the infer function were throttled (account concurrency)"),
            "duration": self._alarm(
                scope, "Duration", fn.metric_duration(period=PERIOD, statistic="p95"),
                threshold=spec.timeout_s * 1000 * t.duration_share_of_timeout,
                description=f"{name}: p95 duration above {t.duration_share_of_timeout:.0%} of the "
                            f"{spec.timeout_s} s timeout"),
            "memory": self._alarm(
                scope, "Memory", self._memory(function, f"infer-{name}"),
                threshold=spec.memory_mb * t.memory_share,
                description=f"{name}: the infer function used more than {t.memory_share:.0%} of its "
                            f"{spec.memory_mb} MB"),
        }
        for alarm in model_alarms(model):  # drift_check's alarms: the local cloud creates the same ones
            extra = {k: v for k, v in alarm.dimensions.items() if k not in ("service", "model")}
            comparison = getattr(cw.ComparisonOperator, re.sub(r"(?<!^)(?=[A-Z])", "_", alarm.comparison).upper())
            alarms[alarm.key] = self._alarm(
                scope, alarm.key.capitalize(), self._custom(DRIFT_SERVICE, name, alarm.metric, alarm.statistic, extra),
                threshold=alarm.threshold, comparison=comparison, periods=alarm.evaluation_periods,
                description=alarm.description)
        return alarms

    def _dashboard(self, scope: Construct, model: ModelConfig, function: PlatformFunction,
                   alarms: Mapping[str, cw.Alarm]) -> cw.Dashboard:
        name, fn = model.name, function.function
        traffic = cw.MathExpression(
            expression=search(["AWS/Lambda", "FunctionName", "Resource", "ExecutedVersion"], "Invocations", "Sum",
                              FunctionName=fn.function_name),
            label="invocations by version", period=PERIOD)
        features = cw.MathExpression(
            expression=search([self.project, "service", "model", "feature"], "FeatureDriftScore", "Maximum",
                              service=DRIFT_SERVICE, model=name),
            label="effect size by feature", period=PERIOD)
        concept = cw.MathExpression(
            expression=search([self.project, "service", "model", "metric"], "ConceptMetric", "Average",
                              service=DRIFT_SERVICE, model=name),
            label="live metric from feedback", period=PERIOD)
        dashboard = cw.Dashboard(scope, "Dashboard",
                                 dashboard_name=f"{Stack.of(self).stack_name}-{name}"[:255],
                                 default_interval=Duration.hours(24))
        graph = cw.GraphWidget
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title=f"{name}: alarms", alarms=list(alarms.values()), width=24, height=3))
        dashboard.add_widgets(
            graph(title="API requests (POST /predict, POST /feedback)",
                  left=[self._api(name, "Count", "Sum"), self._api(name, "Count", "Sum", path="feedback")]),
            graph(title="API 4XX / 5XX (POST /predict)",
                  left=[self._api(name, "4XXError", "Sum"), self._api(name, "5XXError", "Sum")]),
            graph(title="API latency (POST /predict)",
                  left=[self._api(name, "Latency", "p50"), self._api(name, "Latency", "p95")]),
        )
        dashboard.add_widgets(
            graph(title="Traffic split of the live alias (invocations by version)", left=[traffic], stacked=True),
            graph(title="Requests per model version", left=[self._per_version(name, "Requests", "Sum", "requests")]),
            graph(title="p95 latency per model version (handler)",
                  left=[self._per_version(name, "Latency", "p95", "p95 ms")]),
        )
        dashboard.add_widgets(
            graph(title="Function errors and throttles",
                  left=[fn.metric_errors(period=PERIOD), fn.metric_throttles(period=PERIOD),
                        self._per_version(name, "ServerErrors", "Sum", "5XX answers")]),
            graph(title="Function duration", left=[fn.metric_duration(period=PERIOD, statistic="p50"),
                                                   fn.metric_duration(period=PERIOD, statistic="p95")]),
            graph(title="Max memory used (MB)",
                  left=[cw.Metric(namespace=f"{self.project}/lambda", metric_name=f"infer-{name}-{MEMORY_METRIC}",
                                  statistic="Maximum", period=PERIOD)],
                  left_annotations=[cw.HorizontalAnnotation(value=function.spec.memory_mb, label="memory size")]),
        )
        if model.drift.enabled:
            dashboard.add_widgets(
                graph(title="Data drift: effect size by feature", left=[features]),
                graph(title="Drift detected / features drifted / retraining asked",
                      left=[self._custom(DRIFT_SERVICE, name, "DriftDetected", "Maximum"),
                            self._custom(DRIFT_SERVICE, name, "DriftedFeatures", "Maximum"),
                            self._custom(DRIFT_SERVICE, name, "RetrainRequested", "Maximum")]),
                graph(title="Concept: live metric from feedback, and prediction drift",
                      left=[concept], right=[self._custom(DRIFT_SERVICE, name, "PredictionDriftScore", "Maximum")]),
            )
        return dashboard

    def _overview(self, scope: Construct, models: Sequence[ModelConfig]) -> cw.Dashboard:
        """Every model at once, next to the per-model dashboards: one line per model on each graph, and every alarm
        of the stack (the models' and the platform's)."""
        dashboard = cw.Dashboard(scope, "Dashboard", dashboard_name=f"{Stack.of(self).stack_name}-overview"[:255],
                                 default_interval=Duration.hours(24))
        names = [model.name for model in models]
        alarms = [alarm for group in self.alarms.values() for alarm in group.values()]
        for start in range(0, len(alarms), OVERVIEW_ALARMS_PER_WIDGET):  # what one alarm status widget shows
            dashboard.add_widgets(cw.AlarmStatusWidget(
                title="alarms of every model and of the platform", width=24, height=4,
                alarms=alarms[start:start + OVERVIEW_ALARMS_PER_WIDGET]))

        def per_model(metric: Callable[[str], cw.IMetric]) -> list[cw.IMetric]:
            return [metric(name) for name in names]

        graph = cw.GraphWidget
        dashboard.add_widgets(
            graph(title="Predictions per model (API POST /predict)",
                  left=per_model(lambda m: self._api(m, "Count", "Sum").with_(label=m))),
            graph(title="5XX answers per model (API POST /predict)",
                  left=per_model(lambda m: self._api(m, "5XXError", "Sum").with_(label=m))),
            graph(title="p95 latency per model (API POST /predict)",
                  left=per_model(lambda m: self._api(m, "Latency", "p95").with_(label=m))),
        )
        drifting = [model.name for model in models if model.drift.enabled]
        if drifting:
            dashboard.add_widgets(
                graph(title="Drift detected per model (1 = drifted)", left=[
                    self._custom(DRIFT_SERVICE, m, "DriftDetected", "Maximum").with_(label=m) for m in drifting]),
                graph(title="Live metric from feedback per model", left=[cw.MathExpression(
                    expression=search([self.project, "service", "model", "metric"], "ConceptMetric", "Average",
                                      service=DRIFT_SERVICE, model=m), label=m, period=PERIOD) for m in drifting]),
            )
        return dashboard

    # -- platform -------------------------------------------------------------------------------------------
    def _platform_alarms(self, scope: Construct, functions: Mapping[str, PlatformFunction],
                         state_machines: Mapping[str, sfn.StateMachine],
                         dead_letter_queues: Mapping[str, sqs.Queue]) -> dict[str, cw.Alarm]:
        alarms: dict[str, cw.Alarm] = {}
        for name, machine in state_machines.items():
            alarms[f"{name}_failed"] = self._alarm(
                scope, f"{name}_failed", machine.metric_failed(period=PERIOD, statistic="Sum"), threshold=0,
                periods=1, description=f"a {name} state machine execution failed (its Catch notified too)")
        for name, function in functions.items():
            queue: sqs.Queue | None = function.failures
            if queue is not None:
                alarms[f"{name}_failures"] = self._alarm(
                    scope, f"{name}_failures",
                    queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
                    threshold=0, periods=1,
                    description=f"{name} gave up on an event after its retries: it is kept in its failure queue")
        for model, queue in dead_letter_queues.items():
            alarms[f"push_{model}_dead_letters"] = self._alarm(
                scope, f"push_{model}_dead_letters",
                queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"), threshold=0,
                periods=1, description=f"a message pushed to {model}'s queue was dead-lettered: a poison message "
                                       "(its reason in its attributes) or one that kept failing")
        return alarms

"""The alarms on what the platform publishes itself (drift_check's metrics), declared once: the CDK app
creates them (infra/constructs/monitoring.py) and so does the local cloud, which also evaluates them,
since moto stores alarms but never evaluates one (mlops.local.alarms).

Alarms on AWS's own metrics (API Gateway latency, Lambda errors, throttles, duration, memory) exist only in
the CDK app: nothing publishes those locally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlops.core.config import ModelConfig

DRIFT_SERVICE = "drift_check"
PERIOD_SECONDS = 300


@dataclass(frozen=True)
class AlarmSpec:
    key: str  # the alarm's short name, unique per model ("drift", "concept")
    metric: str
    dimensions: dict[str, str]
    statistic: str  # Maximum | Minimum | Sum | Average
    threshold: float
    comparison: str  # a CloudWatch ComparisonOperator name
    description: str
    evaluation_periods: int = 1
    unit: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def alarm_name(self, project: str, model: str) -> str:
        return f"{project}-{model}-{self.key}"


def model_alarms(model: ModelConfig) -> list[AlarmSpec]:
    """drift_check's alarms for one model: drift found, and the live concept metric crossing the gate."""
    if not model.drift.enabled:
        return []
    dims = {"service": DRIFT_SERVICE, "model": model.name}
    alarms = [AlarmSpec("drift", "DriftDetected", dims, "Maximum", 1, "GreaterThanOrEqualToThreshold",
                        f"{model.name}: drift_check found data or concept drift (report under "
                        f"reports/{model.name}/)")]
    metric, statistic, comparison = (("accuracy", "Minimum", "LessThanThreshold") if model.task.is_classification
                                     else ("mae", "Maximum", "GreaterThanThreshold"))
    threshold = model.thresholds.get(metric)
    if threshold is not None:
        # the worst window of the period: a champion that would no longer pass its own gate
        alarms.append(AlarmSpec("concept", "ConceptMetric", {**dims, "metric": metric}, statistic, threshold,
                                comparison, f"{model.name}: live {metric} from feedback crossed the gate's "
                                f"threshold {threshold}"))
    return alarms

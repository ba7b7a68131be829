"""drift_check's core: one window of a deployed model's captured traffic against its champion's baseline.

Reads only the window's capture objects (Firehose writes ``captures/YYYY/MM/DD/HH/...`` by arrival time),
streaming them line by line into the drift accumulators (``mlops.drift.statistics``); joins feedback with its
prediction by request id; writes the JSON and HTML reports (``mlops.drift.report.ReportStore``) and the
window's labelled rows; records the window and a retraining decision in the registry; alerts on the topic.

Whether to ask for retraining, and the asking, are ``mlops.drift.retraining``'s.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops.aws.storage import ObjectStore, parse_s3_uri
from mlops.core import layout
from mlops.core.clock import iso, stamp
from mlops.core.config import DriftConfig, ProjectConfig
from mlops.core.errors import IntegrityError, MlopsError
from mlops.drift.report import ReportStore, build_report
from mlops.drift.retraining import maybe_retrain, refused_as
from mlops.drift.statistics import ConceptDrift, DriftResult, WindowDrift
from mlops.registry.store import Registry
from mlops.registry.versions import CHAMPION, EXTERNAL_DATASET, ModelVersion
from mlops.release.rollout import DELIVERY_SLACK, LATE_DELIVERY, ReadObjects, list_captures

CHUNK = 5_000  # capture records per accumulator update
MAX_PENDING = 200_000  # predictions waiting for their feedback (oldest dropped first)
MAX_LABELLED = 100_000  # labelled rows kept from one window
# what the drift result of a clustering says of its concept
NO_CONCEPT = ("not measured: a clustering model has no labels (its predictions are cluster ids, which no feedback "
              "confirms), so there is no metric on feedback to compare with its evaluation; its features and its "
              "predicted clusters are checked for drift")


class NoBaseline(MlopsError):
    """The champion has no usable drift baseline."""


class Notifier:
    def __init__(self, sns: Any, topic_arn: str | None) -> None:
        self.sns = sns
        self.topic_arn = topic_arn

    def publish(self, subject: str, message: str) -> bool:
        if not self.topic_arn:
            return False
        self.sns.publish(TopicArn=self.topic_arn, Subject=subject[:100], Message=message)
        return True


# -- captures --------------------------------------------------------------------------------------------
# Firehose keys an object by the arrival of its oldest record, so a window's records can sit in the hour partition
# before it (a buffer holds up to 15 minutes) or after it (a record put late). It writes the object when its buffer
# closes, and retries a write S3 refused for up to a day (mlops.release.rollout): an object can land after the check of
# the window its records belong to. The next check that lists it counts those records, once: each check keeps in the
# registry which objects it had (CaptureCoverage).
def hour_prefixes(start: datetime, end: datetime) -> list[str]:
    """The Firehose hour partitions that can hold records timed in [start, end)."""
    hour = (start - DELIVERY_SLACK).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    last = (end + DELIVERY_SLACK).astimezone(UTC)
    out = []
    while hour < last:
        out.append(f"{layout.CAPTURES}{hour:%Y/%m/%d/%H}/")
        hour += timedelta(hours=1)
    return out


def key_range(start: datetime, end: datetime) -> tuple[str, str]:
    """The capture keys of those partitions lie strictly between these two (a StartAfter and a bound)."""
    prefixes = hour_prefixes(start, end)
    return prefixes[0].rstrip("/"), prefixes[-1] + "\uffff"


@dataclass(frozen=True)
class CaptureCoverage:
    """What one check had of the captures: the window its records counted for, the keys it listed (strictly between
    ``after`` and ``before``) and which of those objects it had read (``read``, bounded by what landed within minutes
    of the check, mlops.release.rollout.ReadObjects)."""

    start: str
    end: str
    after: str
    before: str
    read: ReadObjects

    def saw(self, key: str, modified: datetime) -> bool:
        return self.after < key < self.before and self.read.has(key, modified)

    def holds(self, when: str) -> bool:
        """Whether a record timed ``when`` (its first 19 characters) belongs to this check's window."""
        return self.start[:19] <= when < self.end[:19]

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "after": self.after, "before": self.before,
                **self.read.model_dump()}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> CaptureCoverage:
        return cls(value["start"], value["end"], value["after"], value["before"], ReadObjects.model_validate(value))


def earlier_coverage(registry: Registry, model: str, *, since: datetime, end: datetime) -> list[CaptureCoverage]:
    """The coverage of every other check whose listing may meet one starting at ``since``. A window recorded
    without one (by an older drift_check) takes no part: its records counted for it alone."""
    out = []
    for window in registry.drift_windows(model, after=iso(since - timedelta(hours=2))):
        captured = window["details"].get("captures")
        if captured and window["window_end"] != iso(end):
            out.append(CaptureCoverage.from_dict(captured))
    return out


# -- baseline --------------------------------------------------------------------------------------------
def load_baseline(models: ObjectStore, champion: ModelVersion) -> tuple[dict[str, Any], bool]:
    """The champion's baseline and whether its sha256 was checked (against the manifest, when it records one)."""
    _bucket, key = parse_s3_uri(champion.baseline_uri)
    if not models.exists(key):
        raise NoBaseline(f"{champion.model} v{champion.version} has no baseline at {champion.baseline_uri}")
    data = models.get_bytes(key)
    _b, manifest_key = parse_s3_uri(champion.manifest_uri)
    manifest = models.get_json(manifest_key) if models.exists(manifest_key) else {}
    expected = (manifest.get("baseline") or {}).get("sha256") if isinstance(manifest.get("baseline"), dict) else None
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise IntegrityError(f"{champion.baseline_uri} does not match the sha256 in its manifest")
    return json.loads(data), bool(expected)


def _imported_without_baseline(models: ObjectStore, champion: ModelVersion) -> bool:
    """A model imported before the platform had its data (``mlops.pipeline.external``) has no baseline, and its
    manifest says so; any other missing baseline is an error."""
    if champion.dataset_sha256 != EXTERNAL_DATASET:
        return False
    _b, key = parse_s3_uri(champion.manifest_uri)
    manifest = models.get_json(key)
    return "baseline" in manifest and manifest["baseline"] is None


# -- one window ------------------------------------------------------------------------------------------
@dataclass
class Window:
    result: DriftResult
    labelled: list[dict[str, Any]]
    predictions: int
    feedback: int
    late: int  # of those, records of windows checked before, in objects that landed after their check
    coverage: CaptureCoverage


def scan_window(captures: ObjectStore, model: str, champion: ModelVersion, baseline: dict[str, Any],
                cfg: DriftConfig, *, start: datetime, end: datetime, classification: bool,
                earlier: list[CaptureCoverage] | None = None, at: datetime | None = None,
                labels: bool = True) -> Window:
    """The window [start, end) of the model's captured traffic, with the records of ``earlier`` checks' windows
    that landed after those checks; ``at``: when the listing starts (the wall clock). Without ``labels`` (a
    clustering) the window's inputs are the rows kept for retraining, a clustering learning from inputs alone, and its
    concept drift is not measured (NO_CONCEPT)."""
    at, earlier = at or datetime.now(UTC), earlier or []
    check = WindowDrift(baseline, cfg, classification=classification)
    target = baseline.get("target") or "target"
    names = check.feature_names
    # request id -> (version, prediction, features, whether it was read in an object no check had before)
    pending: OrderedDict[str, tuple[Any, Any, dict[str, Any], bool]] = OrderedDict()
    labelled: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    champion_predictions: list[Any] = []
    joined_predictions: list[Any] = []
    joined_labels: list[Any] = []
    window_start, window_end = iso(start)[:19], iso(end)[:19]
    predictions = feedback = late = 0

    def flush() -> None:
        if rows:
            check.update({name: [r.get(name) for r in rows] for name in names}, len(rows))
            rows.clear()
        if champion_predictions:
            check.update_predictions(champion_predictions)
            champion_predictions.clear()
        if joined_labels:
            check.concept.update(joined_predictions, joined_labels)
            joined_predictions.clear()
            joined_labels.clear()

    def checked_before(when: str) -> bool:
        return any(c.holds(when) for c in earlier)

    lookback = start - timedelta(hours=cfg.feedback_lookback_hours)
    lookback_start = iso(lookback)[:19]
    # predictions are joined from the lookback on; objects no check had are read a day back (Firehose's retries)
    after, before = key_range(min(lookback, start - LATE_DELIVERY), end)
    joinable = key_range(lookback, end)[0]
    listed: list[tuple[str, datetime]] = []
    for key, modified in list_captures(captures, after=after, before=before):
        listed.append((key, modified))
        new = not any(c.saw(key, modified) for c in earlier)
        if not new and key < joinable:
            continue
        for record in captures.json_lines(key):
            if record.get("model") != model:
                continue
            # capture times carry milliseconds and an offset; the first 19 characters compare as UTC
            when = str(record.get("time", ""))[:19]
            in_window = window_start <= when < window_end
            overdue = new and not in_window and checked_before(when)
            if record.get("type") == "prediction":
                if in_window or overdue or lookback_start <= when < window_end:
                    pending[record["request_id"]] = (record.get("model_version"), record.get("prediction"),
                                                     record.get("features") or {}, new)
                    if len(pending) > MAX_PENDING:
                        pending.popitem(last=False)
                if in_window or overdue:
                    predictions += 1
                    late += overdue
                    rows.append(record.get("features") or {})
                    if not labels and len(labelled) < MAX_LABELLED:
                        labelled.append(dict(record.get("features") or {}))
                    if record.get("model_version") == champion.version:
                        champion_predictions.append(record.get("prediction"))
            elif record.get("type") == "feedback" and record.get("label") is not None:
                waiting = pending.get(record.get("request_id", ""))
                # a feedback an earlier check read without its prediction, which landed only now, counts now
                overdue = overdue or (not in_window and waiting is not None and waiting[3] and checked_before(when))
                if not (in_window or overdue):
                    continue
                joined = pending.pop(record.get("request_id", ""), None)
                if joined is None:  # no prediction in the lookback, or its first feedback counted already
                    continue
                feedback += 1
                late += overdue
                version, prediction, features, _new = joined
                if version == champion.version:
                    joined_predictions.append(prediction)
                    joined_labels.append(record["label"])
                if len(labelled) < MAX_LABELLED:
                    labelled.append({**features, target: record["label"]})
            if len(rows) >= CHUNK or len(joined_labels) >= CHUNK:
                flush()
    flush()
    coverage = CaptureCoverage(iso(start), iso(end), after, before, ReadObjects.after(listed, at))
    result = check.result(champion.metrics.get("metrics"))
    if not labels:
        result.concept = ConceptDrift.not_measured(NO_CONCEPT)
    return Window(result, labelled, predictions, feedback, late, coverage)


# -- the check -------------------------------------------------------------------------------------------
def check_drift(model: str, *, config: ProjectConfig, window_end: datetime, registry: Registry, models: ObjectStore,
                captures: ObjectStore, data: ObjectStore, notifier: Notifier | None = None,
                window_hours: float | None = None) -> dict[str, Any]:
    """Check one window [window_end - window_hours, window_end) of ``model``; returns the summary the handler
    answers with (and turns into metrics)."""
    model_cfg = config.model(model)
    cfg = model_cfg.drift
    end = window_end.astimezone(UTC)
    start = end - timedelta(hours=window_hours or cfg.window_hours)
    summary: dict[str, Any] = {"model": model, "window_start": iso(start), "window_end": iso(end)}
    champion = registry.alias(model, CHAMPION)
    if champion is None:
        return {**summary, "status": "skipped", "reason": f"{model} has no champion yet"}
    if _imported_without_baseline(models, champion):
        return {**summary, "status": "skipped", "reason": f"{model} v{champion.version} was imported with no data to "
                                                          "take a drift baseline from (mlops models import)"}
    baseline, verified = load_baseline(models, champion)
    listed_at = datetime.now(UTC)  # what lands after this is the next check's
    earlier = earlier_coverage(registry, model, end=end, since=start - max(
        timedelta(hours=cfg.feedback_lookback_hours), LATE_DELIVERY) - DELIVERY_SLACK)
    window = scan_window(captures, model, champion, baseline, cfg, start=start, end=end,
                         classification=model_cfg.task.is_classification, earlier=earlier, at=listed_at,
                         labels=model_cfg.task.has_labels)
    result = window.result
    report = build_report(result, context={
        "model": model, "version": champion.version, "window_start": iso(start), "window_end": iso(end),
        "baseline_uri": champion.baseline_uri, "baseline_sha256_verified": verified,
        "predictions": window.predictions, "feedback": window.feedback, "labelled_rows": len(window.labelled),
        "late_records": window.late})
    with refused_as(f"writing the report under {models.uri(f'{layout.REPORTS}{model}/')}"):
        keys = ReportStore(models).put(model, stamp(end), report)
    if window.labelled:
        labelled_key = f"{layout.LABELLED}{model}/{stamp(end)}.jsonl"
        with refused_as(f"writing the labelled rows {data.uri(labelled_key)}"):
            data.put_bytes(labelled_key, "".join(json.dumps(r, default=str) + "\n" for r in window.labelled).encode(),
                           content_type="application/x-ndjson")
    drifted = result.data_drift or bool(result.concept and result.concept.drifted)
    with refused_as(f"recording the window of {model} in {registry.table}"):
        registry.record_drift_window(model, iso(end), status=result.status, drifted=drifted,
                                     labelled_rows=len(window.labelled),
                                     details={"drifted_features": result.drifted_features, "report": keys["json"],
                                              "concept": result.concept.status if result.concept else None,
                                              "captures": window.coverage.to_dict()})
    retrain = maybe_retrain(model_cfg, at=end, registry=registry, models=models, data=data, champion=champion)
    notified = False
    if result.any_drift and notifier is not None:
        with refused_as(f"publishing the drift alert to {notifier.topic_arn}"):
            notified = notifier.publish(f"[mlops] {model}: drift detected",
                                        _message(model, champion, report, keys, retrain))
    return {**summary, "status": result.status, "version": champion.version, "rows": result.rows,
            "late_records": window.late,
            "drifted_features": result.drifted_features,
            "features": {f.feature: f.effect_size for f in result.features if f.effect_size is not None},
            "prediction_drift": result.prediction.drifted if result.prediction else None,
            "prediction_effect": result.prediction.effect_size if result.prediction else None,
            "concept": result.concept.to_dict() if result.concept else None,
            "report": keys, "retrain": retrain, "notified": notified}


def _message(model: str, champion: ModelVersion, report: dict[str, Any], keys: dict[str, str],
             retrain: dict[str, Any]) -> str:
    lines = [f"Drift in {model} (champion v{champion.version}), window {report['window_start']} - "
             f"{report['window_end']}, {report['rows']} rows.",
             f"Drifted features: {', '.join(report['drifted_features']) or 'none'}."]
    concept = report.get("concept") or {}
    if concept.get("drifted"):
        lines.append(f"Concept drift: {concept.get('reason')}")
    lines += [f"Retraining: {'requested' if retrain['requested'] else 'not requested'} ({retrain['reason']}).",
              f"Report: {keys['html']}"]
    return "\n".join(lines)


def metric_points(summary: dict[str, Any]) -> list[tuple[str, float, dict[str, str]]]:
    """What the handler publishes: (metric name, value, extra dimensions beyond service and model)."""
    if summary.get("status") == "skipped":
        return []
    points: list[tuple[str, float, dict[str, str]]] = [
        ("DriftedFeatures", float(len(summary["drifted_features"])), {}),
        ("DriftDetected", 1.0 if summary["status"] == "drifted" else 0.0, {}),
        ("DriftWindowRows", float(summary["rows"]), {}),
        ("RetrainRequested", 1.0 if summary["retrain"]["requested"] else 0.0, {}),
    ]
    points += [("FeatureDriftScore", float(v), {"feature": k}) for k, v in summary["features"].items()]
    if summary.get("prediction_effect") is not None:
        points.append(("PredictionDriftScore", float(summary["prediction_effect"]), {}))
    concept = summary.get("concept") or {}
    if concept.get("value") is not None:
        points.append(("ConceptMetric", float(concept["value"]), {"metric": concept["metric"]}))
        points.append(("ConceptFeedback", float(concept["n"]), {}))
    return points

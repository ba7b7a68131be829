"""drift_check's core: one window of a deployed model's captured traffic against its champion's baseline.

Reads only the window's capture objects (Firehose writes ``captures/YYYY/MM/DD/HH/...`` by arrival time),
streaming them line by line into the drift accumulators (``mlops.drift.statistics``); joins feedback with its
prediction by request id; writes the JSON and HTML reports (``mlops.drift.report.ReportStore``) and the
window's labelled rows; records the window and a retraining decision in the registry; alerts on the topic.

Retraining is debounced: it is asked for only when ``retrain_windows`` of the last ``retrain_window_of``
windows since the previous request drifted (data or concept), at least ``retrain_min_labels`` labelled rows
arrived since then, and the cooldown has passed (claimed with a conditional write, so two concurrent checks
cannot both ask). It goes through the ordinary path: the newest curated dataset plus the labelled captured
rows, as one CSV under ``incoming/<model>/``, which ingest validates against the contract and curates, and
whose curated manifest starts the training pipeline through train_trigger.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from mlops.aws.step_errors import is_transient
from mlops.aws.storage import ObjectStore, parse_s3_uri
from mlops.core.config import DriftConfig, ModelConfig, ProjectConfig
from mlops.core.errors import IntegrityError, MlopsError, RegistryConflict
from mlops.drift.report import REPORTS_PREFIX, ReportStore, build_report
from mlops.drift.statistics import DriftResult, WindowDrift
from mlops.registry.store import CHAMPION, ModelVersion, Registry
from mlops.release.rollout import CAPTURE_PREFIX, DELIVERY_SLACK, LATE_DELIVERY, ReadObjects, list_captures

CHUNK = 5_000  # capture records per accumulator update
MAX_PENDING = 200_000  # predictions waiting for their feedback (oldest dropped first)
MAX_LABELLED = 100_000  # labelled rows kept from one window
LABELLED_PREFIX = "labelled/"
RETRAIN_HORIZON = timedelta(days=30)


class NoBaseline(MlopsError):
    """The champion has no usable drift baseline."""


class DriftCheckRefused(MlopsError):
    """AWS refused one of the check's writes for good (a policy, a key): the message says which."""


@contextmanager
def refused_as(what: str) -> Iterator[None]:
    """A permanent refusal inside the block becomes a DriftCheckRefused naming ``what`` (S3 never names the
    key it refused); transient errors pass unchanged, the SDK has retried them already."""
    try:
        yield
    except ClientError as exc:
        if is_transient(exc):
            raise
        error = exc.response.get("Error", {})
        raise DriftCheckRefused(f"{what} was refused: {error.get('Code')} on {exc.operation_name} "
                                f"({error.get('Message')})") from exc


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


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
        out.append(f"{CAPTURE_PREFIX}{hour:%Y/%m/%d/%H}/")
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
                earlier: list[CaptureCoverage] | None = None, at: datetime | None = None) -> Window:
    """The window [start, end) of the model's captured traffic, with the records of ``earlier`` checks' windows
    that landed after those checks; ``at``: when the listing starts (the wall clock)."""
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
    return Window(check.result(champion.metrics.get("metrics")), labelled, predictions, feedback, late, coverage)


# -- retraining ------------------------------------------------------------------------------------------
def retrain_decision(windows: list[dict[str, Any]], *, last_request: str | None, at: datetime,
                     cfg: DriftConfig) -> tuple[bool, str, dict[str, Any]]:
    """Whether to ask for retraining now, and why (or why not). ``windows`` are the checked windows, oldest
    first, this one included; only those after the last request count."""
    since = [w for w in windows if last_request is None or w["window_end"] > last_request]
    recent = since[-cfg.retrain_window_of:]
    drifting = sum(1 for w in recent if w["drifted"])
    labels = sum(w["labelled_rows"] for w in since)
    details = {"drifting_windows": drifting, "windows": len(recent), "labelled_rows": labels,
               "last_request": last_request}
    if not cfg.retrain:
        return False, "retraining on drift is switched off for this model", details
    if drifting < cfg.retrain_windows:
        return False, (f"{drifting} of the last {len(recent)} windows drifted; {cfg.retrain_windows} of "
                       f"{cfg.retrain_window_of} are needed"), details
    if last_request is not None:
        ready = datetime.fromisoformat(last_request) + timedelta(hours=cfg.retrain_cooldown_hours)
        if at < ready:
            return False, (f"cooldown: retraining was asked for at {last_request}; not again before "
                           f"{iso(ready)}"), details
    if labels < cfg.retrain_min_labels:
        return False, (f"{labels} new labelled rows since the last request; {cfg.retrain_min_labels} are "
                       "needed"), details
    return True, (f"{drifting} of the last {len(recent)} windows drifted and {labels} new labelled rows exist"), details


def retraining_csv(model: str, *, data: ObjectStore, contract: dict[str, Any],
                   since: str | None, captured: bool = True) -> tuple[bytes, int, int, int]:
    """The newest curated rows plus (``captured``) the labelled captured rows since ``since`` (a window stamp), as
    CSV text that ingest reads back exactly: (bytes, curated rows, captured rows, duplicate rows left out).

    Live traffic repeats inputs, so the captured rows repeat curated ones and each other: ingest would quarantine
    every repeat as a duplicate row, and past ``max_bad_row_fraction`` of them reject the whole file, retraining
    nothing. Each distinct row goes in once."""
    import pandas as pd

    from mlops.pipeline.steps import newest_manifest

    columns = [c["name"] for c in contract["columns"]]
    frames = []
    manifest = newest_manifest(data, model)
    curated = 0
    if manifest is not None:
        _bucket, key = parse_s3_uri(manifest["data_uri"])
        frame = data.get_parquet(key)
        frames.append(frame[[c for c in columns if c in frame.columns]])
        curated = len(frame)
    captured_rows: list[dict[str, Any]] = []
    for key in sorted(data.keys(f"{LABELLED_PREFIX}{model}/") if captured else ()):
        if since is None or key.rsplit("/", 1)[-1].removesuffix(".jsonl") > since:  # the last request used up to it
            text = data.get_bytes(key).decode()
            captured_rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    if captured_rows:
        frames.append(pd.DataFrame(captured_rows).reindex(columns=columns))
    combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for spec in contract["columns"]:
        name = spec["name"]
        if spec.get("kind") == "boolean" and name in combined:
            # booleans are curated as 0/1 floats; "1.0" is not a boolean spelling the contract accepts
            combined[name] = pd.to_numeric(combined[name], errors="coerce").map(
                {1.0: "true", 0.0: "false"}).astype("string")
    # as ingest compares them: by their text (a curated 0 and a captured "0" are the same cell in the file)
    distinct = combined[~combined.astype("string").duplicated()]
    buffer = io.StringIO()
    distinct.to_csv(buffer, index=False)
    return buffer.getvalue().encode(), curated, len(captured_rows), len(combined) - len(distinct)


def _retraining_contract(model_cfg: ModelConfig, *, models: ObjectStore, data: ObjectStore,
                         champion: ModelVersion) -> dict[str, Any]:
    """The columns the retraining file has: the champion's contract, or for a model with a feature store the data's
    own contract under contracts/ (the champion takes computed features, but ingest wants the data's columns)."""
    model = model_cfg.name
    if model_cfg.features is None:
        key = parse_s3_uri(champion.artefacts_prefix + "contract.json")[1]
        with refused_as(f"reading the contract of {model} v{champion.version} {models.uri(key)}"):
            contract: dict[str, Any] = models.get_json(key)
        return contract
    from mlops.data.ingest import ContractStore

    with refused_as(f"reading the data contract of {model} under {data.uri(f'contracts/{model}/')}"):
        raw = ContractStore(data).current(model)
    return raw.model_dump(mode="json") if raw else {"columns": []}


def maybe_retrain(model_cfg: ModelConfig, *, at: datetime, registry: Registry, models: ObjectStore,
                  data: ObjectStore, champion: ModelVersion) -> dict[str, Any]:
    model, cfg = model_cfg.name, model_cfg.drift
    last = registry.last_retrain_request(model)
    # windows (and labelled rows) count from the last request, and at most RETRAIN_HORIZON back
    horizon = iso(at - RETRAIN_HORIZON)
    since = max(last or "", horizon)
    requested, reason, details = retrain_decision(registry.drift_windows(model, after=since), last_request=last,
                                                  at=at, cfg=cfg)
    if requested:
        # Everything that can fail is read before the claim: a claim whose request is never made holds off every
        # request for the cooldown.
        contract = _retraining_contract(model_cfg, models=models, data=data, champion=champion)
        with refused_as(f"reading the data of {model} to retrain on ({data.uri(f'curated/{model}/')}, "
                        f"{data.uri(f'{LABELLED_PREFIX}{model}/')})"):
            # a captured row holds only the features, not the entity's history they came from: for a model with a
            # feature store it cannot go back into the data
            body, curated, captured, duplicates = retraining_csv(
                model, data=data, contract=contract, since=stamp(datetime.fromisoformat(since)),
                captured=model_cfg.features is None)
        cooldown_start = iso(at - timedelta(hours=cfg.retrain_cooldown_hours))
        with refused_as(f"claiming the retraining of {model} in {registry.table}"):
            claimed = registry.claim_retrain(model, iso(at), not_after=cooldown_start)
        if not claimed:
            requested, reason = False, "another check asked for retraining meanwhile"
    if requested:
        key = f"{model_cfg.incoming_prefix}drift-retrain-{stamp(at)}.csv"
        try:
            with refused_as(f"writing the retraining file {data.uri(key)}"):
                data.put_bytes(key, body, content_type="text/csv", create_only=True)
        except RegistryConflict:
            reason += "; the retraining file of this window existed already"
        except BaseException:
            # nothing was asked for: the claim goes back, or the cooldown would hold off a request never made
            registry.release_retrain(model, iso(at), previous=last)
            raise
        details.update({"file": data.uri(key), "curated_rows": curated, "captured_rows": captured,
                        "duplicate_rows_left_out": duplicates})
    with refused_as(f"recording the retraining decision of {model} in {registry.table}"):
        registry.record_retrain_decision(model, iso(at), requested=requested, reason=reason, details=details)
    return {"requested": requested, "reason": reason, **details}


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
    baseline, verified = load_baseline(models, champion)
    listed_at = datetime.now(UTC)  # what lands after this is the next check's
    earlier = earlier_coverage(registry, model, end=end, since=start - max(
        timedelta(hours=cfg.feedback_lookback_hours), LATE_DELIVERY) - DELIVERY_SLACK)
    window = scan_window(captures, model, champion, baseline, cfg, start=start, end=end,
                         classification=model_cfg.task.is_classification, earlier=earlier, at=listed_at)
    result = window.result
    report = build_report(result, context={
        "model": model, "version": champion.version, "window_start": iso(start), "window_end": iso(end),
        "baseline_uri": champion.baseline_uri, "baseline_sha256_verified": verified,
        "predictions": window.predictions, "feedback": window.feedback, "labelled_rows": len(window.labelled),
        "late_records": window.late})
    with refused_as(f"writing the report under {models.uri(f'{REPORTS_PREFIX}{model}/')}"):
        keys = ReportStore(models).put(model, stamp(end), report)
    if window.labelled:
        labelled_key = f"{LABELLED_PREFIX}{model}/{stamp(end)}.jsonl"
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

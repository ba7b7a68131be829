"""``mlops status``: every declared model in one view. Per model: its champion and challenger with their quality
metrics, the live alias's split, the rollout's state and last look, live requests, p95 latency and error rate per
version (CloudWatch, the metrics the rollout's guardrails read), the last drift verdict and the last pipeline runs;
as text, JSON, or a self-contained HTML page (the local cloud serves it at ``GET /status``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from mlops.core.charts import line_chart_svg
from mlops.core.config import ModelConfig
from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION
from mlops.release.deploy import Split
from mlops.release.guardrails import GUARDRAILS_ONLY, ServingMetrics

RUNS_SHOWN = 5


def _version(registry: Registry, model: str, number: int | None) -> dict[str, Any] | None:
    if number is None:
        return None
    found = registry.version(model, number)
    if found is None:
        return {"version": number, "metrics": {}, "created_at": None}
    # register records {"metrics": the evaluation's metrics, "latency": the offline latency}
    nested = found.metrics.get("metrics")
    quality: dict[str, Any] = nested if isinstance(nested, dict) else found.metrics
    metrics = {k: v for k, v in quality.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {"version": number, "metrics": metrics, "created_at": found.created_at, "run_id": found.run_id}


def model_status(model: ModelConfig, *, registry: Registry, split: Split, metrics: ServingMetrics | None,
                 now: datetime, window: timedelta) -> dict[str, Any]:
    """One model's line of the overview."""
    aliases = registry.aliases(model.name)
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    looks = registry.looks(model.name, challenger) if challenger is not None else []
    last_look = looks[-1] if looks else None
    versions = tuple(v for v in (champion, challenger) if v is not None)
    live: dict[str, Any] = {}
    if metrics is not None and versions:
        try:
            health = metrics.health(model.name, versions, now - window, now)
            live = {str(v): arm.to_dict() for v, arm in health.items()}
        except Exception as exc:  # metrics are a view: a page without them beats no page
            live = {"error": f"{type(exc).__name__}: {exc}"}
    windows = registry.drift_windows(model.name, after=(now - timedelta(days=30)).isoformat())
    drift = windows[-1] if windows else None
    runs = sorted(registry.runs(model.name), key=lambda run: run.at)[-RUNS_SHOWN:]
    return {
        "model": model.name,
        "task": model.task,
        "primary_metric": model.primary_metric,
        "champion": _version(registry, model.name, champion),
        "challenger": _version(registry, model.name, challenger),
        "split": split.to_dict(),
        "rollout": None if challenger is None else {
            "challenger": challenger, "looks": len(looks),
            "last_look": None if last_look is None else {k: last_look.get(k) for k in (
                "at", "action", "reason", "n_control", "n_treatment", "rate_control", "rate_treatment",
                "p_value", "metric")},
            "history": [{"at": look["at"], "rate_control": look.get("rate_control"),
                         "rate_treatment": look.get("rate_treatment"), "n_control": look.get("n_control"),
                         "n_treatment": look.get("n_treatment")} for look in looks]},
        "live": {"window_minutes": round(window.total_seconds() / 60), "versions": live},
        "drift": None if drift is None else {"window_end": drift["window_end"], "status": drift["status"],
                                             "drifted": drift["drifted"],
                                             "drifted_features": drift["details"].get("drifted_features", [])},
        "drift_history": [{"window_end": w["window_end"], "drifted": w["drifted"],
                           "drifted_features": len(w["details"].get("drifted_features", []) or [])}
                          for w in windows],
        "runs": [{"run_id": run.run_id, "outcome": run.outcome, "reason": run.reason, "at": run.at}
                 for run in reversed(runs)],
    }


def overview(models: Sequence[ModelConfig], *, registry: Registry, split_of: Callable[[str], Split],
             metrics: ServingMetrics | None, now: datetime | None = None,
             window: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """Every declared model's status (``split_of(model)``: the live alias's split of the model's infer function)."""
    at = now or datetime.now(UTC)
    return {"at": at.isoformat(timespec="seconds"),
            "models": [model_status(m, registry=registry, split=split_of(m.name), metrics=metrics, now=at,
                                    window=window) for m in models]}


# -- rendering ------------------------------------------------------------------------------------------------------
def _metric(version: dict[str, Any] | None, name: str) -> str:
    if version is None:
        return "-"
    value = version["metrics"].get(name)
    return f"v{version['version']} ({name} {value:.4g})" if isinstance(value, int | float) else f"v{version['version']}"


def _live(status: dict[str, Any], version: dict[str, Any] | None) -> str:
    if version is None:
        return "-"
    arm = status["live"]["versions"].get(str(version["version"]))
    if not arm or not arm.get("requests"):
        return "no requests"
    p95 = arm.get("p95_ms")
    return (f"{arm['requests']:.0f} req, p95 {p95:.1f} ms, errors {arm['error_rate']:.2%}" if p95 is not None
            else f"{arm['requests']:.0f} req, errors {arm['error_rate']:.2%}")


def _rollout(status: dict[str, Any]) -> str:
    rollout = status["rollout"]
    if rollout is None:
        return "no canary"
    look = rollout["last_look"]
    weight = status["split"]["weights"]["challenger"]
    if look is None:
        return f"canary v{rollout['challenger']} at {weight:.0%}, no look yet"
    if look.get("metric") == GUARDRAILS_ONLY:  # a clustering: no feedback labels, no test
        return (f"canary v{rollout['challenger']} at {weight:.0%}: look {rollout['looks']}, {look['action']} "
                f"(guardrails only, no feedback labels to test on; requests {look['n_control']}/{look['n_treatment']})")
    return (f"canary v{rollout['challenger']} at {weight:.0%}: look {rollout['looks']}, {look['action']} "
            f"(n {look['n_control']}/{look['n_treatment']}, p {look['p_value']:.3g})")


def _drift(status: dict[str, Any]) -> str:
    drift = status["drift"]
    if drift is None:
        return "not checked"
    features = drift["drifted_features"]
    verdict = f"drifted ({', '.join(map(str, features))})" if drift["drifted"] else drift["status"]
    return f"{verdict} at {drift['window_end']}"


def render_text(view: dict[str, Any]) -> str:
    lines = [f"every model, {view['at']}"]
    for status in view["models"]:
        metric = status["primary_metric"]
        runs = ", ".join(f"{run['outcome']} {run['at'][:16]}" for run in status["runs"][:3]) or "none"
        lines += [
            "",
            f"{status['model']} ({status['task']})",
            f"  champion    {_metric(status['champion'], metric)}   live: {_live(status, status['champion'])}",
            f"  challenger  {_metric(status['challenger'], metric)}   live: {_live(status, status['challenger'])}",
            f"  rollout     {_rollout(status)}",
            f"  drift       {_drift(status)}",
            f"  runs        {runs}",
        ]
    return "\n".join(lines)


def _charts(status: dict[str, Any]) -> str:
    charts = []
    rollout = status["rollout"]
    if rollout and rollout["history"]:
        start = datetime.fromisoformat(rollout["history"][0]["at"])
        points = [((datetime.fromisoformat(h["at"]) - start).total_seconds() / 60, h) for h in rollout["history"]
                  if h["n_control"] and h["n_treatment"] and h["rate_control"] is not None]
        if points:
            charts.append(line_chart_svg(
                {f"champion v{(status['champion'] or {}).get('version')}": [(x, h["rate_control"]) for x, h in points],
                 f"challenger v{rollout['challenger']}": [(x, h["rate_treatment"]) for x, h in points]},
                title=f"{status['primary_metric']} per arm (feedback)", x_label="minutes since the first look",
                y_label=status["primary_metric"]))
    if len(status["drift_history"]) > 1:
        start = datetime.fromisoformat(status["drift_history"][0]["window_end"])
        charts.append(line_chart_svg(
            {"drifted features": [((datetime.fromisoformat(w["window_end"]) - start).total_seconds() / 3600,
                                   w["drifted_features"]) for w in status["drift_history"]]},
            title="drift: features drifted per checked window", x_label="hours since the first window",
            y_label="features"))
    return "\n".join(charts)


def render_html(view: dict[str, Any]) -> str:
    sections = []
    for status in view["models"]:
        metric = status["primary_metric"]
        runs = "".join(f"<tr><td>{escape(run['at'])}</td><td>{escape(run['outcome'])}</td>"
                       f"<td>{escape(run['run_id'])}</td><td>{escape(run['reason'] or '')}</td></tr>"
                       for run in status["runs"])
        sections.append(f"""<section class="model" id="model-{escape(status['model'])}">
<h2>{escape(status['model'])} <small>({escape(status['task'])})</small></h2>
<table>
<tr><th>champion</th><td>{escape(_metric(status['champion'], metric))}</td>
<td>{escape(_live(status, status['champion']))}</td></tr>
<tr><th>challenger</th><td>{escape(_metric(status['challenger'], metric))}</td>
<td>{escape(_live(status, status['challenger']))}</td></tr>
<tr><th>rollout</th><td colspan="2">{escape(_rollout(status))}</td></tr>
<tr><th>drift</th><td colspan="2">{escape(_drift(status))}</td></tr>
</table>
{_charts(status)}
<h3>last pipeline runs</h3>
<table><tr><th>at</th><th>outcome</th><th>run</th><th>reason</th></tr>{runs or '<tr><td colspan="4">none</td></tr>'}
</table>
</section>""")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Every model - status</title>
<link rel="icon" href="data:,">
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .5em;font-size:.9em;text-align:left}}section{{margin-bottom:2em}}</style>
</head><body>
<h1>Every model</h1>
<p>as of {escape(view['at'])}; live figures over the last {view['models'][0]['live']['window_minutes'] if view['models']
                                                          else 60} minutes</p>
{''.join(sections)}
</body></html>
"""

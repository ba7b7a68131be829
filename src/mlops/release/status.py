"""``mlops ab status``: where a model's canary stands, from the rollout's looks recorded in the registry.

Each look carries its statistics (n and metric per arm, the always-valid p-value, the confidence sequence
of challenger - champion, the mSPRT statistic and its boundary) and the action taken; the report is the
same data as a table, JSON, or a self-contained HTML page with two charts: the metric per arm over time,
and the test statistic against its decision boundary. A guardrail-only rollout (a clustering: no feedback labels,
no test) shows each look's requests, p95 latency and error rate per arm instead, and says why.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from mlops.core.charts import line_chart_svg
from mlops.core.errors import MlopsError
from mlops.registry.store import Registry
from mlops.release.deploy import Split
from mlops.release.guardrails import GUARDRAILS_ONLY

# what a guardrail-only rollout's report says it is
GUARDRAILS_ONLY_NOTE = ("guardrails only: a clustering has no feedback labels to test on, so the challenger is "
                        "promoted once it served enough requests for long enough within the error-rate and p95 "
                        "guardrails")


class NoRollout(MlopsError):
    """The model has no recorded rollout to show."""


def ab_status(registry: Registry, split: Split, model: str, challenger: int | None = None) -> dict[str, Any]:
    """The looks of one rollout (the given challenger's, else the newest one's) with the current split."""
    looks = registry.looks(model, challenger)
    if not looks:
        which = f"challenger v{challenger}" if challenger is not None else "any challenger"
        raise NoRollout(f"{model} has no rollout on record for {which}: a rollout starts when a second "
                        "version is registered")
    challenger = challenger if challenger is not None else max(int(look["challenger"]) for look in looks)
    looks = [look for look in looks if int(look["challenger"]) == challenger]
    last = looks[-1]
    aliases = registry.aliases(model)
    return {"model": model, "challenger": challenger, "champion": last.get("champion"),
            "metric": last.get("metric", "accuracy"), "state": "running" if last["action"] == "continue"
            else last["action"], "decision_reason": last.get("reason"), "aliases": aliases,
            "split": split.to_dict(), "looks": looks,
            "guardrail_only": last.get("metric") == GUARDRAILS_ONLY}


def _num(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _arm(look: dict[str, Any], arm: str, key: str) -> Any:
    return ((look.get("health") or {}).get(arm) or {}).get(key)


def _health_cells(look: dict[str, Any]) -> list[str]:
    """A guardrail-only look's figures per arm, as the table and the page show them: the p95 latency of the champion
    and of the challenger, then their error rates."""
    return [_num(_arm(look, arm, key), spec) for key, spec in (("p95_ms", ".1f"), ("error_rate", ".2%"))
            for arm in ("champion", "challenger")]


def _split(status: dict[str, Any]) -> str:
    weights = status["split"]["weights"]
    return f"live split now: champion {weights['champion']:.0%}, challenger {weights['challenger']:.0%}"


def render_table(status: dict[str, Any]) -> str:
    head = (f"{status['model']}: challenger v{status['challenger']} vs champion v{status['champion']} on "
            f"{status['metric']} - {status['state']}"
            + (f" ({status['decision_reason']})" if status["state"] != "running" else ""))
    if status.get("guardrail_only"):
        lines = [head, GUARDRAILS_ONLY_NOTE, _split(status), "",
                 f"{'at':<25} {'req champ':>9} {'req chall':>9} {'p95 champ':>9} {'p95 chall':>9} {'err champ':>9} "
                 f"{'err chall':>9}  action"]
        lines += [f"{look['at']:<25} {look['n_control']:>9} {look['n_treatment']:>9} "
                  + "".join(f"{cell:>9} " for cell in _health_cells(look)) + f" {look['action']}"
                  for look in status["looks"]]
        return "\n".join(lines)
    lines = [head, _split(status),
             "", f"{'at':<25} {'n champ':>8} {'n chall':>8} {'champ':>8} {'chall':>8} {'p-value':>8} "
             f"{'diff interval':>19} {'stat':>7} {'bound':>6}  action"]
    for look in status["looks"]:
        interval = (f"[{_num(look.get('lower'), '+.3f')}, {_num(look.get('upper'), '+.3f')}]"
                    if look.get("lower") is not None else "-")
        lines.append(f"{look['at']:<25} {look['n_control']:>8} {look['n_treatment']:>8} "
                     f"{_num(look['rate_control']):>8} {_num(look['rate_treatment']):>8} "
                     f"{_num(look['p_value'], '.3g'):>8} {interval:>19} {_num(look['statistic'], '.2f'):>7} "
                     f"{_num(look['boundary'], '.2f'):>6}  {look['action']}")
    return "\n".join(lines)


def _minutes(looks: list[dict[str, Any]]) -> list[float]:
    start = datetime.fromisoformat(looks[0]["at"])
    return [(datetime.fromisoformat(look["at"]) - start).total_seconds() / 60 for look in looks]


def _guardrail_page(status: dict[str, Any], xs: list[float]) -> str:
    """A guardrail-only rollout's page: p95 latency per arm over time, and each look's figures and reason."""
    champion, challenger = f"champion v{status['champion']}", f"challenger v{status['challenger']}"
    points = {name: [(x, _arm(look, arm, "p95_ms")) for x, look in zip(xs, status["looks"], strict=True)
                     if _arm(look, arm, "p95_ms") is not None]
              for name, arm in ((champion, "champion"), (challenger, "challenger"))}
    chart = line_chart_svg(points, title="p95 latency per arm (ms)", x_label="minutes since the first look",
                           y_label="p95 (ms)") if any(points.values()) else "<p>No serving metrics read yet.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(look['at']))}</td><td>{look['n_control']}</td><td>{look['n_treatment']}</td>"
        + "".join(f"<td>{cell}</td>" for cell in _health_cells(look))
        + f"<td>{escape(str(look['action']))}</td><td>{escape(str(look.get('reason', '')))}</td></tr>"
        for look in status["looks"])
    return _page(f"A/B status - {status['model']}", f"""
<p>{escape(challenger)} against {escape(champion)}, <b>{escape(GUARDRAILS_ONLY_NOTE)}</b>:
<b>{escape(str(status['state']))}</b> - {escape(str(status['decision_reason'] or ''))}</p>
{chart}
<table><tr><th>at</th><th>requests champion</th><th>requests challenger</th><th>p95 champion (ms)</th>
<th>p95 challenger (ms)</th><th>errors champion</th><th>errors challenger</th><th>action</th><th>reason</th></tr>
{rows}</table>""")


def render_html(status: dict[str, Any]) -> str:
    looks = status["looks"]
    xs = _minutes(looks)
    champion, challenger = f"champion v{status['champion']}", f"challenger v{status['challenger']}"
    if status.get("guardrail_only"):
        return _guardrail_page(status, xs)
    started = [(x, look) for x, look in zip(xs, looks, strict=True) if look["n_control"] and look["n_treatment"]]
    metric_chart = line_chart_svg(
        {champion: [(x, look["rate_control"]) for x, look in started],
         challenger: [(x, look["rate_treatment"]) for x, look in started]},
        title=f"{status['metric']} per arm", x_label="minutes since the first look", y_label=status["metric"])
    statistic_chart = line_chart_svg(
        {"log likelihood ratio (mSPRT)": [(x, look["statistic"]) for x, look in zip(xs, looks, strict=True)]},
        title="test statistic and its decision boundary", x_label="minutes since the first look",
        y_label="log LR", hlines={"boundary log(1/alpha)": float(looks[-1]["boundary"])})
    rows = "".join(
        f"<tr><td>{escape(str(look['at']))}</td><td>{look['n_control']}</td><td>{look['n_treatment']}</td>"
        f"<td>{_num(look['rate_control'])}</td><td>{_num(look['rate_treatment'])}</td>"
        f"<td>{_num(look['p_value'], '.3g')}</td><td>{_num(look.get('lower'), '+.4f')} .. "
        f"{_num(look.get('upper'), '+.4f')}</td><td>{escape(str(look['action']))}</td>"
        f"<td>{escape(str(look.get('reason', '')))}</td></tr>" for look in looks)
    return _page(f"A/B status - {status['model']}", f"""
<p>{escape(challenger)} against {escape(champion)} on <b>{escape(status['metric'])}</b>:
<b>{escape(str(status['state']))}</b>{(' - ' + escape(str(status['decision_reason']))) if status['state'] != 'running'
                                      else ''}</p>
{metric_chart}
{statistic_chart}
<table><tr><th>at</th><th>n champion</th><th>n challenger</th><th>champion</th><th>challenger</th><th>p-value</th>
<th>challenger - champion</th><th>action</th><th>reason</th></tr>{rows}</table>""")


def _page(title: str, body: str) -> str:
    """A self-contained HTML page: its title as the heading, then ``body``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .5em;font-size:.9em}}</style></head><body>
<h1>{escape(title)}</h1>
{body}
</body></html>
"""

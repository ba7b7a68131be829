"""Drift reports: the JSON document (what ``mlops drift --json`` prints and ``drift_check`` stores) and a
self-contained HTML page with one inline-SVG plot per drifted feature (baseline vs window distribution).

The HTML is rendered from the JSON document alone, so a stored report can be re-rendered anywhere; every
string that came from data (feature names, categories, model names) is HTML-escaped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Any

from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.core.charts import bar_chart_svg
from mlops.drift.statistics import SKIPPED, DriftResult

FORMAT = "mlops.drift.statistics-report/1"
VERDICTS = {"drifted": "DRIFT", "no_drift": "ok", "insufficient_data": "not enough data"}


def build_report(result: DriftResult, *, context: dict[str, Any] | None = None,
                 generated_at: str | None = None) -> dict[str, Any]:
    """``context`` says what was compared (model, version, window, files...)."""
    return {
        "format": FORMAT,
        "generated_at": generated_at or datetime.now(UTC).isoformat(timespec="seconds"),
        **(context or {}),
        **result.to_dict(),
    }


def _num(value: Any, digits: str = ".4g") -> str:
    return "-" if value is None else format(value, digits)


def _feature_row(f: dict[str, Any]) -> str:
    verdict = VERDICTS.get(f["status"], f["status"])
    cls = {"drifted": "bad", "insufficient_data": "muted"}.get(f["status"], "")
    return (f'<tr class="{cls}"><td>{escape(str(f["feature"]))}</td><td>{escape(f["method"])}</td>'
            f"<td>{f['n']}</td><td>{_num(f['statistic'])}</td><td>{_num(f['p_value'], '.3g')}</td>"
            f"<td>{escape(f.get('effect_name') or '')} {_num(f['effect_size'])}</td><td>{_num(f.get('psi'))}</td>"
            f"<td>{escape(verdict)}</td><td>{escape(f.get('reason') or '')}</td></tr>")


def _plot(f: dict[str, Any]) -> str:
    if not f.get("labels"):
        return ""
    return bar_chart_svg(f["labels"], {"baseline": f["baseline_shares"], "current": f["current_shares"]},
                         title=f"{f['feature']}: baseline vs current", x_label="bin" if f["kind"] == "numeric"
                         else "category", y_label="share")


def render_html(report: dict[str, Any]) -> str:
    features = report.get("features", [])
    drifted = [f for f in features if f.get("drifted")]
    prediction, concept = report.get("prediction"), report.get("concept")
    context = {k: report[k] for k in ("model", "version", "window_start", "window_end", "reference", "current")
               if report.get(k) is not None}
    head = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in context.items())
    rows = "\n".join(_feature_row(f) for f in features)
    plots = "\n".join(f"<figure>{_plot(f)}</figure>" for f in drifted)
    if prediction and prediction.get("drifted"):
        plots += f"\n<figure>{_plot(prediction)}</figure>"
    extra = ""
    if prediction:
        extra += f"<h2>Prediction drift</h2><table>{_feature_row(prediction)}</table>"
    if concept and concept["status"] == SKIPPED:  # a model without labels (a clustering)
        extra += f"<h2>Concept drift</h2><p><b>skipped</b>: {escape(concept.get('reason') or '')}</p>"
    elif concept:
        extra += (f"<h2>Concept drift</h2><p>{escape(concept['metric'])}: {_num(concept.get('value'))} on "
                  f"{concept['n']} predictions with feedback; at evaluation {_num(concept.get('baseline'))}. "
                  f"<b>{escape(concept['status'])}</b>. {escape(concept.get('reason') or '')}</p>")
    title = f"Drift report{(' - ' + str(report['model'])) if report.get('model') else ''}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;font-size:13px}}tr.bad{{background:#fde0dc}}
tr.muted{{color:#888}}figure{{margin:1em 0}}</style></head><body>
<h1>{escape(title)}</h1>
<p>Status: <b>{escape(str(report.get("status")))}</b>; {report.get("rows", 0)} rows; generated
{escape(str(report.get("generated_at", "")))}. Drifted features:
{escape(", ".join(report.get("drifted_features", [])) or "none")}.</p>
<table>{head}</table>
<h2>Features</h2>
<table><tr><th>feature</th><th>method</th><th>n</th><th>statistic</th><th>p (BH)</th><th>effect</th><th>PSI</th>
<th>verdict</th><th>why</th></tr>
{rows}
</table>
{extra}
<h2>Distributions of drifted features</h2>
{plots or "<p>No feature drifted.</p>"}
</body></html>
"""


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str, allow_nan=False)




class ReportStore:
    """Reports of deployed models in the models bucket::

        reports/<model>/<YYYYmmddTHHMMSSZ>/report.json, report.html
        reports/<model>/latest.json        {"json": key, "html": key, "status": ..., "generated_at": ...}
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(self, model: str, stamp: str, report: dict[str, Any]) -> dict[str, str]:
        prefix = f"{layout.REPORTS}{model}/{stamp}/"
        keys = {"json": prefix + "report.json", "html": prefix + "report.html"}
        self.store.put_bytes(keys["json"], to_json(report).encode(), content_type="application/json")
        self.store.put_bytes(keys["html"], render_html(report).encode(), content_type="text/html; charset=utf-8")
        # the pointer last: a reader never finds it pointing at a report not yet written
        self.store.put_json(f"{layout.REPORTS}{model}/latest.json",
                            {**keys, "status": report.get("status"), "generated_at": report.get("generated_at")})
        return {k: self.store.uri(v) for k, v in keys.items()}

    def latest(self, model: str) -> tuple[dict[str, Any], str] | None:
        """The newest report of a model and its HTML, or None when it has none yet."""
        if not self.store.exists(f"{layout.REPORTS}{model}/latest.json"):
            return None
        pointer = self.store.get_json(f"{layout.REPORTS}{model}/latest.json")
        return self.store.get_json(pointer["json"]), self.store.get_bytes(pointer["html"]).decode()

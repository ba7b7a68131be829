"""``mlops drift``: the drift check on two CSV files (no cloud), and the latest report of a deployed model.

    mlops drift --reference train.csv --current today.csv [--html report.html] [--json] [--target COL]
    mlops drift report <name> [--open] [--json]

Exit codes follow ``mlops.cli.main``: 0 no drift, 1 drift found (or not enough data), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Any

from mlops.cli.common import add_config_option, load_project, resource_name
from mlops.core.errors import MlopsError


def add_drift_commands(sub: Any) -> None:
    drift = sub.add_parser(
        "drift", help="compare two CSV files for drift (no cloud), or fetch a deployed model's latest report",
        description="mlops drift --reference A.csv --current B.csv [--html F] [--json]  |  "
                    "mlops drift report <name> [--open]")
    drift.add_argument("action", nargs="?", choices=["report"], help="report: the latest report of a deployed model")
    drift.add_argument("name", nargs="?", help="report: the model's name (as declared in mlops.toml)")
    drift.add_argument("--reference", help="the CSV the baseline is built from (e.g. the training data)")
    drift.add_argument("--current", help="the CSV to check against it")
    drift.add_argument("--target", help="a column to leave out (the label), if present")
    drift.add_argument("--html", help="also write the HTML report to this file")
    drift.add_argument("--open", action="store_true", help="report: open the HTML report in a browser")
    add_config_option(drift)
    drift.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    drift.set_defaults(func=run_drift)


def run_drift(args: argparse.Namespace) -> int:
    if args.action == "report":
        if not args.name:
            raise MlopsError("give the model's name: mlops drift report <name>")
        return _cmd_report(args)
    if args.name:
        raise MlopsError(f"unexpected argument {args.name!r}; did you mean: mlops drift report {args.name}?")
    if not args.reference or not args.current:
        raise MlopsError("give both --reference A.csv and --current B.csv (or: mlops drift report <name>)")
    return _cmd_files(args)


def compare_files(reference: Path, current: Path, *, target: str | None = None) -> dict[str, Any]:
    """The drift report of ``current`` against a baseline built from ``reference`` (:mod:`mlops.drift.files`)."""
    from mlops.drift import files

    return files.compare_files(reference, current, target=target)


def _print_table(report: dict[str, Any]) -> None:
    rows = [["feature", "method", "n", "statistic", "p (BH)", "effect", "psi", "verdict"]]
    for f in report["features"]:
        rows.append([
            f["feature"], f["method"], str(f["n"]),
            "-" if f["statistic"] is None else f"{f['statistic']:.4g}",
            "-" if f["p_value"] is None else f"{f['p_value']:.3g}",
            "-" if f["effect_size"] is None else f"{f['effect_name']} {f['effect_size']:.4f}",
            "-" if f.get("psi") is None else f"{f['psi']:.4f}",
            {"drifted": "DRIFT", "no_drift": "ok"}.get(f["status"], "not enough data"),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    drifted = report["drifted_features"]
    print(f"\n{report['status']}: {len(drifted)} of {len(report['features'])} features drifted"
          + (f" ({', '.join(drifted)})" if drifted else ""))
    for which, left in (report.get("left_out") or {}).items():
        if left["rows"]:
            reasons = "; ".join(f"{reason} ({count})" for reason, count in left["reasons"].items())
            print(f"{which}: {left['rows']} rows left out, as ingest would quarantine them: {reasons}")


def _cmd_files(args: argparse.Namespace) -> int:
    from mlops.drift.report import render_html, to_json

    report = compare_files(Path(args.reference), Path(args.current), target=args.target)
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(to_json(report))
    else:
        _print_table(report)
    return 0 if report["status"] == "no_drift" else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from mlops import aws
    from mlops.aws.storage import ObjectStore
    from mlops.drift.report import ReportStore, to_json

    config = load_project(args)
    config.model(args.name)
    bucket = resource_name("models", config.project)
    found = ReportStore(ObjectStore(aws.client("s3"), bucket)).latest(args.name)
    if found is None:
        raise MlopsError(f"{args.name} has no drift report yet in s3://{bucket}; drift_check writes one per window")
    report, html = found
    if args.json:
        print(to_json(report))
    else:
        print(f"{args.name}: {report['status']} ({report.get('window_start')} - {report.get('window_end')}, "
              f"{report['rows']} rows); drifted features: {', '.join(report['drifted_features']) or 'none'}")
        concept = report.get("concept") or {}
        if concept:
            print(f"concept: {concept.get('status')}: {concept.get('reason')}")
    if args.open or args.html:
        path = Path(args.html) if args.html else Path(tempfile.mkdtemp(prefix="mlops-drift-")) / "report.html"
        path.write_text(html, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
        if args.open:
            webbrowser.open(path.resolve().as_uri())
    return 0


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

CHUNK_ROWS = 200_000
# The reference's reservoir bounds the KS test's power and the Wasserstein distance's precision: from a
# file on disk, keep far more than the 1000 rows a deployed baseline stores.
CLI_RESERVOIR = 20_000
NO_TARGET = "__mlops_no_target__"


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


def _read_header(path: Path) -> list[str]:
    import pandas as pd

    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except FileNotFoundError as exc:
        raise MlopsError(f"{path}: no such file") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MlopsError(f"{path}: not a readable CSV file with a header row ({exc})") from exc


def compare_files(reference: Path, current: Path, *, target: str | None = None) -> dict[str, Any]:
    """The drift report of ``current`` against a baseline built from ``reference``."""
    import pandas as pd

    from mlops.core.config import DriftConfig
    from mlops.data.baseline import build_baseline
    from mlops.data.inference import infer_contract
    from mlops.drift.report import build_report
    from mlops.drift.statistics import WindowDrift

    for path in (reference, current):
        if not path.is_file():
            raise MlopsError(f"{path}: no such file")
    ref_cols, cur_cols = _read_header(reference), _read_header(current)
    common = [c for c in ref_cols if c in set(cur_cols) and c != target]
    if not common:
        raise MlopsError(f"{reference} and {current} have no column in common "
                         f"(reference: {ref_cols[:10]}, current: {cur_cols[:10]})")
    ref = pd.read_csv(reference, usecols=common)
    if ref.empty:
        raise MlopsError(f"{reference} has a header but no rows")
    try:
        contract = infer_contract(ref.assign(**{NO_TARGET: 0}), NO_TARGET)
    except MlopsError as exc:
        raise MlopsError(f"{reference}: {exc}") from exc
    baseline = build_baseline(ref, contract, reservoir=CLI_RESERVOIR)
    del ref
    check = WindowDrift(baseline, DriftConfig())
    numeric = set(check.numeric)
    for chunk in pd.read_csv(current, usecols=common, chunksize=CHUNK_ROWS):
        columns: dict[str, Any] = {}
        for name in common:
            if name in numeric:
                values = pd.to_numeric(chunk[name], errors="coerce")
                if values.isna().sum() > chunk[name].isna().sum():
                    raise MlopsError(f"{current}: column {name!r} is numeric in {reference} but holds text here")
                columns[name] = values.to_numpy(dtype="float64", na_value=float("nan"))
            else:
                columns[name] = [None if pd.isna(v) else str(v) for v in chunk[name].tolist()]
        check.update(columns, len(chunk))
    result = check.result(with_concept=False)
    context = {"reference": str(reference), "current": str(current), "reference_rows": baseline["rows"],
               "ignored_columns": sorted((set(ref_cols) ^ set(cur_cols)) - {target})}
    return build_report(result, context=context)


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


"""``mlops train`` and ``mlops experiment``: training on this machine, no cloud.

    mlops train --data FILE --target COL [--model-family F] [--params JSON] [--out DIR] [--json]
    mlops experiment --data FILE --target COL [--families F,G] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlops.cli.common import progress
from mlops.core.errors import MlopsError


def add_train_commands(sub: Any) -> None:
    train = sub.add_parser("train", help="train, export to ONNX and evaluate one model on this machine, no cloud")
    _add_data_options(train)
    # Spelled out rather than read from mlops.core.families; tests/unit/test_cli.py keeps the words in step with the
    # code.
    train.add_argument("--model-family",
                       help="logistic_regression | random_forest | hist_gradient_boosting | xgboost | lightgbm | "
                            "linear_regression (default: chosen for the task: logistic_regression for a binary or "
                            "multiclass target, linear_regression for a regression target)")
    train.add_argument("--params", help="hyperparameters as a JSON object")
    train.add_argument("--out", help="write model.onnx, manifest.json and contract.json to this folder")
    train.set_defaults(func=run_train)

    experiment = sub.add_parser("experiment", help="compare model families on the same split")
    _add_data_options(experiment)
    experiment.add_argument("--families", help="comma-separated families (default: all that fit the task; the "
                                               "table marks with * the one `mlops train` picks by default)")
    experiment.set_defaults(func=run_experiment)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a CSV file with a header row")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--task", choices=["binary", "multiclass", "regression"],
                   help="default: inferred from the target column")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--test-size", type=float, default=0.2, help="share of rows held out (default 0.2)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def _params(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MlopsError(f"--params must be a JSON object, e.g. '{{\"C\": 0.5}}': {exc.msg}") from exc
    if not isinstance(value, dict):
        raise MlopsError("--params must be a JSON object, e.g. '{\"C\": 0.5}'")
    return value


def run_train(args: argparse.Namespace) -> int:
    from mlops.training.offline import run_training

    result = run_training(
        Path(args.data), args.target, family=args.model_family, task=args.task, params=_params(args.params),
        seed=args.seed, test_size=args.test_size, out_dir=Path(args.out) if args.out else None,
        progress=None if args.json else progress,
    )
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    metrics = result["metrics"]
    chosen = ", the default for the task; --model-family to choose" if result["family_auto"] else ""
    print(f"model        {result['family']} ({result['task']}{chosen})")
    print(f"rows         {result['rows']['used']} used, {result['rows']['quarantined']} quarantined")
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "r2", "rmse", "mae"):
        if metrics.get(name) is not None:
            print(f"{name:<12} {metrics[name]:.4f}")
    print(f"parity       max |sklearn - onnx| = {result['parity_max_abs_diff']:.2e}")
    latency = result["latency_ms"]
    print(f"latency      p50 {latency['p50']:.3f} ms, p95 {latency['p95']:.3f} ms (ONNX, one row)")
    for name, path in (result.get("artefacts") or {}).items():
        print(f"{name:<12} {path}")
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    from mlops.training.offline import compare_families

    families = args.families.split(",") if args.families else None
    rows = compare_families(Path(args.data), args.target, families=families, task=args.task, seed=args.seed,
                            test_size=args.test_size, progress=None if args.json else progress)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    metric_names = [m for m in ("accuracy", "f1", "roc_auc", "r2", "rmse")
                    if any(m in r.get("metrics", {}) for r in rows)]
    header = ["family", *metric_names, "parity", "p50 ms", "p95 ms", "fit s", "onnx KiB"]
    table = [header]
    failed = [r for r in rows if "error" in r]
    for r in (r for r in rows if "error" not in r):
        table.append([
            r["family"] + ("*" if r["default_for_task"] else ""),
            *(f"{r['metrics'].get(m, float('nan')):.4f}" for m in metric_names),
            f"{r['parity_max_abs_diff']:.1e}", f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['p95']:.3f}",
            f"{r['fit_seconds']:.2f}", f"{r['onnx_bytes'] / 1024:.0f}",
        ])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
    if any(r["default_for_task"] for r in rows if "error" not in r):
        print("* what `mlops train` trains when --model-family is not given")
    for r in failed:
        print(f"{r['family']}: failed: {r['error']}")
    return 1 if failed and len(failed) == len(rows) else 0

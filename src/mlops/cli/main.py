"""The ``mlops`` command.

Exit codes: 0 success, 1 the work ran but its outcome is negative (no model registered), 2 bad input or
configuration (one clear message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops.cli.batch import add_batch_command
from mlops.cli.drift import add_drift_commands
from mlops.cli.features import add_feature_commands
from mlops.core.errors import MlopsError


def _progress(line: str) -> None:
    print(f"  .. {line}", file=sys.stderr, flush=True)


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


def _cmd_train(args: argparse.Namespace) -> int:
    from mlops.training.offline import run_training

    result = run_training(
        Path(args.data), args.target, family=args.model_family, task=args.task, params=_params(args.params),
        seed=args.seed, test_size=args.test_size, out_dir=Path(args.out) if args.out else None,
        progress=None if args.json else _progress,
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


def _cmd_experiment(args: argparse.Namespace) -> int:
    from mlops.training.offline import compare_families

    families = args.families.split(",") if args.families else None
    rows = compare_families(Path(args.data), args.target, families=families, task=args.task, seed=args.seed,
                            test_size=args.test_size, progress=None if args.json else _progress)
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


def _lifecycle(args: argparse.Namespace, name: str | None = None) -> Any:
    """Against AWS, or the local cloud when AWS_ENDPOINT_URL points at it; names follow mlops.aws.platform.
    ``name``: the model, when not ``args.name`` (e.g. each model of ``--all``)."""
    from mlops import aws
    from mlops.aws import environment, platform
    from mlops.core.config import load_config
    from mlops.registry.store import Registry
    from mlops.release.deploy import ServingDeployer
    from mlops.release.lifecycle import Lifecycle

    config = load_config(args.config) if args.config else load_config()
    name = name or args.name
    config.model(name)
    # On AWS the stack's `Environment` output gives the physical names (they carry the stage), e.g.
    # `export REGISTRY_TABLE=... INFER_FUNCTIONS='{"<model>": "<function>"}'`; the local cloud's are derived.
    table = os.environ.get(environment.REGISTRY_TABLE) or platform.resource_names(config.project)["registry"]
    function = (json.loads(os.environ.get(environment.INFER_FUNCTIONS) or "{}").get(name)
                or platform.infer_function_name(config.project, name))
    # the API whose right to invoke the `live` alias a move checks (and repairs): the stack's output, or the local one
    api = os.environ.get(environment.API_SOURCE_ARN) or (_local_api_source_arn() if os.environ.get("AWS_ENDPOINT_URL")
                                                      else None)
    return Lifecycle(registry=Registry(aws.client("dynamodb"), table),
                     deployer=ServingDeployer(aws.client("lambda"), api_source_arn=api), function=function)


def _local_api_source_arn() -> str:
    from mlops import aws
    from mlops.local.cloud import ACCOUNT
    from mlops.local.gateway import execute_api_arn

    return execute_api_arn(aws.region(), ACCOUNT)


def _who() -> str:
    from mlops import aws

    try:
        return str(aws.client("sts").get_caller_identity()["Arn"])
    except Exception:  # no credentials to ask with: fall back to the local user name
        return os.environ.get("USER", "unknown")


def _cmd_models(args: argparse.Namespace) -> int:
    if args.action == "republish":
        return _cmd_republish(args)
    if not args.name:
        raise MlopsError(f"models {args.action} needs a model name")
    lifecycle = _lifecycle(args)
    if args.action in ("promote", "rollback"):
        result = getattr(lifecycle, args.action)(args.name, who=_who(), why=args.reason)
        print(json.dumps(result, indent=2) if args.json else
              f"{args.name}: {args.action} done; champion is now v{result['champion']} at 100%")
        return 0
    status = lifecycle.status(args.name)
    if args.action == "show":
        wanted = [v for v in status["versions"] if args.version is None or v["version"] == args.version]
        if not wanted:
            raise MlopsError(f"{args.name} has no version {args.version}")
        status = {**status, "versions": wanted}
        if args.json:
            print(json.dumps(status, indent=2, default=str))
            return 0
        for v in wanted:
            print(json.dumps(v, indent=2, default=str))
        return 0
    if args.json:
        print(json.dumps(status["versions"], indent=2, default=str))
        return 0
    print(f"{'version':<8} {'status':<11} {'weight':>7}  {'created':<25} metrics")
    for v in status["versions"]:
        metrics = v["metrics"].get("metrics", {})
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("accuracy", "f1", "roc_auc", "r2") if k in metrics)
        print(f"{v['version']:<8} {v['status']:<11} {v['weight']:>7.2f}  {v['created_at']:<25} {shown}")
    return 0


def _cmd_republish(args: argparse.Namespace) -> int:
    from mlops.core.config import load_config
    from mlops.release.lifecycle import NothingToDo

    config = load_config(args.config) if args.config else load_config()
    if args.all == bool(args.name):
        raise MlopsError("models republish: give a model name or --all")
    names = [m.name for m in config.models] if args.all else [args.name]
    results = []
    for name in names:
        try:
            results.append(_lifecycle(args, name).republish(
                name, who=_who(), why=args.reason if args.reason != "manual" else "the function's code changed"))
        except NothingToDo as exc:  # a model with nothing deployed yet has nothing to republish
            results.append({"model": name, "action": "skipped", "why": str(exc)})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        moved = ", ".join(f"v{v}: lambda {x['before']} -> {x['after']}"
                          for v, x in r.get("lambda_versions", {}).items())
        print(f"{r['model']}: {r['action']} {moved or r['why']}")
    return 0


def _cmd_ab_status(args: argparse.Namespace) -> int:
    from mlops.release.status import ab_status, render_html, render_table

    lifecycle = _lifecycle(args)
    status = ab_status(lifecycle.registry, lifecycle.deployer.split(lifecycle.function), args.name, args.challenger)
    if args.html:
        Path(args.html).write_text(render_html(status))
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(render_table(status))
    return 0


def _cmd_ab_plan(args: argparse.Namespace) -> int:
    from mlops.release.abtest import plan_two_proportions, ratio_from_weight, sequential_inflation

    try:
        plan = plan_two_proportions(args.baseline, args.mde, alpha=args.alpha, power=args.power,
                                    ratio=ratio_from_weight(args.weight) if args.weight else 1.0)
    except ValueError as exc:
        raise MlopsError(str(exc)) from exc
    inflation = sequential_inflation(plan)
    result = {**plan.to_dict(), "sequential_inflation": inflation,
              "max_samples_per_arm": int(inflation * min(plan.n_control, plan.n_treatment) + 0.999999)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"n per arm (fixed horizon): {plan.n_per_arm} control, {plan.n_treatment} challenger "
          f"(baseline {args.baseline}, mde {args.mde:+}, alpha {args.alpha}, power {args.power})")
    print(f"sequential test horizon:   up to {result['max_samples_per_arm']} per arm (x{inflation:.2f}); "
          "it usually stops much earlier")
    return 0


def _cmd_openapi(args: argparse.Namespace) -> int:
    """The API document, generated from the infer handler's routes (no cloud needed)."""
    import runpy

    from mlops import __version__
    from mlops.aws import platform

    os.environ.setdefault("MODEL_NAME", "model")
    os.environ.setdefault("REGISTRY_TABLE", "unused-for-openapi")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    handler = runpy.run_path(str(platform.FUNCTIONS_DIR / "infer" / "handler.py"))
    document = handler["app"].get_openapi_json_schema(
        title="serverless-mlops model API", version=__version__,
        description="Predictions, feedback and model status of every model; AWS_IAM (SigV4) authorization.")
    if args.out:
        Path(args.out).write_text(document + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(document)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mlops.cli.demo import main as demo_main
    from mlops.core.config import config_path

    return demo_main(Path(args.config) if args.config else config_path(), Path(args.out), verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description="serverless-mlops: the ML loop on AWS serverless parts")
    sub = parser.add_subparsers(dest="command", required=True)

    def offline(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help="a CSV file with a header row")
        p.add_argument("--target", required=True, help="the column to predict")
        p.add_argument("--task", choices=["binary", "multiclass", "regression"],
                       help="default: inferred from the target column")
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--test-size", type=float, default=0.2, help="share of rows held out (default 0.2)")
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")

    train = sub.add_parser("train", help="train, export to ONNX and evaluate one model on this machine, no cloud")
    offline(train)
    # The default is spelled out rather than read from mlops.core.families: importing it (and pydantic with it)
    # would slow every `mlops` command; tests/unit/test_cli.py keeps the words in step with the code.
    train.add_argument("--model-family",
                       help="logistic_regression | random_forest | hist_gradient_boosting | linear_regression "
                            "(default: chosen for the task: logistic_regression for a binary or multiclass "
                            "target, linear_regression for a regression target)")
    train.add_argument("--params", help="hyperparameters as a JSON object")
    train.add_argument("--out", help="write model.onnx, manifest.json and contract.json to this folder")
    train.set_defaults(func=_cmd_train)

    experiment = sub.add_parser("experiment", help="compare model families on the same split")
    offline(experiment)
    experiment.add_argument("--families", help="comma-separated families (default: all that fit the task; the "
                                               "table marks with * the one `mlops train` picks by default)")
    experiment.set_defaults(func=_cmd_experiment)

    models = sub.add_parser("models", help="list, show, promote or roll back a model's versions")
    models.add_argument("action", choices=["list", "show", "promote", "rollback", "republish"],
                        help="republish: champion and challenger again on the infer function's current code "
                             "(after a code-only cdk deploy), the split unchanged")
    models.add_argument("name", nargs="?", help="the model's name (as declared in mlops.toml)")
    models.add_argument("--all", action="store_true", help="republish: every declared model")
    models.add_argument("--version", type=int, help="show: only this version")
    models.add_argument("--reason", default="manual", help="promote/rollback: why (recorded in the registry)")
    models.add_argument("--config", help="project configuration (default: $MLOPS_CONFIG or ./mlops.toml)")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)

    ab = sub.add_parser("ab", help="A/B test planning and status").add_subparsers(dest="ab_command", required=True)
    status = ab.add_parser("status", help="the canary's looks: n, metric per arm, p-value, boundary, decision")
    status.add_argument("name", help="the model's name")
    status.add_argument("--challenger", type=int, help="the rollout of this challenger version (default: newest)")
    status.add_argument("--html", help="also write an HTML page with the metric per arm and the test's boundary")
    status.add_argument("--config", help="project configuration (default: $MLOPS_CONFIG or ./mlops.toml)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_ab_status)
    plan = ab.add_parser("plan", help="sample size per arm for a two-proportion test")
    plan.add_argument("--baseline", type=float, required=True, help="the champion's rate, e.g. 0.80 accuracy")
    plan.add_argument("--mde", type=float, required=True, help="minimum detectable effect, e.g. 0.02")
    plan.add_argument("--alpha", type=float, default=0.05)
    plan.add_argument("--power", type=float, default=0.8)
    plan.add_argument("--weight", type=float, help="challenger traffic share (default: equal arms)")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=_cmd_ab_plan)

    openapi = sub.add_parser("openapi", help="write the OpenAPI document of the model API")
    openapi.add_argument("--out", help="file to write (default: stdout)")
    openapi.set_defaults(func=_cmd_openapi)

    demo = sub.add_parser("demo", help="run the training pipeline on an embedded local cloud with a bundled dataset")
    demo.add_argument("--config", help="project configuration (default: $MLOPS_CONFIG or ./mlops.toml)")
    demo.add_argument("--out", default="demo-out", help="where to copy the registered artefacts")
    demo.add_argument("--verbose", action="store_true", help="also show the functions' JSON logs and metrics")
    demo.set_defaults(func=_cmd_demo)
    add_drift_commands(sub)
    add_batch_command(sub)  # mlops batch
    add_feature_commands(sub)

    from mlops.local.command import register as register_local

    register_local(sub)  # mlops local up
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except MlopsError as exc:
        print(f"mlops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlops {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error of ours; silence the flush at exit too
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

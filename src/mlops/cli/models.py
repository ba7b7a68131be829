"""``mlops models`` and ``mlops ab``: a deployed model's versions, and its A/B tests.

    mlops models list|show|promote|rollback <name> [--version N] [--reason WHY] [--json]
    mlops models republish <name> | --all
    mlops models import <name> --onnx model.onnx --contract contract.json [--metrics m.json] [--json]
    mlops status [--json] [--html FILE] [--window-minutes M]   (every declared model)
    mlops ab status <name> [--challenger N] [--html FILE] [--json]
    mlops ab plan --baseline P --mde D [--alpha A] [--power B] [--weight W]
                  [--daily-requests N [--feedback-rate R]] [--json]   (no cloud)

Against AWS, or the local cloud when AWS_ENDPOINT_URL points at it (names: ``mlops.cli.common``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mlops.cli.common import (
    add_config_option,
    api_source_arn,
    infer_function,
    invoke_platform_function,
    load_project,
    resource_name,
)
from mlops.core.errors import MlopsError


def add_model_commands(sub: Any) -> None:
    models = sub.add_parser("models", help="list, show, promote or roll back a model's versions")
    models.add_argument("action", choices=["list", "show", "promote", "rollback", "republish", "import"],
                        help="republish: champion and challenger again on the infer function's current code "
                             "(after a code-only cdk deploy), the split unchanged; import: an ONNX model trained "
                             "elsewhere, through the same gate, registry and canary as a trained one")
    models.add_argument("name", nargs="?", help="the model's name (as declared in mlops.toml)")
    models.add_argument("--all", action="store_true", help="republish: every declared model")
    models.add_argument("--version", type=int, help="show: only this version")
    models.add_argument("--reason", default="manual", help="promote/rollback: why (recorded in the registry)")
    models.add_argument("--onnx", help="import: the model file (one [N, 1] input per feature column, named after it, "
                                       "or one [N, F] input of the numeric feature columns in the contract's order)")
    models.add_argument("--contract", help="import: the data contract its inputs are checked against (JSON)")
    models.add_argument("--metrics", help="import: its metrics (JSON), recorded in its lineage; gated as declared "
                                          "when the model has no curated data to measure it on")
    add_config_option(models)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=run_models)

    status = sub.add_parser("status", help="every declared model at once: versions, split, rollout, live latency and "
                                           "errors, drift, last runs")
    status.add_argument("--html", help="also write the page as a self-contained HTML file")
    status.add_argument("--window-minutes", type=int, default=60,
                        help="the live figures' window, up to now (default 60)")
    add_config_option(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=run_status)
    ab = sub.add_parser("ab", help="A/B test planning and status").add_subparsers(dest="ab_command", required=True)
    status = ab.add_parser("status", help="the canary's looks: n, metric per arm, p-value, boundary, decision")
    status.add_argument("name", help="the model's name")
    status.add_argument("--challenger", type=int, help="the rollout of this challenger version (default: newest)")
    status.add_argument("--html", help="also write an HTML page with the metric per arm and the test's boundary")
    add_config_option(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=run_ab_status)
    plan = ab.add_parser("plan", help="sample size per arm for a two-proportion test")
    plan.add_argument("--baseline", type=float, required=True, help="the champion's rate, e.g. 0.80 accuracy")
    plan.add_argument("--mde", type=float, required=True, help="minimum detectable effect, e.g. 0.02")
    plan.add_argument("--alpha", type=float, default=0.05)
    plan.add_argument("--power", type=float, default=0.8)
    plan.add_argument("--weight", type=float, help="challenger traffic share (default: equal arms)")
    plan.add_argument("--daily-requests", type=float,
                      help="predictions a day: also say how many days the test takes (fixed horizon, the sequential "
                           "test's expected stop and its worst case)")
    plan.add_argument("--feedback-rate", type=float, default=1.0,
                      help="with --daily-requests: the share of predictions that get a label (default 1)")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=run_ab_plan)


def _lifecycle(args: argparse.Namespace, name: str | None = None) -> Any:
    """``name``: the model, when not ``args.name`` (e.g. each model of ``--all``)."""
    from mlops import aws
    from mlops.registry.store import Registry
    from mlops.release.deploy import ServingDeployer
    from mlops.release.lifecycle import Lifecycle

    config = load_project(args)
    name = name or args.name
    config.model(name)
    table = resource_name("registry", config.project)
    function = infer_function(config.project, name)
    api = api_source_arn()
    return Lifecycle(registry=Registry(aws.client("dynamodb"), table),
                     deployer=ServingDeployer(aws.client("lambda"), api_source_arn=api), function=function)


def _who() -> str:
    from mlops import aws

    try:
        return str(aws.client("sts").get_caller_identity()["Arn"])
    except Exception:  # no credentials to ask with: fall back to the local user name
        return os.environ.get("USER", "unknown")


def run_models(args: argparse.Namespace) -> int:
    if args.action == "republish":
        return _republish(args)
    if not args.name:
        raise MlopsError(f"models {args.action} needs a model name")
    if args.action == "import":
        return _import(args)
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


def _republish(args: argparse.Namespace) -> int:
    from mlops.release.lifecycle import NothingToDo

    config = load_project(args)
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


def _import(args: argparse.Namespace) -> int:
    """Checked and gated here, with the caller's credentials; registered and deployed by the platform's register
    function (the bucket policy lets only the platform's writer roles write under models/: mlops.pipeline.external)."""
    from mlops import aws
    from mlops.aws.storage import ObjectStore
    from mlops.pipeline.external import import_model, read_request
    from mlops.registry.store import Registry
    from mlops.release.deploy import ServingDeployer

    if not (args.onnx and args.contract):
        raise MlopsError("models import needs --onnx FILE and --contract FILE")
    config = load_project(args)
    config.model(args.name)
    request = read_request(args.name, onnx_path=args.onnx, contract_path=args.contract, metrics_path=args.metrics,
                           who=_who())
    deployer = ServingDeployer(aws.client("lambda"))
    result = import_model(
        request, config=config, data=ObjectStore(aws.client("s3"), resource_name("data", config.project)),
        models=ObjectStore(aws.client("s3"), resource_name("models", config.project)),
        registry=Registry(aws.client("dynamodb"), resource_name("registry", config.project)),
        register=lambda event: invoke_platform_function(config.project, "register", event),
        current_split=lambda: deployer.split(infer_function(config.project, args.name)).to_dict())
    print(json.dumps(result, indent=2, default=str) if args.json else _import_summary(result))
    return 1 if result["status"] == "rejected" else 0


def _metrics_line(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in ("accuracy", "f1", "roc_auc", "r2", "neg_rmse")
                     if isinstance(metrics.get(k), int | float))


def _import_summary(result: dict[str, Any]) -> str:
    """``mlops models import`` for a person: what became of the file, on what evidence, and where its lineage is."""
    file = result["file"]
    lines = [f"{result['model']}: {file['name']} (sha256 {file['sha256'][:12]}, {file['producer']}): "
             + (result["message"] if result["status"] != "rejected" else "rejected by the gate")]
    evaluation = result.get("evaluation")
    if evaluation:
        candidate, champion = evaluation["candidate"], evaluation["champion"]
        if evaluation["metrics_from"] == "holdout":
            holdout = evaluation["holdout"]
            lines.append(f"  measured on {holdout['rows']} held-out rows of dataset {holdout['dataset_sha256'][:12]}: "
                         f"{_metrics_line(candidate['metrics'])}; p95 {candidate['latency_ms']['p95']:.2f} ms")
        else:
            lines.append("  metrics DECLARED, not measured (no curated data yet): "
                         f"{_metrics_line(candidate['metrics'])}; p95 {candidate['latency_ms']['p95']:.2f} ms on rows "
                         "made from the contract")
        if champion:
            lines.append(f"  champion v{champion['version']}: {_metrics_line(champion['metrics'])}"
                         + (f" ({champion['note']})" if champion.get("note") else ""))
        lines += [f"  - {reason}" for reason in evaluation["reasons"]]
    if result.get("split"):
        weights = result["split"]["weights"]
        lines.append(f"  live alias: champion {weights['champion']:.0%}, challenger {weights['challenger']:.0%}"
                     + (f"; rollout {result['rollout'].rsplit(':', 1)[-1]}" if result.get("rollout") else ""))
    lines += [f"  changed in the stored copy: {change}" for change in result["changes"]]
    if result.get("manifest_uri"):
        lines.append(f"  lineage: {result['manifest_uri']} (imported by {result['imported_by']} at "
                     f"{result['imported_at']})")
    return "\n".join(lines)


def run_ab_status(args: argparse.Namespace) -> int:
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


def status_view(config: Any, window_minutes: int = 60) -> dict[str, Any]:
    """``mlops status``'s data, from the registry, the live aliases and CloudWatch of the deployment (or local cloud)
    the environment points at."""
    from datetime import timedelta

    from mlops import aws
    from mlops.registry.store import Registry
    from mlops.release.deploy import ServingDeployer
    from mlops.release.guardrails import ServingMetrics
    from mlops.release.overview import overview

    if window_minutes < 1:
        raise MlopsError(f"--window-minutes must be at least 1, got {window_minutes}")
    deployer = ServingDeployer(aws.client("lambda"), api_source_arn=api_source_arn())
    # the namespace the functions publish to: the deployment's (its Environment output), else the project's
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or config.project
    return overview(config.models, registry=Registry(aws.client("dynamodb"), resource_name("registry", config.project)),
                    split_of=lambda model: deployer.split(infer_function(config.project, model)),
                    metrics=ServingMetrics(aws.client("cloudwatch"), namespace),
                    window=timedelta(minutes=window_minutes))


def run_status(args: argparse.Namespace) -> int:
    from mlops.release.overview import render_html, render_text

    view = status_view(load_project(args), args.window_minutes)
    if args.html:
        Path(args.html).write_text(render_html(view))
        print(f"wrote {args.html}", file=sys.stderr)
    print(json.dumps(view, indent=2, default=str) if args.json else render_text(view))
    return 0


def run_ab_plan(args: argparse.Namespace) -> int:
    from mlops.release.abtest import plan_schedule, plan_two_proportions, ratio_from_weight, sequential_inflation

    if args.feedback_rate != 1.0 and args.daily_requests is None:
        raise MlopsError("--feedback-rate needs --daily-requests: the labels a day are the requests a day times it")
    try:
        plan = plan_two_proportions(args.baseline, args.mde, alpha=args.alpha, power=args.power,
                                    ratio=ratio_from_weight(args.weight) if args.weight else 1.0)
        schedule = None if args.daily_requests is None else plan_schedule(
            plan, daily_requests=args.daily_requests, feedback_rate=args.feedback_rate)
    except ValueError as exc:
        raise MlopsError(str(exc)) from exc
    inflation = sequential_inflation(plan)
    result = {**plan.to_dict(), "sequential_inflation": inflation,
              "max_samples_per_arm": int(inflation * min(plan.n_control, plan.n_treatment) + 0.999999),
              **({"schedule": schedule.to_dict()} if schedule else {})}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"n per arm (fixed horizon): {plan.n_per_arm} control, {plan.n_treatment} challenger "
          f"(baseline {args.baseline}, mde {args.mde:+}, alpha {args.alpha}, power {args.power})")
    print(f"sequential test horizon:   up to {result['max_samples_per_arm']} per arm (x{inflation:.2f}); "
          "it usually stops much earlier")
    if schedule:
        print(f"at {schedule.daily_requests:g} requests a day, {schedule.feedback_rate:g} of them labelled "
              f"({schedule.daily_feedback_control:.0f} control and {schedule.daily_feedback_challenger:.0f} "
              "challenger labels a day):")
        print(f"  fixed horizon:              {schedule.fixed_horizon_days:.1f} days")
        print(f"  sequential, expected stop:  {schedule.sequential_expected_days:.1f} days if the effect is "
              f"{args.mde:+} (90% of tests by {schedule.sequential_p90_days:.1f})")
        print(f"  sequential, worst case:     {schedule.sequential_worst_case_days:.1f} days (no difference, or a "
              "smaller one)")
    return 0

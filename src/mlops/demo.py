"""``mlops demo``: the training half of the loop on embedded moto, with a bundled dataset.

Uploads scikit-learn's breast-cancer data (with a few broken rows added, to show quarantine) under
``incoming/<model>/``, lets ingest, train_trigger and the Step Functions pipeline run exactly as they
would on AWS, then prints the run's steps, the registered version, its metrics and lineage, and copies
the artefacts out of the in-memory cloud to a local folder so they can be inspected afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops.config import load_config
from mlops.storage import parse_s3_uri


def demo_dataset(target: str) -> bytes:
    """breast-cancer as a CSV, plus three rows a real export would contain by mistake."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": target})
    text = frame.to_csv(index=False)
    lines = text.splitlines()
    first = lines[1].split(",")
    broken = [",".join(["n/a", *first[1:]]), lines[5], ",".join([*first[:-1], ""])]
    return ("\n".join([*lines, *broken]) + "\n").encode()


def _duration(start: datetime, end: datetime) -> str:
    return f"{(end - start).total_seconds():6.2f}s"


def _steps(history: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(state, outcome, duration) from an execution history."""
    steps: list[tuple[str, str, str]] = []
    entered: dict[str, datetime] = {}
    details: dict[str, Any]
    for event in history:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            details = event["stateEnteredEventDetails"]
            entered[details["name"]] = event["timestamp"]
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            steps.append((name, "ok", _duration(entered.get(name, event["timestamp"]), event["timestamp"])))
        elif kind in ("TaskFailed", "LambdaFunctionFailed", "ExecutionFailed"):
            details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            steps.append((kind, "failed", str(details.get("error", ""))))
    return steps


def run_demo(*, config_file: Path, out_dir: Path, say: Callable[[str], None] | None = None,
             verbose: bool = False) -> dict[str, Any]:
    from mlops.local.embedded import embedded_cloud

    if not verbose:
        # The functions' structured logs and metrics stay available with --verbose; the story reads better without.
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

    say = say or (lambda line: print(line, flush=True))
    config = load_config(config_file)
    model = config.models[0]
    started = time.perf_counter()
    say(f"== serverless-mlops demo: model '{model.name}' (target '{model.target}', {model.family}) ==")
    say("-> starting the local cloud (embedded moto: S3, DynamoDB, SNS, Lambda, Step Functions)")
    with embedded_cloud(config_file) as cloud:
        d = cloud.deployment
        say(f"   data bucket s3://{d.data_bucket}, models bucket s3://{d.models_bucket}")
        body = demo_dataset(model.target)
        key = cloud.upload(model.name, "breast_cancer.csv", body)
        rows = body.count(b"\n") - 1
        say(f"-> uploaded s3://{d.data_bucket}/{key} ({len(body) / 1024:.0f} KiB, {rows} rows, "
            "3 of them broken on purpose)")
        ingest = next(i for i in cloud.runtime.invocations if i.function.endswith("ingest"))
        outcome = ingest.result["results"][0] if not ingest.errored else {"status": "error", "reason": ingest.result}
        say(f"-> ingest: {outcome['status']}: {outcome.get('rows_curated')} rows curated, "
            f"{outcome.get('rows_quarantined')} quarantined (contract v{outcome.get('contract_version')})")
        if outcome.get("quarantine_uri"):
            _bucket, qkey = parse_s3_uri(outcome["quarantine_uri"])
            for line in cloud.data.get_bytes(qkey).decode().splitlines()[1:]:
                say(f"     quarantined line {line.split(',')[-2]}: {line.split(',')[-1]}")
        say("-> training pipeline (Step Functions, infra/training_pipeline.asl.json):")
        [execution] = cloud.wait_for_executions(1)
        for state, result, took in _steps(cloud.history(execution["executionArn"])):
            say(f"     {state:<18} {result:<7} {took}")
        say(f"   execution {execution['status']}")
        versions = cloud.registry.versions(model.name)
        if not versions:
            runs = cloud.registry.runs(model.name)
            reason = runs[-1].reason if runs else "no run recorded"
            say(f"!! no version registered: {reason}")
            return {"status": execution["status"], "reason": reason}
        version = versions[-1]
        _b, manifest_key = parse_s3_uri(version.manifest_uri)
        manifest = cloud.models.get_json(manifest_key)
        out_dir.mkdir(parents=True, exist_ok=True)
        for uri in (version.model_uri, version.manifest_uri, version.baseline_uri):
            _b, k = parse_s3_uri(uri)
            (out_dir / k.rsplit("/", 1)[1]).write_bytes(cloud.models.get_bytes(k))
        if outcome.get("quarantine_uri"):
            quarantined = cloud.data.get_bytes(parse_s3_uri(outcome["quarantine_uri"])[1])
            (out_dir / "quarantined_rows.csv").write_bytes(quarantined)
        metrics = manifest["metrics"]
        latency = manifest.get("latency", {})
        say(f"-> registered {model.name} v{version.version} as {', '.join(version.aliases)}")
        say("   metrics (held-out rows): " + ", ".join(
            f"{k} {metrics[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1", "roc_auc") if k in metrics))
        if latency:
            say(f"   ONNX single-row latency: p50 {latency.get('p50', 0):.3f} ms, p95 {latency.get('p95', 0):.3f} ms")
        say("   lineage:")
        say(f"     dataset   sha256 {manifest['dataset']['sha256'][:16]}... from {manifest['dataset']['uri']}")
        say(f"     code      {manifest['code_version']}, {manifest['family']} {json.dumps(manifest['params'])[:80]}"
            f" seed {manifest['seed']}")
        say("     libraries " + ", ".join(f"{k} {v}" for k, v in sorted(manifest["libraries"].items())))
        say(f"     onnx      sha256 {manifest['onnx']['sha256'][:16]}..., opset {manifest['onnx'].get('opset')}")
        say(f"   artefacts in the (in-memory) cloud: {version.artefacts_prefix}")
        say(f"   copied to {out_dir}/: " + ", ".join(sorted(p.name for p in out_dir.iterdir())))
        say(f"== done in {time.perf_counter() - started:.1f}s. Next: `mlops train --data FILE.csv --target COL` "
            "to experiment offline. ==")
        return {"status": execution["status"], "version": version.to_dict(), "out_dir": str(out_dir)}


def main(config_file: Path, out_dir: Path, verbose: bool = False) -> int:
    result = run_demo(config_file=config_file, out_dir=out_dir, verbose=verbose)
    return 0 if result.get("version") else 1


if __name__ == "__main__":
    sys.exit(main(Path("mlops.toml"), Path("demo-out")))

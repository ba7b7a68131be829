"""``mlops demo``: the training half of the loop on embedded moto, with a bundled dataset.

Uploads scikit-learn's breast-cancer data (with a few broken rows added, to show quarantine) under
``incoming/<model>/``, lets ingest, train_trigger and the Step Functions pipeline run exactly as they
would on AWS, then prints the run's steps, the registered version, its metrics and lineage, and copies
the artefacts out of the in-memory cloud to a local folder so they can be inspected afterwards.

Why one module of this length: it is one story, told in order (train, serve, canary, drift, batch, features);
every chapter is a short function and the order of the file is the order of the story.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops.aws.storage import parse_s3_uri
from mlops.core.config import load_config
from mlops.core.errors import MlopsError
from mlops.release.deploy import ServingDeployer
from mlops.release.status import ab_status, render_html, render_table


def demo_dataset(target: str) -> bytes:
    """breast-cancer as a CSV, plus three rows a real export would contain by mistake."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": target})
    text = frame.to_csv(index=False)
    lines = text.splitlines()
    first = lines[1].split(",")
    broken = [",".join(["n/a", *first[1:]]), lines[5], ",".join([*first[:-1], ""])]
    return ("\n".join([*lines, *broken]) + "\n").encode()


def purchases_dataset(customers: int = 150, per_customer: int = 8, seed: int = 3) -> Any:
    """Customers' purchases over 90 days, in shuffled file order, as a DataFrame: the example of a model whose
    inputs come from the feature store (an entity, a timestamp, a history to aggregate). ``big``: over 100."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = customers * per_customer
    at = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 90 * 24, n), unit="h")
    frame = pd.DataFrame({"customer": np.repeat(np.arange(1000, 1000 + customers), per_customer),
                          "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "amount": rng.gamma(2.0, 50.0, n).round(2),
                          "channel": rng.choice(["web", "shop", "phone"], n)})
    frame["big"] = (frame["amount"] > 100).astype(int)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


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

    # The functions' structured logs and metrics stay available with --verbose; the story reads better without.
    quiet = None if verbose else open(os.devnull, "w")  # noqa: SIM115 - closed with the process

    say = say or (lambda line: print(line, flush=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    config_file = demo_config(config_file, out_dir)
    config = load_config(config_file)
    model = config.models[0]
    target = model.target
    if target is None:
        raise MlopsError(f"the demo tells its story with the first model of {config_file}, which must learn a target "
                         f"(its data is breast-cancer's); {model.name} is a {model.task} model")
    started = time.perf_counter()
    say(f"== serverless-mlops demo: model '{model.name}' (target '{target}', {model.family}) ==")
    say("-> starting the local cloud (embedded moto: S3, DynamoDB, SNS, Lambda, Step Functions)")
    with embedded_cloud(config_file, handler_output=quiet, buffered_captures=True) as cloud:
        d = cloud.deployment
        say(f"   data bucket s3://{d.data_bucket}, models bucket s3://{d.models_bucket}")
        body = demo_dataset(target)
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
        canary = (_serve_and_canary(cloud, model.name, target, model.rollout_interval_seconds, say, out_dir)
                  if model.task.is_classification else None)
        drift = _drift_and_retrain(cloud, model.name, target, say, out_dir) if canary else None
        batch = _batch(cloud, model.name, target, say) if canary else None
        features = _feature_store(cloud, say) if FEATURE_MODEL in {m.name for m in config.models} else None
        versions = cloud.registry.versions(model.name)
        say(f"== done in {time.perf_counter() - started:.1f}s: {len(versions)} versions of {model.name}, champion "
            f"v{next((v.version for v in versions if 'champion' in v.aliases), '?')}; reports and artefacts in "
            f"{out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir() if p.suffix == '.html'))}) ==")
        say("   poke at a running cloud: `.venv/bin/mlops local up` (prints its endpoints), then the AWS CLI "
            "(`aws --endpoint-url ... s3 cp data.csv s3://mlops-data/incoming/<model>/`), curl "
            "(`POST <api_url>/models/<model>/predict`), `mlops models list <model>`, `mlops ab status <model>`, "
            "`mlops drift report <model>`, `mlops batch <model> s3://mlops-data/batch/<model>/ --wait`, `aws sqs "
            "send-message` to `mlops-push-<model>` and `mlops features get <model> <entity>` with AWS_ENDPOINT_URL "
            "set; "
            "offline: `mlops train --data FILE.csv --target COL`, `mlops drift --reference A.csv --current B.csv` and "
            "`mlops features training-set`")
        return {"status": execution["status"], "version": version.to_dict(), "out_dir": str(out_dir),
                "canary": canary, "drift": drift, "batch": batch, "features": features}


class ApiAnswerError(MlopsError):
    """The API answered one of the demo's requests with an error: the demo stops and says so in one sentence."""

    def __init__(self, method: str, path: str, status: int, answer: Any) -> None:
        said = answer.get("message") if isinstance(answer, dict) else None
        super().__init__(f"{method} {path} answered {status}: {said or json.dumps(answer)[:300]}")
        self.status = status


def _invoke(cloud: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """The API's answer (its JSON body), routed to the model's `live` alias as API Gateway would; an error answer
    raises ApiAnswerError, so that no step reads a prediction out of an error."""
    status, answer = cloud.api(method, path, body)
    if status >= 400 or not isinstance(answer, dict):
        raise ApiAnswerError(method, path, status, answer)
    return answer


def new_world(target: str) -> tuple[bytes, list[dict[str, Any]], list[str]]:
    """breast-cancer after the world changed: the label of large tumours (mean radius > 15) flipped. Returns
    the CSV a data scientist would upload, and live rows with the labels reality will report back."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": target})
    flipped = frame["mean radius"] > 15
    frame.loc[flipped, target] = 1 - frame.loc[flipped, target]
    rows = frame.drop(columns=target).to_dict("records")
    return frame.to_csv(index=False).encode(), rows, [str(v) for v in frame[target]]


def _serve_and_canary(cloud: Any, model: str, target: str, interval: int, say: Callable[[str], None],
                      out_dir: Path) -> dict[str, Any]:
    function = cloud.deployment.infer_function(model)
    rows_csv, rows, labels = new_world(target)
    answer = _invoke(cloud, "POST", f"/models/{model}/predict", {"features": rows[0]})
    say(f"-> serving: POST /models/{model}/predict -> prediction {answer['prediction']!r}, "
        f"p={max(answer['probabilities'].values()):.3f}, v{answer['model_version']} ({answer['variant']})")
    say("-> the world changes: large tumours now carry the other label; a new dataset arrives")
    cloud.upload(model, "breast_cancer_new_world.csv", rows_csv)
    executions = cloud.wait_for_executions(2)
    challenger = cloud.registry.alias(model, "challenger")
    if challenger is None:
        runs = cloud.registry.runs(model)
        say(f"!! the new model was not registered: {runs[-1].reason if runs else executions[-1]['status']}")
        return {"promoted": False}
    split = cloud.client("lambda").get_alias(FunctionName=function, Name="live")
    weight = next(iter((split.get("RoutingConfig") or {}).get("AdditionalVersionWeights", {}).values()), 0.0)
    say(f"-> registered v{challenger.version} as challenger; the live alias sends it {weight:.0%} of the traffic")
    say("-> live traffic with feedback from the new world (the rollout looks every "
        f"{interval} s):")
    seen = {"champion": [0, 0], "challenger": [0, 0]}
    rollout_arn = cloud.deployment.rollout_arn
    for i in range(4000):
        row, label = rows[i % len(rows)], labels[i % len(labels)]
        answer = _invoke(cloud, "POST", f"/models/{model}/predict", {"features": row})
        _invoke(cloud, "POST", f"/models/{model}/feedback",
                {"request_id": answer["request_id"], "label": label})
        arm = seen.setdefault(answer["variant"], [0, 0])
        arm[0] += int(answer["prediction"] == label)
        arm[1] += 1
        if i % 250 == 249:
            say("     " + ", ".join(f"{name}: {ok}/{n} right" for name, (ok, n) in seen.items() if n))
        if i % 50 == 49 and all(e["status"] != "RUNNING" for e in cloud.executions(rollout_arn)):
            break
    [rollout] = cloud.wait_for_executions(1, timeout=120, state_machine_arn=rollout_arn)
    output = json.loads(rollout.get("output") or "{}")
    look = (output.get("history") or [{}])[-1]
    say(f"-> rollout decided: {output.get('action')} after {output.get('looks')} looks "
        f"(p={look.get('p_value', float('nan')):.2g}, challenger-champion accuracy in "
        f"[{look.get('lower', float('nan')):+.3f}, {look.get('upper', float('nan')):+.3f}])")
    champion = cloud.registry.alias(model, "champion")
    say(f"   champion is now v{champion.version if champion else '?'} at 100%; audit: "
        + "; ".join(f"{e['action']} by {e['who']}" for e in cloud.registry.events(model)))
    status = ab_status(cloud.registry, ServingDeployer(cloud.client("lambda")).split(function), model)
    (out_dir / "ab-status.html").write_text(render_html(status))
    table = render_table(status).splitlines()
    say("   the rollout's looks (`mlops ab status`; chart in ab-status.html):")
    for line in [table[3], *table[4:][-4:]]:
        say(f"     {line}")
    return {"action": output.get("action"), "champion": champion.version if champion else None}


DRIFTED = ("mean radius", "mean texture", "mean perimeter", "mean area")


def _drift_and_retrain(cloud: Any, model: str, target: str, say: Callable[[str], None],
                       out_dir: Path) -> dict[str, Any]:
    """A sensor is recalibrated: a few inputs arrive one standard deviation higher. drift_check (scheduled
    on AWS, called here) finds it window after window; retraining is asked for once, then debounced."""
    import pandas as pd

    _csv, rows, labels = new_world(target)
    frame = pd.DataFrame(rows)
    for name in DRIFTED:
        frame[name] = frame[name] + frame[name].std()
    say(f"-> the inputs drift: {', '.join(DRIFTED)} now arrive one standard deviation higher")
    started = datetime.now(UTC)
    for i, row in enumerate(frame.head(400).to_dict("records")):
        answer = _invoke(cloud, "POST", f"/models/{model}/predict", {"features": row})
        _invoke(cloud, "POST", f"/models/{model}/feedback",
                {"request_id": answer["request_id"], "label": labels[i]})
    cloud.flush_captures()
    lam, retrain, summary = cloud.client("lambda"), None, {}
    for look in range(4):  # four checks in a row, as the schedule would run them (each its own window end)
        end = datetime.now(UTC) + timedelta(seconds=look)
        hours = (end - started).total_seconds() / 3600
        response = lam.invoke(FunctionName=cloud.deployment.function_arns["drift_check"],
                              Payload=json.dumps({"model": model, "window_end": end.isoformat(),
                                                  "window_hours": hours}).encode())
        summary = json.loads(response["Payload"].read())
        if "FunctionError" in response:
            say(f"!! drift_check failed: {summary.get('errorMessage')}")
            return {"status": "error"}
        decision = summary["retrain"]
        retrain = retrain or (decision["file"] if decision["requested"] else None)
        say(f"   drift_check #{look + 1}: {summary['status']}, drifted: "
            f"{', '.join(summary['drifted_features']) or 'none'}; retrain: "
            f"{'ASKED' if decision['requested'] else 'no'} ({decision['reason']})")
    report_uri = summary["report"]["html"]
    (out_dir / "drift-report.html").write_bytes(cloud.models.get_bytes(parse_s3_uri(report_uri)[1]))
    say(f"   report: {report_uri} (copied to {out_dir}/drift-report.html)")
    if retrain:
        executions = cloud.wait_for_executions(3)
        versions = cloud.registry.versions(model)
        say(f"-> retraining on curated + captured labelled rows ({retrain.rsplit('/', 1)[-1]}): pipeline "
            f"{executions[-1]['status'] if executions else '?'}, latest version v{versions[-1].version} "
            f"({', '.join(versions[-1].aliases) or 'not deployed'})")
        # its canary would now wait for live traffic: the demo ends here (the local cloud stops the rollout)
    return {"status": summary.get("status"), "retrain": retrain}


def _batch(cloud: Any, model: str, target: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Batch inference over S3: two files of patients, one row of them broken, scored by the champion."""
    import io

    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    frame.insert(0, "patient", [f"p{i:04d}" for i in range(len(frame))])
    prefix = f"batch/{model}/demo/"
    broken = frame.iloc[:300].astype(object)
    broken.loc[7, "mean radius"] = "n/a"
    buffer = io.BytesIO()
    frame.iloc[300:].to_parquet(buffer, index=False)
    cloud.data.put_bytes(prefix + "clinic-a.csv", broken.to_csv(index=False).encode(), content_type="text/csv")
    cloud.data.put_bytes(prefix + "clinic-b.parquet", buffer.getvalue())
    started = _invoke(cloud, "POST", f"/models/{model}/batch", {"input": cloud.data.uri(prefix)})
    say(f"-> batch inference: POST /models/{model}/batch over {cloud.data.uri(prefix)} (a CSV and a Parquet file, "
        f"{len(frame)} patients) -> 202, batch {started.get('batch_id')}")
    status: dict[str, Any] = {"status": "running"}
    deadline = time.monotonic() + 120
    while status.get("status") == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = _invoke(cloud, "GET", f"/models/{model}/batch/{started.get('batch_id')}")
    summary = status.get("summary") or {}
    say(f"   Step Functions (Distributed Map, one child per object): {status.get('status')}: "
        f"{summary.get('rows_in')} rows in, {summary.get('rows_out')} scored, {summary.get('rows_failed')} failed "
        f"with reasons; predictions and manifest under {started.get('output')}")
    return {"status": status.get("status"), **summary}


FEATURE_MODEL = "shop"
# The feature store's example (docs/features.md), added to the demo's configuration when the project has no model
# of that name: its inputs are aggregates of each customer's purchases, looked up online by customer id.
FEATURE_MODEL_TOML = f"""
[[model]]
name = "{FEATURE_MODEL}"
target = "big"
family = "logistic_regression"
rollout_interval_seconds = 2

[model.features]
entity_key = "customer"
timestamp = "at"
columns = [
  {{ name = "amount" }},
  {{ name = "mean_amount", source = "amount", aggregate = "mean" }},
  {{ name = "purchases", source = "amount", aggregate = "count" }},
  {{ name = "spent_7d", source = "amount", aggregate = "sum", window = "7d" }},
  {{ name = "channel" }},
]
"""


def _feature_store(cloud: Any, say: Callable[[str], None]) -> dict[str, Any]:
    from mlops.features.online import OnlineStore

    frame = purchases_dataset()
    say(f"-> the feature store: model '{FEATURE_MODEL}' learns from each customer's purchase history "
        f"({len(frame)} purchases of {frame['customer'].nunique()} customers), not from raw columns")
    before = len(cloud.executions())
    cloud.upload(FEATURE_MODEL, "purchases.csv", frame.to_csv(index=False).encode())
    execution = cloud.wait_for_executions(before + 1)[-1]
    champion = cloud.registry.alias(FEATURE_MODEL, "champion")
    if champion is None:
        say(f"!! {FEATURE_MODEL} was not registered: {execution['status']}")
        return {"registered": False}
    say(f"   trained v{champion.version} on the point-in-time training set (every row sees its customer's past "
        f"only); accuracy {champion.metrics.get('metrics', {}).get('accuracy', float('nan')):.3f}")
    online = OnlineStore(cloud.client("dynamodb"), cloud.deployment.names["features"])
    found = online.get(FEATURE_MODEL, "1042")
    answer = _invoke(cloud, "POST", f"/models/{FEATURE_MODEL}/predict", {"entity_id": 1042})
    values = ", ".join(f"{k} {v}" for k, v in (found.values if found else {}).items())
    say(f"   online store (DynamoDB, written by ingest): customer 1042 as of {answer.get('features_as_of')}: {values}")
    say(f"   POST /models/{FEATURE_MODEL}/predict {{\"entity_id\": 1042}} -> prediction {answer.get('prediction')!r}, "
        f"v{answer.get('model_version')}")
    return {"registered": True, "version": champion.version, "prediction": answer.get("prediction")}


def demo_config(config_file: Path, workdir: Path) -> Path:
    """The project's configuration with the first model's rollout looking every second (not every few
    minutes, as in production), so the canary is decided while you watch."""
    text = config_file.read_text()
    # In one process the two arms share two cores: their latencies differ by noise, not by model, so the
    # demo's latency guardrail is loose (production keeps the configured one).
    setting = "rollout_interval_seconds = 2\nguardrail_max_p95_ratio = 5.0"
    if re.search(r"^rollout_interval_seconds\s*=.*$", text, flags=re.M):
        text = re.sub(r"^rollout_interval_seconds\s*=.*$", setting, text, count=1, flags=re.M)
    else:
        text = re.sub(r"^(name\s*=.*)$", rf"\1\n{setting}", text, count=1, flags=re.M)
    if not re.search(rf'^name\s*=\s*"{FEATURE_MODEL}"', text, flags=re.M):
        text += FEATURE_MODEL_TOML
    path = workdir / "mlops.cli.demo.toml"
    path.write_text(text)
    return path


def main(config_file: Path, out_dir: Path, verbose: bool = False) -> int:
    try:
        result = run_demo(config_file=config_file, out_dir=out_dir, verbose=verbose)
    except (ApiAnswerError, MlopsError, TimeoutError) as exc:
        # the story cannot go on: what the API or the cloud said is the reason, not a traceback
        print(f"mlops demo: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0 if result.get("version") else 1


if __name__ == "__main__":
    sys.exit(main(Path("mlops.toml"), Path("demo-out")))

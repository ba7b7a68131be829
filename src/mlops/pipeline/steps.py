"""The training pipeline's steps after the trigger (``mlops.pipeline.trigger``): train, evaluate, register and
record_outcome. Each is one core function called by one thin handler; Step Functions
(``infra/training_pipeline.asl.json``) strings them together and owns retries and failure routing. Each receives the
execution's :class:`mlops.pipeline.inputs.PipelineInput`.

State that flows between steps is small JSON (URIs, numbers, booleans shaped for Choice rules); the
heavy artefacts live in the models bucket::

    candidates/<model>/<run_id>/{model.onnx, test.parquet, contract.json, baseline.json, train.json}
    models/<model>/runs/<run_id>/{model.onnx, manifest.json, baseline.json, contract.json}   (registered)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops.aws.storage import ObjectStore, parse_s3_uri
from mlops.core.config import ModelConfig, ProjectConfig
from mlops.core.errors import IntegrityError, InvalidDataset
from mlops.pipeline.inputs import PipelineInput
from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION, ModelVersion
from mlops.release.deploy import ServingDeployer, Split

if TYPE_CHECKING:
    from mlops.data.schema import DataContract

# The scientific stack (pandas via mlops.data.frames/mlops.data.ingest, sklearn, onnx) is imported inside the steps
# that use it: the register step's image loads faster without what only train and evaluate need.


# -- train ---------------------------------------------------------------------------------------------------
def candidate_prefix(model: str, run_id: str) -> str:
    """Where train leaves a run's candidate (models bucket), and ``mlops models import`` an imported one."""
    return f"candidates/{model}/{run_id}/"


def run_artefacts_prefix(model: str, run_id: str) -> str:
    """Where register copies a run's artefacts (models bucket); a registry version points at it."""
    return f"models/{model}/runs/{run_id}/"


def _load_dataset(inp: PipelineInput, s3: Any) -> tuple[Any, DataContract]:
    from mlops.data.frames import get_parquet
    from mlops.data.ingest import ContractStore

    bucket, key = parse_s3_uri(inp.dataset.uri)
    data = ObjectStore(s3, bucket)
    frame = get_parquet(data, key)
    contract = ContractStore(data).get(inp.model, inp.dataset.contract_version)
    return frame, contract


def train_step(inp: PipelineInput, *, config: ProjectConfig, s3: Any, models: ObjectStore) -> dict[str, Any]:
    from mlops.data.baseline import build_baseline
    from mlops.data.frames import put_parquet
    from mlops.serving.onnx_model import OnnxModel
    from mlops.training.onnx_export import check_parity, to_onnx
    from mlops.training.train import train

    model_cfg = config.model(inp.model)
    frame, contract = _load_dataset(inp, s3)
    features = None
    if model_cfg.features is not None:
        # the model's inputs are its declared features, each row's as of its own time (mlops.features.offline)
        from mlops.features.offline import training_set
        from mlops.features.online import definitions_sha256

        frame, contract = training_set(frame, contract, model_cfg.features)
        features = {"definitions_sha256": definitions_sha256(model_cfg.features),
                    "entity_key": model_cfg.features.entity_key}
    result = train(frame, contract, model_cfg)
    started = time.perf_counter()
    onnx_bytes = to_onnx(result.pipeline, contract, model_cfg.task)
    export_seconds = time.perf_counter() - started
    parity = check_parity(result.pipeline, onnx_bytes, result.test_df, contract, model_cfg.task)
    onnx = OnnxModel(onnx_bytes)
    predictions = onnx.predict(result.test_df).labels
    baseline = build_baseline(result.train_df, contract, predictions=predictions, seed=model_cfg.seed)
    prefix = candidate_prefix(inp.model, inp.run_id)
    sha = hashlib.sha256(onnx_bytes).hexdigest()
    models.put_bytes(prefix + "model.onnx", onnx_bytes)
    put_parquet(models, prefix + "test.parquet", result.test_df)
    models.put_bytes(prefix + "contract.json", contract.to_json().encode(), content_type="application/json")
    models.put_json(prefix + "baseline.json", baseline)
    summary = {
        "candidate_prefix": models.uri(prefix),
        "onnx_sha256": sha,
        "onnx_bytes": len(onnx_bytes),
        "family": model_cfg.family,
        "params": result.params,
        "seed": result.seed,
        "classes": list(result.classes),
        "rows": {"train": len(result.train_df), "test": len(result.test_df)},
        "parity_max_abs_diff": parity.max_abs_diff,
        # what the export was held to (mlops.training.onnx_export.parity_tolerance: XGBoost's is its own)
        "parity_tolerance": parity.tolerance,
        "timings": {"fit_seconds": result.fit_seconds, "export_seconds": export_seconds},
        "features": features,
    }
    models.put_json(prefix + "train.json", summary)
    return summary


# -- evaluate ------------------------------------------------------------------------------------------------
def _verified_onnx(store: ObjectStore, key: str, sha256: str) -> bytes:
    data = store.get_bytes(key)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise IntegrityError(f"{store.uri(key)} has sha256 {actual[:12]}, its record says {sha256[:12]}")
    return data


def gate(model_cfg: ModelConfig, candidate: dict[str, Any], champion: dict[str, Any] | None) -> dict[str, Any]:
    """The two verdicts the Choice state reads, and the reasons a person reads."""
    reasons = []
    for metric, minimum in sorted(model_cfg.thresholds.items()):
        value = candidate.get(metric)
        if value is None or value < minimum:
            reasons.append(f"{metric} {value} is below the threshold {minimum}")
    meets = not reasons
    beats = True
    # a metric can be undefined on the rows (None: a clustering's silhouette when they all fall in one cluster): a
    # candidate's is worse than any champion's, a champion's sets no floor
    if champion is not None and champion["metrics"].get(model_cfg.primary_metric) is not None:
        metric = model_cfg.primary_metric
        floor = champion["metrics"][metric] - model_cfg.champion_margin
        if candidate.get(metric) is None or candidate[metric] < floor:
            beats = False
            shown = "undefined" if candidate.get(metric) is None else f"{candidate[metric]:.4f}"
            reasons.append(
                f"{metric} {shown} is worse than champion v{champion['version']} "
                f"({champion['metrics'][metric]:.4f}) by more than the margin {model_cfg.champion_margin}"
            )
    return {"meets_thresholds": meets, "beats_champion": beats, "reasons": reasons}


def evaluate_step(inp: PipelineInput, train: dict[str, Any], *, config: ProjectConfig, models: ObjectStore,
                  registry: Registry) -> dict[str, Any]:
    from mlops.data.frames import get_parquet
    from mlops.data.schema import DataContract
    from mlops.serving.onnx_model import OnnxModel
    from mlops.training.evaluation import evaluate

    model_cfg = config.model(inp.model)
    _bucket, prefix = parse_s3_uri(train["candidate_prefix"])
    test_df = get_parquet(models, prefix + "test.parquet")
    contract = DataContract.from_json(models.get_bytes(prefix + "contract.json").decode())
    candidate_model = OnnxModel(_verified_onnx(models, prefix + "model.onnx", train["onnx_sha256"]))
    candidate = evaluate(candidate_model, test_df, contract, model_cfg.task)
    champion_eval = champion_evaluation(inp.model, test_df, contract, model_cfg, models=models, registry=registry)
    verdict = gate(model_cfg, candidate["metrics"], champion_eval)
    return {"candidate": candidate, "champion": champion_eval, **verdict}


def champion_evaluation(model: str, test_df: Any, contract: DataContract, model_cfg: ModelConfig, *,
                        models: ObjectStore, registry: Registry) -> dict[str, Any] | None:
    """The champion measured on the candidate's held-out rows (None: no champion yet). A trained candidate and an
    imported one (``mlops.pipeline.external``) are compared with it alike."""
    from mlops.serving.onnx_model import OnnxModel
    from mlops.training.evaluation import evaluate

    champion = registry.alias(model, CHAMPION)
    if champion is None:
        return None
    _b, key = parse_s3_uri(champion.model_uri)
    champion_model = OnnxModel(_verified_onnx(models, key, champion.onnx_sha256))
    missing = sorted(set(champion_model.input_names) - set(test_df.columns))
    if missing:
        # The schema changed: the champion cannot score these rows, so the comparison falls back to
        # the champion's own recorded metrics, which is said in the result.
        return {"version": champion.version, "metrics": champion.metrics.get("metrics", {}),
                "note": f"champion needs columns {missing} absent from this dataset"}
    return {"version": champion.version, **evaluate(champion_model, test_df, contract, model_cfg.task)}


# -- register ------------------------------------------------------------------------------------------------
def register_step(inp: PipelineInput, train: dict[str, Any], evaluation: dict[str, Any], *,
                  config: ProjectConfig, models: ObjectStore, registry: Registry, execution_arn: str | None,
                  deployer: ServingDeployer | None = None, infer_function: str | None = None,
                  start_rollout: Callable[[int, int], str] | None = None) -> dict[str, Any]:
    from mlops.registry.manifest import build_manifest

    model_cfg = config.model(inp.model)
    if not (evaluation["meets_thresholds"] and evaluation["beats_champion"]):
        raise InvalidDataset("register was called for a candidate the gate rejected")
    _bucket, cand = parse_s3_uri(train["candidate_prefix"])
    onnx_bytes = _verified_onnx(models, cand + "model.onnx", train["onnx_sha256"])
    final = run_artefacts_prefix(inp.model, inp.run_id)
    dataset_manifest_bucket, dataset_manifest_key = parse_s3_uri(inp.dataset.manifest_uri)
    # what serving and drift_check read besides the model: each verified against these before use (an imported
    # candidate without data has no baseline: its train summary lists what it has)
    names = train.get("sidecars", ("baseline.json", "contract.json"))
    sidecars = {name: models.get_bytes(cand + name) for name in names}
    manifest = build_manifest(
        model=inp.model,
        run_id=inp.run_id,
        dataset={"sha256": inp.dataset.sha256, "uri": inp.dataset.uri, "manifest_uri": inp.dataset.manifest_uri,
                 "rows": inp.dataset.rows, "contract_version": inp.dataset.contract_version},
        family=train["family"],
        task=str(model_cfg.task),
        params=train["params"],
        seed=train["seed"],
        onnx_bytes=onnx_bytes,
        classes=train["classes"],
        features=json.loads(models.get_bytes(cand + "contract.json"))["columns"],
        metrics=evaluation["candidate"]["metrics"],
        latency=evaluation["candidate"].get("latency", {}),
        timings=train["timings"],
        extra={"parity_max_abs_diff": train["parity_max_abs_diff"], "parity_tolerance": train.get("parity_tolerance"),
               "execution_arn": execution_arn,
               "feature_store": train.get("features"),
               "champion_at_evaluation": evaluation.get("champion"), "reason": inp.reason,
               "training_backend": {"backend": inp.training_backend, "reason": inp.training_backend_reason},
               "dataset_manifest": {"bucket": dataset_manifest_bucket, "key": dataset_manifest_key},
               **{name.removesuffix(".json"): {"uri": models.uri(final + name),
                                               "sha256": hashlib.sha256(body).hexdigest()}
                  for name, body in sidecars.items()},
               # a model trained outside the platform (mlops.pipeline.external) says what it is instead of what a
               # training run knows (its dataset, its backend): its source, file, importer, what it was measured on
               **train.get("lineage", {})},
    )
    # Artefacts first, under the run's own prefix; the registry record that makes them a version comes last.
    if not models.exists(final + "model.onnx"):
        models.put_bytes(final + "model.onnx", onnx_bytes)
    for name, body in sidecars.items():
        if not models.exists(final + name):
            models.put_bytes(final + name, body, content_type="application/json")
    if not models.exists(final + "manifest.json"):
        models.put_json(final + "manifest.json", manifest, create_only=True)
    # The sha256 of the manifest as stored (a retried run keeps the one its first attempt wrote): the registry
    # record vouches for the manifest, the manifest for the contract and the baseline.
    manifest_sha256 = hashlib.sha256(models.get_bytes(final + "manifest.json")).hexdigest()
    alias = CHALLENGER if registry.alias(inp.model, CHAMPION) else CHAMPION
    version = registry.register(
        model=inp.model, run_id=inp.run_id, artefacts_prefix=models.uri(final),
        onnx_sha256=train["onnx_sha256"], dataset_sha256=inp.dataset.sha256,
        metrics={"metrics": evaluation["candidate"]["metrics"], "latency": evaluation["candidate"].get("latency", {}),
                 # an imported model's metrics as declared, not measured (no data to measure it on yet)
                 **({"metrics_declared": True} if evaluation["candidate"].get("declared") else {})},
        alias=alias, manifest_sha256=manifest_sha256,
    )
    split, rollout = None, None
    if deployer is not None and infer_function:
        version, split = deploy(version, model_cfg, registry=registry, deployer=deployer, function=infer_function)
        champion = registry.alias(inp.model, CHAMPION)
        if start_rollout is not None and CHALLENGER in version.aliases and champion is not None:
            rollout = start_rollout(champion.version, version.version)
    return {**_registered(version), "split": split.to_dict() if split else None, "rollout": rollout}


def deploy(version: ModelVersion, model_cfg: ModelConfig, *, registry: Registry, deployer: ServingDeployer,
           function: str) -> tuple[ModelVersion, Split]:
    """Publish the version's infer function version and put it on the live alias: the first champion at
    100%, a challenger at the model's canary weight next to the champion. The registry record exists
    before the alias points at it, so the alias never serves an unregistered version."""
    lambda_version = version.lambda_version or deployer.publish(function, version.version)
    if version.lambda_version is None:
        registry.set_lambda_version(version.model, version.version, lambda_version)
    champion = registry.alias(version.model, CHAMPION)
    if champion is None or champion.version == version.version or champion.lambda_version is None:
        split = deployer.route(function, lambda_version)
    else:
        split = deployer.route(function, champion.lambda_version, lambda_version, model_cfg.canary_weight)
    updated = registry.version(version.model, version.version)
    assert updated is not None
    return updated, split


def _registered(version: ModelVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "aliases": list(version.aliases),
        "manifest_uri": version.manifest_uri,
        "model_uri": version.model_uri,
        "message": f"{version.model} v{version.version} registered as {', '.join(version.aliases) or 'a version'}",
    }

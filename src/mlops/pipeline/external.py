"""``mlops models import``: a model trained anywhere (any framework that exports ONNX) enters where a trained
candidate enters, and goes through the same gate, registry and canary.

1. Nothing is recorded before the file is checked. The contract given must agree with the model's own (the one its data
   was curated by, or the one ``mlops.toml`` declares) column for column: names, kinds, target. The file must fit it
   (:func:`mlops.training.external.adopt`): one [N, 1] input per feature column (or one [N, F] input of all-numeric
   features), the task's outputs, classes that can be told; the copy stored is made servable as a trained model is.
2. The gate. With curated data, the candidate is measured as the evaluate step measures a trained one, on the rows a
   training run of the model's newest curated dataset holds out (its ``test_size`` and ``seed``), the champion on the
   same rows, and the same rule decides (:func:`mlops.pipeline.steps.gate`). Without curated data there is nothing to
   measure on: the metrics given (``--metrics``) are gated and recorded as declared, not measured, said so in the
   answer and the lineage, and latency is measured on rows made from the contract.
3. A candidate that passes is left where the train step leaves one (``candidates/<model>/<run_id>/``: model.onnx,
   contract.json, baseline.json, test.parquet, train.json), and handed to the platform's ``register`` function with
   the evaluate step's output, as the training pipeline hands it over: register copies it under
   ``models/<model>/runs/<run_id>/`` (which the bucket policy lets only the platform's writer roles write, a person's
   credentials included: ``infra/constructs/storage.py``), records the version and deploys it (the first version
   champion at 100%, a later one the challenger at the canary weight, with its rollout started). The lineage says
   ``source: "external"``, the file's sha256, who imported it and when, and the metrics file as given (the train
   summary's ``lineage``, which register adds to the manifest). A rejected one is recorded as a rejected run, with its
   reasons.

The run id derives from the file's sha256 and the contract served: importing the same file again finds the version
it made (and who made it, when) instead of making a second one; a version whose deployment was interrupted is handed
to register again, which finishes it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.aws.storage import ObjectStore, parse_s3_uri
from mlops.core.clock import now_iso
from mlops.core.config import ModelConfig, ProjectConfig
from mlops.core.errors import MlopsError
from mlops.core.tasks import Task
from mlops.pipeline.steps import candidate_prefix, champion_evaluation, gate
from mlops.registry.store import Registry
from mlops.registry.versions import CHAMPION, EXTERNAL_DATASET, ModelVersion
from mlops.training.external import SOURCE, ExternalModel, ModelRefused, adopt, synthetic_rows

if TYPE_CHECKING:
    import pandas as pd

    from mlops.data.schema import DataContract

# the tasks whose outputs mlops.training.external knows how to check (a label and probabilities, or one number)
IMPORTABLE_TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class ImportRequest:
    model: str
    file_name: str
    onnx_bytes: bytes
    contract_name: str
    contract: DataContract
    declared: dict[str, Any] | None  # the metrics file's content, as given
    who: str


def _read(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MlopsError(f"{option} {path}: {exc.strerror or exc}") from None


def read_request(model: str, *, onnx_path: str, contract_path: str, metrics_path: str | None,
                 who: str) -> ImportRequest:
    """The files an import is given, read and parsed; a file that cannot be is one clear error."""
    from pydantic import ValidationError

    from mlops.data.schema import DataContract

    onnx_bytes = _read(onnx_path, "--onnx")
    try:
        contract = DataContract.from_json(_read(contract_path, "--contract"))
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}" for e in exc.errors()[:5])
        raise MlopsError(f"--contract {contract_path} is not a data contract ({errors})") from None
    declared = None
    if metrics_path:
        try:
            declared = json.loads(_read(metrics_path, "--metrics"))
        except ValueError as exc:
            raise MlopsError(f"--metrics {metrics_path} is not JSON ({exc})") from None
        problem = metrics_file_problem(declared)
        if problem:
            raise MlopsError(f"--metrics {metrics_path}: {problem}")
    return ImportRequest(model, Path(onnx_path).name, onnx_bytes, Path(contract_path).name, contract, declared, who)


METRICS_FILE_SHAPE = ("{\"accuracy\": 0.95, ...}, or {\"metrics\": {\"accuracy\": 0.95, ...}} as `mlops train --json` "
                      "writes it")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _looks_like_a_number(value: Any) -> bool:
    """A number written as text ("0.95"), or NaN or Infinity (which JSON parsers accept)."""
    try:
        return isinstance(value, float) or (isinstance(value, str) and float(value) is not None)
    except ValueError:
        return False


def metrics_file_problem(content: Any) -> str | None:
    """What is wrong with a metrics file's shape, naming each key whose value is not a number; None when nothing is.
    Its ``metrics`` object, when it has one, holds numbers only; without one, its top level's numbers are the metrics
    and its other values notes (``"evaluated_on": "our own split"``), but a number written as text, NaN or Infinity is
    an error, not a note."""
    if not isinstance(content, dict):
        return f"it holds {json.dumps(content)[:80]}, not a JSON object: {METRICS_FILE_SHAPE}"
    if "metrics" in content:
        inner = content["metrics"]
        if not isinstance(inner, dict):
            return (f"its \"metrics\" is {json.dumps(inner)[:80]}, not an object of metric names and numbers: "
                    f"{METRICS_FILE_SHAPE}")
        wrong = [(f"metrics.{key}", value) for key, value in inner.items() if not _is_number(value)]
    else:
        wrong = [(key, value) for key, value in content.items()
                 if _looks_like_a_number(value) and not _is_number(value)]
    if not wrong:
        return None
    return "; ".join(f"{key} is {json.dumps(value)[:40]}, not a finite number" for key, value in wrong) \
        + (" (write the number itself, without quotes)" if any(isinstance(v, str) for _k, v in wrong) else "")


def declared_metrics(content: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics file: its ``metrics`` object when it has one, else its top level."""
    inner = content.get("metrics")
    metrics = inner if isinstance(inner, dict) else content
    return {str(k): float(v) for k, v in metrics.items() if _is_number(v)}


def contract_problems(given: DataContract, model: str, model_cfg: ModelConfig,
                      platform: DataContract | None) -> list[str]:
    """How the contract given differs from what the model is (its target) and serves (its contract's columns)."""
    problems = []
    if given.target != model_cfg.target:
        problems.append(f"its target is {given.target!r}; {model} predicts {model_cfg.target!r} (mlops.toml)")
    if platform is None:
        return problems
    mine = {c.name: str(c.kind) for c in given.feature_columns}
    theirs = {c.name: str(c.kind) for c in platform.feature_columns}
    where = f"{model}'s contract v{platform.version}"
    problems += [f"it lacks the {kind} column {name!r} of {where}" for name, kind in theirs.items() if name not in mine]
    problems += [f"its column {name!r} is not in {where}" for name in mine if name not in theirs]
    problems += [f"its column {name!r} is {kind}, {theirs[name]} in {where}"
                 for name, kind in mine.items() if name in theirs and theirs[name] != kind]
    return problems


def platform_contract(model: str, model_cfg: ModelConfig, data: ObjectStore) -> DataContract | None:
    """The contract the model's data is curated by (its newest version), else the one mlops.toml declares."""
    from mlops.data.ingest import ContractStore
    from mlops.data.schema import DataContract

    stored = ContractStore(data).current(model)
    if stored is not None:
        return stored
    return DataContract.model_validate({**model_cfg.contract, "target": model_cfg.target}) if model_cfg.contract \
        else None


@dataclass
class Holdout:
    """The newest curated dataset, split as a training run of it splits it."""

    train: pd.DataFrame
    test: pd.DataFrame
    manifest: dict[str, Any]
    features: list[str]
    test_size: float
    seed: int

    def records(self) -> list[dict[str, Any]]:
        from mlops.training.evaluation import records_of

        return records_of(self.test, self.features)

    def describe(self) -> dict[str, Any]:
        return {"dataset_sha256": self.manifest["dataset_sha256"], "uri": self.manifest["data_uri"],
                "contract_version": self.manifest["contract_version"], "rows": len(self.test),
                "test_size": self.test_size, "seed": self.seed}


def load_holdout(model: str, model_cfg: ModelConfig, data: ObjectStore) -> Holdout | None:
    import pandas as pd

    from mlops.data.curated import newest_manifest
    from mlops.data.frames import get_parquet
    from mlops.data.ingest import ContractStore
    from mlops.training.train import feature_frame, prepare_and_split

    manifest = newest_manifest(data, model)
    if manifest is None:
        return None
    bucket, key = parse_s3_uri(manifest["data_uri"])
    frame = get_parquet(ObjectStore(data.s3, bucket), key)
    contract = ContractStore(data).get(model, manifest["contract_version"])
    target = model_cfg.target
    train_df, test_df, _dropped = prepare_and_split(frame, contract, target=target, task=Task(model_cfg.task),
                                                    test_size=model_cfg.test_size, seed=model_cfg.seed)
    features = [c.name for c in contract.feature_columns]

    def typed(df: pd.DataFrame) -> pd.DataFrame:  # as train_split hands the evaluate step its rows
        return pd.concat([feature_frame(df, contract), df[target]], axis=1)[[*features, target]]

    return Holdout(typed(train_df), typed(test_df), manifest, features, model_cfg.test_size, model_cfg.seed)


def import_run_id(sha256: str, contract: DataContract) -> str:
    both = hashlib.sha256(f"{sha256}:{hashlib.sha256(contract.to_json().encode()).hexdigest()}".encode())
    return f"import-{both.hexdigest()[:32]}"


def _declared_evaluation(req: ImportRequest, model_cfg: ModelConfig, served: Any, rows: list[dict[str, Any]],
                         registry: Registry) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """No curated data: the metrics as declared, the latency measured on ``rows``, the champion's recorded metrics."""
    from mlops.training.evaluation import latency

    content = req.declared or {}
    metrics = declared_metrics(content)
    needed = sorted({model_cfg.primary_metric, *model_cfg.thresholds} - set(metrics))
    if needed:
        given = content["metrics"] if isinstance(content.get("metrics"), dict) else content
        shown = [f"{name} (it is {json.dumps(given[name])[:40]}, not a number)" if name in given else name
                 for name in needed]
        raise MlopsError(f"{req.model} has no curated data to measure the model on, so its metrics are taken as "
                         f"declared (--metrics); they lack {', '.join(shown)} (the gate's: mlops.toml's thresholds "
                         f"and primary_metric)")
    timed = latency(served, rows)
    candidate = {"task": str(model_cfg.task), "rows": 0, "metrics": metrics, "declared": True,
                 "latency_ms": {k: timed[k] for k in ("mean", "p50", "p95", "p99")}, "latency": timed}
    champion = registry.alias(req.model, CHAMPION)
    if champion is None:
        return candidate, None
    recorded = champion.metrics.get("metrics", {})
    if model_cfg.primary_metric not in recorded:
        return candidate, None
    return candidate, {"version": champion.version, "metrics": recorded,
                       "note": "no curated data to score it on: its recorded metrics"}


def import_model(req: ImportRequest, *, config: ProjectConfig, data: ObjectStore, models: ObjectStore,
                 registry: Registry, register: Callable[[dict[str, Any]], dict[str, Any]],
                 current_split: Callable[[], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """Check and gate ``req``; a candidate that passes is left under ``candidates/`` and handed to ``register`` (the
    register function's input, as the training pipeline gives it; its answer). What happened, as ``mlops models import
    --json`` prints it (``status``: registered, rejected or exists). Bad input raises :class:`MlopsError` before
    anything is recorded. ``current_split``: the live alias's split now, for a version found already deployed."""
    model_cfg = config.model(req.model)
    task = Task(model_cfg.task)
    what = f"{req.file_name} cannot be imported as {req.model}"
    if task.value not in IMPORTABLE_TASKS:
        raise MlopsError(f"{req.model} is a {task.value} model; an imported model can be one of "
                         f"{', '.join(IMPORTABLE_TASKS)}")
    if model_cfg.features is not None:
        raise MlopsError(f"{req.model} takes its inputs from the feature store ([model.features] in mlops.toml); an "
                         "imported model can be fed only the columns of its contract")
    platform = platform_contract(req.model, model_cfg, data)
    problems = contract_problems(req.contract, req.model, model_cfg, platform)
    if problems:
        raise ModelRefused(f"the contract {req.contract_name} does not fit {req.model}", problems)
    contract = platform or req.contract
    holdout = load_holdout(req.model, model_cfg, data)
    rows = holdout.records() if holdout else synthetic_rows(contract, seed=model_cfg.seed)
    external = adopt(req.onnx_bytes, req.contract, task, rows=rows, what=what)
    run_id = import_run_id(external.sha256, contract)
    summary: dict[str, Any] = {
        "model": req.model, "run_id": run_id, "source": SOURCE,
        "file": {"name": req.file_name, "sha256": external.sha256, "bytes": external.size,
                 "producer": external.producer},
        "stored_sha256": external.stored_sha256, "changes": external.changes, "classes": external.classes,
        "classes_from": external.classes_from, "imported_by": req.who, "imported_at": now_iso()}
    before = _imported_before(req.model, run_id, registry)
    manifest = models.get_json(parse_s3_uri(before.manifest_uri)[1]) if before is not None else None
    if manifest is not None:  # who imported it, and when, is the first import's
        summary.update({key: manifest["external"][key] for key in ("imported_by", "imported_at")})
    if before is not None and (before.lambda_version is not None or not before.aliases):
        # deployed (or retired since): where the live alias stands is the rollout's and the people's, left as it is
        split = current_split() if current_split is not None and before.aliases else None
        return {**summary, **_answer(before.to_dict(), "exists", split=split, rollout=None)}
    served = external.served()
    if manifest is not None:
        # registered, its deployment interrupted: register finishes it, on the evaluation that registered it
        evaluation = {"candidate": {"metrics": manifest["metrics"], "latency": manifest.get("latency") or {}},
                      "champion": manifest.get("champion_at_evaluation"), "meets_thresholds": True,
                      "beats_champion": True, "reasons": []}
        measured: dict[str, Any] = manifest["evaluation"]
    else:
        evaluation, measured = _evaluation(req, model_cfg, contract, holdout, external, served, rows, models=models,
                                           registry=registry, what=what)
        summary["evaluation"] = {**measured, **evaluation}
    if not (evaluation["meets_thresholds"] and evaluation["beats_champion"]):
        reason = "; ".join(evaluation["reasons"])
        registry.record_run(req.model, run_id, "rejected", reason, {
            "source": SOURCE, "file_sha256": external.sha256, "imported_by": req.who,
            "metrics": evaluation["candidate"]["metrics"], "metrics_from": measured["metrics_from"],
            "champion": evaluation["champion"]})
        return {**summary, "status": "rejected", "reasons": evaluation["reasons"],
                "message": f"{req.file_name} was rejected by {req.model}'s gate: {reason}"}
    baseline = None
    if holdout is not None:
        from mlops.data.baseline import build_baseline

        baseline = build_baseline(holdout.train, contract, predictions=served.predict(holdout.test).labels,
                                  seed=model_cfg.seed)
    train = _leave_candidate(req, external, contract, holdout, baseline, summary, measured, run_id=run_id,
                             models=models)
    registration = register({
        "model": req.model, "run_id": run_id, "reason": f"imported by {summary['imported_by']}",
        # no dataset it was trained on: the registry's mark for that (drift_check reads it), and the candidate, whose
        # train.json says what the import knows instead
        "dataset": {"uri": train["candidate_prefix"], "manifest_uri": train["candidate_prefix"] + "train.json",
                    "sha256": EXTERNAL_DATASET, "rows": 0, "contract_version": contract.version},
        "train": train, "evaluation": evaluation, "execution_arn": None})
    return {**summary, **_answer({**registration, "model": req.model}, "exists" if before else "registered",
                                 split=registration.get("split"), rollout=registration.get("rollout"))}


def _evaluation(req: ImportRequest, model_cfg: ModelConfig, contract: DataContract, holdout: Holdout | None,
                external: ExternalModel, served: Any, rows: list[dict[str, Any]], *, models: ObjectStore,
                registry: Registry, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The evaluate step's output for the candidate (candidate, champion and the gate's verdict), and what it was
    measured on (``metrics_from``, ``holdout``, a ``note``)."""
    task = Task(model_cfg.task)
    if holdout is not None:
        from mlops.training.evaluation import evaluate

        unknown = sorted(set(holdout.test[model_cfg.target].astype(str)) - set(external.classes)) \
            if task.is_classification else []
        if unknown:
            raise ModelRefused(what, [f"the held-out rows hold classes {unknown} it does not know (its classes: "
                                      f"{external.classes}, {external.classes_from}); a class is the target's value "
                                      "as text, \"1\" for 1"])
        candidate = evaluate(served, holdout.test, contract, task)
        champion = champion_evaluation(req.model, holdout.test, contract, model_cfg, models=models, registry=registry)
        measured: dict[str, Any] = {"metrics_from": "holdout", "holdout": holdout.describe()}
    elif req.declared is None:
        raise MlopsError(f"{req.model} has no curated data yet to measure the model on: give its metrics with "
                         "--metrics m.json (they are recorded as declared, not measured), or upload data first")
    else:
        candidate, champion = _declared_evaluation(req, model_cfg, served, rows, registry)
        measured = {"metrics_from": "declared", "holdout": None,
                    "note": f"{req.model} had no curated data: the metrics are as declared in the metrics file, not "
                            "measured; the latency was measured on rows made from the contract"}
    return {"candidate": candidate, "champion": champion, **gate(model_cfg, candidate["metrics"], champion)}, measured


def _leave_candidate(req: ImportRequest, external: ExternalModel, contract: DataContract, holdout: Holdout | None,
                     baseline: dict[str, Any] | None, summary: dict[str, Any], measured: dict[str, Any], *,
                     run_id: str, models: ObjectStore) -> dict[str, Any]:
    """The candidate where the train step leaves a trained one (``candidates/``, which a person may write), and its
    train summary: what register reads, with the import's ``lineage`` for the manifest and the ``sidecars`` it has
    (no baseline without data)."""
    prefix = candidate_prefix(req.model, run_id)
    sidecars = {"contract.json": contract.to_json().encode()}
    if baseline is not None:
        sidecars["baseline.json"] = json.dumps(baseline, indent=2, sort_keys=True, default=str).encode()
    models.put_bytes(prefix + "model.onnx", external.onnx_bytes)
    for name, body in sidecars.items():
        models.put_bytes(prefix + name, body, content_type="application/json")
    if holdout is not None:
        from mlops.data.frames import put_parquet

        put_parquet(models, prefix + "test.parquet", holdout.test)
    train = {
        "candidate_prefix": models.uri(prefix), "onnx_sha256": external.stored_sha256,
        "onnx_bytes": len(external.onnx_bytes), "family": SOURCE, "params": {}, "seed": None,
        "classes": external.classes, "rows": {"train": None, "test": len(holdout.test) if holdout else 0},
        "parity_max_abs_diff": None, "parity_tolerance": None, "timings": {}, "features": None,
        "sidecars": sorted(sidecars),
        "lineage": {
            "source": SOURCE,
            "dataset": {"uri": None, "rows": None, "sha256": None,
                        "note": "trained outside the platform: its training data is not known"},
            "training_backend": None, "dataset_manifest": None,
            "external": {"file": req.file_name, "sha256": external.sha256, "bytes": external.size,
                         "producer": external.producer, "imported_by": summary["imported_by"],
                         "imported_at": summary["imported_at"], "metrics_file": req.declared,
                         "metrics_declared": measured["metrics_from"] == "declared",
                         "classes_from": external.classes_from, "changes": external.changes,
                         "contract_given_sha256": hashlib.sha256(req.contract.to_json().encode()).hexdigest()},
            "evaluation": {k: measured[k] for k in ("metrics_from", "holdout", "note") if k in measured},
            **({} if baseline is not None else {"baseline": None})},
    }
    models.put_json(prefix + "train.json", train)
    return train


def _answer(version: Mapping[str, Any], status: str, *, split: dict[str, Any] | None,
            rollout: str | None) -> dict[str, Any]:
    """``version``: a registered version as ``ModelVersion.to_dict`` and the register step's answer describe it."""
    said = "imported" if status == "registered" else "was imported from this file before"
    role = ", ".join(version["aliases"]) or "retired"
    return {"status": status, **{key: version[key] for key in ("version", "aliases", "manifest_uri", "model_uri")},
            "split": split, "rollout": rollout, "message": f"{version['model']} v{version['version']} {said} ({role})"}


def _imported_before(model: str, run_id: str, registry: Registry) -> ModelVersion | None:
    """The version an earlier import of the same file (and contract) registered, if any."""
    run = registry.run(model, run_id)
    if run is None or run.outcome != "registered":
        return None
    return registry.version(model, int(run.details["version"]))

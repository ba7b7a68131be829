"""Offline training and family comparison: the engine behind ``mlops train`` and ``mlops experiment``.

The same steps as the cloud pipeline (read, infer the contract, validate, split, fit, export, parity,
evaluate), run on a local CSV with no AWS. Every failure a user can cause raises an
:class:`mlops.core.errors.MlopsError` subclass with a message meant to be printed as is (the CLI exits 2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.core.errors import ConfigError, FileRejected, InvalidDataset, MlopsError
from mlops.core.families import FAMILIES, Family, default_family, families_for
from mlops.core.tasks import Task

if TYPE_CHECKING:
    import pandas as pd

    from mlops.data.schema import DataContract
    from mlops.training.train import TrainResult

Progress = Callable[[str], None]

# Offline runs read files far larger than one ingest Lambda holds; memory is the only limit here.
MAX_BYTES = 8 * 1024**3
# Same rule as ingest: a file with more bad rows than this is not trained on at all.
MAX_BAD_ROW_FRACTION = 0.5


@dataclass
class LoadedDataset:
    path: Path
    target: str
    sha256: str
    frame: pd.DataFrame
    contract: DataContract
    task: Task
    rows: dict[str, int]
    # whether `task` was read off the target column rather than given: an error about it then says how
    task_inferred: bool = False


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _task_rule(task: Task) -> str:
    """How :func:`mlops.training.train.infer_task` reached ``task``, in words."""
    from mlops.training.train import REGRESSION_DISTINCT_VALUES as most

    return {
        Task.REGRESSION: f"a numeric column with more than {most} distinct values",
        Task.BINARY: "a column with two distinct values",
        Task.MULTICLASS: f"a column with more than two distinct values, not numeric or at most {most} of them",
    }[task]


def _family(name: str, ds: LoadedDataset, *, default_hint: bool = False) -> Family:
    family = FAMILIES.get(name)
    if family is None:
        raise ConfigError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
    task = ds.task
    if not family.supports(task):
        # A wrongly inferred task (class codes 0..30 read as a regression target) looks like a wrong family:
        # say where the task came from, so the user knows which of the two to change.
        why = (f" (inferred from {ds.target!r}, {_task_rule(task)}; give the task explicitly if that is wrong)"
               if ds.task_inferred else "")
        hint = f", or name no family to train {default_family(task).name}" if default_hint else ""
        raise ConfigError(
            f"model family {name!r} cannot be trained for a {task.value} target{why}; "
            f"families for {task.value}: {families_for(task)}{hint}"
        )
    return family


def _task(task: Task | str | None) -> Task | None:
    if task is None:
        return None
    try:
        return Task(task)
    except ValueError:
        raise ConfigError(f"unknown task {task!r}; choose one of {[t.value for t in Task]}") from None


def load_dataset(
    data_path: Path | str, target: str, task: Task | str | None = None, progress: Progress | None = None, *,
    chunk_bytes: int | None = None,
) -> LoadedDataset:
    """Read, infer the contract, validate, as ingest does (:func:`mlops.data.ingest.curate_stream`): the file is read
    chunk by chunk by the same reader, the contract inferred from its first chunk and widened by the categories later
    chunks bring, every chunk validated by the same rules; bad rows are dropped and counted, never trained on."""
    import pandas as pd

    from mlops.data.inference import infer_contract
    from mlops.data.reading import DEFAULT_CHUNK_BYTES, CsvReader
    from mlops.data.validation import ChunkedValidation
    from mlops.training.train import infer_task

    path = Path(data_path)
    wanted = _task(task)
    if not path.is_file():
        raise FileRejected("not_found", f"{path} does not exist or is not a file")
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise FileRejected("unreadable", f"cannot read {path}: {exc}") from exc
    _say(progress, f"reading {path} ({path.stat().st_size / 2**20:.1f} MB)")
    contract: DataContract | None = None
    validation: ChunkedValidation | None = None
    goods: list[pd.DataFrame] = []
    quarantined = 0
    with stream:
        reader = CsvReader(stream, max_bytes=MAX_BYTES, chunk_bytes=chunk_bytes or DEFAULT_CHUNK_BYTES)
        try:
            for frame in reader.chunks():
                if validation is None:
                    if frame.empty:
                        continue  # a header longer than a chunk: the rows come next
                    if target not in frame.columns:
                        raise InvalidDataset(
                            f"target column {target!r} is not in {path.name}; columns: {list(frame.columns)}")
                    contract = infer_contract(frame, target)
                    validation = ChunkedValidation(contract, max_bad_row_fraction=MAX_BAD_ROW_FRACTION)
                checked = validation.chunk(frame)
                goods.append(checked.good)
                quarantined += len(checked.bad)
        except OSError as exc:
            raise FileRejected("unreadable", f"cannot read {path}: {exc}") from exc
        reader.finish()
    # finish() refuses a file without data rows
    assert contract is not None
    assert validation is not None
    validation.finish()
    # the categories met after the first chunk, as ingest adds them; still the contract inferred from this one file
    contract = contract.with_categories(validation.categories()).model_copy(update={"version": contract.version})
    good = pd.concat(goods, ignore_index=True) if len(goods) > 1 else goods[0]
    rows = {"in": int(validation.rows), "used": len(good), "quarantined": quarantined}
    if quarantined:
        _say(progress, f"dropped {quarantined} of {validation.rows} rows that break the inferred contract")
    if good.empty:
        raise InvalidDataset(f"none of the {validation.rows} rows of {path.name} is valid")
    resolved = wanted or infer_task(good[target])
    _say(progress, f"{len(good)} rows, {len(contract.feature_columns)} features, task {resolved.value}")
    return LoadedDataset(path, target, reader.sha256, good, contract, resolved, rows, task_inferred=wanted is None)


def _export_and_evaluate(
    result: TrainResult, contract: DataContract, task: Task, seed: int, progress: Progress | None
) -> dict[str, Any]:
    from mlops.serving.onnx_model import OnnxModel
    from mlops.training.evaluation import evaluate
    from mlops.training.onnx_export import check_parity, onnx_opset, to_onnx

    _say(progress, f"exporting {result.family} to ONNX")
    start = time.perf_counter()
    onnx_bytes = to_onnx(result.pipeline, contract, task)
    export_seconds = time.perf_counter() - start
    model = OnnxModel(onnx_bytes)
    parity = check_parity(result.pipeline, onnx_bytes, result.test_df, contract, task, model=model)
    _say(progress, f"parity max |diff| {parity.max_abs_diff:.2e}; evaluating on {parity.rows} held-out rows")
    start = time.perf_counter()
    evaluation = evaluate(model, result.test_df, contract, task, seed=seed)
    evaluate_seconds = time.perf_counter() - start
    return {
        "onnx_bytes": onnx_bytes,
        "model": model,
        "parity": parity,
        "opset": onnx_opset(onnx_bytes),
        "evaluation": evaluation,
        "timings": {
            "fit_seconds": result.fit_seconds,
            "export_seconds": export_seconds,
            "evaluate_seconds": evaluate_seconds,
        },
    }


def run_training(
    data_path: Path,
    target: str,
    *,
    family: str | None = None,
    task: Task | str | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 42,
    test_size: float = 0.2,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Train one model from a CSV; write ``model.onnx``, ``manifest.json``, ``contract.json`` and
    ``baseline.json`` to ``out_dir`` when given. Returns a JSON-serialisable summary.

    ``family`` None trains the task's default (:data:`mlops.core.families.DEFAULT_FAMILIES`), chosen once the
    task is known; the summary's ``family_auto`` says so. A named family that cannot do the task is a
    :class:`ConfigError`."""
    from mlops.data.baseline import build_baseline
    from mlops.registry.manifest import build_manifest
    from mlops.training.train import prepare_and_split, train_split

    if not 0.0 < test_size < 0.9:
        raise ConfigError(f"test_size must be between 0 and 0.9, got {test_size}")
    ds = load_dataset(data_path, target, task, progress)
    if family is None:
        fam = default_family(ds.task)
        _say(progress, f"family {fam.name}: the default for a {ds.task.value} target")
    else:
        fam = _family(family, ds, default_hint=True)
    train_df, test_df, dropped = prepare_and_split(
        ds.frame, ds.contract, target=target, task=ds.task, test_size=test_size, seed=seed
    )
    _say(progress, f"fitting {fam.name} on {len(train_df)} rows")
    try:
        result = train_split(
            train_df,
            test_df,
            ds.contract,
            family=fam.name,
            task=ds.task,
            params=params,
            seed=seed,
            target=target,
            dropped_rows=dropped,
        )
    except ConfigError as exc:
        if family is None and params:
            # params meant for one family (C for logistic_regression) reached the default of another task
            raise ConfigError(
                f"{exc}; {fam.name} is the default for a {ds.task.value} target: name the family these params are for"
            ) from exc
        raise
    out = _export_and_evaluate(result, ds.contract, ds.task, seed, progress)
    evaluation, parity, onnx_bytes = out["evaluation"], out["parity"], out["onnx_bytes"]
    rows = {**ds.rows, "train": len(result.train_df), "test": len(result.test_df), "unlabelled": dropped}
    features = [c.name for c in ds.contract.feature_columns]
    manifest = build_manifest(
        model=model_name,
        family=fam.name,
        task=ds.task.value,
        params=result.params,
        seed=seed,
        onnx_bytes=onnx_bytes,
        dataset={"sha256": ds.sha256, "uri": str(ds.path.resolve()), "rows": rows},
        classes=result.classes,
        features=features,
        metrics=evaluation["metrics"],
        latency=evaluation["latency"],
        timings=out["timings"],
        onnx_opset=out["opset"],
        onnx_inputs=[spec.as_dict() for spec in out["model"].inputs],
        parity=parity.as_dict(),
        extra={
            "target": target,
            "contract_version": ds.contract.version,
            # flat aliases of dataset.sha256 and onnx.opset, the names `mlops train` prints
            "dataset_sha256": ds.sha256,
            "onnx_opset": out["opset"],
        },
    )
    summary: dict[str, Any] = {
        "family": fam.name,
        "family_auto": family is None,
        "task": ds.task.value,
        "target": target,
        "metrics": evaluation["metrics"],
        "parity_max_abs_diff": parity.max_abs_diff,
        "parity": parity.as_dict(),
        "latency_ms": evaluation["latency_ms"],
        "throughput_rows_per_s": evaluation["throughput_rows_per_s"],
        "rows": rows,
        "timings": out["timings"],
        "manifest": manifest,
    }
    if out_dir is not None:
        summary["artefacts"] = _write_artefacts(
            Path(out_dir),
            onnx_bytes=onnx_bytes,
            manifest=manifest,
            contract_json=ds.contract.to_json(),
            baseline=build_baseline(
                result.train_df,
                ds.contract,
                predictions=out["model"].predict(result.test_df).labels,
                classes=result.classes or None,
                metrics=evaluation["metrics"],
                seed=seed,
            ),
        )
        _say(progress, f"wrote {summary['artefacts']['model']}")
    return summary


def _write_artefacts(
    out_dir: Path,
    *,
    onnx_bytes: bytes,
    manifest: dict[str, Any],
    contract_json: str,
    baseline: dict[str, Any],
) -> dict[str, str]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "model": out_dir / "model.onnx",
            "manifest": out_dir / "manifest.json",
            "contract": out_dir / "contract.json",
            "baseline": out_dir / "baseline.json",
        }
        paths["model"].write_bytes(onnx_bytes)
        paths["manifest"].write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        paths["contract"].write_text(contract_json, encoding="utf-8")
        paths["baseline"].write_text(json.dumps(baseline, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the artefacts to {out_dir}: {exc}") from exc
    return {k: str(v) for k, v in paths.items()}


def compare_families(
    data_path: Path,
    target: str,
    families: Sequence[str] | None = None,
    *,
    task: Task | str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 42,
    test_size: float = 0.2,
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Train every family on the very same split; one entry per family, in the order asked (default:
    every family that supports the task). ``default_for_task`` marks the family :func:`run_training` trains when
    none is named.

    ``params`` maps a family name to its hyperparameters (hyperparameters differ per family, so there is
    no flat form). A family that fails (parity, invalid params) gets an entry with ``error`` instead of
    stopping the comparison; dataset errors still raise. ``out_dir`` receives ``comparison.json``.
    """
    from mlops.training.train import prepare_and_split, train_split

    if not 0.0 < test_size < 0.9:
        raise ConfigError(f"test_size must be between 0 and 0.9, got {test_size}")
    strays = sorted(set(params or {}) - set(FAMILIES))
    if strays:
        raise ConfigError(
            f"compare_families params map a family name to its params; {strays} are not families "
            f"(families: {sorted(FAMILIES)})"
        )
    ds = load_dataset(data_path, target, task, progress)
    names = list(families) if families else [n for n, f in FAMILIES.items() if f.supports(ds.task)]
    chosen = [_family(n, ds) for n in names]
    default = default_family(ds.task).name
    train_df, test_df, dropped = prepare_and_split(
        ds.frame, ds.contract, target=target, task=ds.task, test_size=test_size, seed=seed
    )
    entries: list[dict[str, Any]] = []
    for fam in chosen:
        _say(progress, f"fitting {fam.name} on {len(train_df)} rows")
        try:
            result = train_split(
                train_df,
                test_df,
                ds.contract,
                family=fam.name,
                task=ds.task,
                params=(params or {}).get(fam.name),
                seed=seed,
                target=target,
                dropped_rows=dropped,
            )
            out = _export_and_evaluate(result, ds.contract, ds.task, seed, progress)
        except MlopsError as exc:
            entries.append({"family": fam.name, "default_for_task": fam.name == default,
                            "error": f"{type(exc).__name__}: {exc}"})
            continue
        evaluation = out["evaluation"]
        entries.append(
            {
                "family": fam.name,
                # what `run_training` trains when no family is named, so the comparison reads against it
                "default_for_task": fam.name == default,
                "task": ds.task.value,
                "metrics": evaluation["metrics"],
                "parity_max_abs_diff": out["parity"].max_abs_diff,
                "latency_ms": {k: evaluation["latency_ms"][k] for k in ("p50", "p95")},
                "throughput_rows_per_s": evaluation["throughput_rows_per_s"],
                "fit_seconds": result.fit_seconds,
                "onnx_bytes": len(out["onnx_bytes"]),
                "params": result.params,
                "rows": {"train": len(train_df), "test": len(test_df)},
            }
        )
    if out_dir is not None:
        path = Path(out_dir) / "comparison.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(entries, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc}") from exc
    return entries

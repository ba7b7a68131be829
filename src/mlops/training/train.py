"""Training: a validated frame and a data contract in, a fitted scikit-learn Pipeline out.

The whole feature transform (imputation, scaling, one-hot encoding) lives inside the Pipeline, so it is
exported into the ONNX graph with the estimator and serving cannot drift from training.

Rules this module enforces (each violation raises :class:`mlops.core.errors.InvalidDataset`):

* at least :data:`MIN_ROWS` labelled rows (rows whose target is missing are dropped first and counted);
* classification: at least two classes, ``binary`` means exactly two, and every class needs at least
  :data:`MIN_ROWS_PER_CLASS` rows. The split is always stratified for classification, so both the train
  and the test split see every class. A class with a single row is rejected rather than silently
  split without stratification: a class the model never saw, or that the test never measures, makes
  the evaluation (and the gate built on it) meaningless;
* the test split must be able to hold at least one row of every class.

A clustering (``task = "clustering"``) has no target: no row is dropped, the split is not stratified, the splits hold
the feature columns alone, and its "classes" are its cluster ids (``mlops.training.clustering``).

Classification labels are strings everywhere (``label_strings``): integral numbers become ``"0"``/``"1"``
rather than ``"0.0"``, classes are sorted as strings, so the ONNX label output, the feedback API and the
metrics all speak the same labels.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.core.config import ModelConfig
from mlops.core.errors import ConfigError, InvalidDataset
from mlops.core.families import Family, get_family, is_user_code
from mlops.core.tasks import Task
from mlops.training import clustering, user_code
from mlops.training.estimators import build_estimator

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from mlops.data.schema import DataContract

MIN_ROWS = 20
MIN_ROWS_PER_CLASS = 2
# A numeric target with more distinct values than this is treated as a regression target by infer_task.
REGRESSION_DISTINCT_VALUES = 20
# Below this many rows sklearn's OpenMP code runs on one thread (see sklearn_threads).
OPENMP_MIN_ROWS = 100_000


@dataclass
class TrainResult:
    pipeline: Pipeline
    # Both splits hold the feature columns as fed to the pipeline and the target as trained on
    # (strings for classification, float64 for regression).
    train_df: pd.DataFrame
    test_df: pd.DataFrame
    classes: list[str]
    fit_seconds: float
    params: dict[str, Any]
    seed: int
    task: Task
    family: str
    dropped_rows: int = 0


def label_strings(values: pd.Series | np.ndarray | list[Any]) -> pd.Series:
    """Class labels as plain strings; integral floats (how validated integer columns arrive) lose ``.0``."""

    def one(v: Any) -> str:
        if isinstance(v, bool | np.bool_):
            return str(int(v))
        if isinstance(v, int | np.integer):
            return str(int(v))
        if isinstance(v, float | np.floating):
            if math.isfinite(v) and float(v).is_integer():
                return str(int(v))
            return repr(float(v))
        return str(v)

    series = values if isinstance(values, pd.Series) else pd.Series(list(values))
    return pd.Series([one(v) for v in series.tolist()], index=series.index, dtype=object, name=series.name)


def infer_task(target: pd.Series) -> Task:
    """Numeric with many distinct values -> regression; two classes -> binary; otherwise multiclass."""
    values = target.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique() > REGRESSION_DISTINCT_VALUES:
        return Task.REGRESSION
    return Task.BINARY if values.nunique() == 2 else Task.MULTICLASS


def feature_frame(df: pd.DataFrame, contract: DataContract) -> pd.DataFrame:
    """The feature columns in the dtypes the pipeline (and the ONNX graph) expects.

    Numeric, integer and boolean columns become float64; categoricals become object arrays of Python
    str with missing values as "" -- the same representation ``onnx_model.feeds_from_records`` builds
    at serving time (pandas 3's ``str`` dtype is avoided on purpose: sklearn and skl2onnx handle object
    arrays of str uniformly).
    """
    missing = [c.name for c in contract.feature_columns if c.name not in df.columns]
    if missing:
        raise InvalidDataset(f"the dataset lacks feature columns declared by the contract: {missing}")
    out: dict[str, pd.Series] = {}
    for name in contract.numeric_features:
        out[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
    for name in contract.categorical_features:
        values = ["" if pd.isna(v) else str(v) for v in df[name].tolist()]
        # dtype=object explicitly: pandas 3 would otherwise infer its own str dtype
        out[name] = pd.Series(values, index=df.index, dtype=object)
    return pd.DataFrame(out, index=df.index)


def build_pipeline(
    contract: DataContract,
    family: str | Family,
    params: Mapping[str, Any] | None,
    task: Task | str,
    seed: int,
    code: Path | None = None,
) -> Pipeline:
    """The family's estimator behind the platform's preprocessing; a family of the user's own code (``code``: where its
    package is, mlops.training.user_code) may instead return a whole Pipeline, used as it is."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    name = family.name if isinstance(family, Family) else family
    if is_user_code(name):
        if code is None:
            raise ConfigError(f"family {name!r} is your own code: its model needs `code` (the package's directory)")
        estimator = user_code.build(name, code, task=Task(task).value, params=dict(params or {}), seed=seed,
                                    numeric=list(contract.numeric_features),
                                    categorical=list(contract.categorical_features))
        if user_code.is_whole_model(estimator):
            return estimator
    else:
        try:
            estimator = build_estimator(family, task, params, seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    transformers: list[tuple[str, Any, list[str]]] = []
    if contract.numeric_features:
        # keep_empty_features: a column that is all-missing in training still yields a column, so the
        # matrix width (and the ONNX graph) does not depend on which columns happened to be empty.
        imputer = SimpleImputer(strategy="median", keep_empty_features=True)
        numeric = Pipeline([("impute", imputer), ("scale", StandardScaler())])
        transformers.append(("num", numeric, list(contract.numeric_features)))
    if contract.categorical_features:
        # No imputer: a missing categorical is "" (feature_frame and the serving feeds both map None/NaN
        # to ""), which the encoder learns as a category of its own. A string tensor cannot hold NaN,
        # so a SimpleImputer here would be a no-op in ONNX, and skl2onnx rejects a NaN marker on strings.
        # Dense output: HistGradientBoosting rejects sparse input, and the data are small.
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("cat", onehot, list(contract.categorical_features)))
    if not transformers:
        raise InvalidDataset("the contract declares no feature columns besides the target")
    pre = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("pre", pre), ("model", estimator)])


def _prepare_target(df: pd.DataFrame, target: str, task: Task) -> tuple[pd.DataFrame, int]:
    if target not in df.columns:
        raise InvalidDataset(f"target column {target!r} is not in the dataset (columns: {list(df.columns)})")
    y = df[target]
    if task is Task.REGRESSION:
        numeric = pd.to_numeric(y, errors="coerce")
        if (numeric.isna() & y.notna()).any():
            bad = y[numeric.isna() & y.notna()].head(3).tolist()
            raise InvalidDataset(f"regression target {target!r} has non-numeric values, e.g. {bad}")
        keep = numeric.notna() & np.isfinite(numeric.astype("float64"))
        out = df.loc[keep].copy()
        out[target] = numeric[keep].astype("float64")
    else:
        keep = y.notna() & (y.astype(str) != "")
        out = df.loc[keep].copy()
        out[target] = label_strings(y[keep])
    return out, int((~keep).sum())


def _check_classes(y: pd.Series, task: Task, target: str) -> list[str]:
    counts = y.value_counts()
    classes = sorted(str(c) for c in counts.index)
    if len(classes) < 2:
        raise InvalidDataset(
            f"target {target!r} has a single class {classes!r}: a classifier needs at least two classes"
        )
    if task is Task.BINARY and len(classes) > 2:
        raise InvalidDataset(
            f"task is binary but target {target!r} has {len(classes)} classes {classes[:10]}; "
            "declare task = 'multiclass'"
        )
    rare = {str(k): int(v) for k, v in counts.items() if v < MIN_ROWS_PER_CLASS}
    if rare:
        raise InvalidDataset(
            f"every class needs at least {MIN_ROWS_PER_CLASS} rows to appear in both the train and the "
            f"test split; too rare in {target!r}: {rare}"
        )
    return classes


def split(
    df: pd.DataFrame, target: str | None, test_size: float, seed: int, stratify: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A deterministic train/test split (same frame + seed -> same rows, in the same order)."""
    from sklearn.model_selection import train_test_split

    if len(df) < MIN_ROWS:
        raise InvalidDataset(f"the dataset has {len(df)} usable rows; at least {MIN_ROWS} are needed to train")
    strat = df[target] if stratify else None
    try:
        train_df, test_df = train_test_split(df, test_size=test_size, random_state=seed, stratify=strat)
    except ValueError as exc:
        # sklearn's message names the cause (test split smaller than the number of classes, a class
        # with one member); keep it.
        raise InvalidDataset(f"cannot split the dataset into train and test: {exc}") from exc
    if stratify:
        missing = sorted(set(df[target]) - set(test_df[target]))
        if missing:
            raise InvalidDataset(f"the test split misses classes {missing}; provide more rows per class")
    return train_df, test_df


def sklearn_threads(rows: int) -> AbstractContextManager[Any]:
    """One OpenMP thread below :data:`OPENMP_MIN_ROWS` rows (HistGradientBoosting is the OpenMP user).

    Measured on a 2-vCPU box: on a few thousand rows two threads gain nothing, and when another
    process holds a core, libgomp's spin-waiting barriers make the fit 5-15x slower (diabetes: 0.1 s ->
    1.5 s; 5k x 20: 0.6 s -> 3.2 s). Large fits keep all threads.
    """
    if rows >= OPENMP_MIN_ROWS:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _fit(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series | None) -> float:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils._param_validation import InvalidParameterError

    # XGBoost and LightGBM check their params' values in their C++ core, at fit time (max_depth=-2, num_leaves=1):
    # mlops.training.boosting is loaded when the pipeline holds one of them (it built the estimator)
    boosting = sys.modules.get("mlops.training.boosting")
    param_errors = (InvalidParameterError, *(boosting.PARAM_ERRORS if boosting else ()))
    start = time.perf_counter()
    with warnings.catch_warnings():
        # A non-converged lbfgs still yields a usable model; the gate judges it on its metrics.
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            with sklearn_threads(len(X)):
                pipeline.fit(X, y)
        except param_errors as exc:
            # sklearn validates hyperparameter values at fit time (n_estimators=0, C=-1, ...)
            raise ConfigError(f"invalid model params: {exc}") from exc
    return time.perf_counter() - start


def train_split(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    contract: DataContract,
    *,
    family: str,
    task: Task,
    params: Mapping[str, Any] | None,
    seed: int,
    target: str | None,
    dropped_rows: int = 0,
    code: Path | None = None,
) -> TrainResult:
    """Fit on an existing split (used to compare families on the very same rows)."""
    fam = get_family(family)
    pipeline = build_pipeline(contract, fam, params, task, seed, code)
    X = feature_frame(train_df, contract)
    y = None if target is None else train_df[target]
    if task is Task.CLUSTERING:
        clustering.check_rows(pipeline, len(X))
    fit_seconds = _fit(pipeline, X, y)
    classes = [str(c) for c in pipeline.classes_] if task.is_classification else (
        clustering.cluster_ids(pipeline) if task is Task.CLUSTERING else [])
    test_X = feature_frame(test_df, contract)
    cols = [*X.columns, *([target] if target is not None else [])]
    train_out = X if y is None else pd.concat([X, y], axis=1)[cols]
    test_out = test_X if target is None else pd.concat([test_X, test_df[target]], axis=1)[cols]
    return TrainResult(
        pipeline=pipeline,
        train_df=train_out,
        test_df=test_out,
        classes=classes,
        fit_seconds=fit_seconds,
        params=_effective_params(pipeline),
        seed=seed,
        task=task,
        family=family,
        dropped_rows=dropped_rows,
    )


def prepare_and_split(
    df: pd.DataFrame, contract: DataContract, *, target: str | None, task: Task, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Clean the target, check the class rules and split: everything ``train`` does before fitting. Without a target
    (a clustering) every row is kept."""
    prepared, dropped = (df, 0) if target is None else _prepare_target(df, target, task)
    if len(prepared) < MIN_ROWS:
        raise InvalidDataset(
            f"the dataset has {len(prepared)} rows{' with a target value' if target is not None else ''}; at least "
            f"{MIN_ROWS} are needed"
        )
    if task.is_classification and target is not None:
        _check_classes(prepared[target], task, target)
    train_df, test_df = split(prepared, target, test_size, seed, stratify=task.is_classification)
    return train_df, test_df, dropped


def train(df: pd.DataFrame, contract: DataContract, config: ModelConfig) -> TrainResult:
    task = Task(config.task)
    fam = get_family(config.family)
    if not fam.supports(task):
        raise ConfigError(
            f"model family {fam.name!r} cannot be trained for task {task.value!r}; "
            f"it supports {sorted(t.value for t in fam.tasks)}"
        )
    train_df, test_df, dropped = prepare_and_split(
        df, contract, target=config.target, task=task, test_size=config.test_size, seed=config.seed
    )
    return train_split(
        train_df,
        test_df,
        contract,
        family=config.family,
        task=task,
        params=config.params,
        seed=config.seed,
        target=config.target,
        dropped_rows=dropped,
        code=user_code.code_root(config) if config.code is not None else None,
    )


def _json_param(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # strict JSON has no inf/nan
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_param(v) for v in value]
    return repr(value)


def _effective_params(pipeline: Pipeline) -> dict[str, Any]:
    """The estimator's hyperparameters as fitted (defaults included), as JSON values."""
    params = pipeline.steps[-1][1].get_params(deep=False)  # "model", or a user's Pipeline's last step
    return {key: _json_param(value) for key, value in sorted(params.items())}

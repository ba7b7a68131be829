"""Export a fitted Pipeline to ONNX and prove the export computes what scikit-learn computes.

The graph has one input per feature column, named after the column: numeric columns as double [N, 1],
categoricals as string [N, 1]. Double matters: scikit-learn computes the imputer, the scaler and the
linear models in float64 and HistGradientBoosting compares float64 features to float64 thresholds, so a
float32 graph disagrees near every split and rounding boundary.

skl2onnx 1.20 does not emit a full-double graph for this pipeline on its own; two converters are
overridden for the duration of one conversion (``custom_conversion_functions``, nothing global):

* ``SimpleImputer`` on doubles: skl2onnx emits ``ai.onnx.ml.Imputer``, which onnxruntime implements for
  float only (and which stores the statistics as float32). It becomes ``Where(IsNaN(x), stats, x)`` in
  double.
* tree ensembles (RandomForest*, HistGradientBoosting*) on doubles: skl2onnx emits
  ``TreeEnsemble*`` version 1, whose thresholds and leaf weights are float32 attributes and whose
  onnxruntime kernel refuses double outputs. They are emitted as ``ai.onnx.ml`` version 3 with the
  ``*_as_tensor`` double attributes (thresholds adjusted by skl2onnx to reproduce sklearn's own
  comparisons) and the float scores are cast to the declared output type.
* XGBoost and LightGBM (``mlops.training.boosting``): onnxmltools' converters emit the same float nodes, made
  double the same way; XGBoost's node sees its input rounded to float32 first, as XGBoost computes (``_double_trees``),
  and is held to :data:`XGBOOST_PARITY_TOL` for XGBoost's own float32 sums.

``metadata_props`` carry what a server needs without scikit-learn: ``classes`` (JSON list of str),
``task``, ``target``, ``features`` (JSON list of {name, kind, type}), ``onnx_opset`` (JSON).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.core.errors import ParityError
from mlops.core.tasks import Task
from mlops.serving.onnx_model import OnnxModel
from mlops.training import user_code
from mlops.training.clustering import cluster_ids, cluster_parity
from mlops.training.onnx_graph import write_metadata

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from mlops.data.schema import DataContract

# Opset 17 / ai.onnx.ml 3: the lowest pair that has the double tree-ensemble attributes, supported by
# every onnxruntime since 1.13, so an older infer layer still loads a newer model.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}

# What the export is held to: |p_sklearn - p_onnx| for a classifier, |y_sklearn - y_onnx| / max(|y|, 1) for a regressor.
PARITY_TOL = 1e-5
# XGBoost sums its leaves in float32, the graph in double: they part by rounding that grows with the trees. Measured on
# breast-cancer, wine, diabetes and synthetic sets of 2-5k rows: at the default 100 trees at most 1.8e-7 in probability
# and 5.1e-6 relative (a target of magnitude 1e5 crossing zero), at 1,000 trees 4.7e-6 and 8.3e-6; a wrong export
# parts by 0.15-0.36 (unrounded features, _double_trees).
XGBOOST_PARITY_TOL = 1e-4

_TREE_OPS = frozenset({"TreeEnsembleClassifier", "TreeEnsembleRegressor"})
_DOUBLE_ATTRS = ("nodes_values", "nodes_hitrates", "class_weights", "target_weights", "base_values")


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    label_mismatches: int  # a clustering's: cluster ids
    rows: int
    # differing labels where sklearn's top two probabilities (a clustering: distances) tie within tol (not mismatches)
    label_ties: int = 0
    # regression (and a clustering's distances) only: max |dy| / max(|y|, 1), the quantity held to tol
    max_rel_diff: float | None = None
    # what the export was held to
    tolerance: float = PARITY_TOL

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def parity_tolerance(pipeline: Any) -> float:
    """The tolerance a pipeline's export is held to: :data:`XGBOOST_PARITY_TOL` for an XGBoost model (float32
    arithmetic), :data:`PARITY_TOL` for every other."""
    return XGBOOST_PARITY_TOL if "xgboost" in _libraries(pipeline.steps[-1][1]) else PARITY_TOL


def _libraries(estimator: Any) -> set[str]:
    """The packages an estimator's class and its bases come from: an XGBoost model told without importing xgboost."""
    return {cls.__module__.partition(".")[0] for cls in type(estimator).__mro__}


def _double_imputer(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.operator_converters.common import concatenate_variables
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer

    op = operator.raw_operator
    is_nan_marker = isinstance(op.missing_values, float) and np.isnan(op.missing_values)
    if not isinstance(operator.inputs[0].type, DoubleTensorType) or not is_nan_marker:
        convert_sklearn_imputer(scope, operator, container)
        return
    x = concatenate_variables(scope, operator.inputs, container)
    stats = np.asarray(op.statistics_, dtype=np.float64)
    if np.isnan(stats).any():
        # keep_empty_features=False drops all-missing columns, which this element-wise form cannot.
        raise NotImplementedError("SimpleImputer with all-missing training columns needs keep_empty_features=True")
    fill = scope.get_unique_variable_name("impute_fill")
    container.add_initializer(fill, TensorProto.DOUBLE, [1, stats.size], stats.tolist())
    mask = scope.get_unique_variable_name("impute_mask")
    container.add_node("IsNaN", [x], [mask], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node(
        "Where",
        [mask, fill, x],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("Where"),
    )


def _double_trees(
    original: Callable[..., Any], score_output: int, *, features: str = "double", passes_op_version: bool = True
) -> Callable[[Any, Any, Any], None]:
    """Wrap a tree converter (skl2onnx's or onnxmltools') so a double input yields an ai.onnx.ml v3 node with double
    thresholds, leaf weights and base values (``*_as_tensor``), summed in double, its float scores cast to double.

    ``features="float32"`` is XGBoost's arithmetic: it rounds each feature to float32 before comparing it with its
    float32 thresholds, which for ``hist`` are feature values; the node's input is rounded the same way first (Cast to
    float and back), its thresholds and weights are XGBoost's float32 values held as doubles. Unrounded, the graph
    parts from XGBoost by up to 0.36 in probability."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        from onnx import TensorProto, numpy_helper
        from skl2onnx.common.data_types import DoubleTensorType

        if not isinstance(operator.inputs[0].type, DoubleTensorType):
            original(scope, operator, container)
            return
        cast_scores = isinstance(operator.outputs[score_output].type, DoubleTensorType)
        real_add_node = container.add_node

        def add_node(
            op_type: str,
            inputs: Any,
            outputs: Any,
            op_domain: str = "",
            op_version: Any = None,
            name: Any = None,
            **attrs: Any,
        ) -> Any:
            if op_type not in _TREE_OPS or op_domain != "ai.onnx.ml":
                return real_add_node(
                    op_type, inputs, outputs, op_domain=op_domain, op_version=op_version, name=name, **attrs
                )
            for key in _DOUBLE_ATTRS:
                if key in attrs:
                    values = np.asarray(attrs.pop(key), dtype=np.float64).ravel()
                    if features == "float32":
                        values = values.astype(np.float32).astype(np.float64)
                    attrs[f"{key}_as_tensor"] = numpy_helper.from_array(values, name=f"{key}_as_tensor")
            if features == "float32":
                [feature] = [inputs] if isinstance(inputs, str) else list(inputs)
                rounded = scope.get_unique_variable_name("tree_input_f32")
                real_add_node("Cast", [feature], [rounded], to=TensorProto.FLOAT,
                              name=scope.get_unique_operator_name("CastTreeInput"))
                inputs = [scope.get_unique_variable_name("tree_input_f32_as_f64")]
                real_add_node("Cast", [rounded], inputs, to=TensorProto.DOUBLE,
                              name=scope.get_unique_operator_name("CastTreeInput"))
            if "nodes_missing_value_tracks_true" in attrs:
                # HGB passes bools; protobuf warns now and will reject them (onnx AttributeProto.ints)
                attrs["nodes_missing_value_tracks_true"] = [int(v) for v in attrs["nodes_missing_value_tracks_true"]]
            outs = [outputs] if isinstance(outputs, str) else list(outputs)
            # The v3 kernels always produce float scores; the declared output is double.
            score_index = 1 if op_type == "TreeEnsembleClassifier" else 0
            final = outs[score_index]
            if cast_scores:
                outs[score_index] = scope.get_unique_variable_name("tree_scores_f32")
            real_add_node(op_type, inputs, outs, op_domain=op_domain, op_version=3, name=name, **attrs)
            if cast_scores:
                real_add_node(
                    "Cast",
                    [outs[score_index]],
                    [final],
                    to=TensorProto.DOUBLE,
                    name=scope.get_unique_operator_name("CastScores"),
                )
            return None

        container.add_node = add_node
        try:
            if passes_op_version:
                original(scope, operator, container, op_version=3)
            else:
                original(scope, operator, container)
        finally:
            del container.add_node

    return convert


def _custom_converters(estimator: Any = None) -> dict[type, Callable[..., Any]]:
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer

    classifier = _double_trees(convert_sklearn_random_forest_classifier, score_output=1)
    regressor = _double_trees(convert_sklearn_random_forest_regressor_converter, score_output=0)
    custom: dict[type, Callable[..., Any]] = {
        SimpleImputer: _double_imputer,
        RandomForestClassifier: classifier,
        HistGradientBoostingClassifier: classifier,
        RandomForestRegressor: regressor,
        HistGradientBoostingRegressor: regressor,
    }
    if _libraries(estimator) & {"xgboost", "lightgbm"}:
        from mlops.training import boosting

        for kind, (convert, features) in boosting.converters().items():
            score_output = 1 if hasattr(kind, "predict_proba") else 0
            custom[kind] = _double_trees(convert, score_output, features=features, passes_op_version=False)
    return custom


def input_types(contract: DataContract) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    return [(name, DoubleTensorType([None, 1])) for name in contract.numeric_features] + [
        (name, StringTensorType([None, 1])) for name in contract.categorical_features
    ]


def to_onnx(
    pipeline: Pipeline,
    contract: DataContract,
    task: Task | str,
    *,
    target_opset: dict[str, int] | None = None,
    metadata: dict[str, str] | None = None,
) -> bytes:
    from skl2onnx import convert_sklearn

    task = Task(task)
    opset = dict(target_opset or TARGET_OPSET)
    estimator = pipeline.steps[-1][1]
    options: dict[Any, Any] = {id(estimator): {"zipmap": False}} if task.is_classification else {}
    try:
        model = convert_sklearn(pipeline, name="mlops", initial_types=input_types(contract), target_opset=opset,
                                options=options, custom_conversion_functions=_custom_converters(estimator))
    except RuntimeError as exc:  # skl2onnx's MissingShapeCalculator, MissingConverter, FunctionTransformer's
        raise user_code.export_error(pipeline, exc) from exc
    _restore_input_names(model, [name for name, _ in input_types(contract)])
    classes = [str(c) for c in pipeline.classes_] if task.is_classification else (
        cluster_ids(pipeline) if task is Task.CLUSTERING else [])
    write_metadata(model, contract, task, classes, metadata)
    model.producer_name = "serverless-mlops"
    return bytes(model.SerializeToString())


def _restore_input_names(model: Any, names: list[str]) -> None:
    """skl2onnx turns column names such as "mean radius" into identifiers ("mean_radius"); put the
    column names back so a record's keys are the feed names, with no mapping to carry around."""
    graph = model.graph
    current = [i.name for i in graph.input]
    if len(current) != len(names):
        raise RuntimeError(f"expected {len(names)} graph inputs, skl2onnx produced {len(current)}: {current}")
    rename = {old: new for old, new in zip(current, names, strict=True) if old != new}
    if not rename:
        return
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer}
    clash = sorted(set(rename.values()) & taken)
    if clash:
        raise RuntimeError(f"column names collide with internal graph names: {clash}")
    for inp in graph.input:
        inp.name = rename.get(inp.name, inp.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def onnx_opset(model_bytes: bytes) -> dict[str, int]:
    """The opsets a serialized model imports, as {"ai.onnx": 17, "ai.onnx.ml": 3}."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


def _label_disagreements(
    skl_proba: np.ndarray, skl_labels: np.ndarray, onnx_labels: np.ndarray, classes: list[Any], tol: float
) -> tuple[int, int]:
    """(real mismatches, resolved ties). Where the two top classes are tied within ``tol`` the arg max is
    decided by rounding: RandomForest averages votes, sklearn as sum(1.0)/n in float64, the ONNX kernel as
    sum(1/n) -- a 50/50 vote lands on either side of 0.5. Either label is then equally right, and failing
    the export for it would reject good models at random."""
    differ = np.flatnonzero(skl_labels != onnx_labels)
    if differ.size == 0:
        return 0, 0
    index = {str(c): i for i, c in enumerate(classes)}
    ties = 0
    for row in differ:
        a, b = index.get(str(skl_labels[row])), index.get(str(onnx_labels[row]))
        if a is not None and b is not None and abs(skl_proba[row, a] - skl_proba[row, b]) <= tol:
            ties += 1
    return int(differ.size - ties), ties


def _worst(diffs: np.ndarray) -> float:
    """Largest difference; NaN anywhere counts as infinitely wrong (a plain max would let it pass)."""
    if diffs.size == 0:
        return 0.0
    if np.isnan(diffs).any():
        return math.inf
    return float(diffs.max())


def check_parity(
    pipeline: Pipeline,
    onnx_bytes: bytes,
    test_df: pd.DataFrame,
    contract: DataContract,
    task: Task | str,
    tol: float | None = None,
    *,
    model: OnnxModel | None = None,
) -> ParityReport:
    """Compare sklearn and onnxruntime on ``test_df``: probabilities (absolute ``tol``) and labels for
    classifiers, values (relative ``tol``) for regressors. Raises ParityError when they disagree. ``tol`` defaults to
    the pipeline's :func:`parity_tolerance`."""
    from mlops.training.train import feature_frame, sklearn_threads

    task = Task(task)
    tol = parity_tolerance(pipeline) if tol is None else tol
    model = model or OnnxModel(onnx_bytes)
    X = feature_frame(test_df, contract)
    onnx_pred = model.predict(X)
    rows = len(X)
    if task is Task.CLUSTERING:  # the distances to the clusters and the cluster ids (mlops.training.clustering)
        with sklearn_threads(rows):
            diff, rel, mismatches, ties = cluster_parity(pipeline.transform(X), pipeline.predict(X), onnx_pred, tol)
        return ParityReport(diff, mismatches, rows, ties, max_rel_diff=rel, tolerance=tol)
    if task.is_classification:
        with sklearn_threads(rows):
            skl_proba = np.asarray(pipeline.predict_proba(X), dtype=np.float64)
            skl_labels = np.asarray(pipeline.predict(X)).astype(str)
        assert onnx_pred.probabilities is not None
        diff = _worst(np.abs(skl_proba - onnx_pred.probabilities))
        mismatches, ties = _label_disagreements(skl_proba, skl_labels, onnx_pred.labels, list(pipeline.classes_), tol)
        report = ParityReport(diff, mismatches, rows, ties, tolerance=tol)
        if diff > tol or mismatches:
            raise ParityError(
                f"ONNX export disagrees with scikit-learn on {rows} test rows: max |p_sklearn - p_onnx| = "
                f"{diff:.3g} (tolerance {tol:g}), {mismatches} predicted labels differ"
            )
        return report
    with sklearn_threads(rows):
        skl_values = np.asarray(pipeline.predict(X), dtype=np.float64).ravel()
    abs_diff = np.abs(skl_values - onnx_pred.values)
    diff = _worst(abs_diff)
    scale = np.maximum(np.abs(skl_values), 1.0)
    # Relative beyond magnitude 1, absolute below, so targets near zero do not demand exact equality.
    rel = _worst(abs_diff / scale)
    mismatches = int(np.sum(abs_diff > tol * scale))
    report = ParityReport(diff, mismatches, rows, max_rel_diff=rel, tolerance=tol)
    if rel > tol:
        raise ParityError(
            f"ONNX export disagrees with scikit-learn on {rows} test rows: max |y_sklearn - y_onnx| = "
            f"{diff:.3g} (relative {rel:.3g}, tolerance {tol:g}), {mismatches} rows beyond tolerance"
        )
    return report


def export_checked(
    pipeline: Pipeline,
    contract: DataContract,
    task: Task | str,
    test_df: pd.DataFrame,
    *,
    tol: float | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[bytes, ParityReport]:
    """to_onnx + check_parity: the only way a model should leave training."""
    data = to_onnx(pipeline, contract, task, metadata=metadata)
    return data, check_parity(pipeline, data, test_df, contract, task, tol)


def inputs_of(model_bytes: bytes) -> Sequence[dict[str, str]]:
    return [spec.as_dict() for spec in OnnxModel(model_bytes).inputs]

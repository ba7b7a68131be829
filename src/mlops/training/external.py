"""An ONNX model made outside the platform (``mlops models import``): checked against a model's data contract, and
given what serving reads, so that it is evaluated, registered, served and watched like a trained one.

What the platform expects of the file is the shape :mod:`mlops.training.onnx_export` gives a trained model:

* inputs: one per feature column of the contract, named after the column, and nothing else (the target is no input):
  a numeric, integer or boolean column as a float or double tensor [N, 1], a categorical one as a string tensor
  [N, 1], the number of rows N left free (a symbol or unknown). An input named as its column is once made an
  identifier (skl2onnx writes "mean radius" as "mean_radius") takes the column's name, where no other could be meant.
  Or, when every feature column is numeric, one float or double input [N, F] holding the F feature columns in the
  contract's order (what onnxmltools, tf2onnx and torch usually export): it is fed from one input per column;
* outputs: a classifier gives its predicted class (an int32, int64 or string tensor, [N] or [N, 1]) and its
  probabilities (a float or double tensor [N, classes]); without the predicted class, its classes must be named (the
  label is then derived: the class of the highest probability); a regression gives one number per row (one numeric
  tensor, [N] or [N, 1]);
* a classifier's classes, in the order of its probability columns: the file's metadata_props ``classes`` (a JSON
  list), else the class labels of its ``ai.onnx.ml`` classifier node (skl2onnx, onnxmltools write them), else read off
  the rows it is checked on (every row whose highest probability is column j has the same label). The label output
  must agree with the highest probability's class.

Whatever does not fit is refused before anything is recorded, every mismatch named with what the platform expects
(:class:`ModelRefused`). The copy the platform stores differs from the file in what serving needs and nothing else
(``ExternalModel.changes`` says what): inputs take their columns' names; float inputs are declared double with a
Cast to float in front (serving feeds every number as float64, as the trained models take them); a single [N, F]
input is replaced by one double input per column and a Concat of them in the contract's order (and a Cast to float
for a float one); a missing label output is derived (ArgMax, then the class of that column); the outputs are laid
out as serving reads them (the label first, the probabilities named ``probabilities``; other outputs are dropped); the
platform's metadata_props (``classes``, ``task``, ``target``, ``features``, ``onnx_opset``, plus ``source`` and
``original_sha256``) are set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.core.errors import MlopsError
from mlops.core.tasks import Task
from mlops.serving.onnx_model import OnnxModel
from mlops.training.onnx_graph import (
    NameTaken,
    Port,
    declared_classes,
    derive_label,
    expose_outputs,
    feed_as_double,
    feed_columns,
    free_dim,
    ports,
    rename_inputs,
    write_metadata,
)

if TYPE_CHECKING:
    from mlops.data.schema import DataContract

FLOATS = ("tensor(float)", "tensor(double)")
STRING = "tensor(string)"
LABEL_TYPES = ("tensor(int32)", "tensor(int64)", STRING)
NUMBER_TYPES = (*FLOATS, "tensor(int32)", "tensor(int64)")
PROBABILITIES = "probabilities"  # the output serving takes for a classifier's (mlops.serving.onnx_model)
LABEL = "label"
# rows whose two highest probabilities are closer than this say nothing about which class a column is
MARGIN = 1e-6
# the share of the other rows on which a label may differ from its highest probability's class (a decision threshold
# other than the highest probability)
DISAGREEMENT = 0.01
SOURCE = "external"


class ModelRefused(MlopsError):
    """The file cannot serve as the model: ``problems`` names each mismatch and what the platform expects."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{what}:\n" + "\n".join(f"  - {problem}" for problem in self.problems))


@dataclass
class ExternalModel:
    onnx_bytes: bytes  # the copy the platform stores and serves
    sha256: str  # of the file as given
    size: int
    producer: str
    classes: list[str]
    classes_from: str | None  # metadata_props | classifier node | rows; None for a regression
    changes: list[str] = field(default_factory=list)
    # the model adopt scored the rows with, when it was loaded from the stored copy as it is (metadata_props included)
    scored_with: OnnxModel | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def stored_sha256(self) -> str:
        return hashlib.sha256(self.onnx_bytes).hexdigest()

    def served(self) -> OnnxModel:
        """The stored copy loaded as serving loads it: the session adopt scored the rows with where it is that copy
        (declared classes, a regression), else one built now; once."""
        if self.scored_with is None:
            self.scored_with = OnnxModel(self.onnx_bytes)
        return self.scored_with


# -- what is refused ---------------------------------------------------------------------------------------------
def input_problems(inputs: Sequence[Port], contract: DataContract) -> list[str]:
    """Every way the inputs differ from one [N, 1] tensor per feature column of the contract, named after it."""
    features = {c.name: c for c in contract.feature_columns}
    given = {p.name: p for p in inputs}
    problems = []
    for name, spec in features.items():
        categorical = spec.kind == "categorical"
        expected = "a string tensor [N, 1]" if categorical else "a float or double tensor [N, 1]"
        what = f"the contract's {spec.kind} column {name!r}"
        port = given.get(name)
        if port is None:
            problems.append(f"missing input {name!r}: {what} is fed as an input of its name, {expected}")
            continue
        if port.type not in ((STRING,) if categorical else FLOATS):
            problems.append(f"input {name!r} is {port.shown}; {what} is fed as {expected}")
        elif port.shape is None or len(port.shape) != 2:
            problems.append(f"input {name!r} has shape {port.shown}; {what} is fed as {expected}")
        elif not free_dim(port.shape[0]):
            problems.append(f"input {name!r} takes a fixed {port.shape[0]} row(s) ({port.shown}); the platform feeds "
                            f"any number of rows at once, {expected} with N free")
        elif not (port.shape[1] == 1 or free_dim(port.shape[1])):
            problems.append(f"input {name!r} has {port.shape[1]} columns ({port.shown}); {what} is fed as {expected}")
    listed = False
    for name, port in given.items():
        if name == contract.target:
            problems.append(f"extra input {name!r} ({port.shown}): it is the target, which the model predicts; "
                            "the platform feeds only the feature columns")
        elif name not in features:
            problems.append(f"extra input {name!r} ({port.shown}): not a column of the contract"
                            + ("" if listed else f", whose feature columns are {_few(list(features))}"))
            listed = True
    return problems


def matrix_input(inputs: Sequence[Port], contract: DataContract) -> Port | None:
    """The file's one input when it holds the features together (onnxmltools, tf2onnx and torch exports: one float
    tensor [N, F]) rather than one input per column: any one input but an [N, 1] (a column's, however named) or the
    target."""
    if len(inputs) != 1 or inputs[0].name == contract.target:
        return None
    port = inputs[0]
    per_column = port.shape is not None and len(port.shape) == 2 and port.shape[1] == 1
    return None if per_column else port


def matrix_problems(port: Port, contract: DataContract) -> list[str]:
    """Why the one input ``port`` cannot be fed the feature columns together, and how to re-export the model; [] when
    it can: a float or double [N, F], F the number of feature columns, all numeric, taken in the contract's order."""
    order = [c.name for c in contract.feature_columns]
    fix = (f"re-export it with one input per feature column, named after the column (a float or double tensor [N, 1], "
           f"a string tensor [N, 1] for a categorical one), in this order: {json.dumps(order)}")
    together = f"or one float or double input [N, {len(order)}] holding the columns in that order"
    found = f"it has one input, {port.name!r} ({port.shown}), where the platform feeds one input per feature column"
    if contract.categorical_features:
        return [f"{found}; the contract's categorical columns {_few(contract.categorical_features)} cannot be fed in "
                f"one number tensor: {fix}"]
    if port.type not in FLOATS:
        return [f"{found}; numbers are fed as float or double: {fix}, {together}"]
    if port.shape is not None and len(port.shape) != 2:
        return [f"{found}; a single input holding the features is [N, F]: {fix}, {together}"]
    if port.shape is not None and not free_dim(port.shape[0]):
        return [f"{found}; it takes a fixed {port.shape[0]} row(s), the platform feeds any number of rows at once: "
                f"{fix}, {together} (N free)"]
    width = None if port.shape is None else port.shape[1]
    if width is not None and not free_dim(width) and width != len(order):
        return [f"{found}; it holds {width} features, the contract has {len(order)} feature columns: {fix}, "
                f"{together}"]
    return []


def _few(names: Sequence[str], at_most: int = 8) -> str:
    shown = ", ".join(names[:at_most])
    return shown + (f" and {len(names) - at_most} more" if len(names) > at_most else "")


def _identifier(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def columns_of_renamed_inputs(inputs: Sequence[Port], contract: DataContract) -> dict[str, str]:
    """Inputs named as their column is once made an identifier (skl2onnx turns "mean radius" into "mean_radius"): the
    column each stands for, where no other input or column could be meant."""
    features = [c.name for c in contract.feature_columns]
    given = {p.name for p in inputs}
    missing: dict[str, list[str]] = {}
    for name in features:
        if name not in given:
            missing.setdefault(_identifier(name), []).append(name)
    extra = [p.name for p in inputs if p.name not in features and p.name != contract.target]
    keys = Counter(_identifier(name) for name in extra)
    return {name: missing[key][0] for name in extra
            if keys[key := _identifier(name)] == 1 and len(missing.get(key, [])) == 1}


def choose_outputs(outputs: Sequence[Port], task: Task | str,
                   classes: Sequence[str] | None = None) -> tuple[list[Port], list[str]]:
    """The outputs serving reads, in its order ([label, probabilities] or [value]), and what prevents it. A classifier
    with probabilities but no label output whose ``classes`` are known gives [probabilities] alone: its label is
    derived (the class of the highest probability)."""
    task = Task(task)

    def rank_is(port: Port, *ranks: int) -> bool:
        return port.shape is None or len(port.shape) in ranks

    listed = ", ".join(p.name + " " + p.shown for p in outputs) or "none"
    if not task.is_classification:
        if len(outputs) == 1 and outputs[0].type in NUMBER_TYPES and rank_is(outputs[0], 1, 2):
            return list(outputs), []
        return [], [f"a regression gives one output, a float, double or int tensor [N] or [N, 1]; its outputs are "
                    f"{listed}"]
    labels = [p for p in outputs if p.type in LABEL_TYPES and rank_is(p, 1, 2)]
    probabilities = [p for p in outputs if p.type in FLOATS and rank_is(p, 2)]
    if not labels and len(probabilities) == 1:
        if classes:
            return probabilities, []
        return [], [f"it gives probabilities ({probabilities[0].name} {probabilities[0].shown}) but no predicted "
                    "class, and its classes are not named: name them in the order of the probability columns in the "
                    "file's metadata_props, key 'classes', as a JSON list (e.g. [\"0\", \"1\"]), and the label is "
                    "derived as the class of the highest probability; or export the predicted class too, as an int "
                    "or string output [N]"]
    problems = []
    if len(labels) != 1:
        problems.append(f"a classifier gives its predicted class as one int32, int64 or string tensor [N]; "
                        f"{'none is' if not labels else f'{len(labels)} are'} among its outputs ({listed})")
    if len(probabilities) != 1:
        zipmap = [p.name for p in outputs if p.type.startswith("seq(map")]
        hint = (f" ({', '.join(zipmap)} is a sequence of maps, skl2onnx's ZipMap: convert with options "
                "{id(classifier): {'zipmap': False}})") if zipmap else ""
        problems.append(f"a classifier gives its probabilities as one float or double tensor [N, classes]; "
                        f"{'none is' if not probabilities else f'{len(probabilities)} are'} among its outputs "
                        f"({listed}){hint}")
    return ([labels[0], probabilities[0]] if not problems else []), problems


def _highest(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's column of highest probability, and whether it is clear: above the next one by more than MARGIN."""
    order = np.argsort(probabilities, axis=1)
    rows = np.arange(len(probabilities))
    return order[:, -1], probabilities[rows, order[:, -1]] - probabilities[rows, order[:, -2]] > MARGIN


def classes_from_rows(labels: np.ndarray, probabilities: np.ndarray) -> list[str] | None:
    """Each probability column's class, when every row whose highest probability it is has the same label."""
    if len(labels) == 0 or probabilities.shape[1] < 2:
        return None
    top, clear = _highest(probabilities)
    classes = []
    for column in range(probabilities.shape[1]):
        seen = set(labels[clear & (top == column)].tolist())
        if len(seen) != 1:
            return None
        classes.append(str(seen.pop()))
    return classes if len(set(classes)) == len(classes) else None


def _metadata(model: Any, contract: DataContract, task: Task, classes: Sequence[str], sha256: str) -> None:
    write_metadata(model, contract, task, classes, {"source": SOURCE, "original_sha256": sha256}, keep=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _class_problems(prediction: Any, rows: int, task: Task, declared: list[str] | None,
                    source: str | None) -> tuple[list[str], list[str], str | None]:
    """The problems of a classifier's answers on ``rows`` rows; its classes and where they come from."""
    labels, probabilities = prediction.labels, prediction.probabilities
    if probabilities is None or probabilities.ndim != 2 or len(probabilities) != rows or len(labels) != rows:
        shape = None if probabilities is None else list(probabilities.shape)
        return [f"on {rows} rows it gives {len(labels)} labels and probabilities of shape {shape}; a classifier "
                f"gives one label per row and probabilities [N, classes]"], [], None
    columns = probabilities.shape[1]
    if task is Task.BINARY and columns != 2:
        return [f"it gives {columns} probability columns; the model's task is binary: two classes"], [], None
    classes = declared
    if classes is None:
        classes, source = classes_from_rows(labels, probabilities), "rows"
    if classes is None:
        return ["its classes cannot be told: name them in the order of the probability columns in the file's "
                "metadata_props, key 'classes', as a JSON list (e.g. [\"0\", \"1\"])"], [], None
    if len(classes) != columns:
        return [f"its classes {classes} ({source}) are {len(classes)}, its probability columns {columns}"], [], None
    unknown = sorted(set(labels.tolist()) - set(classes))
    if unknown:
        return [f"its label output gives {unknown[:5]}, not among its classes {classes} ({source})"], [], None
    top, clear = _highest(probabilities)
    disagree = int((labels[clear] != np.asarray(classes, dtype=object)[top[clear]]).sum())
    if disagree > DISAGREEMENT * max(int(clear.sum()), 1):
        return [f"its label differs from the class of its highest probability on {disagree} of {int(clear.sum())} "
                f"rows, with the classes {classes} ({source}): name the classes in the order of the probability "
                "columns (metadata_props 'classes', a JSON list)"], [], None
    return [], list(classes), source


def _make_servable(graph: Any, inputs: Sequence[Port], chosen: Sequence[Port], renamed: Mapping[str, str],
                   task: Task, what: str, *, matrix: Port | None, contract: DataContract,
                   classes: Sequence[str] | None) -> list[str]:
    """The graph edited in place as serving needs it (inputs named as their columns, numbers fed as double, outputs
    as serving reads them); what was changed."""
    changes = []
    try:
        if matrix is not None:
            order = [c.name for c in contract.feature_columns]
            feed_columns(graph, matrix.name, order)
            changes.append(f"input {matrix.name!r} ({matrix.shown}) fed from one double input [N, 1] per feature "
                           f"column, concatenated in the contract's order ({_few(order, 5)})"
                           + (", then cast to float" if matrix.type == "tensor(float)" else ""))
        if renamed:
            rename_inputs(graph, renamed)
            changes.append(f"inputs named after their columns: {_few([f'{a} -> {b}' for a, b in renamed.items()], 5)}")
        floats = [p.name for p in inputs if p.type == "tensor(float)" and matrix is None]
        if floats:
            feed_as_double(graph, floats)
            changes.append(f"inputs {_few(floats, 5)} declared double, each cast to float in the graph (serving feeds "
                           "every number as float64)")
        if task.is_classification and len(chosen) == 1:  # no label output: the class of the highest probability
            assert classes
            label = derive_label(graph, chosen[0].name, classes)
            changes.append(f"label output {label!r} added: the class of each row's highest probability, of "
                           f"{_few(list(classes), 5)}")
            plan = [(label, label), (chosen[0].name, PROBABILITIES)]
        elif task.is_classification:
            label_port, probabilities = chosen
            plan = [(label_port.name, LABEL if label_port.name == PROBABILITIES else label_port.name),
                    (probabilities.name, PROBABILITIES)]
        else:
            plan = [(chosen[0].name, "prediction" if chosen[0].name == PROBABILITIES else chosen[0].name)]
        return changes + expose_outputs(graph, plan)
    except NameTaken as exc:
        raise ModelRefused(what, [str(exc)]) from None


def adopt(onnx_bytes: bytes, contract: DataContract, task: Task | str, *, rows: Sequence[Mapping[str, Any]],
          what: str = "the model cannot be imported") -> ExternalModel:
    """The file checked and made servable; ``rows`` (records of the feature columns) are scored as serving scores
    them, to check its answers. Raises :class:`ModelRefused` naming every mismatch."""
    import onnx
    import onnxruntime as ort

    task = Task(task)
    sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    try:
        ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        model = onnx.load_from_string(onnx_bytes)
    except Exception as exc:  # onnxruntime's errors have no common base class worth naming
        raise ModelRefused(what, [f"it is not an ONNX model onnxruntime can load ({_first_line(exc)})"]) from None
    inputs, outputs = ports(model)
    matrix = matrix_input(inputs, contract)
    renamed = {} if matrix is not None else columns_of_renamed_inputs(inputs, contract)
    inputs = [Port(renamed.get(p.name, p.name), p.type, p.shape) for p in inputs]
    declared, source = declared_classes(model) if task.is_classification else (None, None)
    chosen, output_problems = choose_outputs(outputs, task, declared)
    problems = (matrix_problems(matrix, contract) if matrix is not None else input_problems(inputs, contract)) \
        + output_problems
    if problems:
        raise ModelRefused(what, problems)
    changes = _make_servable(model.graph, inputs, chosen, renamed, task, what, matrix=matrix, contract=contract,
                             classes=declared)
    _metadata(model, contract, task, declared or [], sha256)
    try:
        served = OnnxModel(bytes(model.SerializeToString()))
        prediction = served.predict_records(list(rows))
    except Exception as exc:
        raise ModelRefused(what, [f"scored as the platform scores (one [N, 1] tensor per column, numbers as float64) "
                                  f"on {len(rows)} rows, it fails: {_first_line(exc)}"]) from None
    classes: list[str] = []
    if task.is_classification:
        problems, classes, source = _class_problems(prediction, len(rows), task, declared, source)
    elif len(prediction.values) != len(rows):
        problems = [f"on {len(rows)} rows it gives {len(prediction.values)} values; a regression gives one per row"]
    if problems:
        raise ModelRefused(what, problems)
    _metadata(model, contract, task, classes, sha256)
    changes.append("metadata_props set: classes, task, target, features, onnx_opset, source, original_sha256")
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p) or "unknown"
    stored = bytes(model.SerializeToString())
    return ExternalModel(stored, sha256, len(onnx_bytes), producer, classes, source if task.is_classification else None,
                         changes, scored_with=served if served.model_bytes == stored else None)


def synthetic_rows(contract: DataContract, n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Rows the contract accepts, for a model with no data to be checked and timed on: numbers within the column's
    bounds (standard normal where it has none), categories among its own (else empty)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for spec in contract.feature_columns:
        if spec.kind == "categorical":
            columns[spec.name] = [str(v) for v in rng.choice(spec.categories or [""], size=n)]
            continue
        if spec.kind == "boolean":
            values = rng.integers(0, 2, size=n).astype(float)
        elif spec.min is not None and spec.max is not None:
            values = rng.uniform(spec.min, spec.max, size=n)
        else:
            values = rng.standard_normal(n)
            if spec.min is not None:
                values = spec.min + np.abs(values)
            elif spec.max is not None:
                values = spec.max - np.abs(values)
        if spec.kind == "integer":
            values = np.clip(np.round(values), np.ceil(spec.min) if spec.min is not None else -np.inf,
                             np.floor(spec.max) if spec.max is not None else np.inf)
        columns[spec.name] = [float(v) for v in values]
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]

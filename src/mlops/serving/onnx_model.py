"""Serving side of the ONNX model: load the bytes, build the feeds, predict.

This module is what the ``infer`` function ships, so it imports numpy, onnxruntime and the standard
library only -- never scikit-learn, skl2onnx or pandas (importing sklearn alone costs ~1 s of cold
start and ~200 MB of layer). Everything a server needs to know about the model travels in the graph:
one input per feature column (numeric -> double [N, 1], categorical -> string [N, 1]) and the
``metadata_props`` written by :func:`mlops.training.onnx_export.to_onnx` (``classes`` as a JSON list,
``task``, ``target``, ``features``). A clustering's graph (``task`` "clustering") answers a cluster id and the distance
to every cluster's centre; its ``classes`` are the cluster ids.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

InputKind = Literal["numeric", "categorical"]

# metadata_props keys written by onnx_export.to_onnx
META_CLASSES = "classes"
META_TASK = "task"
META_TARGET = "target"
META_FEATURES = "features"
META_OPSET = "onnx_opset"


class FeedError(ValueError):
    """A value cannot be turned into the tensor an input expects (message names the column)."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    kind: InputKind
    onnx_type: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "type": self.onnx_type}


@dataclass(frozen=True)
class Prediction:
    """``labels``: class names (str array) for classifiers, cluster ids (str array) for a clustering, predicted values
    (float64) for regressors. ``distances``: a clustering's Euclidean distances to each cluster's centre (in the
    model's preprocessed space), one column per id of ``classes``."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    classes: list[str]
    distances: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:
        return self.labels

    def __len__(self) -> int:
        return len(self.labels)


def _numeric(value: Any, column: str) -> float:
    if type(value) is float:  # the validated serving path: nothing to convert
        return value
    if value is None or value == "":
        return math.nan
    if isinstance(value, bool | np.bool_):
        return 1.0 if value else 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FeedError(f"column {column!r} expects a number, got {value!r}") from None


def _categorical(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def column_array(values: Iterable[Any], spec: InputSpec) -> np.ndarray:
    """One input tensor, shape (N, 1): float64 for numeric inputs, object array of str for categoricals."""
    if spec.kind == "numeric":
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
            return values.astype(np.float64, copy=False).reshape(-1, 1)
        return np.array([_numeric(v, spec.name) for v in values], dtype=np.float64).reshape(-1, 1)
    if isinstance(values, np.ndarray) and values.dtype == object:
        seq: Iterable[Any] = values.ravel().tolist()
    else:
        seq = values
    return np.array([_categorical(v) for v in seq], dtype=object).reshape(-1, 1)


def feeds_from_records(records: Sequence[Mapping[str, Any]], inputs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Per-input arrays from row records; a key absent from a record counts as a missing value."""
    numeric = [spec.name for spec in inputs if spec.kind == "numeric"]
    feeds: dict[str, np.ndarray] = {}
    if numeric:
        # One array for every numeric input, read row by row (numpy reads a list of rows far faster than a list of
        # columns) and laid out input by input, so that each feed is a contiguous (N, 1) view of it: the serving
        # path feeds one row at a time, and one array per input would cost more than the model.
        block = np.array([[_numeric(r.get(name), name) for name in numeric] for r in records], dtype=np.float64)
        columns = np.ascontiguousarray(block.T).reshape(len(numeric), len(records), 1)
        feeds = dict(zip(numeric, columns, strict=False))  # as many columns as names, by construction
    for spec in inputs:
        if spec.kind != "numeric":
            feeds[spec.name] = column_array([r.get(spec.name) for r in records], spec)
    return feeds


def feeds_from_columns(columns: Any, inputs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Per-input arrays from a mapping of column -> values, or anything indexable by column name with
    ``.to_numpy()`` columns (a pandas DataFrame, without importing pandas)."""
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        try:
            col = columns[spec.name]
        except KeyError:
            raise FeedError(f"missing input column {spec.name!r}") from None
        if hasattr(col, "to_numpy"):
            col = col.to_numpy()
        feeds[spec.name] = column_array(col, spec)
    return feeds


def _is_column(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray) or hasattr(value, "to_numpy")


def session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # One thread: Lambda gives ~1 vCPU per 1.8 GB, and thread pools only add wake-up latency for the
    # single-row requests an endpoint serves; it also makes latency measurements comparable.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OnnxModel:
    def __init__(self, model_bytes: bytes) -> None:
        self.model_bytes = model_bytes
        self.session = ort.InferenceSession(
            model_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map)
        self.inputs: list[InputSpec] = [
            InputSpec(i.name, "categorical" if "string" in i.type else "numeric", i.type)
            for i in self.session.get_inputs()
        ]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.is_classifier = "probabilities" in self.output_names
        self.classes: list[str] = json.loads(self.metadata.get(META_CLASSES, "[]"))
        self.task: str | None = self.metadata.get(META_TASK)
        # a cluster id and the distances to the clusters (skl2onnx's k-means: label, scores)
        self.is_clustering = self.task == "clustering"
        self.target: str | None = self.metadata.get(META_TARGET)
        self._numeric_names = [i.name for i in self.inputs if i.kind == "numeric"]
        self._held = threading.local()  # each thread's one-row feeds (_one_row)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def feeds(self, data: Any) -> dict[str, np.ndarray]:
        """Feeds from a list of records, one record, a dict of columns or a DataFrame."""
        if isinstance(data, Mapping):
            if any(_is_column(v) for v in data.values()):
                return feeds_from_columns(data, self.inputs)
            return feeds_from_records([data], self.inputs)
        if isinstance(data, list | tuple):
            return feeds_from_records(data, self.inputs)
        return feeds_from_columns(data, self.inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> Prediction:
        outputs = self.session.run(self.output_names, feeds if type(feeds) is dict else dict(feeds))
        by_name = dict(zip(self.output_names, outputs, strict=True))
        if self.is_classifier:
            labels = np.asarray(by_name[self.output_names[0]]).ravel().astype(str)
            proba = np.asarray(by_name["probabilities"], dtype=np.float64)
            return Prediction(labels=labels, probabilities=proba, classes=self.classes)
        if self.is_clustering:
            distances = np.asarray(outputs[1], dtype=np.float64)
            clusters = self.classes or [str(i) for i in range(distances.shape[1])]
            return Prediction(labels=np.asarray(outputs[0]).ravel().astype(str), probabilities=None, classes=clusters,
                              distances=distances)
        values = np.asarray(outputs[0], dtype=np.float64).ravel()
        return Prediction(labels=values, probabilities=None, classes=[])

    def predict(self, data: Any) -> Prediction:
        return self.run(self.feeds(data))

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> Prediction:
        if len(records) == 1:
            return self.run(self._one_row(records[0]))
        return self.run(feeds_from_records(records, self.inputs))

    def _one_row(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``feeds_from_records([record])`` without making an array per numeric input: they are views of one array
        kept per thread and refilled per call. A request of one row gives each input one value, and making dozens
        of one-value arrays cost about a third of what the model then takes to answer."""
        held = getattr(self._held, "feeds", None)
        if held is None:
            block = np.empty((len(self._numeric_names), 1, 1), dtype=np.float64)
            held = self._held.feeds = (block.reshape(-1), dict(zip(self._numeric_names, block, strict=True)))
        values, numeric = held
        values[:] = [_numeric(record.get(name), name) for name in self._numeric_names]
        feeds = dict(numeric)
        for spec in self.inputs:
            if spec.kind != "numeric":
                feeds[spec.name] = column_array([record.get(spec.name)], spec)
        return feeds

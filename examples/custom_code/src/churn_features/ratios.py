"""A feature step of our own: the ratio of two numeric columns, and its ONNX converter.

serverless-mlops exports every model to ONNX with skl2onnx and serves the graph with onnxruntime, so a step of our
own needs a converter. Registering it when this module is imported is enough: the platform imports our build function's
module before it trains, and exports in the same process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skl2onnx import update_registered_converter
from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxConcat, OnnxDiv, OnnxGather
from sklearn.base import BaseEstimator, TransformerMixin


class Ratios(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Appends x[:, a] / (x[:, b] + 1) for each (a, b) of ``pairs`` (column positions) to the columns it is given."""

    def __init__(self, pairs: tuple[tuple[int, int], ...] = ()) -> None:
        self.pairs = pairs

    def fit(self, X: Any, y: Any = None) -> Ratios:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        ratios = [X[:, a] / (X[:, b] + 1.0) for a, b in self.pairs]
        return np.column_stack([X, *ratios]) if ratios else X


def _shape(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    width = operator.inputs[0].get_second_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__([rows, width + len(operator.raw_operator.pairs)])


def _convert(scope: Any, operator: Any, container: Any) -> None:
    step, X, opset = operator.raw_operator, operator.inputs[0], container.target_opset
    one = np.array([1.0], dtype=np.float64)  # the platform's graphs are double end to end
    columns = [X]
    for a, b in step.pairs:
        numerator = OnnxGather(X, np.array([a], dtype=np.int64), axis=1, op_version=opset)
        denominator = OnnxAdd(OnnxGather(X, np.array([b], dtype=np.int64), axis=1, op_version=opset), one,
                              op_version=opset)
        columns.append(OnnxDiv(numerator, denominator, op_version=opset))
    OnnxConcat(*columns, axis=1, op_version=opset, output_names=operator.outputs[:1]).add_to(scope, container)


update_registered_converter(Ratios, "ChurnFeaturesRatios", _shape, _convert)

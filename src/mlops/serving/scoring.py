"""Validated rows to answers with the served ONNX model: one function for every serving mode, so that a batch
prediction equals the API's answer for the same row."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlops.serving.onnx_model import OnnxModel


def score(model: OnnxModel, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | None]:
    """Each validated row's ``prediction`` and ``probabilities`` (None for a regression and a clustering; a
    clustering's prediction is its cluster id, as text, with ``distances``: cluster id -> distance to its centre), or
    None for a row the model gives no finite answer for: finite inputs can still overflow its arithmetic (1e308 times a
    coefficient), and a NaN probability behind a made-up label is no answer. Every serving mode (API, batch, push)
    scores here."""
    prediction = model.predict_records(list(rows))
    # Python floats and strings straight from the arrays (tolist): a request holds a row or a few, for which numpy's
    # per-element calls would cost more than the model's answer
    labels = prediction.labels.tolist()
    if prediction.distances is not None:
        clusters = prediction.classes
        return [{"prediction": str(label), "probabilities": None, "distances": dict(zip(clusters, row, strict=True))}
                if all(map(math.isfinite, row)) else None
                for label, row in zip(labels, prediction.distances.tolist(), strict=True)]
    if prediction.probabilities is None:
        return [{"prediction": value, "probabilities": None} if math.isfinite(value) else None
                for value in map(float, labels)]
    classes = prediction.classes
    return [{"prediction": str(label), "probabilities": dict(zip(classes, row, strict=True))}
            if all(map(math.isfinite, row)) else None
            for label, row in zip(labels, prediction.probabilities.tolist(), strict=True)]

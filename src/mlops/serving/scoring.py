"""Validated rows to answers with the served ONNX model: one function for every serving mode, so that a batch
prediction equals the API's answer for the same row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlops.serving.onnx_model import OnnxModel


def score(model: OnnxModel, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | None]:
    """Each validated row's ``prediction`` and ``probabilities`` (None for a regression), or None for a row the
    model gives no finite answer for: finite inputs can still overflow its arithmetic (1e308 times a coefficient),
    and a NaN probability behind a made-up label is no answer. Every serving mode (API, batch, push) scores here."""
    prediction = model.predict_records(list(rows))
    scores = prediction.labels if prediction.probabilities is None else prediction.probabilities
    finite = np.isfinite(np.asarray(scores, dtype=float).reshape(len(rows), -1)).all(axis=1)
    out: list[dict[str, Any] | None] = []
    for i in range(len(rows)):
        if not finite[i]:
            out.append(None)
        elif prediction.probabilities is not None:
            out.append({"prediction": str(prediction.labels[i]), "probabilities": {
                c: float(p) for c, p in zip(prediction.classes, prediction.probabilities[i], strict=True)}})
        else:
            out.append({"prediction": float(prediction.labels[i]), "probabilities": None})
    return out

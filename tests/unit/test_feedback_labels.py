"""Feedback names an outcome the served model can be compared with: one of a classifier's classes, a finite number
for a regression; anything else is the client's mistake (422 naming `label`), never a record the rollout and
drift_check would trip over."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mlops.serving.cache import LoadedModel
from mlops.serving.capture import CaptureSink
from mlops.serving.errors import InvalidInput
from mlops.serving.server import ModelServer


class Captured(CaptureSink):
    def __init__(self) -> None:
        super().__init__(enabled=True, on_error=lambda _exc: None)
        self.records: list[dict[str, Any]] = []

    def put(self, records: Any, *, sampling: bool = False) -> None:
        self.records.extend(records)


def _server(is_classifier: bool, classes: list[str], is_clustering: bool = False) -> tuple[ModelServer, Captured]:
    """A server whose pinned version 1 is warm: a model with these classes (none for a regression)."""
    version = SimpleNamespace(model="m", version=1)
    model = SimpleNamespace(is_classifier=is_classifier, classes=classes, is_clustering=is_clustering)
    loaded = LoadedModel(version, model, [], 0.0)  # type: ignore[arg-type]
    cache = SimpleNamespace(cached=lambda model, v: loaded if (model, v) == ("m", 1) else None)
    capture = Captured()
    return ModelServer(model="m", version=1, registry=None, cache=cache, capture=capture), capture  # type: ignore[arg-type]


def _refused(server: ModelServer, label: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        server.feedback("m", {"request_id": "r-1", "label": label})
    assert refused.value.field == "label"
    return refused.value


def test_a_regression_model_takes_a_finite_number_as_label() -> None:
    server, capture = _server(False, [])
    for label in ("high", True, 10**400, float("nan"), float("inf")):
        assert "number" in _refused(server, label).message
    assert capture.records == []
    assert server.feedback("m", {"request_id": "r-1", "label": 2.5}) == {"request_id": "r-1", "accepted": True}
    assert [r["label"] for r in capture.records] == ["2.5"]


def test_a_classifiers_label_is_one_of_its_classes() -> None:
    server, capture = _server(True, ["no", "yes"])
    for label in (True, "maybe", 1, {"a": 1}):
        assert "one of the classes of m v1: no, yes" in _refused(server, label).message
    assert "at most 1024" in _refused(server, "y" * 5000).message
    assert capture.records == []
    for label in ("yes", "no"):
        server.feedback("m", {"request_id": "r-1", "label": label})
    assert [r["label"] for r in capture.records] == ["yes", "no"]


def test_a_clustering_takes_no_feedback_and_says_why() -> None:
    """Its predictions are cluster ids, which no observed outcome confirms: a label or a reward is refused (422)."""
    server, capture = _server(False, ["0", "1", "2"], is_clustering=True)
    for field, value in (("label", "1"), ("reward", 1.0)):
        with pytest.raises(InvalidInput) as refused:
            server.feedback("m", {"request_id": "r-1", field: value})
        assert (refused.value.status, refused.value.field) == (422, field)
        assert "m is a clustering model" in refused.value.message
        assert "takes no feedback" in refused.value.message
    assert capture.records == []

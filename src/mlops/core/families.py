"""Model families a model config may name: which tasks each supports and how its estimator is built.

``mlops.core.config`` imports this module while validating ``mlops.toml`` (also inside handlers that never
train), so scikit-learn is imported lazily inside the factories, never at module import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mlops.core.config import Task

Factory = Callable[[Task, Mapping[str, Any], int], Any]

_CLASSIFICATION = frozenset({Task.BINARY, Task.MULTICLASS})
_ALL = frozenset(Task)


@dataclass(frozen=True)
class Family:
    name: str
    tasks: frozenset[Task]
    factory: Factory
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def supports(self, task: Task | str) -> bool:
        return Task(task) in self.tasks

    def effective_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with the user's params: what the estimator is actually built with."""
        return {**self.defaults, **(params or {})}

    def build(self, task: Task | str, params: Mapping[str, Any] | None = None, seed: int = 42) -> Any:
        task = Task(task)
        if not self.supports(task):
            raise ValueError(
                f"model family {self.name!r} does not support task {task.value!r}; "
                f"it supports {sorted(t.value for t in self.tasks)}"
            )
        try:
            return self.factory(task, self.effective_params(params), seed)
        except TypeError as exc:
            # an unknown keyword surfaces as a TypeError from the estimator's __init__
            raise ValueError(f"invalid params for model family {self.name!r}: {exc}") from exc


def _logistic_regression(task: Task, params: Mapping[str, Any], seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(random_state=seed, **params)


def _linear_regression(task: Task, params: Mapping[str, Any], seed: int) -> Any:
    from sklearn.linear_model import Ridge

    # Ridge is deterministic for the default solver; the seed only matters for sag/saga.
    return Ridge(random_state=seed, **params)


def _random_forest(task: Task, params: Mapping[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestRegressor if task is Task.REGRESSION else RandomForestClassifier
    return cls(random_state=seed, **params)


def _hist_gradient_boosting(task: Task, params: Mapping[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if task is Task.REGRESSION else HistGradientBoostingClassifier
    return cls(random_state=seed, **params)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "logistic_regression",
            _CLASSIFICATION,
            _logistic_regression,
            # lbfgs on standardized features converges well within 1000 iterations; the sklearn
            # default of 100 warns on wider one-hot data.
            MappingProxyType({"C": 1.0, "max_iter": 1000}),
        ),
        Family(
            "linear_regression",
            frozenset({Task.REGRESSION}),
            _linear_regression,
            MappingProxyType({"alpha": 1.0}),
        ),
        Family(
            "random_forest",
            _ALL,
            _random_forest,
            # Depth bounds the ONNX size (nodes grow ~2^depth per tree) and hence the cold start of infer;
            # n_jobs=1 keeps fitting reproducible in time on small training containers.
            MappingProxyType({"n_estimators": 100, "max_depth": 12, "min_samples_leaf": 1, "n_jobs": 1}),
        ),
        Family(
            "hist_gradient_boosting",
            _ALL,
            _hist_gradient_boosting,
            # early_stopping off: "auto" switches it on above 10k rows, which would make the
            # number of trees (and the ONNX) depend on the dataset size in a surprising way.
            MappingProxyType({"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31, "early_stopping": False}),
        ),
    )
}


# What a model trains when no family is named: the task's linear model. It fits in seconds, exports to the
# smallest ONNX graph (the fastest cold start of infer) and is the baseline `mlops experiment` measures the
# other families against; a bigger family is a choice worth making explicitly, after comparing.
DEFAULT_FAMILIES: Mapping[Task, str] = MappingProxyType(
    {Task.BINARY: "logistic_regression", Task.MULTICLASS: "logistic_regression", Task.REGRESSION: "linear_regression"}
)


def default_family(task: Task | str) -> Family:
    """The family trained for ``task`` when none is named (see :data:`DEFAULT_FAMILIES`)."""
    return FAMILIES[DEFAULT_FAMILIES[Task(task)]]


def families_for(task: Task | str) -> list[str]:
    """The names of the families that can be trained for ``task``, sorted."""
    return sorted(name for name, family in FAMILIES.items() if family.supports(task))


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}") from None

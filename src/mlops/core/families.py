"""Model families a model config may name: the catalog. Each family's name, the tasks it supports, its default
params, and the family a task gets when none is named.

Only data: ``mlops.core.config`` validates ``mlops.toml`` against it in every function, the light ones too. The
estimators themselves are built by ``mlops.training.estimators``, where scikit-learn is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mlops.core.tasks import Task

_CLASSIFICATION = frozenset({Task.BINARY, Task.MULTICLASS})
_ALL = frozenset(Task)


@dataclass(frozen=True)
class Family:
    name: str
    tasks: frozenset[Task]
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def supports(self, task: Task | str) -> bool:
        return Task(task) in self.tasks

    def effective_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with the user's params: what the estimator is actually built with."""
        return {**self.defaults, **(params or {})}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "logistic_regression",
            _CLASSIFICATION,
            # lbfgs on standardized features converges well within 1000 iterations; the sklearn
            # default of 100 warns on wider one-hot data.
            MappingProxyType({"C": 1.0, "max_iter": 1000}),
        ),
        Family(
            "linear_regression",
            frozenset({Task.REGRESSION}),
            MappingProxyType({"alpha": 1.0}),
        ),
        Family(
            "random_forest",
            _ALL,
            # Depth bounds the ONNX size (nodes grow ~2^depth per tree) and hence the cold start of infer;
            # n_jobs=1 keeps fitting reproducible in time on small training containers.
            MappingProxyType({"n_estimators": 100, "max_depth": 12, "min_samples_leaf": 1, "n_jobs": 1}),
        ),
        Family(
            "hist_gradient_boosting",
            _ALL,
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

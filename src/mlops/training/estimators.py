"""A model family's scikit-learn estimator, built for a task with the family's params and a seed.

The families themselves (names, tasks, default params) are the catalog ``mlops.core.families``, which every function
reads and which therefore stays free of scikit-learn. scikit-learn is imported by the first build, not with this module,
like the rest of ``mlops.training.train``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops.core.families import Family, get_family
from mlops.core.tasks import Task


def _estimator_classes() -> dict[str, tuple[Any, Any]]:
    """Each family's (classifier, regressor); None for the kind of task a family does not support."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge

    return {
        "logistic_regression": (LogisticRegression, None),
        # Ridge is deterministic for the default solver; the seed only matters for sag/saga.
        "linear_regression": (None, Ridge),
        "random_forest": (RandomForestClassifier, RandomForestRegressor),
        "hist_gradient_boosting": (HistGradientBoostingClassifier, HistGradientBoostingRegressor),
    }


def build_estimator(family: str | Family, task: Task | str, params: Mapping[str, Any] | None = None,
                    seed: int = 42) -> Any:
    """The family's estimator for ``task``: its defaults overlaid with ``params``, seeded with ``seed``.

    Raises ValueError for an unknown family, a task the family does not support, or params its estimator rejects.
    """
    fam = family if isinstance(family, Family) else get_family(family)
    task = Task(task)
    if not fam.supports(task):
        raise ValueError(
            f"model family {fam.name!r} does not support task {task.value!r}; "
            f"it supports {sorted(t.value for t in fam.tasks)}"
        )
    classifier, regressor = _estimator_classes()[fam.name]
    cls = regressor if task is Task.REGRESSION else classifier
    try:
        return cls(random_state=seed, **fam.effective_params(params))
    except TypeError as exc:
        # an unknown keyword surfaces as a TypeError from the estimator's __init__
        raise ValueError(f"invalid params for model family {fam.name!r}: {exc}") from exc

"""A model family's scikit-learn estimator, built for a task with the family's params and a seed.

The families themselves (names, tasks, default params) are the catalog ``mlops.core.families``, which every function
reads and which therefore stays free of scikit-learn. scikit-learn is imported by the first build, not with this module,
like the rest of ``mlops.training.train``; XGBoost and LightGBM (``mlops.training.boosting``) only by a build of their
own families.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops.core.families import Family, get_family
from mlops.core.tasks import Task

# the families whose estimators mlops.training.boosting holds (its FAMILIES), named here so as not to import it
_BOOSTING = ("xgboost", "lightgbm")


def _estimator_classes(family: str) -> tuple[Any, Any]:
    """The family's (classifier, regressor); None for the kind of task a family does not support. A clustering's
    estimator (kmeans) takes the first place: every task but a regression is built from it."""
    if family in _BOOSTING:
        from mlops.training import boosting

        return boosting.ESTIMATORS[family]
    from sklearn.cluster import KMeans
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
        "kmeans": (KMeans, None),
    }[family]


def build_estimator(family: str | Family, task: Task | str, params: Mapping[str, Any] | None = None,
                    seed: int = 42) -> Any:
    """The family's estimator for ``task``: its defaults overlaid with ``params``, seeded with ``seed``.

    Raises ValueError for an unknown family, a task the family does not support, or params its estimator rejects
    (or, for XGBoost and LightGBM, does not declare, or the catalog holds to other values).
    """
    fam = family if isinstance(family, Family) else get_family(family)
    task = Task(task)
    if not fam.supports(task):
        raise ValueError(
            f"model family {fam.name!r} does not support task {task.value!r}; "
            f"it supports {sorted(t.value for t in fam.tasks)}"
        )
    if problems := fam.param_problems(task, params):
        raise ValueError(f"invalid params for model family {fam.name!r}: {'; '.join(problems)}")
    classifier, regressor = _estimator_classes(fam.name)
    cls = regressor if task is Task.REGRESSION else classifier
    effective = fam.effective_params(params)
    if fam.name in _BOOSTING:
        from mlops.training import boosting

        # both take **kwargs, and would only warn about a misspelt name (or pass it on to their C++ core)
        if unknown := sorted(set(effective) - {*boosting.known_params(cls), *fam.defaults}):
            raise ValueError(f"invalid params for model family {fam.name!r}: {cls.__name__} does not take {unknown}; "
                             f"its params are {boosting.known_params(cls)}")
    try:
        return cls(random_state=seed, **effective)
    except TypeError as exc:
        # an unknown keyword surfaces as a TypeError from the estimator's __init__
        raise ValueError(f"invalid params for model family {fam.name!r}: {exc}") from exc

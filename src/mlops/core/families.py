"""Model families a model config may name: the catalog. Each family's name, the tasks it supports, its default
params, the values a few of its params are held to (what the ONNX export reproduces), and the family a task gets when
none is named.

Only data: ``mlops.core.config`` validates ``mlops.toml`` against it in every function, the light ones too. The
estimators themselves are built by ``mlops.training.estimators``, where scikit-learn (and XGBoost and LightGBM, for
their families: ``mlops.training.boosting``) is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mlops.core.tasks import Task

_CLASSIFICATION = frozenset({Task.BINARY, Task.MULTICLASS})
# every task that learns from a target (the supervised families, and a build function of the project's own code);
# a clustering (no target) is kmeans's alone: its export and parity gate are a k-means's (mlops.training.clustering)
_ALL = frozenset(task for task in Task if task.has_labels)


@dataclass(frozen=True)
class Family:
    name: str
    tasks: frozenset[Task]
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # param -> the values it may take, whatever the task: the others train something the export cannot reproduce
    # (or the platform does otherwise, e.g. categoricals are one-hot encoded before the estimator)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # the `objective` param, per task: the objectives a model of that task may name (the first is the default)
    objectives: Mapping[Task, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def supports(self, task: Task | str) -> bool:
        return Task(task) in self.tasks

    def param_problems(self, task: Task | str, params: Mapping[str, Any] | None) -> list[str]:
        """What is wrong with ``params`` for a ``task`` model of this family, as far as the catalog knows (the
        estimator checks the rest when it is built): one sentence per param, none when they are fine."""
        task, params = Task(task), params or {}
        problems = [f"{key} = {params[key]!r} is not one of {list(allowed)} for {self.name}"
                    for key, allowed in self.choices.items() if key in params and params[key] not in allowed]
        if self.objectives and "objective" in params:
            allowed = self.objectives.get(task, ())
            if params["objective"] not in allowed:
                problems.append(f"objective = {params['objective']!r} is not a {task.value} objective {self.name} "
                                f"models are exported with; use one of {list(allowed)} (or leave it out)")
        return problems

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
        # XGBoost and LightGBM (the CPU wheels; mlops.training.boosting): trained on the same preprocessed matrix as
        # the others (imputed, scaled, one-hot), exported by onnxmltools' converters. n_jobs=1 as for random_forest:
        # LightGBM ignores the OpenMP limit sklearn_threads sets, and on a shared 2-core box all threads made a
        # 20k-row fit 5-8x slower (mlops.training.train.sklearn_threads); set n_jobs for big data on SageMaker.
        Family(
            "xgboost",
            _ALL,
            MappingProxyType({"n_estimators": 100, "max_depth": 6, "learning_rate": 0.1, "tree_method": "hist",
                              "n_jobs": 1}),
            # dart's dropout weights and gblinear are no tree ensemble the export reproduces; the wheel is CPU-only;
            # categoricals arrive one-hot encoded; one tree per class is what the converter reads
            choices=MappingProxyType({"booster": ("gbtree",), "device": ("cpu",), "enable_categorical": (False,),
                                      "multi_strategy": ("one_output_per_tree",)}),
            objectives=MappingProxyType({
                Task.BINARY: ("binary:logistic",),
                Task.MULTICLASS: ("multi:softprob",),
                Task.REGRESSION: ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror"),
            }),
        ),
        Family(
            "lightgbm",
            _ALL,
            # verbose=-1: LightGBM's warnings ("no further splits with positive gain") go to stdout, not to logging
            MappingProxyType({"n_estimators": 100, "num_leaves": 31, "learning_rate": 0.1, "n_jobs": 1,
                              "verbose": -1}),
            choices=MappingProxyType({"boosting_type": ("gbdt",)}),
            objectives=MappingProxyType({
                Task.BINARY: ("binary",),
                Task.MULTICLASS: ("multiclass",),
                Task.REGRESSION: ("regression", "regression_l1", "huber"),
            }),
        ),
        # k-means on the same preprocessed matrix (imputed, scaled, one-hot): n_init=10 restarts, as scikit-learn
        # did before 1.4 ("auto" is one restart for k-means++), for clusters that depend less on the seed
        Family(
            "kmeans",
            frozenset({Task.CLUSTERING}),
            MappingProxyType({"n_clusters": 8, "n_init": 10, "max_iter": 300}),
        ),
    )
}


# What a model trains when no family is named: the task's linear model. It fits in seconds, exports to the
# smallest ONNX graph (the fastest cold start of infer) and is the baseline `mlops experiment` measures the
# other families against; a bigger family is a choice worth making explicitly, after comparing. A clustering gets
# k-means, its one family.
DEFAULT_FAMILIES: Mapping[Task, str] = MappingProxyType(
    {Task.BINARY: "logistic_regression", Task.MULTICLASS: "logistic_regression", Task.REGRESSION: "linear_regression",
     Task.CLUSTERING: "kmeans"}
)


def default_family(task: Task | str) -> Family:
    """The family trained for ``task`` when none is named (see :data:`DEFAULT_FAMILIES`)."""
    return FAMILIES[DEFAULT_FAMILIES[Task(task)]]


def families_for(task: Task | str) -> list[str]:
    """The names of the families that can be trained for ``task``, sorted."""
    return sorted(name for name, family in FAMILIES.items() if family.supports(task))


# `family = "package.module:build"`: a function of the project's own code that builds the estimator
# (mlops.training.user_code); its params are its own, so the catalog holds nothing for it
_USER_CODE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def is_user_code(name: str) -> bool:
    """Whether ``name`` names a build function of the project's own code ("package.module:function")."""
    return bool(_USER_CODE.match(name))


def get_family(name: str) -> Family:
    if is_user_code(name):
        return Family(name, _ALL)
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}, or name a build function "
                         "of your own code as \"package.module:function\"") from None

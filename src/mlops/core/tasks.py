"""What a model predicts (its task) and the metrics a model of each task may be judged on.

Every metric is "higher is better" (the gate compares a candidate with the champion that way): an error is negated
(``neg_rmse``), as is the Davies-Bouldin index of a clustering (``neg_davies_bouldin``).

Both the configuration (``mlops.core.config``) and the family catalog (``mlops.core.families``) need them; living
here, neither has to import the other for them.
"""

from __future__ import annotations

from enum import StrEnum

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("r2", "neg_rmse", "neg_mae")
# a clustering has no labels to score: how well separated its clusters are, on the held-out rows
# (mlops.training.clustering)
CLUSTERING_METRICS = ("silhouette", "calinski_harabasz", "neg_davies_bouldin")


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"
    # no target: every column is a feature, a prediction is a cluster id (family kmeans)
    CLUSTERING = "clustering"

    @property
    def is_classification(self) -> bool:
        return self in (Task.BINARY, Task.MULTICLASS)

    @property
    def has_labels(self) -> bool:
        """Whether a model of this task learns from a target, and so takes feedback labels: a clustering does not
        (its rollout decides on guardrails alone, drift_check measures no concept drift)."""
        return self is not Task.CLUSTERING

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics a model of this task is measured on (thresholds and primary_metric name them)."""
        if self.is_classification:
            return CLASSIFICATION_METRICS
        return REGRESSION_METRICS if self is Task.REGRESSION else CLUSTERING_METRICS

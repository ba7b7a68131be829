"""What a model predicts (its task) and the metrics a model of each task may be judged on.

Both the configuration (``mlops.core.config``) and the family catalog (``mlops.core.families``) need them; living
here, neither has to import the other for them.
"""

from __future__ import annotations

from enum import StrEnum

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("r2", "neg_rmse", "neg_mae")


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not Task.REGRESSION

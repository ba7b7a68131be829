"""XGBoost and LightGBM, the ``xgboost`` and ``lightgbm`` families: their estimators and their ONNX converters.

Imported only when one of these families is built or exported (``mlops.training.estimators``,
``mlops.training.onnx_export``): the training image holds xgboost-cpu, lightgbm and onnxmltools, the infer function
none of them (a model is served by onnxruntime alone, like every family's).

* Estimators: XGBoost's and LightGBM's scikit-learn API, behind the same preprocessing as every family (imputer,
  scaler, one-hot encoder: ``mlops.training.train.build_pipeline``). XGBoost >= 1.6 only takes the labels 0..n-1, and
  the platform's labels are strings everywhere, so its classifier is :class:`XGBLabelClassifier`. Their params are
  their scikit-learn API's arguments: a name the estimator does not declare is refused, where both libraries would
  only warn (XGBoost at fit) or pass it on to their C++ core.
* Converters: onnxmltools' ``convert_xgboost`` and ``convert_lightgbm``, registered with skl2onnx
  (``update_registered_converter``) with skl2onnx's linear classifier/regressor shape calculators, as skl2onnx's
  documentation does it, so that a Pipeline holding one converts like any other. How their tree nodes are made to fit
  the platform's double graph is ``mlops.training.onnx_export``'s business.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from lightgbm.basic import LightGBMError
from xgboost import XGBClassifier, XGBRegressor
from xgboost.core import XGBoostError

FAMILIES = ("xgboost", "lightgbm")
# what their fit raises for a param value their C++ core refuses (max_depth=-2, num_leaves=1, learning_rate="x")
PARAM_ERRORS: tuple[type[Exception], ...] = (XGBoostError, LightGBMError)


class XGBLabelClassifier(XGBClassifier):
    """``XGBClassifier`` fitted on any labels (here: strings), as scikit-learn's classifiers are: ``classes_`` are the
    sorted labels, ``predict`` answers with them. XGBoost itself sees the codes 0..n-1; the ONNX converter reads
    ``classes_`` for the graph's class labels."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> XGBLabelClassifier:
        labels, codes = np.unique(np.asarray(y), return_inverse=True)
        # XGBClassifier.fit checks the codes against classes_: the codes' own until it has fitted
        self.__dict__.pop("labels_", None)
        super().fit(X, codes, **kwargs)
        self.labels_ = labels
        return self

    @property
    def classes_(self) -> np.ndarray:
        labels = self.__dict__.get("labels_")
        return labels if labels is not None else np.arange(self.n_classes_)

    def predict(self, X: Any, **kwargs: Any) -> Any:
        codes = super().predict(X, **kwargs)
        if kwargs.get("output_margin"):
            return codes
        return self.labels_[np.asarray(codes, dtype=np.intp)]


# family -> (classifier, regressor)
ESTIMATORS: Mapping[str, tuple[type, type]] = {
    "xgboost": (XGBLabelClassifier, XGBRegressor),
    "lightgbm": (LGBMClassifier, LGBMRegressor),
}


def known_params(cls: type) -> list[str]:
    """The params ``cls`` declares: its scikit-learn API's arguments."""
    return sorted(cls().get_params())


@functools.cache
def register_converters() -> None:
    """Make skl2onnx convert the four estimators with onnxmltools' converters (once per process)."""
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    update_registered_converter(XGBLabelClassifier, "MlopsXGBoostClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options=classifier_options)
    update_registered_converter(XGBRegressor, "MlopsXGBoostRegressor", calculate_linear_regressor_output_shapes,
                                convert_xgboost)
    update_registered_converter(LGBMClassifier, "MlopsLightGbmClassifier", calculate_linear_classifier_output_shapes,
                                convert_lightgbm, options=classifier_options)
    update_registered_converter(LGBMRegressor, "MlopsLightGbmRegressor", calculate_linear_regressor_output_shapes,
                                convert_lightgbm, options={"split": None})


def converters() -> dict[type, tuple[Callable[..., Any], str]]:
    """Each estimator type's onnxmltools converter (registered with skl2onnx first), and the precision its trees
    compare the features in: ``"float32"`` (XGBoost rounds them) or ``"double"`` (mlops.training.onnx_export)."""
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

    register_converters()
    return {
        XGBLabelClassifier: (convert_xgboost, "float32"),
        XGBRegressor: (convert_xgboost, "float32"),
        LGBMClassifier: (convert_lightgbm, "double"),
        LGBMRegressor: (convert_lightgbm, "double"),
    }

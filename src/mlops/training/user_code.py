"""A model family of the project's own code: ``family = "package.module:build"`` and ``code = "<directory>"`` in
mlops.toml (docs/custom-code.md).

``build`` returns an unfitted scikit-learn estimator or Pipeline:

- an estimator gets the platform's preprocessing in front of it (imputer and scaler for the numeric columns, one-hot
  encoder for the categoricals), as every family does;
- a Pipeline is the whole model: it receives the contract's feature columns by name, numeric ones as float64 (NaN
  where missing), categorical ones as str ("" where missing), exactly what serving feeds the ONNX graph, and does its
  own feature engineering.

It is called with the keyword arguments it declares among :data:`ARGUMENTS`. ``code`` is the directory that holds the
package, relative to mlops.toml; it is put first on ``sys.path`` for the import. The training image copies it to the
same place beside the image's mlops.toml (infra/Dockerfile), so the import is the same on the laptop, in the train
function and in a SageMaker training job. Only training imports it: the model is served from its ONNX graph.

The export is skl2onnx's, with the parity gate as for every family. A step of the user's own needs a converter, which
the user's module registers when it is imported (``skl2onnx.update_registered_converter``); a step without one is
named by :func:`export_error`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlops.core.config import ModelConfig, config_path
from mlops.core.errors import ConfigError, ExportError

# what a build function may declare, passed by name: the model's task, its params table, its seed, and the names of
# the contract's numeric and categorical feature columns
ARGUMENTS = ("task", "params", "seed", "numeric", "categorical")


def code_root(model: ModelConfig, config_file: Path | None = None) -> Path:
    """Where ``model``'s code is: its ``code`` directory, relative to the mlops.toml in use."""
    assert model.code is not None  # the config refuses a family of user code without it
    return (config_file or config_path()).resolve().parent / model.code


def load(family: str, root: Path) -> Callable[..., Any]:
    """The build function ``family`` names, imported with ``root`` first on ``sys.path``."""
    module_name, _, function = family.partition(":")
    if not root.is_dir():
        raise ConfigError(f"the code of family {family!r} is not there: {root} is not a directory (the model's "
                          "`code`, relative to mlops.toml)")
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    _forget_other_copies(module_name.split(".")[0], root)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[0] == exc.name.split(".")[0]:
            raise ConfigError(f"cannot import {module_name!r} from {root}: {exc}; the package must be a directory "
                              f"of {root} with an __init__.py") from exc
        raise ConfigError(f"importing {module_name!r} failed: {exc}; the training image holds the platform's "
                          "dependencies (pyproject.toml) and your package, nothing else") from exc
    except Exception as exc:  # the user's module raised while being imported: say so, with its error
        raise ConfigError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    build = getattr(module, function, None)
    if not callable(build):
        raise ConfigError(f"{module_name!r} has no function {function!r} (family {family!r})")
    return build


def _forget_other_copies(package: str, root: Path) -> None:
    """A package of this name imported from elsewhere (another model's code directory, in a warm train function) is
    forgotten, so that the import finds the one under ``root``: Python caches modules by name, not by place."""
    for name, module in list(sys.modules.items()):
        if name != package and not name.startswith(package + "."):
            continue
        where = getattr(module, "__file__", None)
        if where is None or not Path(where).resolve().is_relative_to(root.resolve()):
            del sys.modules[name]


def build(family: str, root: Path, *, task: str, params: dict[str, Any], seed: int, numeric: list[str],
          categorical: list[str]) -> Any:
    """The unfitted estimator or Pipeline the user's build function returns."""
    function = load(family, root)
    given = {"task": task, "params": dict(params), "seed": seed, "numeric": list(numeric),
             "categorical": list(categorical)}
    signature = inspect.signature(function)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    required = [name for name, p in signature.parameters.items()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in given]
    if required:
        raise ConfigError(f"{family} requires {required}, which the platform does not pass: it passes "
                          f"{', '.join(ARGUMENTS)} by name, to the ones the function declares")
    arguments = {name: value for name, value in given.items() if takes_any or name in signature.parameters}
    try:
        estimator = function(**arguments)
    except Exception as exc:  # the user's code: whatever it raises is reported with its call
        raise ConfigError(f"{family}({', '.join(arguments)}) raised {type(exc).__name__}: {exc}") from exc
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise ConfigError(f"{family} returned {type(estimator).__name__}, not an unfitted scikit-learn estimator or "
                          "Pipeline")
    return estimator


def is_whole_model(estimator: Any) -> bool:
    """Whether a user's build returned a Pipeline (the whole model, its own preprocessing inside)."""
    from sklearn.pipeline import Pipeline

    return isinstance(estimator, Pipeline)


def export_error(pipeline: Any, error: Exception) -> ExportError:
    """skl2onnx's failure to convert ``pipeline``, with the steps that have no converter named, and what to do."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.preprocessing import FunctionTransformer

    missing = [(path, step) for path, step in _steps(pipeline, "")
               if type(step) not in sklearn_operator_name_map
               or (isinstance(step, FunctionTransformer) and step.func is not None)]
    if not missing:
        return ExportError(f"the model could not be exported to ONNX: {type(error).__name__}: {error}")
    if any(type(step).__name__ == "XGBClassifier" for _, step in missing):
        return ExportError(
            "the model cannot be exported to ONNX: XGBoost's XGBClassifier is converted as the platform's "
            "mlops.training.boosting.XGBLabelClassifier, which also takes the platform's string labels: use that "
            f"class in your Pipeline (or family = \"xgboost\"). skl2onnx said: {error}")
    named = "; ".join(f"step {path.lstrip('/')!r} ({type(step).__module__}.{type(step).__qualname__})"
                      for path, step in missing)
    return ExportError(
        f"the model cannot be exported to ONNX: {named} has no ONNX converter. Register one in your module with "
        "skl2onnx.update_registered_converter (a shape calculator and a converter; docs/custom-code.md has an "
        "example), or write the step with transformers skl2onnx converts (a FunctionTransformer of your own "
        f"function never converts). skl2onnx said: {error}")


def _steps(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The leaves of a fitted Pipeline / ColumnTransformer / FeatureUnion, with their path of step names."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(obj, Pipeline):
        for name, step in obj.steps:
            yield from _steps(step, f"{path}/{name}")
    elif isinstance(obj, ColumnTransformer):
        for name, step, _ in getattr(obj, "transformers_", obj.transformers):
            if not isinstance(step, str):  # "drop", "passthrough"
                yield from _steps(step, f"{path}/{name}")
    elif isinstance(obj, FeatureUnion):
        for name, step in obj.transformer_list:
            yield from _steps(step, f"{path}/{name}")
    elif obj is not None:
        yield path, obj

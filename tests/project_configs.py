"""Project configurations the integration tests write (mlops.toml's shape)."""

from __future__ import annotations

PROJECT = """
[project]
project = "mlops"
"""


def model_table(model: str, extra: str = "") -> str:
    """One binary breast-cancer-like model named ``model``, as a [[model]] table (plus ``extra`` keys)."""
    return f"""
[[model]]
name = "{model}"
target = "target"
task = "binary"
family = "logistic_regression"
test_size = 0.25
thresholds = {{ accuracy = 0.9 }}
primary_metric = "accuracy"
{extra}"""


def one_model_config(model: str, extra: str = "") -> str:
    """The project configuration of one binary breast-cancer-like model named ``model`` (plus ``extra`` keys of
    its [[model]] table), as several integration tests write it."""
    return PROJECT + model_table(model, extra)

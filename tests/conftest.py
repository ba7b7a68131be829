"""Shared fixtures: the bundled scikit-learn datasets as CSV, and a project configuration for tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never let a test reach a real AWS account, whatever the developer's shell holds.
for _var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
    os.environ.pop(_var, None)
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "mlops-tests",
})

TEST_CONFIG = """
[project]
project = "mlops"

[[model]]
name = "breast-cancer"
target = "target"
task = "binary"
family = "logistic_regression"
test_size = 0.25
thresholds = { accuracy = 0.9 }
primary_metric = "accuracy"

[[model]]
name = "wine"
target = "target"
task = "multiclass"
family = "random_forest"
params = { n_estimators = 50 }
test_size = 0.3
thresholds = { accuracy = 0.9 }
primary_metric = "accuracy"

[[model]]
name = "canary"
target = "target"
task = "binary"
test_size = 0.25
thresholds = { accuracy = 0.9 }
primary_metric = "accuracy"
champion_margin = 0.05
canary_weight = 0.5
rollout_mde = 0.2
rollout_interval_seconds = 1
guardrail_min_requests = 20
# in-process latencies of two arms on a busy test machine are noise: the latency guardrail is tested alone
guardrail_max_p95_ratio = 100.0

[[model]]
name = "strict"
target = "target"
task = "binary"
thresholds = { accuracy = 0.999, f1 = 0.999 }
"""


def sklearn_csv(name: str) -> bytes:
    from sklearn import datasets

    frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    return frame.to_csv(index=False).encode()


@pytest.fixture(scope="session")
def breast_cancer_csv() -> bytes:
    return sklearn_csv("breast_cancer")


@pytest.fixture(scope="session")
def wine_csv() -> bytes:
    return sklearn_csv("wine")


@pytest.fixture(scope="session")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "mlops.toml"
    path.write_text(TEST_CONFIG)
    return path


@pytest.fixture(scope="session", autouse=True)
def _clouds_enforce_the_synthesized_policies(tmp_path_factory: pytest.TempPathFactory,
                                             worker_id: str) -> Iterator[None]:
    """Every embedded cloud of the tests evaluates its handlers' AWS calls against the role policies of the
    synthesized template (tests/template_policies.py), not against a second description of them."""
    import template_policies

    from mlops.local import embedded

    # the workers of one session (pytest -n) share the session's base directory: a configuration is synthesized once
    base = tmp_path_factory.getbasetemp()
    template_policies.shared_dir = base if worker_id == "master" else base.parent
    previous = embedded.default_policies
    embedded.default_policies = template_policies.guard_policies
    yield
    embedded.default_policies = previous
    template_policies.cleanup()

"""examples/custom_code end to end on the local cloud: a model whose feature engineering is the team's own code
(`family = "churn_features.pipeline:build"`, `code = "src"`) is trained by the real pipeline from the example's CSV,
exported to ONNX with its own step's converter (the ratios), held to the parity gate, served through the gateway,
then a second version goes out as a canary and the rollout promotes it on live feedback.

The example directory is copied as it is; only the rollout's pace is changed, so the canary is decided in seconds."""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pandas as pd
import pytest
from clouds import served_cloud

from mlops.core.config import load_config
from mlops.local.embedded import EmbeddedCloud
from mlops.serving.onnx_model import OnnxModel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_code"
FAMILY = "churn_features.pipeline:build"
FAST_ROLLOUT = """canary_weight = 0.5
champion_margin = 0.05
rollout_mde = 0.2
rollout_interval_seconds = 1
guardrail_min_requests = 20
guardrail_max_p95_ratio = 100.0"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("custom-code") / "project"
    shutil.copytree(EXAMPLE, home, ignore=shutil.ignore_patterns("__pycache__"))
    config = home / "mlops.toml"
    text = config.read_text()
    config.write_text(text.replace("canary_weight = 0.2", FAST_ROLLOUT))
    assert config.read_text() != text
    return config


@pytest.fixture(scope="module")
def cloud(project: Path) -> Iterator[EmbeddedCloud]:
    with served_cloud(project, {"churn": (project.parent / "churn.csv").read_bytes()}) as embedded:
        yield embedded


def _rows(project: Path) -> list[dict[str, Any]]:
    frame = pd.read_csv(project.parent / "churn.csv").drop(columns="churned")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def test_the_examples_configuration_is_valid_as_it_is() -> None:
    model = load_config(EXAMPLE / "mlops.toml").model("churn")
    assert (model.family, model.code) == (FAMILY, "src")


def test_the_teams_own_pipeline_is_trained_exported_with_its_step_and_served(cloud: EmbeddedCloud,
                                                                          project: Path) -> None:
    version = cloud.registry.version("churn", 1)
    assert version is not None
    manifest = cloud.models.get_json(version.manifest_uri[5:].split("/", 1)[1])
    assert manifest["family"] == FAMILY
    assert manifest["parity_max_abs_diff"] <= manifest["parity_tolerance"]
    graph = cloud.models.get_bytes(version.model_uri[5:].split("/", 1)[1])
    # the team's Ratios step is in the graph: its converter's Div nodes, one per ratio
    assert sum(node.op_type == "Div" for node in onnx.load(io.BytesIO(graph)).graph.node) >= 2

    rows = _rows(project)[:20]
    status, answer = cloud.api("POST", "/models/churn/predict", {"instances": rows})
    assert status == 200, answer
    assert [p["prediction"] for p in answer["predictions"]] == OnnxModel(graph).predict_records(rows).labels.tolist()
    # what the team's features teach: paying a lot for a short tenure churns, a long-standing customer stays
    status, new = cloud.predict("churn", {"plan": "basic", "tenure_months": 1.0, "monthly_charges": 45.0,
                                          "support_calls": 6.0})
    assert (status, new["prediction"]) == (200, "yes"), new
    status, loyal = cloud.predict("churn", {"plan": "team", "tenure_months": 70.0, "monthly_charges": 85.0,
                                            "support_calls": 0.0})
    assert (status, loyal["prediction"]) == (200, "no"), loyal


def test_a_second_version_is_canaried_and_promoted_by_the_rollout(cloud: EmbeddedCloud, project: Path) -> None:
    lines = (project.parent / "churn.csv").read_text().splitlines()
    cloud.upload("churn", "second.csv", ("\n".join([lines[0], *reversed(lines[1:])]) + "\n").encode())
    executions = cloud.wait_for_executions(2)
    assert all(e["status"] == "SUCCEEDED" for e in executions), [cloud.history(e["executionArn"])[-3:]
                                                                for e in executions]
    assert cloud.registry.aliases("churn") == {"champion": 1, "challenger": 2}

    # live traffic with feedback: the challenger always right, the champion always wrong
    seen = {"champion": 0, "challenger": 0}
    rows = _rows(project)
    for i in range(2000):
        status, answer = cloud.predict("churn", rows[i % len(rows)])
        assert status == 200, answer
        seen[answer["variant"]] += 1
        right = answer["variant"] == "challenger"
        label = answer["prediction"] if right else ("no" if answer["prediction"] == "yes" else "yes")
        status, _ = cloud.api("POST", "/models/churn/feedback", {"request_id": answer["request_id"], "label": label})
        assert status in (200, 202)
        if i % 50 == 49 and cloud.registry.aliases("churn") == {"champion": 2}:
            break
    assert seen["champion"] > 0
    assert seen["challenger"] > 0
    [rollout] = cloud.wait_for_executions(1, timeout=120, state_machine_arn=cloud.deployment.rollout_arn)
    assert rollout["status"] == "SUCCEEDED"
    assert cloud.registry.aliases("churn") == {"champion": 2}
    [event] = cloud.registry.events("churn")
    assert event["action"] == "promote"
    assert event["who"].startswith("rollout:")

"""The whole loop on `mlops local up`, through real clients only: the AWS CLI uploads, HTTP predicts and
gives feedback. A champion is served, a better dataset becomes a canary at its weight, feedback promotes it.
The tests run in order on one server (a story, each step building on the one before)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = pytest.mark.slow

MODEL = "e2e"
CANARY_WEIGHT = 0.5  # as in conftest.E2E_CONFIG


@pytest.fixture(scope="module")
def server(start_local_up: Callable[..., LocalUp]) -> LocalUp:
    return start_local_up(None, "--schedule-scale", "6")


@pytest.fixture(scope="module")
def model(server: LocalUp) -> dict[str, Any]:
    [found] = [m for m in server.info["models"] if m["name"] == MODEL]
    return found


def _features(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "label"}


def _describe(server: LocalUp) -> dict[str, Any] | None:
    status, body = server.http("GET", f"/models/{MODEL}")
    return body if status == 200 else None


def test_the_ready_line_says_where_everything_is(server: LocalUp, model: dict[str, Any]) -> None:
    info = server.info
    assert info["aws_endpoint_url"].startswith("http://127.0.0.1:")
    assert info["api_url"].startswith("http://127.0.0.1:")
    assert model["target"] == "label"
    assert model["incoming_prefix"] == f"s3://{info['data_bucket']}/incoming/{MODEL}/"
    assert model["predict_url"] == f"{info['api_url']}/models/{MODEL}/predict"
    buckets = server.aws("s3", "ls").stdout
    assert info["data_bucket"] in buckets


def test_the_api_answers_what_it_does_not_serve(server: LocalUp) -> None:
    assert server.http("GET", "/health") == (200, {"status": "ok"})
    status, body = server.http("GET", "/nowhere")
    assert status == 404
    assert body["error"] == "NotFound"
    assert server.http("GET", "/models/unknown-model")[0] == 404
    status, body = server.http("GET", f"/models/{MODEL}")
    assert status == 503, body  # nothing trained yet
    assert f"incoming/{MODEL}/" in body["message"]


def test_an_upload_with_the_aws_cli_ends_in_a_served_champion(
        server: LocalUp, model: dict[str, Any], world: Callable[..., list[dict[str, Any]]],
        csv_of: Callable[..., bytes]) -> None:
    server.upload(model, "world_a.csv", csv_of(world("a", 600, seed=1)))
    described = server.wait_for("champion", lambda: (_describe(server) or {}).get("champion"), timeout=150)
    assert described["version"] == 1
    row = world("a", 1, seed=99)[0]
    status, answer = server.http("POST", f"/models/{MODEL}/predict", {"features": _features(row)})
    assert status == 200, answer
    assert answer["model_version"] == 1
    assert answer["variant"] == "champion"
    assert str(answer["prediction"]) in ("0", "1")


def test_a_better_dataset_becomes_a_canary_at_its_weight(
        server: LocalUp, model: dict[str, Any], world: Callable[..., list[dict[str, Any]]],
        csv_of: Callable[..., bytes]) -> None:
    server.upload(model, "world_b.csv", csv_of(world("b", 600, seed=2)))
    server.wait_for("challenger", lambda: (_describe(server) or {}).get("challenger"), timeout=150)
    alias = server.aws_json("lambda", "get-alias", "--function-name", f"mlops-infer-{MODEL}", "--name", "live")
    weights = alias["RoutingConfig"]["AdditionalVersionWeights"]
    assert list(weights.values()) == [pytest.approx(CANARY_WEIGHT)]

    n = 300
    versions = [server.http("POST", f"/models/{MODEL}/predict", {"features": _features(row)})[1]["model_version"]
                for row in world("b", n, seed=3)]
    challenger = versions.count(2)
    assert versions.count(1) + challenger == n
    tolerance = 4.5 * math.sqrt(n * CANARY_WEIGHT * (1 - CANARY_WEIGHT))  # ~1 in 150 000 to fail by chance
    assert abs(challenger - n * CANARY_WEIGHT) <= tolerance, f"{challenger}/{n} answered by the challenger"


def test_feedback_lets_the_rollout_promote_the_better_challenger(
        server: LocalUp, world: Callable[..., list[dict[str, Any]]]) -> None:
    rows = iter(world("b", 5000, seed=4))

    def traffic_then_promoted() -> bool:
        for row in [next(rows) for _ in range(40)]:
            status, answer = server.http("POST", f"/models/{MODEL}/predict", {"features": _features(row)})
            assert status == 200, answer
            status, body = server.http("POST", f"/models/{MODEL}/feedback",
                                       {"request_id": answer["request_id"], "label": str(row["label"])})
            assert status == 200, body
        described = _describe(server) or {}
        return (described.get("champion") or {}).get("version") == 2 and described.get("challenger") is None

    server.wait_for("promotion of v2", traffic_then_promoted, timeout=150, every=0)
    alias = server.aws_json("lambda", "get-alias", "--function-name", f"mlops-infer-{MODEL}", "--name", "live")
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert server.http("POST", f"/models/{MODEL}/predict",
                       {"features": _features(next(rows))})[1]["model_version"] == 2


def test_the_mlops_cli_sees_the_promotion_through_the_endpoint(server: LocalUp, workdir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mlops.cli", "models", "list", MODEL, "--json"], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**server.env, "MLOPS_CONFIG": str(workdir / "mlops.toml")})
    assert done.returncode == 0, done.stderr
    assert [(v["version"], v["status"], v["weight"]) for v in json.loads(done.stdout)] == [
        (1, "retired", 0.0), (2, "champion", 1.0)]


def test_the_scheduled_drift_check_reports_drifted_inputs(
        server: LocalUp, world: Callable[..., list[dict[str, Any]]]) -> None:
    for row in world("b", 300, seed=6):
        shifted = {**_features(row), "x1": row["x1"] + 3.0}  # the world moved: x1 is three sigmas higher
        assert server.http("POST", f"/models/{MODEL}/predict", {"features": shifted})[0] == 200
    reports = f"s3://{server.info['models_bucket']}/reports/{MODEL}/"

    def drifted_report() -> dict[str, Any] | None:
        latest = server.aws("s3", "cp", reports + "latest.json", "-", check=False)
        if latest.returncode != 0:
            return None
        pointer = json.loads(latest.stdout)
        report = json.loads(server.aws("s3", "cp", f"s3://{server.info['models_bucket']}/{pointer['json']}",
                                       "-").stdout)
        return report if "x1" in report.get("drifted_features", []) else None

    report = server.wait_for("a drift report naming x1", drifted_report, timeout=90, every=1)
    assert report["model"] == MODEL
    html = server.aws("s3", "ls", reports, "--recursive").stdout
    assert "report.html" in html


def test_mlops_status_shows_every_model_with_its_rollout_drift_live_figures_and_runs(
        server: LocalUp, workdir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mlops.cli", "status", "--json"], capture_output=True, text=True,
                          timeout=120, check=False, env={**server.env, "MLOPS_CONFIG": str(workdir / "mlops.toml")})
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert [m["model"] for m in view["models"]] == [m["name"] for m in server.info["models"]]
    [status] = [m for m in view["models"] if m["model"] == MODEL]
    # after the promotion above: v2 is champion, alone on the alias, with its registered quality metrics
    assert status["champion"]["version"] == 2
    assert status["primary_metric"] in status["champion"]["metrics"]
    assert status["challenger"] is None
    assert status["split"]["weights"] == {"champion": 1.0, "challenger": 0.0}
    # the predictions of the tests above, as the guardrails read them, and the drift check's verdict
    live = status["live"]["versions"]["2"]
    assert live["requests"] > 0
    assert live["p95_ms"] is not None
    assert live["error_rate"] == 0
    assert status["drift"]["drifted"] is True
    assert "x1" in status["drift"]["drifted_features"]
    assert {run["outcome"] for run in status["runs"]} >= {"registered"}
    # the same view as a page the local cloud serves, where its ready line says
    assert server.info["status_url"] == server.info["api_url"] + "/status"
    with urllib.request.urlopen(server.info["status_url"], timeout=60) as page:
        assert page.status == 200
        assert page.headers["Content-Type"].startswith("text/html")
        html = page.read().decode()
    assert f'id="model-{MODEL}"' in html
    assert "<th>champion</th><td>v2 (" in html
    assert "drifted (x1" in html


def test_a_second_server_on_a_taken_port_says_so(server: LocalUp, workdir: Path) -> None:
    port = server.info["aws_endpoint_url"].rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "mlops.cli", "local", "up", "--port", port, "--api-port", "0",
                           "--config", str(workdir / "mlops.toml")], capture_output=True, text=True, timeout=60,
                          env=server.env, check=False)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_sigterm_stops_the_server_cleanly(server: LocalUp) -> None:
    assert server.stop() == 0

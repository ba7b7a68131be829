"""promote / rollback / the rollout lock on moto, and `mlops models` as a user runs it against a moto
server through AWS_ENDPOINT_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops import aws
from mlops.aws import platform
from mlops.core.config import load_config
from mlops.local.cloud import provision
from mlops.local.embedded import EmbeddedCloud
from mlops.pipeline.steps import deploy
from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION
from mlops.release.deploy import ServingDeployer
from mlops.release.lifecycle import Lifecycle, NothingToDo, RolloutInProgress

FUNCTION = platform.infer_function_name("mlops", "breast-cancer")  # the test project's


def _register_two(registry: Registry, config_file: Path) -> None:
    """Two versions deployed as the pipeline's register step does (champion, then a canary)."""
    model_cfg = load_config(config_file).model("breast-cancer")
    deployer = ServingDeployer(aws.client("lambda"))
    for run, alias in (("run-1", CHAMPION), ("run-2", CHALLENGER)):
        version = registry.register(model="breast-cancer", run_id=run, artefacts_prefix=f"s3://m/{run}/",
                                    onnx_sha256="0" * 64, dataset_sha256=run * 8,
                                    metrics={"metrics": {"accuracy": 0.95}}, alias=alias)
        deploy(version, model_cfg, registry=registry, deployer=deployer, function=FUNCTION)


@pytest.fixture
def two_versions(cloud: EmbeddedCloud, config_file: Path) -> Lifecycle:
    _register_two(cloud.registry, config_file)
    return Lifecycle(registry=cloud.registry, deployer=ServingDeployer(aws.client("lambda")), function=FUNCTION)


def _alias(cloud: EmbeddedCloud) -> dict[str, Any]:
    alias: dict[str, Any] = cloud.client("lambda").get_alias(FunctionName=FUNCTION, Name="live")
    alias.pop("ResponseMetadata", None)
    return alias


def test_republish_puts_both_versions_on_new_code_and_keeps_the_split(
    cloud: EmbeddedCloud, two_versions: Lifecycle
) -> None:
    lam = cloud.client("lambda")
    before = _alias(cloud)
    # a code-only deploy: $LATEST gets new code (here: a new description stands for it), the alias stays
    lam.update_function_configuration(FunctionName=FUNCTION, Description="new code")
    result = two_versions.republish("breast-cancer", who="ci", why="code-only deploy")
    after = _alias(cloud)
    new_champion = after["FunctionVersion"]
    [(new_challenger, weight)] = after["RoutingConfig"]["AdditionalVersionWeights"].items()
    assert weight == pytest.approx(0.1)  # the split is unchanged...
    assert {new_champion, new_challenger}.isdisjoint(
        {before["FunctionVersion"], *before["RoutingConfig"]["AdditionalVersionWeights"]})  # ...on new versions
    for lambda_version, model_version in ((new_champion, "1"), (new_challenger, "2")):
        config = lam.get_function_configuration(FunctionName=FUNCTION, Qualifier=lambda_version)
        assert config["Environment"]["Variables"]["MODEL_VERSION"] == model_version
        assert config["Description"] == f"model version {model_version}"
    assert cloud.registry.version("breast-cancer", 1).lambda_version == new_champion  # type: ignore[union-attr]
    assert cloud.registry.version("breast-cancer", 2).lambda_version == new_challenger  # type: ignore[union-attr]
    [event] = cloud.registry.events("breast-cancer")
    assert (event["action"], event["who"], event["why"]) == ("republish", "ci", "code-only deploy")
    assert result["lambda_versions"]["1"] == {"before": before["FunctionVersion"], "after": new_champion}


def test_republish_waits_for_a_running_rollout(cloud: EmbeddedCloud, two_versions: Lifecycle) -> None:
    assert cloud.registry.acquire_lock("breast-cancer", "rollout-x")
    before = _alias(cloud)
    with pytest.raises(RolloutInProgress):
        two_versions.republish("breast-cancer", who="ci")
    assert _alias(cloud) == before


def test_status_shows_each_version_with_its_weight(cloud: EmbeddedCloud, two_versions: Lifecycle) -> None:
    status = two_versions.status("breast-cancer")
    assert [(v["version"], v["status"], v["weight"]) for v in status["versions"]] == [
        (1, "champion", 0.9), (2, "challenger", 0.1)]


def test_promote_moves_all_traffic_and_records_who_and_why(cloud: EmbeddedCloud, two_versions: Lifecycle) -> None:
    result = two_versions.promote("breast-cancer", who="alice", why="better recall")
    assert (result["champion"], result["previous_champion"]) == (2, 1)
    v2 = cloud.registry.version("breast-cancer", 2)
    assert v2 is not None
    assert _alias(cloud)["FunctionVersion"] == v2.lambda_version
    assert not (_alias(cloud).get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert cloud.registry.aliases("breast-cancer") == {CHAMPION: 2}
    [event] = cloud.registry.events("breast-cancer")
    assert (event["action"], event["who"], event["why"]) == ("promote", "alice", "better recall")
    with pytest.raises(NothingToDo, match="no challenger"):
        two_versions.promote("breast-cancer", who="alice", why="again")


def test_rollback_returns_traffic_to_the_champion(cloud: EmbeddedCloud, two_versions: Lifecycle) -> None:
    two_versions.rollback("breast-cancer", who="bob", why="p95 too high")
    v1 = cloud.registry.version("breast-cancer", 1)
    assert v1 is not None
    assert _alias(cloud)["FunctionVersion"] == v1.lambda_version
    assert cloud.registry.aliases("breast-cancer") == {CHAMPION: 1}
    assert cloud.registry.events("breast-cancer")[0]["action"] == "rollback"


def test_a_running_rollout_blocks_manual_changes(cloud: EmbeddedCloud, two_versions: Lifecycle) -> None:
    assert cloud.registry.acquire_lock("breast-cancer", "rollout-execution-1")
    with pytest.raises(RolloutInProgress):
        two_versions.rollback("breast-cancer", who="bob", why="now")
    assert cloud.registry.aliases("breast-cancer") == {CHAMPION: 1, CHALLENGER: 2}  # nothing moved
    cloud.registry.release_lock("breast-cancer", "rollout-execution-1")
    two_versions.rollback("breast-cancer", who="bob", why="now")


def test_concurrent_promote_and_rollback_have_one_winner(cloud: EmbeddedCloud, two_versions: Lifecycle) -> None:
    # A rollback based on a stale view (the challenger was promoted meanwhile) must not apply.
    two_versions.promote("breast-cancer", who="alice", why="won")
    from mlops.core.errors import RegistryConflict

    with pytest.raises(RegistryConflict):
        cloud.registry.retire_challenger("breast-cancer", challenger=2, who="bob", why="stale view")
    assert cloud.registry.aliases("breast-cancer") == {CHAMPION: 2}


def test_a_rollout_deciding_and_a_manual_rollback_at_the_same_moment_have_one_winner(
    cloud: EmbeddedCloud, two_versions: Lifecycle, config_file: Path
) -> None:
    import threading

    from mlops.aws.storage import ObjectStore
    from mlops.release.rollout import RolloutState, analyze

    # a look whose counts make the sequential test promote (100/100 right against 50/100)
    state = RolloutState(model="breast-cancer", champion=1, challenger=2, started_at="2026-11-27T10:00:00+00:00",
                         counts={"1": [50, 100], "2": [100, 100]})
    start, outcomes = threading.Barrier(2), {}

    def rollout() -> None:
        start.wait()
        try:
            outcomes["rollout"] = analyze(
                state, model_cfg=load_config(config_file).model("breast-cancer"), registry=cloud.registry,
                lifecycle=two_versions, captures=ObjectStore(aws.client("s3"), cloud.deployment.names["captures"]),
                lock_owner="breast-cancer-v2-rollout")["action"]
        except (RolloutInProgress, NothingToDo) as exc:
            outcomes["rollout"] = type(exc).__name__

    def person() -> None:
        start.wait()
        try:
            outcomes["person"] = two_versions.rollback("breast-cancer", who="bob", why="now")["action"]
        except (RolloutInProgress, NothingToDo) as exc:
            outcomes["person"] = type(exc).__name__

    threads = [threading.Thread(target=rollout), threading.Thread(target=person)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    moved = [who for who, outcome in outcomes.items() if outcome in ("promote", "rollback")]
    assert len(moved) == 1, outcomes  # one winner; the other is refused or finds nothing left to decide
    [event] = cloud.registry.events("breast-cancer")  # one audit record, the winner's
    champion = 2 if event["action"] == "promote" else 1
    assert cloud.registry.aliases("breast-cancer") == {CHAMPION: champion}
    version = cloud.registry.version("breast-cancer", champion)
    assert version is not None
    assert _alias(cloud)["FunctionVersion"] == version.lambda_version  # the traffic agrees with the registry


@pytest.fixture
def moto_server(config_file: Path) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto's backends are process-wide: start each server test from an empty account
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    aws.client.cache_clear()
    try:
        deployment = provision(aws.client, config_file=config_file)
        _register_two(Registry(aws.client("dynamodb"), deployment.names["registry"]), config_file)
        yield endpoint
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved
        aws.client.cache_clear()


def _cli(endpoint: str, config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "MLOPS_CONFIG": str(config_file)}
    return subprocess.run([sys.executable, "-m", "mlops.cli", "models", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_models_cli_lists_and_promotes_through_the_endpoint(moto_server: str, config_file: Path) -> None:
    listed = _cli(moto_server, config_file, "list", "breast-cancer", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["status"], r["weight"]) for r in rows] == [(1, "champion", 0.9), (2, "challenger", 0.1)]
    assert rows[0]["metrics"]["metrics"]["accuracy"] == 0.95

    promoted = _cli(moto_server, config_file, "promote", "breast-cancer", "--reason", "canary looks good")
    assert promoted.returncode == 0, promoted.stderr
    assert "champion is now v2" in promoted.stdout
    shown = json.loads(_cli(moto_server, config_file, "show", "breast-cancer", "--json").stdout)
    assert [(v["version"], v["status"], v["weight"]) for v in shown["versions"]] == [
        (1, "retired", 0.0), (2, "champion", 1.0)]
    assert shown["events"][0]["why"] == "canary looks good"

    nothing = _cli(moto_server, config_file, "rollback", "breast-cancer")
    assert nothing.returncode == 2
    assert "has no challenger" in nothing.stderr
    assert "Traceback" not in nothing.stderr


def test_republish_all_and_ab_status_through_the_endpoint(moto_server: str, config_file: Path) -> None:
    republished = _cli(moto_server, config_file, "republish", "--all", "--json")
    assert republished.returncode == 0, republished.stderr
    by_model = {r["model"]: r for r in json.loads(republished.stdout)}
    assert by_model["breast-cancer"]["action"] == "republish"
    assert set(by_model["breast-cancer"]["lambda_versions"]) == {"1", "2"}
    assert by_model["wine"]["action"] == "skipped"  # nothing deployed: nothing to republish, not an error

    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "MLOPS_CONFIG": str(config_file)}
    nothing = subprocess.run([sys.executable, "-m", "mlops.cli", "ab", "status", "breast-cancer"],
                             capture_output=True, text=True, env=env, timeout=120, check=False)
    assert nothing.returncode == 2
    assert "no rollout on record" in nothing.stderr

    registry = Registry(aws.client("dynamodb"), "mlops-registry")
    for i, (n, action) in enumerate(((50, "continue"), (150, "continue"), (300, "promote"))):
        registry.record_look("breast-cancer", 2, {
            "at": f"2026-11-27T10:0{i}:00+00:00", "action": action, "reason": f"look {i}", "champion": 1,
            "metric": "accuracy", "n_control": n, "n_treatment": n, "rate_control": 0.80,
            "rate_treatment": 0.90, "p_value": 1.0 if i < 2 else 0.01, "lower": -0.1, "upper": 0.2,
            "statistic": float(i), "boundary": 3.0})
    html = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"ab-{os.getpid()}.html"
    shown = subprocess.run([sys.executable, "-m", "mlops.cli", "ab", "status", "breast-cancer", "--html", str(html)],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "challenger v2 vs champion v1 on accuracy - promote (look 2)" in shown.stdout
    assert len([line for line in shown.stdout.splitlines() if line.startswith("2026-11-27T10:0")]) == 3
    page = html.read_text()
    html.unlink()
    assert page.count("<svg") == 2  # the metric per arm, and the statistic against its boundary
    assert "boundary" in page

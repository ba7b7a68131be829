"""`mlops local up --state DIR` killed (SIGKILL) at points all along the pipeline, each time started again with
its state: the pipeline resumes, nothing is registered twice or half, and no row is lost.

One state directory lives through the whole chain: dataset n is uploaded, the server killed at the n-th kill
point (the first dataset becomes the champion, every later one a challenger), restarted, and the whole state
checked once the pipeline has settled. Kill points are reached by watching the pipeline's progress (S3 keys,
registry items, execution histories, the live alias) with boto3 against the server's endpoint: the AWS CLI
takes a second per call, longer than a step such as evaluate lasts. The load tests run a chain killed at
seeded random times instead; the seed is printed, and ``RESTART_SEED`` replays it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = pytest.mark.slow

MODEL = "e2e"
# a small forest: training lasts a second or two (long enough to be killed in it); the margin lets every
# later dataset become the challenger
RESTART_CONFIG = """
[project]
project = "mlops"

[[model]]
name = "e2e"
target = "label"
task = "binary"
family = "random_forest"
params = { n_estimators = 30 }
thresholds = { accuracy = 0.85 }
champion_margin = 0.5
"""
ROWS, BAD_ROWS = 800, 3


class Progress:
    """What the pipeline has done since this was made (executions) or so far (the rest), read from a server."""

    def __init__(self, server: LocalUp) -> None:
        env, info = server.info["env"], server.info
        options = {"endpoint_url": info["aws_endpoint_url"], "region_name": info["region"],
                   "aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
        self.s3, self.ddb = boto3.client("s3", **options), boto3.client("dynamodb", **options)
        self.sfn, self.lam = boto3.client("stepfunctions", **options), boto3.client("lambda", **options)
        self.info = info
        self.before = {e["executionArn"] for e in self.executions()}

    def keys(self, bucket: str, prefix: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]

    def json(self, bucket: str, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def read(self, uri: str) -> bytes:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def sha256(self, uri: str) -> str:
        return hashlib.sha256(self.read(uri)).hexdigest()

    def curated(self) -> list[dict[str, Any]]:
        bucket = self.info["data_bucket"]
        return [self.json(bucket, k) for k in self.keys(bucket, f"curated/{MODEL}/") if k.endswith("/manifest.json")]

    def executions(self, machine: str = "mlops-training") -> list[dict[str, Any]]:
        arn = f"arn:aws:states:{self.info['region']}:123456789012:stateMachine:{machine}"
        executions: list[dict[str, Any]] = self.sfn.list_executions(stateMachineArn=arn)["executions"]
        return executions

    def entered(self, state: str) -> bool:
        """Whether a training execution started since this was made has entered ``state``."""
        return any(e.get("stateEnteredEventDetails", {}).get("name") == state
                   for x in self.executions() if x["executionArn"] not in self.before
                   for e in self.sfn.get_execution_history(executionArn=x["executionArn"])["events"])

    def runs(self) -> set[str]:
        """The runs whose model register has copied to its final place."""
        return {k.rsplit("/", 1)[0] for k in self.keys(self.info["models_bucket"], f"models/{MODEL}/runs/")
                if k.endswith("/model.onnx")}

    def registry(self, prefix: str) -> list[dict[str, Any]]:
        """The model's registry items whose sort key starts with ``prefix``."""
        items: list[dict[str, Any]] = self.ddb.query(
            TableName="mlops-registry", KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": f"MODEL#{MODEL}"}, ":p": {"S": prefix}})["Items"]
        return items

    def versions(self) -> list[dict[str, Any]]:
        return self.registry("VERSION#")

    def aliases(self) -> dict[str, str]:
        """The registry's aliases (champion, challenger) and the model versions they name."""
        return {i["sk"]["S"].split("#", 1)[1]: i["version"]["N"] for i in self.registry("ALIAS#")}

    def live(self) -> dict[str, float]:
        """The function versions behind the live alias, with their shares ({} before the first deploy)."""
        try:
            alias = self.lam.get_alias(FunctionName=f"mlops-infer-{MODEL}", Name="live")
        except self.lam.exceptions.ResourceNotFoundException:
            return {}
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return {alias["FunctionVersion"]: 1 - sum(weights.values()), **weights}


# where to kill, once dataset n (counted from 0) is uploaded: when its progress shows
KILL_POINTS: dict[str, Callable[[Progress, int], Any]] = {
    "ingest": lambda p, n: True,  # the upload was answered; ingest had at most begun
    "train_trigger": lambda p, n: len(p.curated()) > n,
    "train": lambda p, n: p.entered("Train"),
    "evaluate": lambda p, n: p.entered("Evaluate"),
    "register": lambda p, n: len(p.runs()) > n,  # its artefacts copied; the registry record comes next
    "alias move": lambda p, n: len(p.versions()) > n,  # registered; its function version not yet live
    "rollout start": lambda p, n: len(p.versions()) > n and "lambda_version" in p.versions()[n],
}


def _dataset(world: Callable[..., list[dict[str, Any]]], csv_of: Callable[..., bytes], n: int) -> bytes:
    """Dataset n: rows of its own, a few of which must be quarantined."""
    rows = world("a", ROWS, seed=n)
    for row in rows[:BAD_ROWS]:
        row["x1"] = "n/a?"
    return csv_of(rows)


def _settled(progress: Progress, datasets: int) -> bool:
    """Each dataset registered and deployed, no training running, the live alias where the registry says (after a
    restart, recovery moves it in the background: a kill between the registry record and the alias move leaves it
    behind until then), and the challenger's rollout on its way."""
    versions = progress.versions()
    if len(versions) < datasets or not all("lambda_version" in v for v in versions):
        return False
    if any(e["status"] == "RUNNING" for e in progress.executions()):
        return False
    function_versions = {v["version"]["N"]: v["lambda_version"]["S"] for v in versions}
    if set(progress.live()) != {function_versions.get(n) for n in progress.aliases().values()}:
        return False
    return datasets == 1 or bool(progress.executions("mlops-rollout"))


def _assert_whole(progress: Progress, datasets: int) -> None:
    """Never half-registered: each version has its artefacts, as its manifest and record say; one version
    per dataset; traffic where the registry's aliases say; every row curated or quarantined, once."""
    versions = progress.versions()
    assert sorted(Counter(v["dataset_sha256"]["S"] for v in versions).values()) == [1] * datasets
    for v in versions:
        prefix = v["artefacts_prefix"]["S"]
        manifest = json.loads(progress.read(prefix + "manifest.json"))
        assert progress.sha256(prefix + "model.onnx") == manifest["onnx"]["sha256"] == v["onnx_sha256"]["S"]
        assert manifest["dataset"]["sha256"] == v["dataset_sha256"]["S"]
        for sidecar in ("baseline", "contract"):
            assert progress.sha256(prefix + f"{sidecar}.json") == manifest[sidecar]["sha256"], sidecar
    # traffic to registered versions only: the champion and the challenger the registry's aliases name
    function_versions = {v["version"]["N"]: v["lambda_version"]["S"] for v in versions}
    assert set(progress.live()) == {function_versions[n] for n in progress.aliases().values()}
    curated = progress.curated()
    assert len(curated) == datasets
    for manifest in curated:
        rows = manifest["rows"]
        assert (rows["in"], rows["curated"] + rows["quarantined"], rows["quarantined"]) == (ROWS, ROWS, BAD_ROWS)
        quarantined = progress.read(manifest["quarantine_uri"]).decode().splitlines()
        assert len(quarantined) == 1 + BAD_ROWS  # the header and each bad row, once


def _kill_chain(start: Callable[..., LocalUp], state: Path, config: Path, datasets: list[bytes],
                kills: list[tuple[str, Callable[[LocalUp, Progress, int], None]]]) -> LocalUp:
    """Dataset n uploaded, the server killed where ``kills[n]`` says, started again and checked once settled."""
    server = start(state, config=config)
    [model] = server.info["models"]
    for n, ((where, kill), body) in enumerate(zip(kills, datasets, strict=True)):
        progress = Progress(server)
        server.upload(model, f"world_{n}.csv", body)
        kill(server, progress, n)
        server.stop(signal.SIGKILL)
        print(f"dataset {n}: killed {where}")
        server = start(state, config=config)
        assert server.info["restored"] is True
        progress = Progress(server)
        server.wait_for(f"the pipeline to resume after a kill {where}", partial(_settled, progress, n + 1), timeout=150)
        _assert_whole(progress, n + 1)
    return server


@pytest.fixture
def restart_config(workdir: Path) -> Path:
    config = workdir / "restart.toml"
    config.write_text(RESTART_CONFIG)
    return config


# make test kills at three points (about 45 s); make load at every one of them (about 100 s), and at random times
QUICK_POINTS = ("train", "register", "rollout start")


@pytest.mark.parametrize("points", [
    pytest.param(QUICK_POINTS, id="three-steps"),
    pytest.param(tuple(KILL_POINTS), id="every-step", marks=pytest.mark.load),
])
def test_killed_at_each_step_the_pipeline_resumes_whole(
        start_local_up: Callable[..., LocalUp], workdir: Path, restart_config: Path,
        world: Callable[..., list[dict[str, Any]]], csv_of: Callable[..., bytes], points: tuple[str, ...]) -> None:
    def at(point: str) -> tuple[str, Callable[[LocalUp, Progress, int], None]]:
        def kill(server: LocalUp, progress: Progress, n: int) -> None:
            server.wait_for(f"the pipeline to reach {point}", lambda: KILL_POINTS[point](progress, n), every=0.02)

        return f"at {point}", kill

    state = workdir / f"state-{len(points)}-points"  # each parametrization its own, when both run in one session
    server = _kill_chain(start_local_up, state, restart_config,
                         [_dataset(world, csv_of, n) for n in range(len(points))], [at(p) for p in points])
    champion = (server.describe(MODEL) or {})["champion"]
    assert champion["version"] == 1
    row = {k: v for k, v in world("a", 1, seed=99)[0].items() if k != "label"}
    status, answer = server.http("POST", f"/models/{MODEL}/predict", {"features": row})
    assert status == 200
    assert answer["model_version"] in (1, len(points))

    # a clean stop and start: the same versions served, by the same function versions, at the same weights
    live = Progress(server).live()
    assert server.stop() == 0
    again = start_local_up(state, config=restart_config)
    assert (again.describe(MODEL) or {})["champion"] == champion
    assert Progress(again).live() == live


SEED = int(os.environ.get("RESTART_SEED") or time.time_ns() % 1_000_000)


@pytest.mark.load
def test_killed_at_random_times_the_pipeline_resumes_whole(
        start_local_up: Callable[..., LocalUp], workdir: Path, restart_config: Path,
        world: Callable[..., list[dict[str, Any]]], csv_of: Callable[..., bytes]) -> None:
    """Anywhere in the seconds from an upload to its registered, deployed version and its rollout."""
    rng = random.Random(SEED)
    delays = [rng.uniform(0.0, 8.0) for _ in range(10)]
    print(f"RESTART_SEED={SEED}: kills at {', '.join(f'{d:.2f}' for d in delays)} s after each upload")

    def after(delay: float) -> tuple[str, Callable[[LocalUp, Progress, int], None]]:
        return f"{delay:.2f}s after the upload", lambda server, progress, n: time.sleep(delay)

    _kill_chain(start_local_up, workdir / "state-random", restart_config,
                [_dataset(world, csv_of, 100 + n) for n in range(len(delays))], [after(d) for d in delays])

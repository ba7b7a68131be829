"""Driving `mlops local up` as a user does: a subprocess, the AWS CLI and plain HTTP, nothing imported from
the project. Each module starts its own server; bounded waits fail with the server's log attached."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

AWS_CLI = str(Path(sys.executable).with_name("aws"))
FEATURES = ("x1", "x2", "x3", "x4")

# One model, logistic regression (fast); a canary at 50 % (the rollout's burn-in wants 100 labelled answers in
# the smaller arm) decided by a rollout that looks every 2 seconds; drift checked on a fast schedule.
E2E_CONFIG = """
[project]
project = "mlops"

[[model]]
name = "e2e"
target = "label"
task = "binary"
family = "logistic_regression"
test_size = 0.25
thresholds = { accuracy = 0.85 }
primary_metric = "accuracy"
champion_margin = 0.02
canary_weight = 0.5
rollout_mde = 0.15
rollout_interval_seconds = 2
guardrail_max_p95_ratio = 5.0        # two arms of one code on a busy test machine: latency says nothing here

[model.drift]
schedule = "rate(1 minute)"   # with --schedule-scale 6: every 10 seconds
min_samples = 100
retrain = false
"""

# The same, with the canary held at its weight: its rollout looks first after a day (load tests, benchmarks).
HELD_CANARY_CONFIG = E2E_CONFIG.replace("rollout_interval_seconds = 2", "rollout_interval_seconds = 86400")
assert HELD_CANARY_CONFIG != E2E_CONFIG


def world_rows(world: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Rows of a world where the label is x1 > 0 ("a") or, after the world changed, x1 + 1.5 x2 > 0 ("b")."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {name: round(rng.gauss(0, 1), 4) for name in FEATURES}
        score = row["x1"] if world == "a" else row["x1"] + 1.5 * row["x2"]
        row["label"] = int(score > 0) if rng.random() > 0.02 else int(score <= 0)
        rows.append(row)
    return rows


def features_of(row: dict[str, Any]) -> dict[str, Any]:
    """A row as a prediction request's features: everything but the label."""
    return {k: v for k, v in row.items() if k != "label"}


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*FEATURES, "label"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


class LocalUp:
    """One `mlops local up` subprocess on free ports."""

    def __init__(self, workdir: Path, config: Path, state: Path | None = None, extra: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"local-up-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "mlops.cli", "local", "up", "--port", "0", "--api-port", "0",
                "--config", str(config), *(("--state", str(state)) if state else ()), *extra]
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "MLOPS_CONFIG")}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=workdir)
        self.info = self._ready(timeout=90)

    def _ready(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else b""
        if not line:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"`mlops local up` printed no ready line within {timeout:.0f}s; log:\n{self.log()}")
        info: dict[str, Any] = json.loads(line)
        return info

    def log(self) -> str:
        return self.log_path.read_text()[-6000:]

    @property
    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**base, **self.info["env"]}

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([AWS_CLI, "--endpoint-url", self.info["aws_endpoint_url"], *args], capture_output=True,
                              text=True, env=self.env, timeout=120, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({done.returncode}): {done.stderr}\nlog:\n{self.log()}")
        return done

    def aws_json(self, *args: str) -> Any:
        return json.loads(self.aws(*args, "--output", "json").stdout or "null")

    def upload(self, model: dict[str, Any], name: str, body: bytes) -> None:
        path = self.workdir / name
        path.write_bytes(body)
        self.aws("s3", "cp", str(path), model["incoming_prefix"])

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.info["api_url"] + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def describe(self, model: str) -> dict[str, Any] | None:
        status, body = self.http("GET", f"/models/{model}")
        return body if status == 200 else None

    def serve(self, model: dict[str, Any], name: str, body: bytes, role: str = "champion",
              timeout: float = 150.0) -> dict[str, Any]:
        """Upload a dataset with the AWS CLI and wait until a new version of it serves as `role` (champion or
        challenger); its description."""
        before = ((self.describe(model["name"]) or {}).get(role) or {}).get("version")
        self.upload(model, name, body)

        def served() -> dict[str, Any] | None:
            found: dict[str, Any] | None = (self.describe(model["name"]) or {}).get(role)
            return found if found and found["version"] != before else None

        return self.wait_for(f"a new {role} of {model['name']} trained on {name}", served, timeout=timeout)

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 120.0, every: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = probe()
            if found:
                return found
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}) while waiting for {what}; "
                                     f"log:\n{self.log()}")
            time.sleep(every)
        raise AssertionError(f"no {what} within {timeout:.0f}s; server log:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("e2e")
    (path / "mlops.toml").write_text(E2E_CONFIG)
    return path


@pytest.fixture(scope="module")
def start_local_up(workdir: Path) -> Iterator[Callable[..., LocalUp]]:
    """Start `mlops local up` (stopped with SIGTERM at the end of the module unless stopped before)."""
    started: list[LocalUp] = []

    def start(state: Path | None = None, *extra: str, config: Path | None = None) -> LocalUp:
        server = LocalUp(workdir, config or workdir / "mlops.toml", state, extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def world() -> Callable[[str, int, int], list[dict[str, Any]]]:
    return world_rows


@pytest.fixture(scope="session")
def csv_of() -> Callable[[list[dict[str, Any]]], bytes]:
    return to_csv


@pytest.fixture(scope="session")
def features() -> Callable[[dict[str, Any]], dict[str, Any]]:
    return features_of


@pytest.fixture(scope="session")
def held_canary_config() -> str:
    return HELD_CANARY_CONFIG

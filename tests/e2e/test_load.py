"""Load on `mlops local up`, through real clients: LOAD_PREDICTIONS predictions from LOAD_CONCURRENCY threads of
keep-alive HTTP clients while a champion and a canary share the live alias; then UPLOADS CSV files uploaded at
once with the AWS CLI. No request fails, the split follows the alias weight, and every file is ingested exactly
once with all of its rows accounted for. Throughput and latency are printed, never asserted."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = [pytest.mark.slow, pytest.mark.load]

MODEL = "e2e"
LOAD_PREDICTIONS = 20_000
LOAD_CONCURRENCY = 16
UPLOADS = 100
CANARY_WEIGHT = 0.5  # as in conftest.E2E_CONFIG


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class KeepAliveClient:
    """One HTTP/1.1 connection per thread, reused for every request of that thread."""

    def __init__(self, api_url: str) -> None:
        split = urlsplit(api_url)
        self.host, self.port = split.hostname or "127.0.0.1", split.port or 80
        self._local = threading.local()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        connection.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def server(start_local_up: Callable[..., LocalUp], workdir: Path, held_canary_config: str) -> LocalUp:
    config = workdir / "load.toml"
    config.write_text(held_canary_config)  # the split must not move while it is measured
    return start_local_up(config=config)


@pytest.fixture(scope="module")
def model(server: LocalUp, world: Callable[..., list[dict[str, Any]]], csv_of: Callable[..., bytes]) -> dict[str, Any]:
    """The model, with a champion (whose data gave the model its contract)."""
    [found] = [m for m in server.info["models"] if m["name"] == MODEL]
    server.serve(found, "world_a.csv", csv_of(world("a", 600, seed=1)))
    return found


def test_predictions_under_load_all_succeed_and_split_by_the_alias_weight(
        server: LocalUp, model: dict[str, Any], world: Callable[..., list[dict[str, Any]]],
        csv_of: Callable[..., bytes], features: Callable[..., dict[str, Any]]) -> None:
    server.serve(model, "world_b.csv", csv_of(world("b", 600, seed=2)), role="challenger")
    alias = server.aws_json("lambda", "get-alias", "--function-name", f"mlops-infer-{MODEL}", "--name", "live")
    assert list(alias["RoutingConfig"]["AdditionalVersionWeights"].values()) == [pytest.approx(CANARY_WEIGHT)]

    rows = [features(row) for row in world("b", 1000, seed=3)]
    client = KeepAliveClient(server.info["api_url"])

    def predict(i: int) -> tuple[int, Any, float]:
        started = time.perf_counter()
        try:
            status, answer = client.post(f"/models/{MODEL}/predict", {"features": rows[i % len(rows)]})
        except (OSError, http.client.HTTPException) as exc:
            status, answer = 0, repr(exc)
        return status, answer, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        results = list(pool.map(predict, range(LOAD_PREDICTIONS)))
    elapsed = time.perf_counter() - started

    latencies = sorted(seconds * 1000 for _, _, seconds in results)
    print(f"\n{LOAD_PREDICTIONS} predictions at concurrency {LOAD_CONCURRENCY} in {elapsed:.1f} s: "
          f"{LOAD_PREDICTIONS / elapsed:.1f}/s, p50 {percentile(latencies, 0.5):.1f} ms, "
          f"p95 {percentile(latencies, 0.95):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms")
    failed = [(status, answer) for status, answer, _ in results if status != 200]
    assert not failed, f"{len(failed)} of {LOAD_PREDICTIONS} failed, e.g. {failed[:3]}\nlog:\n{server.log()}"
    variants = Counter(answer["variant"] for _, answer, _ in results)
    assert set(variants) == {"champion", "challenger"}, variants
    tolerance = 4.5 * math.sqrt(LOAD_PREDICTIONS * CANARY_WEIGHT * (1 - CANARY_WEIGHT))  # ~1 in 150 000 by chance
    assert abs(variants["challenger"] - LOAD_PREDICTIONS * CANARY_WEIGHT) <= tolerance, variants


def _bulk_files(folder: Path, world: Callable[..., list[dict[str, Any]]],
                csv_of: Callable[..., bytes]) -> dict[str, tuple[int, int]]:
    """UPLOADS small distinct CSVs, some with rows that break the contract; name -> (rows, bad rows)."""
    folder.mkdir()
    written = {}
    for k in range(UPLOADS):
        rows = world("a", 20, seed=1000 + k)
        bad = k % 4  # a number where "oops" stands: quarantined, never curated
        for row in rows[:bad]:
            row["x1"] = "oops"
        name = f"part-{k:03d}.csv"
        (folder / name).write_bytes(csv_of(rows))
        written[name] = (len(rows), bad)
    return written


def test_a_hundred_uploads_at_once_are_each_ingested_exactly_once(
        server: LocalUp, model: dict[str, Any], workdir: Path, world: Callable[..., list[dict[str, Any]]],
        csv_of: Callable[..., bytes]) -> None:
    written = _bulk_files(workdir / "bulk", world, csv_of)
    bucket = server.info["data_bucket"]
    prefix = model["incoming_prefix"].removeprefix(f"s3://{bucket}/") + "bulk/"
    started = time.perf_counter()
    server.aws("s3", "cp", "--recursive", "--quiet", str(workdir / "bulk"), f"s3://{bucket}/{prefix}")
    uploaded = time.perf_counter() - started
    outcomes_dir = workdir / "outcomes"

    def outcomes() -> dict[str, list[dict[str, Any]]] | None:
        # Curated files have a manifest, rejected ones a report; both name their source.
        server.aws("s3", "sync", "--quiet", f"s3://{bucket}/", str(outcomes_dir), "--exclude", "*",
                   "--include", f"curated/{MODEL}/*/manifest.json", "--include", "quarantine/*report.json")
        found: dict[str, list[dict[str, Any]]] = {}
        for path in outcomes_dir.rglob("*.json"):
            outcome = json.loads(path.read_text())
            source = outcome["source"]["uri"] if isinstance(outcome["source"], dict) else outcome["source"]
            if source.startswith(f"s3://{bucket}/{prefix}") and outcome.get("status") != "partially_curated":
                found.setdefault(source.rsplit("/", 1)[1], []).append(outcome)
        return found if len(found) == UPLOADS else None

    found = server.wait_for(f"an outcome for each of the {UPLOADS} uploads", outcomes, timeout=300, every=2)
    print(f"\n{UPLOADS} files uploaded by `aws s3 cp --recursive` in {uploaded:.1f} s, "
          f"all ingested {time.perf_counter() - started:.1f} s after the upload began")
    assert sorted(found) == sorted(written)
    for name, (rows, bad) in written.items():
        [outcome] = found[name]
        assert outcome["rows"] == {"in": rows, "curated": rows - bad, "quarantined": bad}, (name, outcome)
    # exactly once: a second ingest of a file would have written its manifest again (the bucket keeps versions)
    versions = server.aws_json("s3api", "list-object-versions", "--bucket", bucket, "--prefix", f"curated/{MODEL}/")
    manifests = Counter(v["Key"] for v in versions.get("Versions", []) if v["Key"].endswith("manifest.json"))
    assert max(manifests.values()) == 1, manifests

"""The local cloud (`mlops local up`) as its users meet it: a subprocess, the AWS CLI and HTTP.

- Upload to serving: seconds from `aws s3 cp` of a dataset to the first 200 from its predict URL, against the
  training pipeline's own execution (Step Functions start to stop) in the same run: what the loop around the
  pipeline (ingest, train_trigger, deploy, the first request) adds.
- Predictions through the local gateway (HTTP keep-alive -> API Gateway event -> Lambda Invoke of the live
  alias -> the handler in the local cloud), one client and at concurrency 16, against the same event given to
  the same infer handler loaded in this process, its AWS clients on the same local cloud.

The server is driven by the e2e tests' driver (tests/e2e/conftest.py), the model is theirs: logistic regression
on 600 rows.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.harness import Result, percentiles, timed

ROOT = Path(__file__).resolve().parents[1]
MODEL = "e2e"
CONCURRENCY = 16
QUIET = open(os.devnull, "w")  # noqa: SIM115 - the handler's logs, for the whole process


def _e2e() -> Any:
    """The e2e tests' driver of `mlops local up` (not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location("e2e_local_up", ROOT / "tests" / "e2e" / "conftest.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load tests/e2e/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _local_up(workdir: Path, e2e: Any) -> Iterator[Any]:
    (workdir / "mlops.toml").write_text(e2e.HELD_CANARY_CONFIG)
    server = e2e.LocalUp(workdir, workdir / "mlops.toml")
    try:
        yield server
    finally:
        server.stop()


class _Client:
    def __init__(self, api_url: str) -> None:
        split = urlsplit(api_url)
        self.connection = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port or 80, timeout=120)

    def post(self, path: str, body: bytes) -> int:
        self.connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        response.read()
        return response.status


def upload_to_serving(server: Any, e2e: Any) -> Result:
    [model] = server.info["models"]
    path = server.workdir / "world_a.csv"
    path.write_bytes(e2e.to_csv(e2e.world_rows("a", 600, seed=1)))
    body = json.dumps({"features": e2e.features_of(e2e.world_rows("a", 1, seed=99)[0])}).encode()
    client = _Client(server.info["api_url"])
    started = time.perf_counter()
    server.aws("s3", "cp", str(path), model["incoming_prefix"])
    deadline = started + 300
    while client.post(f"/models/{MODEL}/predict", body) != 200:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no 200 from predict within 300 s of the upload; log:\n{server.log()}")
        time.sleep(0.05)
    loop = time.perf_counter() - started
    arn = f"arn:aws:states:{server.info['region']}:123456789012:stateMachine:mlops-training"
    [execution] = server.aws_json("stepfunctions", "list-executions", "--state-machine-arn", arn)["executions"]

    def stopped() -> dict[str, Any] | None:
        described: dict[str, Any] = server.aws_json("stepfunctions", "describe-execution", "--execution-arn",
                                                    execution["executionArn"])
        return described if described["status"] != "RUNNING" else None

    # the model may serve before the execution records its outcome: its last steps follow the deploy
    described = server.wait_for("the end of the training execution", stopped, timeout=120)
    pipeline = _epoch(described["stopDate"]) - _epoch(described["startDate"])
    return Result("local loop: `aws s3 cp` to the first 200 from predict", loop,
                  "the training pipeline's execution (Step Functions start to stop)", pipeline, "s",
                  "ratio <= 2", loop <= 2 * pipeline,
                  {"added_by_the_loop_s": round(loop - pipeline, 3), "execution": described["status"]})


def _epoch(value: float | str) -> float:
    """A timestamp of the AWS CLI's JSON, which passes on what the service sent: epoch seconds or ISO 8601."""
    return float(value) if isinstance(value, int | float) else datetime.fromisoformat(value).timestamp()


@contextlib.contextmanager
def _handler_in_process(server: Any, workdir: Path) -> Iterator[Any]:
    """The infer handler of the served version, loaded here, its AWS clients on the server's endpoint."""
    from mlops import aws

    function = server.aws_json("lambda", "get-function-configuration", "--function-name", f"mlops-infer-{MODEL}",
                               "--qualifier", "live")
    env = {**function["Environment"]["Variables"], **server.info["env"], "POWERTOOLS_TRACE_DISABLED": "true",
           "POWERTOOLS_LOG_LEVEL": "WARNING", "MODEL_CACHE_DIR": str(workdir / "models"),
           "AWS_LAMBDA_FUNCTION_NAME": function["FunctionName"]}
    saved = dict(os.environ)
    os.environ.update(env)
    aws.client.cache_clear()
    try:
        spec = importlib.util.spec_from_file_location("bench_local_infer", ROOT / "functions" / "infer" / "handler.py")
        if spec is None or spec.loader is None:
            raise RuntimeError("cannot load the infer handler")
        module = importlib.util.module_from_spec(spec)
        with contextlib.redirect_stdout(QUIET):
            spec.loader.exec_module(module)
        yield module
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.client.cache_clear()


def predictions(server: Any, e2e: Any, workdir: Path, quick: bool) -> list[Result]:
    from mlops.local.gateway import proxy_event
    from mlops.local.lambda_runtime import LambdaContext

    n = 300 if quick else 3000
    path = f"/models/{MODEL}/predict"
    body = json.dumps({"features": e2e.features_of(e2e.world_rows("a", 1, seed=99)[0])}).encode()
    event = proxy_event(method="POST", raw_path=path, headers=[("Content-Type", "application/json")], body=body,
                        resource=path, source_ip="127.0.0.1", request_id="bench")
    with _handler_in_process(server, workdir) as handler:
        context = LambdaContext(f"mlops-infer-{MODEL}", "1", "arn:aws:lambda:us-east-1:123456789012:function:bench",
                                1024, 30)

        def in_process() -> None:
            with contextlib.redirect_stdout(QUIET):
                answer = handler.handler(event, context)
            if answer["statusCode"] != 200:
                raise RuntimeError(f"the in-process handler answered {answer['statusCode']}: {answer['body']}")

        reference = timed(in_process, repeat=n)

    client = _Client(server.info["api_url"])

    def through_gateway() -> None:
        if client.post(path, body) != 200:
            raise RuntimeError(f"the gateway answered an error; log:\n{server.log()}")

    started = time.perf_counter()
    one_client = timed(through_gateway, repeat=n)
    one_client_rate = n / (time.perf_counter() - started)

    clients: dict[int, _Client] = {}

    def concurrent(_: int) -> float:
        own = clients.setdefault(threading.get_ident(), _Client(server.info["api_url"]))
        started = time.perf_counter()
        if own.post(path, body) != 200:
            raise RuntimeError("the gateway answered an error under load")
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        # each client's first requests start the execution environments they need (cold starts, as on Lambda):
        # the throughput is that of warm environments
        list(pool.map(concurrent, range(4 * CONCURRENCY)))
        started = time.perf_counter()
        loaded = list(pool.map(concurrent, range(n)))
        throughput = n / (time.perf_counter() - started)

    p_ref, p_one, p_load = percentiles(reference), percentiles(one_client), percentiles(loaded)
    rounded = {name: {k: round(v, 3) for k, v in p.items()} for name, p in
               (("gateway_one_client_ms", p_one), (f"gateway_concurrency_{CONCURRENCY}_ms", p_load),
                ("in_process_ms", p_ref))}
    in_process_rate = 1000 / p_ref["mean"]
    reference_note = ("the handler answers in a tenth of a millisecond in-process (capture is a log line, predict has "
                      "a fast path): what the gateway adds is the HTTP exchange, the Lambda service's dispatch to a "
                      "worker process and the shipping of its output (metrics, captures), in one Python process")
    return [
        Result("prediction through the local gateway p50 (one keep-alive client)", p_one["p50"],
               "same event to the infer handler in-process p50", p_ref["p50"], "ms", "informational", True,
               {**rounded, "note": reference_note}),
        Result(f"predictions/s through the local gateway at concurrency {CONCURRENCY}", throughput,
               "one keep-alive client through the same gateway", one_client_rate, "req/s", "ratio >= 1",
               throughput >= one_client_rate,
               {"p50_ms": round(p_load["p50"], 3), "p95_ms": round(p_load["p95"], 3),
                "p99_ms": round(p_load["p99"], 3),
                "note": "each execution environment a worker process (mlops.local.processes), warm"}),
        Result(f"predictions/s through the local gateway at concurrency {CONCURRENCY} (vs in-process)", throughput,
               "in-process handler, one at a time (1 / mean)", in_process_rate, "req/s", "informational", True,
               {"note": reference_note}),
    ]


def run(quick: bool) -> list[Result]:
    e2e = _e2e()
    with tempfile.TemporaryDirectory() as tmp, _local_up(Path(tmp), e2e) as server:
        loop = upload_to_serving(server, e2e)
        return [loop, *predictions(server, e2e, Path(tmp), quick)]

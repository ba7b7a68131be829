"""`mlops local up` runs each execution environment as a process of its own, as Lambda does: functions deployed with
the AWS SDK through its endpoint, invoked side by side, crashing, timing out and failing to start, answer what
Lambda answers, and the local cloud goes on serving."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = pytest.mark.slow

HANDLER = '''
import os, time, uuid

ENVIRONMENT = uuid.uuid4().hex  # module state: one per execution environment
CALLS = 0


def handler(event, context):
    global CALLS
    CALLS += 1
    action = event.get("action")
    if action == "exit":
        os._exit(3)
    if action == "kill":
        os.kill(os.getpid(), 9)
    if action == "pid_then_sleep":
        with open(event["pid_file"], "w") as out:
            out.write(str(os.getpid()))
        time.sleep(event["seconds"])
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "raise":
        raise ValueError("asked to fail")
    if action == "s3":
        import boto3
        return boto3.client("s3").get_object(Bucket=event["bucket"], Key="anything")["ContentLength"]
    marker = os.path.join(os.environ["TMPDIR"], "marker")
    seen = os.path.exists(marker)
    open(marker, "w").close()
    return {"environment": ENVIRONMENT, "calls": CALLS, "tmp_seen_before": seen, "tmp": os.environ["TMPDIR"],
            "pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}
'''


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(start_local_up: Callable[..., LocalUp]) -> LocalUp:
    return start_local_up()


@pytest.fixture(scope="module")
def lam(server: LocalUp) -> Any:
    return boto3.client("lambda", endpoint_url=server.info["aws_endpoint_url"], region_name=server.info["region"],
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=120,
                                      max_pool_connections=32))


def _deploy(lam: Any, name: str, files: dict[str, str], timeout: int = 30) -> None:
    lam.create_function(FunctionName=name, Runtime="python3.12", Handler="handler.handler",
                        Role="arn:aws:iam::123456789012:role/mlops-local-lambda", Code={"ZipFile": _zip(files)},
                        Timeout=timeout)


def _invoke(lam: Any, name: str, event: dict[str, Any]) -> tuple[Any, str | None]:
    answer = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return json.loads(answer["Payload"].read()), answer.get("FunctionError")


@pytest.fixture(scope="module")
def probe(lam: Any) -> str:
    _deploy(lam, "probe", {"handler.py": HANDLER}, timeout=3)
    return "probe"


def test_an_environment_is_reused_while_warm_with_its_module_state_and_tmp(lam: Any, probe: str) -> None:
    first, error = _invoke(lam, probe, {})
    assert error is None, first
    second, _ = _invoke(lam, probe, {})
    assert second["environment"] == first["environment"]
    assert (second["calls"], second["tmp_seen_before"]) == (first["calls"] + 1, True)
    assert 0 < second["remaining_ms"] <= 3000


def test_invocations_at_once_get_environments_of_their_own(lam: Any, probe: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _invoke(lam, probe, {"action": "sleep", "seconds": 1.0}), range(4)))
    assert all(error is None for _, error in answers), answers
    assert len({answer["pid"] for answer, _ in answers}) == 4  # four processes, one invocation each
    assert len({answer["tmp"] for answer, _ in answers}) == 4  # and four /tmp


def test_a_handler_that_exits_loses_its_environment_not_the_cloud(lam: Any, server: LocalUp) -> None:
    _deploy(lam, "crasher", {"handler.py": HANDLER})  # one environment of its own, whatever the other tests left
    before, _ = _invoke(lam, "crasher", {})
    crashed, error = _invoke(lam, "crasher", {"action": "exit"})
    assert error is not None
    assert crashed["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in crashed["errorMessage"]
    after, error = _invoke(lam, "crasher", {})
    assert error is None, after
    # a fresh environment took the dead one's place
    assert (after["calls"], after["environment"] != before["environment"]) == (1, True)
    assert server.process.poll() is None
    assert server.http("GET", "/health")[0] == 200


def test_a_handler_killed_by_a_signal_is_said_as_lambda_says_it(lam: Any, probe: str) -> None:
    killed, error = _invoke(lam, probe, {"action": "kill"})
    assert error is not None
    assert (killed["errorType"], killed["errorMessage"].split("Error: ", 1)[1]) == (
        "Runtime.ExitError", "Runtime exited with error: signal: killed")


def test_a_handler_error_keeps_the_environment_warm(lam: Any, probe: str) -> None:
    before, _ = _invoke(lam, probe, {})
    failed, error = _invoke(lam, probe, {"action": "raise"})
    assert error is not None  # AWS says Unhandled, moto Handled
    assert (failed["errorType"], failed["errorMessage"]) == ("ValueError", "asked to fail")
    after, _ = _invoke(lam, probe, {})
    assert after["environment"] == before["environment"]


def test_a_handler_past_its_timeout_is_stopped_and_answers_as_lambda(lam: Any, probe: str) -> None:
    started = time.monotonic()
    late, error = _invoke(lam, probe, {"action": "sleep", "seconds": 30})
    assert time.monotonic() - started < 20
    assert error is not None
    assert late["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 3.00 seconds" in late["errorMessage"]
    assert _invoke(lam, probe, {})[1] is None


def test_a_module_that_cannot_be_imported_gives_its_init_error(lam: Any) -> None:
    _deploy(lam, "broken", {"handler.py": "import no_such_module\n\ndef handler(event, context):\n    return 1\n"})
    answer, error = _invoke(lam, "broken", {})
    assert error is not None
    assert answer["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'handler'" in answer["errorMessage"]


def test_each_environment_checks_its_calls_against_its_role(lam: Any, probe: str, server: LocalUp) -> None:
    # a function the platform does not declare has no policy the guard knows: the IAM guard in its environment
    # refuses its calls, as the embedded cloud's guard does
    denied, error = _invoke(lam, probe, {"action": "s3", "bucket": server.info["data_bucket"]})
    assert error is not None
    assert denied["errorType"] == "ClientError"
    assert "is not authorized to perform: s3:GetObject" in denied["errorMessage"]


def test_past_the_environment_limit_invocations_wait_and_idle_ones_make_room(
        start_local_up: Callable[..., LocalUp]) -> None:
    small = start_local_up(None, "--max-environments", "2")
    client = boto3.client("lambda", endpoint_url=small.info["aws_endpoint_url"], region_name=small.info["region"],
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"total_max_attempts": 1}, read_timeout=120))
    for name in ("first", "second", "third"):
        _deploy(client, name, {"handler.py": HANDLER})
    with ThreadPoolExecutor(4) as pool:  # four at once for two environments: two wait their turn
        answers = list(pool.map(lambda _: _invoke(client, "first", {"action": "sleep", "seconds": 0.5}), range(4)))
    assert all(error is None for _, error in answers), answers
    assert len({answer["pid"] for answer, _ in answers}) <= 2
    # other functions take the idle environments' places: "first" has none left, and starts cold
    for name in ("second", "third", "first"):
        answer, error = _invoke(client, name, {})
        assert error is None, answer
    assert answer["calls"] == 1
    assert answer["pid"] not in {a["pid"] for a, _ in answers}


def test_no_environment_outlives_its_server(start_local_up: Callable[..., LocalUp], tmp_path: Any) -> None:
    doomed = start_local_up()
    client = boto3.client("lambda", endpoint_url=doomed.info["aws_endpoint_url"], region_name=doomed.info["region"],
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"total_max_attempts": 1}, read_timeout=5))
    _deploy(client, "sleeper", {"handler.py": HANDLER}, timeout=300)
    pid_file = tmp_path / "pid"
    with ThreadPoolExecutor(1) as pool:  # busy in the middle of an invocation when its server is killed
        pool.submit(_invoke, client, "sleeper", {"action": "pid_then_sleep", "pid_file": str(pid_file),
                                                  "seconds": 300})
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        doomed.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(worker)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for every purpose but its parent's bookkeeping
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"

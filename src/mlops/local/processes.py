"""Execution environments as processes, as Lambda runs them: the runtime of `mlops local up`.

:class:`ProcessRuntime` is the in-process runtime (mlops.local.lambda_runtime: the same hooks into moto, the same
weighted aliases, the same records of each invocation) whose handlers run in worker processes (mlops.local.worker):
one per execution environment, created on demand for a function version, reused while warm, one invocation at a time
each, and as many side by side as there are invocations at once, up to ``max_environments`` for the whole cloud (an
idle environment of another version is shut down to make room, the oldest first; past that an invocation waits for
one to come free). Each has its own module state and its own /tmp; its AWS calls go to the local cloud's endpoint and
are checked against its function's role by the IAM guard installed in it (``policy_of``); its stdout reaches the
cloud's log machinery (the metrics and the capture subscriptions) as its log group would.

What Lambda answers, this answers: a handler that raises gives its error; one that exits or kills its interpreter
gives ``Runtime.ExitError`` and loses its environment (never the local cloud); one that runs past the function's
timeout is killed and gives ``Sandbox.Timedout``; a handler module that cannot be imported gives its init error.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from moto.awslambda.models import LambdaFunction

from mlops.local.lambda_runtime import InProcessRuntime, OverlayEnviron
from mlops.local.worker import RESULTS_FD

# An environment's worker process, started by the runtime: this interpreter, without the working directory on its path
# (-P: the function's code folder is put first by the worker itself, as /var/task is on Lambda)
WORKER = (sys.executable, "-P", "-m", "mlops.local.worker")
DEFAULT_MAX_ENVIRONMENTS = 32
# How long an environment may take to import its handler. Lambda allows 10 s; here a dozen environments may start at
# once on two cores, each importing onnxruntime or scikit-learn.
INIT_TIMEOUT_S = 120.0
_TIMED_OUT = object()

PolicyOf = Callable[[str], Sequence[dict[str, Any]] | None]


class _InitFailed(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer.get("errorMessage"))
        self.answer = answer


@dataclass(eq=False)
class _Worker:
    key: tuple[str, ...]
    process: subprocess.Popen[str]
    results: IO[str]
    tmp: Path
    shipper: threading.Thread
    last_used: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Shut the environment down (its process, then its /tmp)."""
        if self.alive():
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()  # the worker's loop ends at the end of its control channel
                self.process.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.results.close()
        self.shipper.join(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _status(code: int) -> str:
    """How Lambda words a runtime's exit: ``exit status 1``, ``signal: killed``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"signal: {signal.Signals(-code).name.removeprefix('SIG').lower()}"
    except ValueError:
        return f"signal {-code}"


class ProcessRuntime(InProcessRuntime):
    def __init__(self, workdir: Path | None = None, *, handler_output: Any = None,
                 max_environments: int = DEFAULT_MAX_ENVIRONMENTS, policy_of: PolicyOf | None = None,
                 account: str = "123456789012") -> None:
        super().__init__(workdir, handler_output=handler_output)
        if max_environments < 1:
            raise ValueError(f"max_environments must be at least 1, got {max_environments}")
        self.max_environments = max_environments
        # the IAM guard's statements per function (mlops.local.iam.guard.Guard.statements_of); None: no guard
        self.policy_of: PolicyOf | None = policy_of
        self.account = account
        self._idle: dict[tuple[str, ...], list[_Worker]] = {}
        self._live = 0  # environments started and not stopped, idle or busy
        self._cond = threading.Condition()
        self._serial = itertools.count(1)
        self._code_lock = threading.Lock()
        self.started = 0  # environments started so far (cold starts)
        self._closed = False  # uninstalled: an environment handed back is shut down

    # -- the pool ------------------------------------------------------------------------------------------
    @staticmethod
    def _key(fn: LambdaFunction) -> tuple[str, ...]:
        # the environment variables too: $LATEST's configuration can change without its code
        variables = json.dumps(fn.environment_vars or {}, sort_keys=True, default=str)
        return (fn.function_name, str(fn.version), fn.code_sha_256, hashlib.sha256(variables.encode()).hexdigest())

    def _checkout(self, fn: LambdaFunction) -> _Worker:
        key = self._key(fn)
        with self._cond:
            while True:
                idle = self._idle.get(key)
                if idle:
                    return idle.pop()  # the most recently used: the warmest
                if self._live < self.max_environments:
                    self._live += 1
                    break
                oldest = min((w for workers in self._idle.values() for w in workers), default=None,
                             key=lambda w: w.last_used)
                if oldest is not None:  # another version's idle environment makes room, as Lambda reclaims them
                    self._idle[oldest.key].remove(oldest)
                    self._live -= 1
                    threading.Thread(target=oldest.stop, daemon=True).start()
                    continue
                self._cond.wait()
        try:
            return self._start(fn, key)
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _checkin(self, worker: _Worker, *, keep: bool) -> None:
        worker.last_used = time.monotonic()
        with self._cond:
            if keep and worker.alive() and not self._closed:
                self._idle.setdefault(worker.key, []).append(worker)
                worker = None  # type: ignore[assignment]
            else:
                self._live -= 1
            self._cond.notify()
        if worker is not None:
            worker.stop()

    def environments(self) -> int:
        """Environments alive now, idle or busy."""
        with self._cond:
            return self._live

    # -- an environment ------------------------------------------------------------------------------------
    def _code(self, fn: LambdaFunction) -> Path:
        """The version's code, extracted once and shared by its environments (read-only, as /var/task)."""
        with self._code_lock:
            return self._extract(fn)

    def _start(self, fn: LambdaFunction, key: tuple[str, ...]) -> _Worker:
        root = self._code(fn)
        tmp = root.with_name(f"{root.name}.tmp-{next(self._serial)}")
        tmp.mkdir()
        base = os.environ.base if isinstance(os.environ, OverlayEnviron) else os.environ
        read_fd, write_fd = os.pipe()
        environment = {**base, **self._function_layer(fn, root, tmp), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1",
                       RESULTS_FD: str(write_fd)}
        try:
            process = subprocess.Popen(WORKER, cwd=root, env=environment, stdin=subprocess.PIPE,  # noqa: S603 - this interpreter
                                       stdout=subprocess.PIPE, text=True, encoding="utf-8", pass_fds=(write_fd,),
                                       # a Ctrl-C in the terminal is the server's to handle (it stops its workers);
                                       # a worker whose server died ends at the end of its control channel
                                       start_new_session=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        shipper = threading.Thread(target=self._ship, args=(process, fn.function_name, str(fn.version)),
                                   name=f"logs-{fn.function_name}", daemon=True)
        shipper.start()
        worker = _Worker(key, process, os.fdopen(read_fd, "r", encoding="utf-8"), tmp, shipper)
        self.started += 1
        # a function the guard knows no policy of may call nothing, as in the guard of the embedded cloud
        policy = None if self.policy_of is None else list(self.policy_of(fn.function_name) or [])
        setup = {"handler": str(fn.handler), "code": str(root), "policy": policy, "account": self.account}
        answer = self._send(worker, setup, timeout=max(float(fn.timeout), INIT_TIMEOUT_S))
        if not isinstance(answer, dict) or not answer.get("ready"):
            worker.stop()
            if isinstance(answer, dict) and "init_error" in answer:
                raise _InitFailed(answer["init_error"])
            raise _InitFailed({"errorType": "Runtime.ExitError",
                               "errorMessage": f"the environment of {fn.function_name}:{fn.version} did not start"})
        return worker

    def _ship(self, process: subprocess.Popen[str], function: str, version: str) -> None:
        """The environment's stdout to the handlers' output, as the function's log group (mlops.local.metrics)."""
        output = self.handler_output or sys.stderr
        if isinstance(os.environ, OverlayEnviron):
            os.environ.push({"AWS_LAMBDA_FUNCTION_NAME": function, "AWS_LAMBDA_FUNCTION_VERSION": version})
        assert process.stdout is not None
        for line in process.stdout:
            output.write(line)

    @staticmethod
    def _send(worker: _Worker, message: dict[str, Any], *, timeout: float) -> Any:
        """One message to the environment and its answer: a dict, None when the process ended, _TIMED_OUT."""
        assert worker.process.stdin is not None
        try:
            worker.process.stdin.write(json.dumps(message, default=str) + "\n")
            worker.process.stdin.flush()
        except OSError:  # the process is gone
            return None
        # one answer per message: nothing is ever buffered beyond it, so select on the descriptor is enough
        readable, _, _ = select.select([worker.results], [], [], timeout)
        if not readable:
            return _TIMED_OUT
        line = worker.results.readline()
        return json.loads(line) if line else None

    # -- invoke --------------------------------------------------------------------------------------------
    def _run(self, fn: LambdaFunction, payload: Any) -> tuple[Any, bool, float]:
        request_id = str(uuid.uuid4())
        try:
            worker = self._checkout(fn)
        except _InitFailed as exc:
            return exc.answer, True, 0.0
        context = {"function_name": fn.function_name, "function_version": str(fn.version),
                   "invoked_function_arn": fn.function_arn, "memory_limit_in_mb": int(fn.memory_size),
                   "timeout_s": int(fn.timeout), "aws_request_id": request_id}
        started = time.perf_counter()  # the invocation's own duration: not the wait for an environment, nor its init
        answer = self._send(worker, {"event": payload, "context": context}, timeout=float(fn.timeout))
        seconds = time.perf_counter() - started
        if answer is _TIMED_OUT:
            worker.process.kill()
            worker.process.wait()
            self._checkin(worker, keep=False)
            return {"errorType": "Sandbox.Timedout",
                    "errorMessage": f"RequestId: {request_id} Error: Task timed out after {float(fn.timeout):.2f} "
                                    "seconds"}, True, seconds
        if answer is None:
            code = worker.process.wait()
            self._checkin(worker, keep=False)
            return {"errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {_status(code)}"}, \
                True, seconds
        self._checkin(worker, keep=True)
        return answer["result"], bool(answer["errored"]), seconds

    def uninstall(self) -> None:
        with self._cond:
            self._closed = True
            workers = [w for idle in self._idle.values() for w in idle]
            self._idle.clear()
            self._live -= len(workers)
        for worker in workers:
            worker.stop()
        super().uninstall()

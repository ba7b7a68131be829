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

import contextlib
import hashlib
import itertools
import json
import os
import selectors
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
from moto.core import DEFAULT_ACCOUNT_ID

from mlops.local.context import error_answer
from mlops.local.lambda_runtime import InProcessRuntime, OverlayEnviron
from mlops.local.worker import DEFAULT_MAX_ENVIRONMENTS, END_OF_INVOCATION, LIFELINE_FD, RESULTS_FD

# An environment's worker process, started by the runtime: this interpreter, without the working directory on its path
# (-P: the function's code folder is put first by the worker itself, as /var/task is on Lambda)
WORKER = (sys.executable, "-P", "-m", "mlops.local.worker")
# How long an environment may take to import its handler. Lambda allows 10 s; here a dozen environments may start at
# once on two cores, each importing onnxruntime or scikit-learn.
INIT_TIMEOUT_S = 120.0
# How long an invocation waits for an environment when --max-environments are all busy, before it is refused as Lambda
# refuses one past the concurrency quota (TooManyRequestsException): a handler invoking another function while every
# environment is busy would otherwise wait for ever.
THROTTLE_AFTER_S = 60.0
# How long an invocation's answer waits for its output to be shipped (its metrics in CloudWatch before the answer)
SHIPPING_WAIT_S = 10.0
_TIMED_OUT = object()

PolicyOf = Callable[[str], Sequence[dict[str, Any]] | None]


class _InitFailed(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer.get("errorMessage"))
        self.answer = answer


class _Throttled(Exception):
    pass


@dataclass(eq=False)
class _Worker:
    key: tuple[str, ...]
    process: subprocess.Popen[str]
    results: IO[str]
    tmp: Path
    shipper: threading.Thread
    lifeline: int  # the write end of the worker's lifeline, held open while this process lives (mlops.local.worker)
    # released by the shipper at each invocation's end-of-output line: the answer waits for its output
    shipped: threading.Semaphore
    last_used: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """The worker and whatever its handler started (its own process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Shut the environment down (its process, then its pipes and its /tmp)."""
        if self.alive():
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()  # the worker's loop ends at the end of its control channel
                self.process.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        for stream in (self.process.stdin, self.results):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.shipper.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        with contextlib.suppress(OSError):
            os.close(self.lifeline)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _status(code: int) -> str:
    """How Lambda words a runtime's exit: ``exit status 1``, ``signal: killed``, ``signal: segmentation fault``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"signal: {(signal.strsignal(-code) or str(-code)).lower()}"
    except ValueError:
        return f"signal: {-code}"


class ProcessRuntime(InProcessRuntime):
    def __init__(self, workdir: Path | None = None, *, handler_output: Any = None,
                 max_environments: int = DEFAULT_MAX_ENVIRONMENTS, policy_of: PolicyOf | None = None,
                 account: str = DEFAULT_ACCOUNT_ID) -> None:
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
        self._closed = False  # uninstalled: an environment handed back is shut down, none is started
        self._workers: set[_Worker] = set()  # every environment alive, idle or busy

    # -- the pool ------------------------------------------------------------------------------------------
    @staticmethod
    def _key(fn: LambdaFunction) -> tuple[str, ...]:
        # the configuration too: $LATEST's can change without its code
        configuration = json.dumps([fn.environment_vars or {}, str(fn.handler), str(fn.memory_size),
                                    str(fn.timeout)], sort_keys=True, default=str)
        return (fn.function_name, str(fn.version), fn.code_sha_256, hashlib.sha256(configuration.encode()).hexdigest())

    def _checkout(self, fn: LambdaFunction) -> _Worker:
        key = self._key(fn)
        deadline = time.monotonic() + THROTTLE_AFTER_S
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the local Lambda runtime is stopping")
                idle = self._idle.get(key)
                while idle:
                    worker = idle.pop()  # the most recently used: the warmest
                    if worker.alive():
                        return worker
                    self._live -= 1  # it died while idle: a cold start instead
                    self._workers.discard(worker)
                    threading.Thread(target=worker.stop, daemon=True).start()
                if self._live < self.max_environments:
                    self._live += 1
                    break
                oldest = min((w for workers in self._idle.values() for w in workers), default=None,
                             key=lambda w: w.last_used)
                if oldest is not None:  # another version's idle environment makes room, as Lambda reclaims them
                    self._idle[oldest.key].remove(oldest)
                    self._workers.discard(oldest)
                    self._live -= 1
                    threading.Thread(target=oldest.stop, daemon=True).start()
                    continue
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise _Throttled
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
                self._workers.discard(worker)
            self._cond.notify()
        if worker is not None:
            worker.stop()

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
        life_read, life_write = os.pipe()
        environment = {**base, **self._function_layer(fn, root, tmp), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1",
                       RESULTS_FD: str(write_fd), LIFELINE_FD: str(life_read)}
        try:
            process = subprocess.Popen(WORKER, cwd=root, env=environment, stdin=subprocess.PIPE,  # noqa: S603 - this interpreter
                                       stdout=subprocess.PIPE, text=True, encoding="utf-8",
                                       pass_fds=(write_fd, life_read),
                                       # a Ctrl-C in the terminal is the server's to handle (it stops its workers);
                                       # a worker whose server died ends with its lifeline
                                       start_new_session=True)
        except BaseException:
            os.close(read_fd)
            os.close(life_write)
            raise
        finally:
            os.close(write_fd)
            os.close(life_read)
        shipped = threading.Semaphore(0)
        shipper = threading.Thread(target=self._ship, args=(process, fn.function_name, str(fn.version), shipped),
                                   name=f"logs-{fn.function_name}", daemon=True)
        worker = _Worker(key, process, os.fdopen(read_fd, "r", encoding="utf-8"), tmp, shipper, life_write, shipped)
        shipper.start()
        with self._cond:
            self._workers.add(worker)
        # a function the guard knows no policy of may call nothing, as in the guard of the embedded cloud
        policy = None if self.policy_of is None else list(self.policy_of(fn.function_name) or [])
        setup = {"handler": str(fn.handler), "code": str(root), "policy": policy, "account": self.account}
        answer = self._send(worker, setup, timeout=max(float(fn.timeout), INIT_TIMEOUT_S))
        if not isinstance(answer, dict) or not answer.get("ready"):
            with self._cond:
                self._workers.discard(worker)
            worker.stop()
            if isinstance(answer, dict) and "init_error" in answer:
                raise _InitFailed(answer["init_error"])
            raise _InitFailed({"errorType": "Runtime.ExitError",
                               "errorMessage": f"the environment of {fn.function_name}:{fn.version} did not start"})
        return worker

    def _ship(self, process: subprocess.Popen[str], function: str, version: str,
              shipped: threading.Semaphore) -> None:
        """The environment's stdout to the handlers' output, as the function's log group (mlops.local.metrics);
        each invocation's end-of-output line releases ``shipped``."""
        output = self.handler_output or sys.stderr
        if isinstance(os.environ, OverlayEnviron):
            os.environ.push({"AWS_LAMBDA_FUNCTION_NAME": function, "AWS_LAMBDA_FUNCTION_VERSION": version})
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if line.endswith(END_OF_INVOCATION):  # after the handler's last line, ended or not
                    if rest := line[:-len(END_OF_INVOCATION)]:
                        output.write(rest + "\n")
                    shipped.release()
                    continue
                output.write(line)
        except (OSError, ValueError):  # the pipe was closed under us: the environment is gone
            pass

    @staticmethod
    def _send(worker: _Worker, message: dict[str, Any], *, timeout: float) -> Any:
        """One message to the environment and its answer: a dict, None when the process ended, _TIMED_OUT."""
        assert worker.process.stdin is not None
        try:
            worker.process.stdin.write(json.dumps(message, default=str) + "\n")
            worker.process.stdin.flush()
        except OSError:  # the process is gone
            return None
        # one answer per message: nothing is ever buffered beyond it, so waiting on the descriptor is enough
        with selectors.DefaultSelector() as selector:
            selector.register(worker.results, selectors.EVENT_READ)
            if not selector.select(timeout):
                return _TIMED_OUT
        line = worker.results.readline()
        if not line.endswith("\n"):  # cut short: the process died while writing
            return None
        return json.loads(line)

    # -- invoke --------------------------------------------------------------------------------------------
    def _run(self, fn: LambdaFunction, payload: Any) -> tuple[Any, bool, float]:
        request_id = str(uuid.uuid4())
        try:
            worker = self._checkout(fn)
        except _InitFailed as exc:
            return exc.answer, True, 0.0
        except _Throttled:
            return {"errorType": "TooManyRequestsException",
                    "errorMessage": f"Rate Exceeded: the local cloud's {self.max_environments} environments "
                                    f"(--max-environments) stayed busy for {THROTTLE_AFTER_S:.0f} s"}, True, 0.0
        except Exception as exc:  # the environment could not be made (no code, a full disk): the function's error
            return error_answer(exc), True, 0.0
        context = {"function_name": fn.function_name, "function_version": str(fn.version),
                   "invoked_function_arn": fn.function_arn, "memory_limit_in_mb": int(fn.memory_size),
                   "timeout_s": int(fn.timeout), "aws_request_id": request_id}
        started = time.perf_counter()  # the invocation's own duration: not the wait for an environment, nor its init
        keep = False
        try:
            answer = self._send(worker, {"event": payload, "context": context}, timeout=float(fn.timeout))
            seconds = time.perf_counter() - started
            if answer is _TIMED_OUT:
                worker.kill()
                return {"errorType": "Sandbox.Timedout",
                        "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
                                        f"{float(fn.timeout):.2f} seconds"}, True, seconds
            if answer is None:
                code = worker.process.wait()
                return {"errorType": "Runtime.ExitError",
                        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
                                        f"{_status(code)}"}, True, seconds
            worker.shipped.acquire(timeout=SHIPPING_WAIT_S)  # its metrics and captures are out before its answer
            keep = True
            return answer["result"], bool(answer["errored"]), seconds
        except Exception as exc:  # the exchange itself failed: the environment is not trusted again
            worker.kill()
            return error_answer(exc), True, time.perf_counter() - started
        finally:
            self._checkin(worker, keep=keep)

    def uninstall(self) -> None:
        with self._cond:
            self._closed = True
            workers = list(self._workers)  # busy ones too: their code and /tmp are about to go
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
            worker.stop()
        super().uninstall()

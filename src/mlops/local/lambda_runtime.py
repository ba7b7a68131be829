"""An in-process Lambda runtime for moto, which would otherwise need Docker to invoke a function.

moto routes every invocation (the Invoke API, Step Functions tasks, S3/SNS/SQS triggers) through
``LambdaFunction._invoke_lambda(self, event) -> (payload, errored, logs)``; this module replaces that one
method. The deployed zip is extracted once per (function, version, code sha256), its handler module is
imported once per such execution environment (module state survives between invocations, as in a warm
Lambda) and every invocation runs with that version's own environment variables.

Handlers run in this process. Each invocation sees its version's environment variables through a
thread-local overlay on ``os.environ`` (other threads, such as moto's Step Functions engine, keep seeing
the process's own environment), and runs under a re-entrant lock: one invocation at a time, nested ones
(an S3 write inside a handler triggering another function) allowed. Behind moto's server (``mlops local
up``) such a nested invocation would arrive on another thread and wait for the lock forever, so there S3
notifications are queued instead (``mlops.local.dispatch``), as AWS delivers them. Log output of handlers
goes to stderr, never to stdout.

moto stores an alias's routing weights but always invokes its main version; the runtime also replaces
``LambdaBackend.invoke`` so that an invocation of a weighted alias picks its version by those weights,
as Lambda does (this is the A/B split of the ``live`` alias).

Why one module of this length: the environment overlay, the routed stdout and the invoke hook are the three
halves of one execution environment, installed and removed together.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO
from urllib.parse import unquote_plus

from moto.awslambda.models import LambdaBackend, LambdaFunction

from mlops.aws.environment import MODEL_CACHE_DIR
from mlops.local.context import LambdaContext, error_answer

__all__ = ["InProcessRuntime", "Invocation", "LambdaContext", "OverlayEnviron"]

_ORIGINAL = LambdaFunction._invoke_lambda
_ORIGINAL_BACKEND_INVOKE = LambdaBackend.invoke


@dataclass
class Invocation:
    function: str
    version: str
    event: Any
    result: Any
    errored: bool
    seconds: float


@dataclass
class _Environment:
    root: Path
    tmp: Path  # this environment's own /tmp
    module: ModuleType
    handler: Callable[[Any, Any], Any]


_REMOVED = object()


class OverlayEnviron(MutableMapping[str, str]):
    """``os.environ`` with per-thread layers on top: a handler's variables are visible to the thread that
    runs it (and its nested invocations), never to the process's other threads."""

    def __init__(self, base: MutableMapping[str, str]) -> None:
        self.base = base
        self._local = threading.local()

    def _layers(self) -> list[dict[str, Any]]:
        layers: list[dict[str, Any]] | None = getattr(self._local, "layers", None)
        if layers is None:
            layers = self._local.layers = []
        return layers

    def push(self, layer: dict[str, str]) -> None:
        self._layers().append(dict(layer))

    def pop_layer(self) -> None:
        self._layers().pop()

    def __getitem__(self, key: str) -> str:
        for layer in reversed(self._layers()):
            if key in layer:
                value = layer[key]
                if value is _REMOVED:
                    raise KeyError(key)
                return str(value)
        return self.base[key]

    def __setitem__(self, key: str, value: str) -> None:
        layers = self._layers()
        if layers:
            layers[-1][key] = value
        else:
            self.base[key] = value

    def __delitem__(self, key: str) -> None:
        layers = self._layers()
        if not layers:
            del self.base[key]
        elif key not in self:
            raise KeyError(key)
        else:
            layers[-1][key] = _REMOVED

    def _keys(self) -> list[str]:
        keys = dict.fromkeys(self.base)
        for layer in self._layers():
            for key, value in layer.items():
                if value is _REMOVED:
                    keys.pop(key, None)
                else:
                    keys[key] = None
        return list(keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def copy(self) -> dict[str, str]:
        return dict(self)


def _split_qualifier(function_name: str, qualifier: str | None) -> tuple[str, str | None]:
    """``name``, ``name:qualifier`` or a full ARN (with or without qualifier) -> (name, qualifier)."""
    if function_name.startswith("arn:"):
        parts = function_name.split(":")
        return parts[6], (parts[7] if len(parts) > 7 else qualifier)
    if ":" in function_name:
        name, _, qual = function_name.partition(":")
        return name, qual
    return function_name, qualifier


def complete_s3_event(event: Any) -> Any:
    """moto's S3 notifications omit fields that AWS always sends (and that Powertools' S3Model requires):
    fill them with what AWS would send, so handlers parse the local event exactly like the real one."""
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        return event
    for record in event["Records"]:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            continue
        record.setdefault("userIdentity", {"principalId": "AWS:LOCAL"})
        record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
        record.setdefault("responseElements", {"x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                                               "x-amz-id-2": uuid.uuid4().hex})
        bucket = record.get("s3", {}).get("bucket", {})
        bucket.setdefault("ownerIdentity", {"principalId": "LOCAL"})
        obj = record.get("s3", {}).get("object", {})
        if "versionId" not in obj and bucket.get("name") and obj.get("key"):
            version = _current_version(bucket["name"], unquote_plus(obj["key"]))
            if version:
                obj["versionId"] = version
    return event


def _current_version(bucket: str, key: str) -> str | None:
    """AWS puts the object's versionId in the event of a versioned bucket; moto leaves it out."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    try:
        found = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket, key)
    except Exception:  # the object may be gone already; the event is still delivered
        return None
    version = getattr(found, "version_id", None)
    return str(version) if version and version != "null" else None


class ThreadRoutedStdout(io.TextIOBase):
    """sys.stdout while the runtime is installed: a thread running a handler writes to the handlers' output,
    every other thread to the real stdout. ``contextlib.redirect_stdout`` swaps the stream for the whole
    process, so a handler running on a Step Functions thread would swallow the main thread's prints."""

    def __init__(self, base: TextIO) -> None:
        self.base = base
        self._local = threading.local()

    def route(self, target: TextIO | None) -> None:
        self._local.target = target

    def _current(self) -> TextIO:
        return getattr(self._local, "target", None) or self.base

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self._current().write(text)

    def flush(self) -> None:
        self._current().flush()

    def fileno(self) -> int:
        return self.base.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.base, "encoding", "utf-8"))


class InProcessRuntime:
    def __init__(self, workdir: Path | None = None, *, handler_output: Any = None) -> None:
        # where handlers' prints (logs, EMF metrics) go: stderr unless told otherwise, never stdout
        self.handler_output = handler_output
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-lambda-") if workdir is None else None
        self.workdir = Path(self._tmp.name) if self._tmp else Path(workdir or ".")
        self._envs: dict[tuple[str, str, str], _Environment] = {}
        self._lock = threading.RLock()
        self.invocations: list[Invocation] = []
        self.listeners: list[Callable[[Invocation], None]] = []
        self.rng = random.Random()  # noqa: S311 - traffic splitting, not cryptography

    # -- install -------------------------------------------------------------------------------------------
    def install(self) -> None:
        runtime = self

        def _invoke_lambda(fn: LambdaFunction, event: str | None = None) -> tuple[str, bool, str]:
            return runtime.invoke(fn, event)

        def _backend_invoke(backend: LambdaBackend, function_name: str, qualifier: str | None, body: Any,
                            headers: Any, response_headers: Any) -> str | bytes | None:
            name, qualifier = _split_qualifier(function_name, qualifier)
            chosen = runtime.route(backend, name, qualifier)
            return _ORIGINAL_BACKEND_INVOKE(backend, name, chosen, body, headers, response_headers)

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]
        LambdaBackend.invoke = _backend_invoke  # type: ignore[method-assign,assignment]
        if not isinstance(sys.stdout, ThreadRoutedStdout):
            sys.stdout = ThreadRoutedStdout(sys.stdout)
        if not isinstance(os.environ, OverlayEnviron):
            os.environ = OverlayEnviron(os.environ)  # type: ignore[assignment]  # noqa: B003 - an overlay, on purpose

    def route(self, backend: LambdaBackend, name: str, qualifier: str | None) -> str | None:
        """The version a weighted alias sends this invocation to; other qualifiers pass through."""
        if not qualifier or qualifier == "$LATEST" or qualifier.isdigit():
            return qualifier
        try:
            alias = backend.get_alias(qualifier, name)
        except Exception:  # not an alias: let moto answer as it would
            return qualifier
        routing: Any = alias.routing_config or {}
        weights: dict[str, Any] = routing.get("AdditionalVersionWeights") or {}
        draw = self.rng.random()
        for version, weight in weights.items():
            if draw < float(weight):
                return str(version)
            draw -= float(weight)
        return str(alias.function_version)

    def uninstall(self) -> None:
        if isinstance(sys.stdout, ThreadRoutedStdout):
            sys.stdout = sys.stdout.base
        LambdaFunction._invoke_lambda = _ORIGINAL  # type: ignore[method-assign]
        LambdaBackend.invoke = _ORIGINAL_BACKEND_INVOKE  # type: ignore[method-assign]
        if isinstance(os.environ, OverlayEnviron):
            os.environ = os.environ.base  # type: ignore[assignment]  # noqa: B003
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> InProcessRuntime:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    @contextlib.contextmanager
    def _handler_stdout(self) -> Iterator[None]:
        """This thread's prints go to the handlers' output while it runs a handler (module import included)."""
        stdout = sys.stdout
        if not isinstance(stdout, ThreadRoutedStdout):  # not installed: fall back to the process-wide swap
            with contextlib.redirect_stdout(self.handler_output or sys.stderr):
                yield
            return
        previous = getattr(stdout._local, "target", None)
        stdout.route(self.handler_output or sys.stderr)
        try:
            yield
        finally:
            stdout.route(previous)

    # -- environments --------------------------------------------------------------------------------------
    def _extract(self, fn: LambdaFunction) -> Path:
        """The version's deployed zip, extracted once into this runtime's folder (its /var/task)."""
        code = getattr(fn, "code_bytes", None)
        if not code:
            raise RuntimeError(f"{fn.function_name} has no zip code; the local runtime runs zip functions only")
        # the code sha is base64: its '/' and '+' would nest or mangle the folder
        root = self.workdir / re.sub(r"[^\w.-]", "_", f"{fn.function_name}-{fn.version}-{fn.code_sha_256[:12]}")
        if not root.is_dir():
            root.mkdir(parents=True)
            with zipfile.ZipFile(io.BytesIO(code)) as archive:
                archive.extractall(root)
        return root

    def _environment(self, fn: LambdaFunction) -> _Environment:
        key = (fn.function_name, str(fn.version), fn.code_sha_256)
        if key in self._envs:
            return self._envs[key]
        root = self._extract(fn)
        # Each Lambda environment has its own /tmp: here a folder of this runtime's, never one the machine shares
        # with other clouds, tests or demos (whose files would be taken for this environment's own)
        tmp = root.with_name(root.name + ".tmp")
        tmp.mkdir(exist_ok=True)
        module_file, _, attr = str(fn.handler).rpartition(".")
        path = root / (module_file.replace(".", "/") + ".py")
        name = re.sub(r"\W", "_", f"_mlops_lambda_{fn.function_name}_{fn.version}_{fn.code_sha_256[:12]}")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load handler {fn.handler} from {path}")
        module = importlib.util.module_from_spec(spec)
        # Module-level code (loggers, clients) must see the function's environment, as in Lambda's init phase.
        with self._function_env(fn, root, tmp), self._handler_stdout():
            sys.modules[name] = module
            spec.loader.exec_module(module)
        env = _Environment(root, tmp, module, getattr(module, attr))
        self._envs[key] = env
        return env

    @staticmethod
    def _function_layer(fn: LambdaFunction, root: Path, tmp: Path) -> dict[str, str]:
        """The environment variables Lambda gives this version's environments."""
        return {
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(fn.version),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "LAMBDA_TASK_ROOT": str(root),
            "_HANDLER": str(fn.handler),
            **{k: str(v) for k, v in (fn.environment_vars or {}).items()},
            # after the function's own variables: the model cache (mlops.serving.cache.ModelCache) is in this
            # environment's /tmp whatever the function declares, as it is on Lambda
            MODEL_CACHE_DIR: str(tmp / "models"),
        }

    @contextlib.contextmanager
    def _function_env(self, fn: LambdaFunction, root: Path, tmp: Path) -> Iterator[None]:
        assert isinstance(os.environ, OverlayEnviron), "install() the runtime first"
        os.environ.push(self._function_layer(fn, root, tmp))
        try:
            yield
        finally:
            os.environ.pop_layer()

    # -- invoke --------------------------------------------------------------------------------------------
    def _run(self, fn: LambdaFunction, payload: Any) -> tuple[Any, bool, float]:
        """(the handler's answer, whether it is an error, the seconds it took) for one invocation."""
        with self._lock:
            started = time.perf_counter()  # the function's own duration, as Lambda bills it: not the wait
            try:
                env = self._environment(fn)
                context = LambdaContext(fn.function_name, str(fn.version), fn.function_arn,
                                        int(fn.memory_size), int(fn.timeout))
                with self._function_env(fn, env.root, env.tmp), self._handler_stdout():
                    result = env.handler(payload, context)
                errored = False
            except Exception as exc:  # a handler error is the function's answer, as in Lambda
                result, errored = error_answer(exc), True
            seconds = time.perf_counter() - started
        # Let a thread waiting for the lock (a Step Functions task between two API calls) have its turn:
        # the lock is not fair, and a busy caller would otherwise starve the state machines.
        time.sleep(0.0001)
        return result, errored, seconds

    def invoke(self, fn: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str | bytes) else (event if event is not None else {})
        payload = complete_s3_event(payload)
        result, errored, seconds = self._run(fn, payload)
        record = Invocation(fn.function_name, str(fn.version), payload, result, errored, seconds)
        self.invocations.append(record)
        if errored:
            # S3 and other async triggers swallow errors in moto; say it where a person looks.
            print(f"[lambda] {fn.function_name}:{fn.version} failed: {result['errorType']}: "
                  f"{result['errorMessage'][:500]}", file=sys.stderr, flush=True)
        for listener in self.listeners:
            listener(record)
        return json.dumps(result, default=str), errored, ""

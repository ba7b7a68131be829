"""Keeping the local cloud's state in a directory (``mlops local up --state DIR``).

moto keeps everything in memory. What is kept, and how:

- the data: S3 objects with all their versions, and the DynamoDB items. These are pickled straight from
  moto's backends (``FakeKey`` pickles its content; measured ~1.5 ms per MB, and each file is rewritten
  only when its content changed). Going through moto's own objects keeps what an API replay would lose:
  version ids and ETags, which ingest's idempotency keys and the events already delivered refer to.
  (moto's key store is a dict subclass whose ``items()`` yields only the newest version of each key, so
  pickling the store itself silently drops old versions: it is saved as plain lists.)
- the deployment state the platform creates at run time: each function's published versions (their
  environment pins a model version) and its aliases with their weights. These are read and replayed
  through the Lambda API, so version numbers come back as the registry recorded them.
- everything else is provisioned again from ``mlops.aws.platform`` on every start, like a deploy: a restart
  picks up changed handler code. Step Functions executions are not kept; ``mlops.local.recovery``
  re-drives the runs they were carrying.

Durability: every mutating request to S3, DynamoDB or Lambda is answered only after a snapshot that
includes it is on disk (a group commit: concurrent writers share one snapshot). A client that got an
answer can rely on the write surviving a SIGKILL. Each file is replaced atomically. Captured predictions
sit in the local Firehose buffer for up to a second first (``mlops.local.firehose``): those can be lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import moto

from mlops.aws import platform
from mlops.core.errors import MlopsError
from mlops.local.cloud import ACCOUNT, Deployment

# 2: registry versions record their manifest's sha256, which serving verifies (an older state serves nothing)
FORMAT = 2
# Firehose is not among them: its buffers reach S3 behind the API (mlops.local.firehose asks for a save then)
PERSISTED = ("s3", "dynamodb", "lambda")
READ_ONLY = ("Get", "Describe", "List", "Query", "Scan", "BatchGet")


class StateError(MlopsError):
    """A state directory that cannot be used (another format, another moto version, unreadable)."""


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _pickle(value: Any) -> bytes:
    # Other threads keep writing to moto's dicts while we read them: retry a snapshot that saw one change.
    for _attempt in range(50):
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except RuntimeError:
            time.sleep(0.001)
    raise StateError("moto's state kept changing while it was being saved (50 attempts)")


# -- which requests must be durable --------------------------------------------------------------------------
def request_service(environ: dict[str, Any]) -> str | None:
    """The AWS service a signed request is for (its SigV4 credential scope), or None when unsigned."""
    credential = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in credential:
        scope = credential.split("Credential=", 1)[1].split(",", 1)[0]
    else:
        scope = (parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential") or [""])[0]
    parts = scope.split("/")
    return parts[3] if len(parts) >= 5 else None


def is_mutating(environ: dict[str, Any], service: str | None) -> bool:
    method = environ.get("REQUEST_METHOD", "GET")
    if method in ("GET", "HEAD", "OPTIONS") or environ.get("PATH_INFO", "").startswith("/moto-api"):
        return False
    if service is not None and service not in PERSISTED:
        return False
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return not target.rsplit(".", 1)[-1].startswith(READ_ONLY)
    # an invocation changes nothing by itself; what its handler writes arrives as requests of its own
    return not (service == "lambda" and environ.get("PATH_INFO", "").endswith("/invocations"))


class GroupCommit:
    """Writers wait until a snapshot taken after their write is saved; one snapshot serves all who wait."""

    def __init__(self, save: Callable[[set[str]], None]) -> None:
        self._save = save
        self._cond = threading.Condition()
        self._wanted = self._saved = 0
        self._dirty: set[str] = set()
        self._stopping = False
        self.started = False  # before: the state is being restored, and must not be saved half-restored
        self._thread = threading.Thread(target=self._run, name="state-saver", daemon=True)

    def start(self) -> None:
        self.started = True
        self._thread.start()

    def mark(self, services: Iterable[str]) -> int:
        with self._cond:
            self._dirty.update(services)
            self._wanted += 1
            self._cond.notify_all()
            return self._wanted

    def wait(self, ticket: int, timeout: float = 60.0) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._saved >= ticket or self._stopping, timeout)

    def flush(self) -> None:
        if self.started:
            self.wait(self.mark(PERSISTED))

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.started:
            self._thread.join(30)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted > self._saved or self._stopping)
                if self._stopping and self._wanted == self._saved:
                    return
                target, services, self._dirty = self._wanted, self._dirty, set()
            try:
                self._save(services)
            except Exception as exc:  # keep serving; the next write tries again with everything
                print(f"[state] saving failed: {exc!r}", file=sys.stderr, flush=True)
                with self._cond:
                    self._dirty.update(PERSISTED)
            with self._cond:
                self._saved = target
                self._cond.notify_all()

    def middleware(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """WSGI wrapper for moto's server: answer a mutating request once it is saved."""

        def durable(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            service = request_service(environ)
            result = app(environ, start_response)
            if self.started and is_mutating(environ, service):
                self.wait(self.mark([service] if service else PERSISTED))
            return result

        return durable


# -- the state directory -------------------------------------------------------------------------------------
class StateDir:
    def __init__(self, root: Path, deployment: Deployment, lambda_client: Any) -> None:
        self.root = root
        self.deployment = deployment
        self.lam = lambda_client
        self._written: dict[str, str] = {}  # file -> sha256 of what is on disk: unchanged data is not rewritten
        self._fingerprints: dict[str, tuple[Any, ...]] = {}  # bucket file -> what it held when written

    @property
    def _meta(self) -> Path:
        return self.root / "state.json"

    def exists(self) -> bool:
        return self._meta.exists()

    def _buckets(self) -> dict[str, str]:
        return {self.deployment.names[b]: f"s3/{self.deployment.names[b]}.pkl" for b in platform.BUCKETS}

    def _tables(self) -> dict[str, str]:
        return {self.deployment.names[t]: f"dynamodb/{self.deployment.names[t]}.pkl" for t in platform.TABLES}

    def _functions(self) -> list[str]:
        return [spec.physical_name(self.deployment.project) for spec in platform.FUNCTIONS] + [
            self.deployment.infer_function(m) for m in self.deployment.models]

    def _write(self, name: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if self._written.get(name) != digest:
            _atomic_write(self.root / name, data)
            self._written[name] = digest

    # -- save ----------------------------------------------------------------------------------------------
    def save(self, services: set[str]) -> None:
        if not self.exists():
            _atomic_write(self._meta, json.dumps({"format": FORMAT, "moto": moto.__version__,
                                                  "project": self.deployment.project}).encode())
        if "s3" in services:
            s3 = _s3_backend()
            for bucket, name in self._buckets().items():
                # as plain lists: pickling moto's key store itself keeps only each key's newest version
                versions = dict(s3.buckets[bucket].keys.lists())
                fingerprint = _fingerprint(versions)
                if self._fingerprints.get(name) != fingerprint:  # most writes touch one bucket of three
                    self._write(name, _pickle(versions))
                    self._fingerprints[name] = fingerprint
        if "dynamodb" in services:
            ddb = _dynamodb_backend(self.deployment.region)
            for table, name in self._tables().items():
                self._write(name, _pickle(ddb.tables[table].items))
        if "lambda" in services:
            self._write("lambda.json", json.dumps(self._lambda_state(), indent=1, sort_keys=True).encode())

    def _lambda_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for function in self._functions():
            versions = [v for page in self.lam.get_paginator("list_versions_by_function").paginate(
                FunctionName=function) for v in page["Versions"]]
            aliases = self.lam.list_aliases(FunctionName=function)["Aliases"]
            state[function] = {
                "latest_env": next(v for v in versions if v["Version"] == "$LATEST").get(
                    "Environment", {}).get("Variables", {}),
                "versions": [{"version": v["Version"], "description": v.get("Description", ""),
                              "env": v.get("Environment", {}).get("Variables", {})}
                             for v in sorted((v for v in versions if v["Version"] != "$LATEST"),
                                             key=lambda v: int(v["Version"]))],
                "aliases": [{"name": a["Name"], "version": a["FunctionVersion"],
                             "description": a.get("Description", ""),
                             "weights": (a.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}}
                            for a in aliases],
            }
        return state

    # -- restore -------------------------------------------------------------------------------------------
    def restore(self) -> dict[str, int]:
        """Put the saved data back into a freshly provisioned cloud; returns what was restored, for the log."""
        meta = self._read_meta()
        if meta.get("moto") != moto.__version__:
            raise StateError(f"{self.root} was saved by moto {meta.get('moto')}, this is moto {moto.__version__}; "
                             "start with another --state directory (or none)")
        counts = {"objects": 0, "items": 0, "function_versions": 0}
        s3 = _s3_backend()
        for bucket, name in self._buckets().items():
            saved = self._load(name, lambda value: all(isinstance(v, list) for v in value.values()))
            keys = s3.buckets[bucket].keys
            for key, versions in saved.items():
                keys.setlist(key, versions)
            counts["objects"] += sum(len(versions) for versions in saved.values())
        ddb = _dynamodb_backend(self.deployment.region)
        for table, name in self._tables().items():
            items = self._load(name, lambda value: True)
            if items:
                ddb.tables[table].items = items
                counts["items"] += sum(len(v) if isinstance(v, dict) else 1 for v in items.values())
        if (self.root / "lambda.json").exists():
            counts["function_versions"] = self._replay_lambda(json.loads((self.root / "lambda.json").read_text()))
        for name in [*self._buckets().values(), *self._tables().values(), "lambda.json"]:
            if (self.root / name).exists():
                self._written[name] = hashlib.sha256((self.root / name).read_bytes()).hexdigest()
        return counts

    def _load(self, name: str, valid: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """A pickled dict saved by ``save`` ({} when there is none)."""
        path = self.root / name
        if not path.exists():
            return {}
        try:
            value = pickle.loads(path.read_bytes())  # noqa: S301 - a file this class wrote
        except Exception as exc:  # a truncated or foreign file: say which one
            raise StateError(f"cannot read {path}: {exc!r}; start with another --state directory") from exc
        if not isinstance(value, dict) or not valid(value):
            raise StateError(f"{path} does not hold what this version saves; start with another --state directory")
        return value

    def _read_meta(self) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads(self._meta.read_text())
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {self._meta}: {exc}; start with another --state directory") from exc
        if meta.get("format") != FORMAT or meta.get("project") != self.deployment.project:
            raise StateError(f"{self.root} holds state of project {meta.get('project')!r} (format "
                             f"{meta.get('format')}), not of {self.deployment.project!r} (format {FORMAT}); "
                             "start with another --state directory")
        return meta

    def _replay_lambda(self, state: dict[str, Any]) -> int:
        """Publish the saved versions again, in order, then point the aliases where they pointed."""
        replayed = 0
        provisioned = set(self._functions())
        # a model no longer declared has no function any more: its versions go with it, as on a deploy
        for function, saved in ((f, saved) for f, saved in state.items() if f in provisioned):
            for version in saved["versions"]:
                self.lam.update_function_configuration(FunctionName=function,
                                                       Environment={"Variables": version["env"]})
                published = self.lam.publish_version(FunctionName=function, Description=version["description"])
                if published["Version"] != version["version"]:
                    raise StateError(f"replaying {function} gave version {published['Version']} where the saved "
                                     f"state has {version['version']}; the state in {self.root} is inconsistent")
                replayed += 1
            self.lam.update_function_configuration(FunctionName=function,
                                                   Environment={"Variables": saved["latest_env"]})
            existing = {a["Name"] for a in self.lam.list_aliases(FunctionName=function)["Aliases"]}
            for alias in saved["aliases"]:
                # provisioning (the deploy) created `live` on $LATEST with API Gateway's permission: move it back
                # where it pointed, keeping that permission, rather than create it again
                write = self.lam.update_alias if alias["name"] in existing else self.lam.create_alias
                write(FunctionName=function, Name=alias["name"], FunctionVersion=alias["version"],
                      Description=alias["description"], RoutingConfig={"AdditionalVersionWeights": alias["weights"]})
        return replayed


def _fingerprint(versions: dict[str, list[Any]]) -> tuple[Any, ...]:
    """Changes whenever a versioned bucket does: every write, overwrite or delete adds or removes a version."""
    return (len(versions), sum(len(v) for v in versions.values()),
            max((str(v[-1].last_modified) for v in versions.values() if v), default=""))


def _s3_backend() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT]["aws"]


def _dynamodb_backend(region: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[ACCOUNT][region]

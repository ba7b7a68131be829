"""Scheduled invocations for the local cloud: moto stores EventBridge rules but never fires them.

The rules come from the platform's description (``mlops.aws.platform.scheduled_rules``), the same list the
CDK app turns into EventBridge rules: a function, a model, an expression and the rule's constant input
(the event the function receives). ``rate(...)`` expressions run here; ``cron(...)`` ones are reported and
skipped. Time can run faster locally (``scale``): with ``scale=60`` a ``rate(1 hour)`` fires every minute.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops.aws import platform
from mlops.core.config import ProjectConfig
from mlops.core.errors import ConfigError
from mlops.local.cloud import ACCOUNT, Deployment, rule_arn
from mlops.local.permissions import may_invoke

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def parse_rate(expression: str) -> float:
    """Seconds between two firings of an EventBridge ``rate(N unit)`` expression."""
    found = _RATE.match(expression.strip())
    if not found:
        raise ConfigError(f"schedule {expression!r}: the local cloud runs rate(N minute|minutes|hour|hours|day|days) "
                          "expressions only (cron(...) is not supported locally)")
    value, unit = int(found.group(1)), found.group(2).rstrip("s")
    if value < 1 or (value == 1) != (found.group(2) == unit):
        raise ConfigError(f"schedule {expression!r}: write rate(1 {unit}) or rate(N {unit}s) with N > 1, as "
                          "EventBridge requires")
    return float(value * _UNIT_SECONDS[unit])


@dataclass(frozen=True)
class Job:
    name: str  # the EventBridge rule's name
    function: str  # the function to invoke (physical name)
    every_s: float  # in the local cloud's (possibly scaled) time
    event: dict[str, Any]


def declared_jobs(deployment: Deployment, config: ProjectConfig, scale: float = 1.0,
                  log: Callable[[str], None] | None = None) -> list[Job]:
    """The rules ``mlops.aws.platform.scheduled_rules`` declares (the CDK app's EventBridge rules), as jobs."""
    if scale <= 0:
        raise ConfigError(f"the schedule scale must be positive (it divides every interval), not {scale}")
    jobs = []
    for rule in platform.scheduled_rules(config):
        if rule.expression.startswith("cron("):
            if log:
                log(f"[schedule] {rule.rule_name}: {rule.expression} is not run locally (rate(...) only)")
            continue
        function = platform.function(rule.function).physical_name(deployment.project)
        jobs.append(Job(rule.rule_name, function, parse_rate(rule.expression) / scale, dict(rule.input)))
    return jobs


class Scheduler:
    """Fires each job every ``every_s`` seconds (the first time one interval after start), one at a time."""

    def __init__(self, jobs: list[Job], invoke: Callable[[Job], None], log: Callable[[str], None]) -> None:
        self.jobs = jobs
        self.invoke = invoke
        self.log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        if self.jobs:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        due = {job.name: time.monotonic() + job.every_s for job in self.jobs}
        while not self._stop.is_set():
            job = min(self.jobs, key=lambda j: due[j.name])
            if self._stop.wait(max(0.0, due[job.name] - time.monotonic())):
                return
            due[job.name] += job.every_s
            try:
                self.invoke(job)
            except Exception as exc:  # a failed firing is logged; the schedule goes on, as EventBridge's does
                self.log(f"[schedule] {job.name} failed: {exc!r}")


EVENTS_PRINCIPAL = "events.amazonaws.com"


def lambda_invoker(lambda_client: Any, log: Callable[[str], None]) -> Callable[[Job], None]:
    """EventBridge's delivery: only if the function's resource policy lets the rule invoke it (otherwise AWS counts
    a failed invocation and the function never runs)."""

    def invoke(job: Job) -> None:
        region = lambda_client.meta.region_name
        if not may_invoke(ACCOUNT, region, function=job.function, qualifier=None, service=EVENTS_PRINCIPAL,
                          source_arn=rule_arn(region, job.name)):
            log(f"[schedule] {job.name}: not invoked: the resource policy of {job.function} does not let "
                f"{EVENTS_PRINCIPAL} invoke it for {rule_arn(region, job.name)}")
            return
        log(f"[schedule] {job.name}: invoking {job.function}")
        response = lambda_client.invoke(FunctionName=job.function, Payload=json.dumps(job.event).encode())
        if response.get("FunctionError"):
            log(f"[schedule] {job.name}: {job.function} failed: {response['Payload'].read()[:300]!r}")

    return invoke

"""rollout: one look at a canary. Join the captured predictions of champion and challenger with their
feedback (by request id), feed the always-valid sequential test (``mlops.release.abtest``), and act: promote,
roll back, or wait for more data. A model without feedback labels (a clustering) has no test: its looks decide on the
guardrails, the challenger's traffic and the canary's duration alone (``guardrails.guardrail_only_decision``).
The Step Functions loop (``infra/rollout.asl.json``) calls this after every wait; the test's state travels in the
execution's payload, and every MAX_LOOKS_PER_EXECUTION looks to a new execution of the same state machine (below: an
execution's history is bounded).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlops.aws import platform
from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.core.config import ROLLOUT_MAX_INTERVAL_SECONDS, ModelConfig
from mlops.core.errors import ConfigError
from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION
from mlops.release.abtest import (
    Decision,
    SequentialTest,
    guardrail_breached,
    plan_two_proportions,
    ratio_from_weight,
    sequential_inflation,
)
from mlops.release.guardrails import GUARDRAILS_ONLY, ServingMetrics, guardrail_only_decision
from mlops.release.lifecycle import Lifecycle, RolloutInProgress

# -- how long one execution may loop ---------------------------------------------------------------------------------
# A standard execution fails once its history would pass 25,000 events, and a Catch does not run then: the challenger
# would keep its weight. One look of infra/rollout.asl.json adds, per state it passes through:
#   Analyze, a Lambda task: TaskStateEntered, LambdaFunctionScheduled, LambdaFunctionStarted, LambdaFunctionSucceeded,
#       TaskStateExited (5), and 3 more (Scheduled, Started, Failed or TimedOut) per attempt its Retry makes again,
#       at most 3: 14 at worst;
#   Decide, a Choice: ChoiceStateEntered, ChoiceStateExited (2);  WaitForData, a Wait: WaitStateEntered,
#       WaitStateExited (2).
# 9 events a look, 18 at worst. An execution hands over to the next after 12,500 // 18 = 694 looks: half the history
# even were every look retried to the end, the other half for the execution's own start and end (about 20) and for
# retriers added later. tests/unit/test_rollout_history.py reads the ASL and checks these numbers. The rollout function
# starts the next execution itself: moto 5.2.5 runs the states:startExecution integration without turning its
# parameters into the API's (StateMachineArn stays PascalCase), so the local cloud could not run that one.
HISTORY_LIMIT = 25_000
EVENTS_PER_LOOK = 5 + 2 + 2
WORST_EVENTS_PER_LOOK = 5 + 3 * 3 + 2 + 2
HISTORY_SHARE = 2  # one execution's looks fill at most 1/HISTORY_SHARE of its history
MAX_LOOKS_PER_EXECUTION = HISTORY_LIMIT // HISTORY_SHARE // WORST_EVENTS_PER_LOOK  # 694
# An execution also times out after a year, Catch or not: its waits take at most half of that (with 300 s, 694 looks
# are 58 hours; with a day, 182 looks). mlops.core.config refuses an interval longer than half a year.
# lowers the cap (never raises it): to see the hand-over without waiting for 694 looks
MAX_LOOKS_VARIABLE = "ROLLOUT_MAX_LOOKS_PER_EXECUTION"


def looks_per_execution(interval_seconds: int, override: str | None = None) -> int:
    """How many looks one execution makes before it hands over: within both its history and its lifetime, and at
    most ``override`` (the MAX_LOOKS_VARIABLE's value) when that is set."""
    cap = min(MAX_LOOKS_PER_EXECUTION, max(1, ROLLOUT_MAX_INTERVAL_SECONDS // interval_seconds))
    if override is None or override == "":
        return cap
    if not override.isdigit() or int(override) < 1:
        raise ConfigError(f"{MAX_LOOKS_VARIABLE}={override!r} is not a whole number of looks of at least 1; "
                          f"unset it to use {cap}")
    return min(cap, int(override))


# -- which capture objects were read -------------------------------------------------------------------------------
# Firehose keys an object captures/YYYY/MM/DD/HH/<stream>-<version>-<time>-<uuid> by the arrival of its oldest record
# (its buffer holds records up to 900 s) but writes it when the buffer closes, and retries a write S3 refused for up
# to 24 hours (what it keeps of a Direct PUT stream). So an object can land after objects with larger keys were read:
# readers list a day of keys every time and skip the objects read before.
DELIVERY_SLACK = timedelta(minutes=15)  # Firehose's longest buffering interval
LATE_DELIVERY = timedelta(hours=24)
# S3's Last-Modified may be when the upload began; a Firehose object is whole and listable well within this
SETTLE = timedelta(minutes=15)
MAX_RECENT = 2000  # digests kept: objects landing within SETTLE of a look (at most 31 KB of payload)


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


def _utc(value: datetime | str) -> datetime:
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def hour_key(at: datetime) -> str:
    """The key every capture object keyed in ``at``'s hour or later sorts after (a StartAfter), and every one keyed
    before that hour sorts before."""
    return f"{layout.CAPTURES}{at.astimezone(UTC):%Y/%m/%d/%H}"


def list_captures(captures: ObjectStore, *, after: str, before: str | None = None) -> Iterator[tuple[str, datetime]]:
    """(key, Last-Modified) of the capture objects keyed after ``after`` and before ``before``, in key order."""
    paginator = captures.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=captures.bucket, Prefix=layout.CAPTURES, StartAfter=after):
        for item in page.get("Contents", []):
            if before is not None and item["Key"] >= before:
                return
            yield item["Key"], _utc(item["LastModified"])


class ReadObjects(BaseModel):
    """The capture objects a reader has read, in a size bounded by what lands within SETTLE of a reading, not by what
    was read: every object modified at or before ``until`` (it was listable when the reader last listed), and the
    digests of the later ones it listed."""

    model_config = ConfigDict(extra="ignore")

    until: str | None = None
    recent: list[str] = []

    def has(self, key: str, modified: datetime) -> bool:
        return (self.until is not None and modified <= _utc(self.until)) or _digest(key) in self.recent

    @classmethod
    def after(cls, listed: Iterable[tuple[str, datetime]], at: datetime) -> ReadObjects:
        """What a reader has read once it read (or skipped as read) every object of ``listed``, listed from ``at``."""
        until = at - SETTLE
        recent = sorted((modified, key) for key, modified in listed if modified > until)
        if len(recent) > MAX_RECENT:
            # more objects landed within SETTLE than the payload can name: the older ones are taken as read by time
            # (one of them listed late would be missed, never counted twice)
            until = recent[-MAX_RECENT - 1][0]
            recent = [(m, k) for m, k in recent if m > until]
        return cls(until=until.isoformat(), recent=[_digest(k) for _m, k in recent])


# -- the rollout's state -------------------------------------------------------------------------------------------
class RolloutState(BaseModel):
    """The rollout execution's payload between looks."""

    model_config = ConfigDict(extra="ignore")

    model: str
    champion: int
    challenger: int
    started_at: str
    test: dict[str, Any] | None = None
    looks: int = 0
    history: list[dict[str, Any]] = []
    # which execution of this rollout runs (0: the first, named by rollout_name) and how many looks it made
    generation: int = 0
    execution_looks: int = 0
    # incremental join of captures: counts so far, the capture objects read, predictions still waiting for their
    # feedback and feedback still waiting for its prediction (both bounded, oldest dropped first: they travel in the
    # execution payload, at most 256 KiB)
    counts: dict[str, list[int]] = {}
    # with rollout_metric = "reward": per version [feedback count, sum of rewards, sum of squared rewards]
    rewards: dict[str, list[float]] = {}
    read: ReadObjects = ReadObjects()
    # an older payload's "every capture key up to this one was read" (before objects landing late were read)
    last_key: str | None = None
    pending: dict[str, list[Any]] = {}
    orphans: dict[str, list[Any]] = {}


def rollout_name(model: str, challenger: int) -> str:
    """The first execution's name, and the rollout's lock owner in every execution."""
    return f"{model}-v{challenger}-rollout"


def execution_name(model: str, challenger: int, generation: int) -> str:
    """One name per execution of a rollout (at most 40 + 24 characters, Step Functions allows 80): a replayed
    start or hand-over finds it taken and starts nothing."""
    return rollout_name(model, challenger) + (f"-{generation}" if generation else "")


# The payload's share of each part, within Step Functions' 256 KiB (262,144 bytes) for a state's input or output:
# history 50 looks (~30 KB), ReadObjects at most 31 KB, the rest ~2 KB; request ids are the client's (up to 128
# characters), so pending predictions and waiting feedback are bounded in bytes as well as in number.
MAX_PENDING, PENDING_BYTES = 2000, 110_000
MAX_ORPHANS, ORPHAN_BYTES = 500, 30_000


def _newest(entries: dict[str, list[Any]], count: int, size: int) -> dict[str, list[Any]]:
    """The newest entries (the last inserted) that fit in ``count`` entries and about ``size`` bytes of JSON."""
    kept: list[tuple[str, list[Any]]] = []
    used = 0
    for key, value in reversed(list(entries.items())[-count:]):
        used += len(json.dumps({key: value})) + 1
        if used > size:
            break
        kept.append((key, value))
    return dict(reversed(kept))


def _count(counts: dict[str, list[int]], rewards: dict[str, list[float]], version: Any, prediction: str,
           feedback: list[Any]) -> None:
    kind, value = feedback
    if kind == "label":
        arm = counts[str(version)]
        arm[0] += int(prediction == str(value))
        arm[1] += 1
    else:
        sums = rewards[str(version)]
        reward = float(value)
        sums[0], sums[1], sums[2] = sums[0] + 1, sums[1] + reward, sums[2] + reward * reward


def join_new_captures(state: RolloutState, captures: ObjectStore, *, at: datetime | None = None) -> None:
    """Read the capture objects not read yet (those landing late included) and join each feedback with its
    prediction by request id, whichever of the two is read first; counts[version] = [correct, with a label],
    rewards[version] = [with a reward, sum, sum of squares]. ``at``: when the listing starts (the wall clock)."""
    at = at or datetime.now(UTC)
    versions = (state.champion, state.challenger)
    counts = {str(v): list(state.counts.get(str(v), [0, 0])) for v in versions}
    rewards = {str(v): list(state.rewards.get(str(v), [0.0, 0.0, 0.0])) for v in versions}
    pending, orphans = dict(state.pending), dict(state.orphans)
    legacy = state.last_key if state.read.until is None and not state.read.recent else None
    floor = hour_key(max(_utc(state.started_at), at - LATE_DELIVERY) - DELIVERY_SLACK)
    listed: list[tuple[str, datetime]] = []
    for key, modified in list_captures(captures, after=floor):
        listed.append((key, modified))
        if state.read.has(key, modified) or (legacy is not None and key <= legacy):
            continue
        for record in captures.json_lines(key):
            if record.get("model") != state.model or record.get("time", "") < state.started_at:
                continue
            request_id = record.get("request_id")
            if record.get("type") == "prediction" and record.get("model_version") in versions:
                waiting = orphans.pop(request_id, None)
                if waiting is not None:  # its feedback was read first
                    _count(counts, rewards, record["model_version"], str(record["prediction"]), waiting)
                else:
                    pending[request_id] = [record["model_version"], str(record["prediction"])]
            elif record.get("type") == "feedback":
                if record.get("label") is not None:
                    feedback = ["label", record["label"]]
                elif record.get("reward") is not None:
                    feedback = ["reward", record["reward"]]
                else:
                    continue
                joined = pending.pop(request_id, None)
                if joined is not None:  # the first feedback of a request counts, once
                    _count(counts, rewards, joined[0], joined[1], feedback)
                elif request_id not in orphans:  # its prediction may be in an object that lands later
                    orphans[request_id] = feedback
    state.counts, state.rewards = counts, rewards
    state.pending = _newest(pending, MAX_PENDING, PENDING_BYTES)
    state.orphans = _newest(orphans, MAX_ORPHANS, ORPHAN_BYTES)
    state.read, state.last_key = ReadObjects.after(listed, at), None


def _new_test(model_cfg: ModelConfig, baseline: float) -> SequentialTest:
    if model_cfg.rollout_metric == "reward":
        # A mean reward has no planning baseline here: the horizon is the configured maximum per arm.
        return SequentialTest(max_samples_per_arm=model_cfg.rollout_max_samples, alpha=model_cfg.rollout_alpha,
                              mde=model_cfg.rollout_mde)
    # Plan around the champion's evaluation accuracy, clipped so baseline + mde stays a probability.
    baseline = min(max(baseline, 0.01), 0.99 - model_cfg.rollout_mde)
    plan = plan_two_proportions(baseline, model_cfg.rollout_mde, alpha=model_cfg.rollout_alpha,
                                power=model_cfg.rollout_power, ratio=ratio_from_weight(model_cfg.canary_weight))
    horizon = math.ceil(sequential_inflation(plan) * min(plan.n_control, plan.n_treatment))
    return SequentialTest(max_samples_per_arm=max(horizon, 100), alpha=model_cfg.rollout_alpha,
                          mde=model_cfg.rollout_mde)


def _mean_var(sums: list[float]) -> tuple[float, float, int]:
    n, total, squares = int(sums[0]), sums[1], sums[2]
    mean = total / n if n else 0.0
    var = max(0.0, (squares - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, var, n


def _look_at_metric(state: RolloutState, test: SequentialTest, metric: str) -> Decision:
    champion, challenger = str(state.champion), str(state.challenger)
    if metric == "reward":
        mean_c, var_c, n_c = _mean_var(state.rewards[champion])
        mean_t, var_t, n_t = _mean_var(state.rewards[challenger])
        return test.update_means(mean_c, var_c, n_c, mean_t, var_t, n_t)
    (c_ok, c_n), (t_ok, t_n) = state.counts[champion], state.counts[challenger]
    return test.update(c_ok, c_n, t_ok, t_n)


def _guardrails(state: RolloutState, model_cfg: ModelConfig, health: ServingMetrics | None,
                now: datetime) -> tuple[str | None, dict[str, Any]]:
    """The reason to roll back at once on operational health (or None), and the numbers read."""
    if health is None:
        return None, {}
    arms = health.health(state.model, (state.champion, state.challenger),
                         datetime.fromisoformat(state.started_at), now)
    champion, challenger = arms[state.champion], arms[state.challenger]
    breach = guardrail_breached(challenger.error_rate, champion.error_rate, challenger.p95_ms, champion.p95_ms,
                                max_error_rate_increase=model_cfg.guardrail_max_error_rate_increase,
                                max_p95_ratio=model_cfg.guardrail_max_p95_ratio,
                                min_requests=model_cfg.guardrail_min_requests,
                                challenger_requests=int(challenger.requests))
    return breach, {"champion": champion.to_dict(), "challenger": challenger.to_dict()}


# A look holds the model's lock while it runs, which may be as long as the rollout function's timeout: with a short
# interval, 3 intervals would let the lock expire under a slow look and a person move the alias beneath it.
LOOK_SECONDS = platform.function("rollout").timeout_s


def analyze(state: RolloutState, *, model_cfg: ModelConfig, registry: Registry, lifecycle: Lifecycle,
            captures: ObjectStore, lock_owner: str, health: ServingMetrics | None = None,
            now: datetime | None = None, executions: RolloutExecutions | None = None,
            max_looks: int | None = None) -> dict[str, Any]:
    """One look. Returns the next payload with ``action`` in continue | continued | promote | rollback | superseded.

    Every look is recorded in the registry with its statistics (``mlops ab status`` shows them). The look that
    completes an execution's share of looks (``max_looks``, else ``looks_per_execution``) starts the next execution
    of the rollout in ``executions`` and answers ``continued``: the calling execution ends there. Without
    ``executions`` (a look run outside the state machine) the looks go on."""
    now = now or datetime.now(UTC)
    aliases = registry.aliases(state.model)
    if aliases.get(CHALLENGER) != state.challenger or aliases.get(CHAMPION) != state.champion:
        return {**state.model_dump(), "action": "superseded",
                "reason": f"the aliases changed outside this rollout (now {aliases}); nothing to decide"}
    ttl = max(model_cfg.rollout_interval_seconds * 3, LOOK_SECONDS)
    if not registry.acquire_lock(state.model, lock_owner, ttl_seconds=ttl):
        raise RolloutInProgress(f"another rollout or a manual change holds the lock of {state.model}")
    elapsed_hours = (now - datetime.fromisoformat(state.started_at)).total_seconds() / 3600
    test: SequentialTest | None = None
    breach, health_numbers = _guardrails(state, model_cfg, health, now)
    if not model_cfg.task.has_labels:
        # no feedback labels (a clustering): no test, the guardrails, traffic and time decide
        action, reason = guardrail_only_decision(
            health_numbers, elapsed_hours=elapsed_hours, min_requests=model_cfg.guardrail_min_requests,
            min_hours=model_cfg.guardrail_min_hours, max_hours=model_cfg.rollout_max_hours)
        arms = [health_numbers.get(arm, {}).get("requests") for arm in ("champion", "challenger")]
        statistics: dict[str, Any] = {
            "n_control": int(arms[0] or 0), "n_treatment": int(arms[1] or 0), "guardrail_only": True,
            **dict.fromkeys(("p_value", "lower", "upper", "rate_control", "rate_treatment", "boundary", "statistic"))}
        metric = GUARDRAILS_ONLY
    else:
        if state.test is None:
            champion = registry.version(state.model, state.champion)
            baseline = float((champion.metrics.get("metrics", {}) if champion else {}).get("accuracy", 0.8))
            test = _new_test(model_cfg, baseline)
        else:
            test = SequentialTest.from_dict(state.test)
        join_new_captures(state, captures)
        decision = _look_at_metric(state, test, model_cfg.rollout_metric)
        action, reason, statistics, metric = (decision.action, decision.reason, decision.to_dict(),
                                              model_cfg.rollout_metric)
    if breach:
        action, reason = "rollback", f"guardrail breached: {breach}"
    elif action == "continue" and elapsed_hours > model_cfg.rollout_max_hours:
        action, reason = "stop_no_difference", f"no decision after {elapsed_hours:.1f} h (maximum duration)"
    look = {"at": now.isoformat(timespec="seconds"), **statistics, "metric": metric,
            "champion": state.champion, "action": action, "reason": reason, "health": health_numbers,
            "number": state.looks + 1}
    registry.record_look(state.model, state.challenger, look)
    who = f"rollout:{lock_owner}"
    if action == "promote":
        lifecycle.promote(state.model, who=who, why=reason, lock_owner=lock_owner)
    elif action in ("rollback", "stop_no_difference"):
        lifecycle.rollback(state.model, who=who, why=reason, lock_owner=lock_owner)
        action = "rollback"
    else:
        registry.release_lock(state.model, lock_owner)
    payload = {**state.model_dump(), "test": test.to_dict() if test else None, "looks": state.looks + 1,
               "history": [*state.history[-49:], look], "action": action, "reason": reason,
               "wait_seconds": model_cfg.rollout_interval_seconds, "execution_looks": state.execution_looks + 1}
    share = max_looks or looks_per_execution(model_cfg.rollout_interval_seconds)
    if action == "continue" and executions is not None and payload["execution_looks"] >= share:
        # this execution has made its share of looks: the next one goes on from this payload, with a history of its
        # own; this one ends (infra/rollout.asl.json, ContinuedAsNew)
        name = execution_name(state.model, state.challenger, state.generation + 1)
        arn = executions.start(name, {**payload, "generation": state.generation + 1, "execution_looks": 0})
        payload = {**payload, "action": "continued", "continued_as": {"name": name, "execution_arn": arn}}
    return payload


class RolloutExecutions:
    """The rollout state machine's executions, through an injected Step Functions client."""

    def __init__(self, sfn: Any, state_machine_arn: str) -> None:
        self.sfn = sfn
        self.state_machine_arn = state_machine_arn

    def start(self, name: str, payload: dict[str, Any]) -> str:
        """Start the execution ``name`` with ``payload``, and say its ARN. A name can run once: a replayed start (a
        retried look, a replayed register) finds its execution started already, and that is the one."""
        try:
            started = self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                               input=json.dumps(payload))
        except self.sfn.exceptions.ExecutionAlreadyExists:
            return f"{self.state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
        return str(started["executionArn"])


def start_rollout(sfn: Any, state_machine_arn: str, *, model: str, champion: int, challenger: int) -> str:
    """One rollout per challenger version (a replayed register does not start a second)."""
    state = RolloutState(model=model, champion=champion, challenger=challenger,
                         started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    return RolloutExecutions(sfn, state_machine_arn).start(rollout_name(model, challenger), state.model_dump())

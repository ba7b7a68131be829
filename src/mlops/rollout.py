"""rollout: one look at a canary. Join the captured predictions of champion and challenger with their
feedback (by request id), feed the always-valid sequential test (``mlops.abtest``), and act: promote,
roll back, or wait for more data. The Step Functions loop (``infra/rollout.asl.json``) calls this after
every wait; the test's state travels in the execution's payload.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlops.abtest import (
    Decision,
    SequentialTest,
    guardrail_breached,
    plan_two_proportions,
    ratio_from_weight,
    sequential_inflation,
)
from mlops.config import ModelConfig
from mlops.lifecycle import Lifecycle, RolloutInProgress
from mlops.registry import CHALLENGER, CHAMPION, Registry
from mlops.serving_health import ServingMetrics
from mlops.storage import ObjectStore

CAPTURE_PREFIX = "captures/"


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
    # incremental join of captures: counts so far, the last capture object read, predictions still
    # waiting for their feedback (bounded, oldest dropped first: they travel in the execution payload)
    counts: dict[str, list[int]] = {}
    # with rollout_metric = "reward": per version [feedback count, sum of rewards, sum of squared rewards]
    rewards: dict[str, list[float]] = {}
    last_key: str | None = None
    pending: dict[str, list[Any]] = {}


def rollout_name(model: str, challenger: int) -> str:
    return f"{model}-v{challenger}-rollout"


MAX_PENDING = 2000


def join_new_captures(state: RolloutState, captures: ObjectStore) -> None:
    """Read the capture objects written since the last look (Firehose keys sort by time) and join each
    feedback with its prediction by request id; counts[version] = [correct, with a label], rewards[version] =
    [with a reward, sum, sum of squares]."""
    versions = (state.champion, state.challenger)
    counts = {str(v): state.counts.get(str(v), [0, 0]) for v in versions}
    rewards = {str(v): state.rewards.get(str(v), [0.0, 0.0, 0.0]) for v in versions}
    pending = dict(state.pending)
    paginator = captures.s3.get_paginator("list_objects_v2")
    extra = {"StartAfter": state.last_key} if state.last_key else {}
    for page in paginator.paginate(Bucket=captures.bucket, Prefix=CAPTURE_PREFIX, **extra):
        for item in page.get("Contents", []):
            state.last_key = item["Key"]
            for record in captures.json_lines(item["Key"]):
                if record.get("model") != state.model or record.get("time", "") < state.started_at:
                    continue
                if record.get("type") == "prediction" and record.get("model_version") in versions:
                    pending[record["request_id"]] = [record["model_version"], str(record["prediction"])]
                elif record.get("type") == "feedback":
                    joined = pending.pop(record["request_id"], None)
                    if joined is None:  # the first feedback of a request counts, once
                        continue
                    if record.get("label") is not None:
                        arm = counts[str(joined[0])]
                        arm[0] += int(joined[1] == str(record["label"]))
                        arm[1] += 1
                    elif record.get("reward") is not None:
                        sums = rewards[str(joined[0])]
                        reward = float(record["reward"])
                        sums[0], sums[1], sums[2] = sums[0] + 1, sums[1] + reward, sums[2] + reward * reward
    state.counts, state.rewards = counts, rewards
    state.pending = dict(list(pending.items())[-MAX_PENDING:])


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


def analyze(state: RolloutState, *, model_cfg: ModelConfig, registry: Registry, lifecycle: Lifecycle,
            captures: ObjectStore, lock_owner: str, health: ServingMetrics | None = None,
            now: datetime | None = None) -> dict[str, Any]:
    """One look. Returns the next payload with ``action`` in continue | promote | rollback | superseded.

    Every look is recorded in the registry with its statistics (``mlops ab status`` shows them)."""
    now = now or datetime.now(UTC)
    aliases = registry.aliases(state.model)
    if aliases.get(CHALLENGER) != state.challenger or aliases.get(CHAMPION) != state.champion:
        return {**state.model_dump(), "action": "superseded",
                "reason": f"the aliases changed outside this rollout (now {aliases}); nothing to decide"}
    if not registry.acquire_lock(state.model, lock_owner, ttl_seconds=model_cfg.rollout_interval_seconds * 3):
        raise RolloutInProgress(f"another rollout or a manual change holds the lock of {state.model}")
    if state.test is None:
        champion = registry.version(state.model, state.champion)
        baseline = float((champion.metrics.get("metrics", {}) if champion else {}).get("accuracy", 0.8))
        test = _new_test(model_cfg, baseline)
    else:
        test = SequentialTest.from_dict(state.test)
    join_new_captures(state, captures)
    decision = _look_at_metric(state, test, model_cfg.rollout_metric)
    action, reason = decision.action, decision.reason
    breach, health_numbers = _guardrails(state, model_cfg, health, now)
    elapsed_hours = (now - datetime.fromisoformat(state.started_at)).total_seconds() / 3600
    if breach:
        action, reason = "rollback", f"guardrail breached: {breach}"
    elif action == "continue" and elapsed_hours > model_cfg.rollout_max_hours:
        action, reason = "stop_no_difference", f"no decision after {elapsed_hours:.1f} h (maximum duration)"
    look = {"at": now.isoformat(timespec="seconds"), **decision.to_dict(), "metric": model_cfg.rollout_metric,
            "champion": state.champion, "action": action, "reason": reason, "health": health_numbers}
    registry.record_look(state.model, state.challenger, look)
    who = f"rollout:{lock_owner}"
    if action == "promote":
        lifecycle.promote(state.model, who=who, why=reason, lock_owner=lock_owner)
    elif action in ("rollback", "stop_no_difference"):
        lifecycle.rollback(state.model, who=who, why=reason, lock_owner=lock_owner)
        action = "rollback"
    else:
        registry.release_lock(state.model, lock_owner)
    return {**state.model_dump(), "test": test.to_dict(), "looks": state.looks + 1,
            "history": [*state.history[-49:], look], "action": action, "reason": reason,
            "wait_seconds": model_cfg.rollout_interval_seconds}


def start_rollout(sfn: Any, state_machine_arn: str, *, model: str, champion: int, challenger: int) -> str:
    """One rollout execution per challenger version (a replayed register does not start a second)."""
    state = RolloutState(model=model, champion=champion, challenger=challenger,
                         started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    try:
        started = sfn.start_execution(stateMachineArn=state_machine_arn, name=rollout_name(model, challenger),
                                      input=state.model_dump_json())
    except sfn.exceptions.ExecutionAlreadyExists:
        return f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{rollout_name(model, challenger)}"
    return str(started["executionArn"])

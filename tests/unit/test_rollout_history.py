"""The rollout's Step Functions history, counted from the ASL itself: a standard execution fails at 25,000 events (its
Catch does not run), so the looks one execution makes (mlops.release.rollout.MAX_LOOKS_PER_EXECUTION) times the events
of a look at its worst (every retry taken) must stay well under it, with the execution's start and hand-over."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops.aws import platform
from mlops.core.errors import ConfigError
from mlops.release import rollout

ASL: dict[str, Any] = json.loads(platform.ROLLOUT_ASL.read_text())
STATES: dict[str, dict[str, Any]] = ASL["States"]
DEFAULT_MAX_ATTEMPTS = 3  # a retrier without MaxAttempts (the States Language's default)


def events(name: str, *, retried: bool) -> int:
    """The history events one pass through a state adds: entered and exited, and for a task its attempts (a Lambda
    function: scheduled, started, succeeded/failed/timed out; another integration: scheduled, started, submitted,
    succeeded/failed), every retry taken when ``retried``."""
    state = STATES[name]
    if state["Type"] != "Task":
        return 2
    retries = sum(r.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS) for r in state.get("Retry", [])) if retried else 0
    per_attempt = 4 if state["Resource"].startswith("arn:aws:states:::") else 3
    return 2 + per_attempt * (1 + retries)


def successors(name: str) -> list[str]:
    state = STATES[name]
    out = [state["Next"]] if "Next" in state else []
    out += [c["Next"] for c in state.get("Choices", [])] + ([state["Default"]] if "Default" in state else [])
    return out + [c["Next"] for c in state.get("Catch", [])]


def loops(start: str) -> list[list[str]]:
    """Every simple cycle through ``start``: the ways one look leads to the next within an execution."""
    found, stack = [], [[start]]
    while stack:
        path = stack.pop()
        for nxt in successors(path[-1]):
            if nxt == start:
                found.append(path)
            elif nxt not in path:
                stack.append([*path, nxt])
    return found


def longest_to_end(name: str, seen: tuple[str, ...] = ()) -> int:
    """The most events from entering ``name`` to the end of the execution without looking again."""
    if name == ASL["StartAt"] and seen:
        return -1  # back to a look: not an end
    ends = [longest_to_end(n, (*seen, name)) for n in successors(name) if n not in seen]
    reachable = [e for e in ends if e >= 0]
    terminal = not successors(name) or STATES[name].get("End", False)
    if not reachable and not terminal:
        return -1
    return events(name, retried=True) + max([*reachable, 1 if terminal else 0])  # 1: ExecutionSucceeded/Failed


def test_one_look_costs_what_mlops_rollout_says() -> None:
    [look] = loops(ASL["StartAt"])
    assert look == ["Analyze", "Decide", "WaitForData"]
    assert sum(events(s, retried=False) for s in look) == rollout.EVENTS_PER_LOOK == 9
    assert sum(events(s, retried=True) for s in look) == rollout.WORST_EVENTS_PER_LOOK == 18


def test_an_executions_looks_stay_within_half_the_history_at_worst() -> None:
    worst_look = max(sum(events(s, retried=True) for s in loop) for loop in loops(ASL["StartAt"]))
    # ExecutionStarted, the looks, then the way out that costs most: a last look, retried to the end, and its end
    ending = longest_to_end(ASL["StartAt"])
    assert ending == 14 + 2 + 2 + 1
    worst = 1 + rollout.MAX_LOOKS_PER_EXECUTION * worst_look + ending
    assert rollout.MAX_LOOKS_PER_EXECUTION * worst_look <= rollout.HISTORY_LIMIT // 2
    assert worst < rollout.HISTORY_LIMIT == 25_000
    assert rollout.MAX_LOOKS_PER_EXECUTION >= 500  # at 300 s a look, two days per execution and more


def test_a_continued_rollout_ends_its_execution_after_the_look_that_started_the_next() -> None:
    [keep_looking, continued] = STATES["Decide"]["Choices"]
    assert (keep_looking["StringEquals"], keep_looking["Next"]) == ("continue", "WaitForData")
    assert continued["StringEquals"] == "continued"
    assert STATES[continued["Next"]]["Type"] == "Succeed"
    # the look gets the state machine it runs in: the next execution is one of the same state machine
    assert STATES["Analyze"]["Parameters"] == {"state.$": "$", "state_machine.$": "$$.StateMachine.Id"}


@pytest.mark.parametrize(("interval", "looks"), [(1, 694), (300, 694), (86400, 182), (15_768_000, 1)])
def test_an_execution_also_ends_well_within_a_year(interval: int, looks: int) -> None:
    assert rollout.looks_per_execution(interval) == looks
    assert looks * interval <= 365 * 24 * 3600 // 2


def test_the_cap_can_be_lowered_never_raised() -> None:
    assert rollout.looks_per_execution(300, "3") == 3
    assert rollout.looks_per_execution(300, "100000") == rollout.MAX_LOOKS_PER_EXECUTION
    with pytest.raises(ConfigError, match=f"{rollout.MAX_LOOKS_VARIABLE}='0' is not a whole number"):
        rollout.looks_per_execution(300, "0")

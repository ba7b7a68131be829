"""The A/B statistics, proven by simulation: the planning matches statsmodels, the sequential test
keeps its type-I error under a look after every batch (a naive z-test does not), reaches the planned
power at the inflated horizon, and rolls back (not promotes) a worse challenger.

Data are drawn for all replicates at once (numpy, fixed seeds); each replicate is then fed through the
real `SequentialTest` look by look, because the decision logic is what must be proven.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from mlops.release.abtest import (
    Decision,
    SequentialTest,
    expected_duration,
    guardrail_breached,
    plan_two_proportions,
    ratio_from_weight,
    sequential_inflation,
)

ALPHA = 0.05
CANARY = ratio_from_weight(0.1)  # 0.1 / 0.9


def mc_se(p: float, reps: int) -> float:
    return math.sqrt(p * (1 - p) / reps)


def cumulative_counts(
    rng: np.random.Generator, p_c: float, p_t: float, reps: int, looks: int, batch_c: int, batch_t: int
) -> tuple[np.ndarray, np.ndarray]:
    return (
        rng.binomial(batch_c, p_c, size=(reps, looks)).cumsum(axis=1),
        rng.binomial(batch_t, p_t, size=(reps, looks)).cumsum(axis=1),
    )


def run_replicates(
    make: Callable[[], SequentialTest], succ_c: np.ndarray, succ_t: np.ndarray, batch_c: int, batch_t: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each replicate looks after every batch until the test stops; returns final actions and stop looks."""
    actions, stops = [], []
    for sc, st in zip(succ_c.tolist(), succ_t.tolist(), strict=True):
        test = make()
        for k, (c, t) in enumerate(zip(sc, st, strict=True), start=1):
            decision = test.update(c, batch_c * k, t, batch_t * k)
            if decision.action != "continue":
                break
        actions.append(decision.action)
        stops.append(k)
    return np.array(actions), np.array(stops)


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


def test_plan_matches_statsmodels_on_a_grid() -> None:
    pytest.importorskip("statsmodels", reason="statsmodels is the reference implementation of the power analysis")
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    solver = NormalIndPower()
    checked, worst = 0, 0.0
    for baseline in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
        for mde in (-0.2, -0.1, -0.05, -0.02, -0.01, 0.01, 0.02, 0.05, 0.1, 0.2):
            if not 0 < baseline + mde < 1:
                continue
            for alpha in (0.01, 0.05, 0.1):
                for power in (0.8, 0.9):
                    for ratio in (1.0, CANARY):
                        plan = plan_two_proportions(baseline, mde, alpha, power, ratio)
                        expected = solver.solve_power(
                            effect_size=proportion_effectsize(baseline + mde, baseline),
                            alpha=alpha,
                            power=power,
                            ratio=ratio,
                            alternative="two-sided",
                        )
                        rel = abs(plan.n_exact - expected) / expected
                        worst = max(worst, rel)
                        assert rel < 0.01, (baseline, mde, alpha, power, ratio, plan.n_exact, expected)
                        assert plan.n_per_arm == plan.n_control == math.ceil(plan.n_exact - 1e-9)
                        assert plan.n_treatment == math.ceil(plan.n_exact * ratio - 1e-9)
                        checked += 1
    assert checked > 600
    assert worst < 1e-6  # same formula, solved exactly: far inside the 1% asked for


def test_one_sided_plan_matches_statsmodels() -> None:
    pytest.importorskip("statsmodels", reason="statsmodels is the reference implementation of the power analysis")
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    for baseline, mde in ((0.1, 0.02), (0.5, -0.05), (0.8, 0.1)):
        plan = plan_two_proportions(baseline, mde, two_sided=False)
        expected = NormalIndPower().solve_power(
            effect_size=abs(proportion_effectsize(baseline + mde, baseline)),
            alpha=0.05,
            power=0.8,
            ratio=1.0,
            alternative="larger",
        )
        assert plan.n_exact == pytest.approx(expected, rel=1e-6)


def test_plan_fields_and_known_value() -> None:
    plan = plan_two_proportions(0.3, 0.05)
    # (1.95996 + 0.84162)^2 * 2 / h^2 with h = 2 asin(sqrt(.35)) - 2 asin(sqrt(.3)) = 0.10682
    assert plan.n_per_arm == plan.n_control == plan.n_treatment == 1376
    assert plan.effect_size == pytest.approx(0.106824, abs=1e-6)
    assert plan.n_total == 2752
    assert json.loads(json.dumps(plan.to_dict()))["n_total"] == 2752
    canary = plan_two_proportions(0.3, 0.05, ratio=CANARY)
    # a test sees n_eff = 1/(1/n_c + 1/n_t); at a fixed n_eff the total grows as 1/(w(1-w)): a 10% canary
    # needs 0.25/0.09 = 2.78x the 50/50 total
    assert canary.n_treatment < canary.n_control
    assert canary.n_total / plan.n_total == pytest.approx(0.25 / 0.09, rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": 0.0, "mde": 0.1}, "baseline"),
        ({"baseline": 1.2, "mde": 0.1}, "baseline"),
        ({"baseline": 0.95, "mde": 0.05}, "baseline \\+ mde"),
        ({"baseline": 0.05, "mde": -0.06}, "baseline \\+ mde"),
        ({"baseline": 0.5, "mde": 0.0}, "mde"),
        ({"baseline": 0.5, "mde": 0.1, "alpha": 0.0}, "alpha"),
        ({"baseline": 0.5, "mde": 0.1, "alpha": 1.0}, "alpha"),
        ({"baseline": 0.5, "mde": 0.1, "power": 1.0}, "power"),
        ({"baseline": 0.5, "mde": 0.1, "power": -0.1}, "power"),
        ({"baseline": 0.5, "mde": 0.1, "ratio": 0.0}, "ratio"),
    ],
)
def test_plan_rejects_out_of_range_inputs(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_two_proportions(**kwargs)  # type: ignore[arg-type]


def test_expected_duration() -> None:
    plan = plan_two_proportions(0.3, 0.05)  # 1376 per arm
    # 50/50 plan run as a 10% canary at 1000 feedback/h: the challenger arm gets 100/h
    assert expected_duration(plan, 1000.0, 0.1) == pytest.approx(13.76)
    assert expected_duration(plan, 1000.0, 0.5) == pytest.approx(2.752)
    assert expected_duration(5000, 1000.0, 0.1) == pytest.approx(5.0)
    assert expected_duration(plan, 0.0, 0.1) == math.inf
    with pytest.raises(ValueError, match="challenger_weight"):
        expected_duration(plan, 10.0, 1.0)
    with pytest.raises(ValueError, match="observed_rate_per_hour"):
        expected_duration(plan, -1.0, 0.5)


def test_inflation_factor() -> None:
    k = sequential_inflation(plan_two_proportions(0.3, 0.05))
    assert 1.85 < k < 2.0
    # more power needs relatively less inflation, a looser alpha more (the 1/alpha boundary vs z_alpha/2)
    assert sequential_inflation(plan_two_proportions(0.3, 0.05, power=0.9)) < k
    assert sequential_inflation(plan_two_proportions(0.3, 0.05, alpha=0.1)) > k


# --------------------------------------------------------------------------------------------------
# Type-I error under continuous monitoring
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "seed"), [(0.7, 11), (0.3, 12)])
def test_aa_type_one_error_with_a_look_after_every_batch(rate: float, seed: int) -> None:
    reps, looks, batch = 2000, 50, 100
    succ_c, succ_t = cumulative_counts(np.random.default_rng(seed), rate, rate, reps, looks, batch, batch)
    actions, _ = run_replicates(
        lambda: SequentialTest(alpha=ALPHA, mde=0.05, max_samples_per_arm=looks * batch, min_samples_per_arm=batch),
        succ_c,
        succ_t,
        batch,
        batch,
    )
    rejected = np.isin(actions, ["promote", "rollback"]).mean()
    assert rejected <= ALPHA + 3 * mc_se(ALPHA, reps), rejected  # measured: 0.018 (0.7), 0.020 (0.3)
    assert set(actions) <= {"promote", "rollback", "stop_no_difference"}  # every replicate reached the end


def test_naive_z_test_at_every_look_inflates_type_one_error() -> None:
    """Why the mSPRT is needed: the fixed-horizon z-test, peeked at 50 times, rejects far more than 5%."""
    reps, looks, batch = 2000, 50, 100
    succ_c, succ_t = cumulative_counts(np.random.default_rng(13), 0.3, 0.3, reps, looks, batch, batch)
    n = batch * np.arange(1, looks + 1)
    rate_c, rate_t = succ_c / n, succ_t / n
    se = np.sqrt(rate_c * (1 - rate_c) / n + rate_t * (1 - rate_t) / n)
    z = (rate_t - rate_c) / se
    ever = (np.abs(z) > 1.959964).any(axis=1).mean()
    at_end = (np.abs(z[:, -1]) > 1.959964).mean()
    assert at_end <= ALPHA + 3 * mc_se(ALPHA, reps)  # looked at once, the z-test is fine
    assert ever > 4 * ALPHA, ever  # measured: 0.315


def test_aa_type_one_error_for_means() -> None:
    reps, looks, batch = 1000, 30, 100
    rng = np.random.default_rng(14)
    # skewed rewards (exponential): the normal approximation must still hold
    x_c = rng.exponential(2.0, size=(reps, looks * batch)).reshape(reps, looks, batch)
    x_t = rng.exponential(2.0, size=(reps, looks * batch)).reshape(reps, looks, batch)
    n = batch * np.arange(1, looks + 1)

    def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s1, s2 = x.sum(axis=2).cumsum(axis=1), (x**2).sum(axis=2).cumsum(axis=1)
        mean = s1 / n
        return mean, (s2 - n * mean**2) / (n - 1)

    (m_c, v_c), (m_t, v_t) = moments(x_c), moments(x_t)
    rejected = 0
    for r in range(reps):
        test = SequentialTest(mde=0.2, max_samples_per_arm=looks * batch)
        for k in range(looks):
            d = test.update_means(m_c[r, k], v_c[r, k], int(n[k]), m_t[r, k], v_t[r, k], int(n[k]))
            if d.action != "continue":
                break
        rejected += d.action in ("promote", "rollback")
    assert rejected / reps <= ALPHA + 3 * mc_se(ALPHA, reps), rejected / reps  # measured: 0.017


# --------------------------------------------------------------------------------------------------
# Power and direction
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "batch_c", "batch_t", "reps", "seed"),
    [(1.0, 100, 100, 2000, 21), (CANARY, 225, 25, 1000, 22)],
    ids=["50-50", "canary-10pct"],
)
def test_power_at_the_inflated_horizon(ratio: float, batch_c: int, batch_t: int, reps: int, seed: int) -> None:
    plan = plan_two_proportions(0.3, 0.05, alpha=ALPHA, power=0.8, ratio=ratio)
    make = lambda: SequentialTest.from_plan(plan)  # noqa: E731 - horizon = sequential_inflation(plan) x plan
    horizon = make().max_samples_per_arm
    assert horizon == math.ceil(sequential_inflation(plan) * plan.n_treatment)
    looks = math.ceil(horizon / batch_t)
    succ_c, succ_t = cumulative_counts(np.random.default_rng(seed), 0.3, 0.35, reps, looks, batch_c, batch_t)
    actions, stops = run_replicates(make, succ_c, succ_t, batch_c, batch_t)
    promoted = (actions == "promote").mean()
    assert promoted >= plan.power - 3 * mc_se(plan.power, reps), promoted  # measured: 0.854 / 0.869
    assert (actions == "rollback").mean() < 0.005
    # It stops early when it can: on average far below the horizon, near the fixed-horizon size.
    assert stops.mean() * batch_t < 0.75 * horizon


def test_worse_challenger_is_rolled_back_not_promoted() -> None:
    reps, looks, batch = 500, 40, 100
    succ_c, succ_t = cumulative_counts(np.random.default_rng(31), 0.3, 0.25, reps, looks, batch, batch)
    actions, _ = run_replicates(
        lambda: SequentialTest(mde=0.05, max_samples_per_arm=looks * batch), succ_c, succ_t, batch, batch
    )
    decided = np.isin(actions, ["promote", "rollback"])
    assert decided.mean() > 0.8
    assert (actions[decided] == "rollback").mean() >= 0.95


def test_means_variant_detects_a_better_reward() -> None:
    rng = np.random.default_rng(41)
    test = SequentialTest(mde=0.1, max_samples_per_arm=100_000)
    s_c = s_t = 0.0
    q_c = q_t = 0.0
    for k in range(1, 200):
        c, t = rng.normal(1.0, 1.0, 200), rng.normal(1.15, 1.0, 200)
        s_c, s_t, q_c, q_t = s_c + c.sum(), s_t + t.sum(), q_c + (c**2).sum(), q_t + (t**2).sum()
        n = 200 * k
        m_c, m_t = s_c / n, s_t / n
        d = test.update_means(m_c, (q_c - n * m_c**2) / (n - 1), n, m_t, (q_t - n * m_t**2) / (n - 1), n)
        if d.action != "continue":
            break
    assert d.action == "promote"
    assert d.lower > 0
    assert d.lower < 0.15 < d.upper


# --------------------------------------------------------------------------------------------------
# The always-valid p-value, the confidence sequence, the state
# --------------------------------------------------------------------------------------------------


def feed(test: SequentialTest, succ_c: list[int], succ_t: list[int], batch: int) -> list[Decision]:
    return [test.update(c, batch * k, t, batch * k) for k, (c, t) in enumerate(zip(succ_c, succ_t, strict=True), 1)]


def test_p_value_is_monotone_and_the_confidence_sequence_only_shrinks() -> None:
    succ_c, succ_t = cumulative_counts(np.random.default_rng(51), 0.5, 0.52, 20, 60, 100, 100)
    for sc, st in zip(succ_c.tolist(), succ_t.tolist(), strict=True):
        decisions = feed(SequentialTest(mde=0.03, max_samples_per_arm=10**6), sc, st, 100)
        p = [d.p_value for d in decisions]
        assert all(b <= a for a, b in itertools.pairwise(p))
        assert all(b.lower >= a.lower and b.upper <= a.upper for a, b in itertools.pairwise(decisions))
        for d in decisions:
            # one mixture: significant exactly when 0 has left the confidence sequence
            assert (d.p_value <= ALPHA) == (d.lower > 0 or d.upper < 0)
            assert d.boundary == pytest.approx(math.log(1 / ALPHA))
            assert (d.action in ("promote", "rollback")) == (d.p_value <= ALPHA)


def test_state_round_trips_through_json_between_looks() -> None:
    succ_c, succ_t = cumulative_counts(np.random.default_rng(61), 0.4, 0.45, 1, 40, 100, 100)
    sc, st = succ_c[0].tolist(), succ_t[0].tolist()
    reference = feed(SequentialTest(mde=0.05, max_samples_per_arm=4000), sc, st, 100)
    state = SequentialTest(mde=0.05, max_samples_per_arm=4000).to_dict()
    replayed = []
    for k, (c, t) in enumerate(zip(sc, st, strict=True), start=1):
        test = SequentialTest.from_dict(json.loads(json.dumps(state, allow_nan=False)))
        replayed.append(test.update(c, 100 * k, t, 100 * k))
        state = test.to_dict()
    assert replayed == reference
    assert state["looks"] == 40
    json.dumps(reference[-1].to_dict(), allow_nan=False)


def test_burn_in_and_horizon() -> None:
    test = SequentialTest(mde=0.05, max_samples_per_arm=300, min_samples_per_arm=100)
    first = test.update(0, 50, 50, 50)  # a huge difference, but too early to count
    assert first.action == "continue"
    assert first.p_value == 1.0
    assert "burn-in" in first.reason
    assert test.update(30, 100, 30, 100).action == "continue"
    last = test.update(90, 300, 90, 300)
    assert last.action == "stop_no_difference"
    assert "keep the champion" in last.reason


def test_canary_horizon_counts_the_smaller_arm() -> None:
    test = SequentialTest(mde=0.05, max_samples_per_arm=500)
    assert test.update(1350, 4500, 150, 500).action == "stop_no_difference"
    test = SequentialTest(mde=0.05, max_samples_per_arm=500)
    assert test.update(1350, 4500, 120, 400).action == "continue"


def test_margin_turns_into_a_futility_stop_when_negative() -> None:
    # equal arms, lots of data: not significant, but the challenger cannot be 3 points better
    args = (3000, 10_000, 3000, 10_000)
    assert SequentialTest(mde=0.05, max_samples_per_arm=10**6).update(*args).action == "continue"
    d = SequentialTest(mde=0.05, max_samples_per_arm=10**6, non_inferiority_margin=-0.03).update(*args)
    assert d.action == "rollback"
    assert d.upper < 0.03


def test_invalid_updates_are_refused() -> None:
    test = SequentialTest(mde=0.05, max_samples_per_arm=1000)
    with pytest.raises(ValueError, match="successes"):
        test.update(11, 10, 0, 10)
    test.update(50, 200, 50, 200)
    with pytest.raises(ValueError, match="cumulative"):
        test.update(10, 100, 50, 200)
    with pytest.raises(ValueError, match="mix"):
        test.update_means(0.1, 1.0, 300, 0.1, 1.0, 300)
    with pytest.raises(ValueError, match="tau"):
        SequentialTest(max_samples_per_arm=1000)
    with pytest.raises(ValueError, match="max_samples_per_arm"):
        SequentialTest(mde=0.05, max_samples_per_arm=10)
    with pytest.raises(ValueError, match="version"):
        SequentialTest.from_dict({**test.to_dict(), "version": 99})


# --------------------------------------------------------------------------------------------------
# Guardrails
# --------------------------------------------------------------------------------------------------


def test_guardrails() -> None:
    assert guardrail_breached(0.01, 0.005, 120.0, 100.0) is None
    reason = guardrail_breached(0.03, 0.01, 100.0, 100.0)
    assert reason is not None
    assert "error rate" in reason
    reason = guardrail_breached(0.01, 0.01, 160.0, 100.0)
    assert reason is not None
    assert "p95" in reason
    both = guardrail_breached(0.05, 0.0, 400.0, 100.0)
    assert both is not None
    assert "error rate" in both
    assert "p95" in both
    # too few requests to judge; a missing metric is not judged
    assert guardrail_breached(0.5, 0.0, 900.0, 100.0, challenger_requests=20, min_requests=200) is None
    assert guardrail_breached(0.5, 0.0, 900.0, 100.0, challenger_requests=200, min_requests=200) is not None
    assert guardrail_breached(None, 0.0, float("nan"), 100.0) is None
    assert guardrail_breached(0.02, 0.0, 100.0, 100.0, max_error_rate_increase=0.05) is None

"""Statistics of the A/B rollout: sample-size planning, an always-valid sequential test, guardrails.

The `live` alias splits traffic between the champion (control) and the challenger (treatment); the
rollout state machine looks at the cumulative feedback after every batch and must decide promote,
roll back or continue. Looking repeatedly at an ordinary fixed-horizon z-test inflates its type-I
error (50 looks at alpha=0.05 reject a true null about a third of the time), so the decision uses a
test whose guarantee holds at *every* look.

Method: mixture sequential probability ratio test (mSPRT), Johari, Koomen, Pekelis & Walsh, "Always
Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3), 2022 (arXiv:1512.04922).
The difference ``theta = rate_treatment - rate_control`` is estimated by ``d`` with variance
``V = var_c/n_c + var_t/n_t`` (normal approximation; unpooled plug-in variances, a Bernoulli rate
smoothed by half a success so that 0/n and n/n keep a non-zero variance). Mixing the likelihood ratio
of ``N(theta, V)`` against ``N(theta0, V)`` over ``theta ~ N(theta0, tau^2)`` gives

    Lambda(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2)))

which is a non-negative martingale under ``theta = theta0``; by Ville's inequality it exceeds 1/alpha
at *any* look with probability at most alpha. Hence

* the always-valid p-value ``p_n = min(p_{n-1}, 1 / Lambda_n(0))`` (non-increasing over looks), and
* the confidence sequence ``{theta0 : Lambda_n(theta0) < 1/alpha}`` = ``d +- h_n`` with
  ``h_n = sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))``, intersected over
  looks (so it only shrinks).

``p_n <= alpha`` exactly when 0 has left the confidence sequence, so the p-value and the interval can
never disagree about a decision. The state reported is log(Lambda) (`statistic`) against log(1/alpha)
(`boundary`): the likelihood ratio itself overflows a float once the evidence is overwhelming.

Choices and their reasons:

* ``tau`` (the mixing standard deviation, tau^2 the mixing variance) defaults to the planned minimum
  detectable effect: the mixture then puts its weight on effects of the size we care about. It is in
  the units of the difference (a rate, or the reward's units for `update_means`).
* Always-valid inference is paid for in sample size. `sequential_inflation` computes the factor k by
  which the fixed-horizon sample size of `plan_two_proportions` must grow for the mSPRT, stopped at
  ``k * n``, to reach the planned power: it solves ``P(d_N - h_N > 0) = power`` at the horizon, which
  ignores the chance of crossing earlier and so errs on the safe side. For alpha=0.05, power=0.8 and
  tau = mde it is about 1.9-2.0 (the unit tests measure the power this buys by simulation); the test
  also stops *early* when the effect is larger than planned, so the expected duration is shorter.
* A burn-in (`min_samples_per_arm`) keeps the first looks, where the plug-in variance and the normal
  approximation are least trustworthy, from counting.
* Unequal allocation (a canary at 10%) only changes V; `max_samples_per_arm` is reached when *every*
  arm holds that many samples, i.e. it counts the smaller arm.
* Rolling back: significance in the wrong direction, or the confidence sequence's upper bound below
  ``-non_inferiority_margin``. Because the p-value and the interval come from the same mixture, with a
  margin >= 0 the second rule is implied by the first; a negative margin (e.g. -0.005) turns it into a
  futility stop ("the challenger cannot be better by 0.5 points any more").
* Guardrails (errors, latency) are plain thresholds on observed rates, not inference: they are a
  safety stop that must act fast and be easy to explain.

Only `math`/`statistics` from the standard library are used, so the rollout Lambda needs no scipy.
Every returned value is JSON-friendly via `to_dict` (infinite bounds become ``None``).

Why one module of this length: the planning, the test and its confidence sequence share the mixture's
variance and tau choices, and the proof sketch above covers all three; apart, a change to one could quietly
break the guarantee the other relies on.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

__all__ = [
    "Decision",
    "Plan",
    "SequentialTest",
    "expected_duration",
    "guardrail_breached",
    "plan_schedule",
    "plan_two_proportions",
    "ratio_from_weight",
    "sequential_inflation",
]

Action = Literal["continue", "promote", "rollback", "stop_no_difference"]

_N = NormalDist()
_STATE_VERSION = 1


def _check_open_unit(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Fixed-horizon sample size for comparing two proportions (Cohen's h, arcsine transform).

    ``ratio`` is n_treatment / n_control. ``n_per_arm`` is the control arm's size (statsmodels'
    ``nobs1``); with ratio 1 both arms hold it. ``n_exact`` is the unrounded control size.
    """

    baseline: float
    mde: float
    alpha: float
    power: float
    ratio: float
    two_sided: bool
    effect_size: float
    n_exact: float
    n_per_arm: int
    n_control: int
    n_treatment: int

    @property
    def n_total(self) -> int:
        return self.n_control + self.n_treatment

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_total": self.n_total}


def ratio_from_weight(challenger_weight: float) -> float:
    """Allocation ratio treatment/control of an alias that sends `challenger_weight` to the challenger."""
    _check_open_unit("challenger_weight", challenger_weight)
    return challenger_weight / (1.0 - challenger_weight)


def _power_two_sided(x: float, z: float) -> float:
    # Both tails count, as in statsmodels' normal_power: a two-sided test also "detects" an effect of
    # the wrong sign, which matters only for tiny effects but keeps the two solvers in agreement.
    return _N.cdf(x - z) + _N.cdf(-x - z)


def plan_two_proportions(
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    two_sided: bool = True,
) -> Plan:
    """Samples needed to detect ``baseline -> baseline + mde`` with the given alpha and power.

    Uses Cohen's ``h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p0))``, whose variance does not depend on the
    rates, so the result matches ``NormalIndPower().solve_power(proportion_effectsize(p1, p0), ...)``.
    """
    _check_open_unit("baseline", baseline)
    _check_open_unit("alpha", alpha)
    _check_open_unit("power", power)
    if not isinstance(mde, int | float) or mde == 0 or not math.isfinite(mde):
        raise ValueError(f"mde must be a non-zero finite difference of rates, got {mde!r}")
    target = baseline + mde
    if not 0.0 < target < 1.0:
        raise ValueError(f"baseline + mde must lie strictly between 0 and 1, got {baseline} + {mde} = {target}")
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio (n_treatment / n_control) must be a positive number, got {ratio!r}")
    h = 2.0 * math.asin(math.sqrt(target)) - 2.0 * math.asin(math.sqrt(baseline))
    if two_sided:
        z = _N.inv_cdf(1.0 - alpha / 2.0)
        if power <= alpha:
            raise ValueError(f"power ({power}) must exceed alpha ({alpha})")
        # Solve the two-tailed power equation for x = |h| sqrt(n_eff) by Newton from the one-tail root.
        x = z + _N.inv_cdf(power)
        for _ in range(50):
            step = (_power_two_sided(x, z) - power) / (_N.pdf(x - z) - _N.pdf(-x - z))
            x -= step
            if abs(step) < 1e-12:
                break
    else:
        x = _N.inv_cdf(1.0 - alpha) + _N.inv_cdf(power)
    # n_eff = 1 / (1/n_c + 1/n_t) = n_c / (1 + 1/ratio)
    n_exact = (x / abs(h)) ** 2 * (1.0 + 1.0 / ratio)
    n_control = math.ceil(n_exact - 1e-9)
    n_treatment = math.ceil(n_exact * ratio - 1e-9)
    return Plan(
        baseline=float(baseline),
        mde=float(mde),
        alpha=float(alpha),
        power=float(power),
        ratio=float(ratio),
        two_sided=two_sided,
        effect_size=h,
        n_exact=n_exact,
        n_per_arm=n_control,
        n_control=n_control,
        n_treatment=n_treatment,
    )


def expected_duration(n_needed_total: int | Plan, observed_rate_per_hour: float, challenger_weight: float) -> float:
    """Hours until the test has the samples it needs, at the observed feedback rate (both arms together).

    Given a `Plan`, each arm fills at its own share of the traffic and the slower arm sets the pace, so
    a plan made for a 50/50 split but run as a 10% canary is timed correctly. Given a plain total, the
    total is assumed to be split like the traffic (a plan with ``ratio = ratio_from_weight(weight)``).
    Returns ``inf`` when no feedback arrives.
    """
    _check_open_unit("challenger_weight", challenger_weight)
    if not (math.isfinite(observed_rate_per_hour) and observed_rate_per_hour >= 0):
        raise ValueError(f"observed_rate_per_hour must be a finite number >= 0, got {observed_rate_per_hour!r}")
    if observed_rate_per_hour == 0:
        return math.inf
    if isinstance(n_needed_total, Plan):
        return max(
            n_needed_total.n_treatment / (observed_rate_per_hour * challenger_weight),
            n_needed_total.n_control / (observed_rate_per_hour * (1.0 - challenger_weight)),
        )
    if n_needed_total < 0:
        raise ValueError(f"n_needed_total must be >= 0, got {n_needed_total}")
    return n_needed_total / observed_rate_per_hour


# --------------------------------------------------------------------------------------------------
# The mixture SPRT
# --------------------------------------------------------------------------------------------------


def _log_mixture_lr(diff: float, var: float, tau2: float) -> float:
    return 0.5 * math.log(var / (var + tau2)) + tau2 * diff * diff / (2.0 * var * (var + tau2))


def _half_width(var: float, tau2: float, alpha: float) -> float:
    return math.sqrt(var * (var + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + math.log((var + tau2) / var)))


def sequential_inflation(plan: Plan, tau: float | None = None) -> float:
    """Factor k such that the mSPRT stopped at ``k * plan`` samples reaches ``plan.power`` (conservatively).

    Solves ``(|mde| - h(V/k)) / sqrt(V/k) = z_power``, V the variance of the difference at the plan's
    rates and sizes, h the confidence-sequence half-width: the probability of being outside the
    sequence *at the horizon*, a lower bound of the probability of having left it by then.
    """
    theta = abs(plan.mde)
    tau2 = (theta if tau is None else tau) ** 2
    p0, p1 = plan.baseline, plan.baseline + plan.mde
    var1 = p0 * (1 - p0) / plan.n_exact + p1 * (1 - p1) / (plan.n_exact * plan.ratio)
    z_beta = _N.inv_cdf(plan.power)

    def margin(k: float) -> float:
        var = var1 / k
        return (theta - _half_width(var, tau2, plan.alpha)) / math.sqrt(var) - z_beta

    lo, hi = 0.25, 1.0
    while margin(hi) < 0:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise ValueError("no finite inflation reaches the planned power (is tau far from the mde?)")
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if margin(mid) < 0 else (lo, mid)
    return hi


@dataclass(frozen=True)
class Decision:
    """One look's verdict. `lower`/`upper` bound treatment - control; `statistic` is log(Lambda(0))."""

    action: Action
    p_value: float
    lower: float
    upper: float
    n_control: int
    n_treatment: int
    rate_control: float
    rate_treatment: float
    boundary: float
    statistic: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("lower", "upper", "statistic"):
            out[key] = _json_float(out[key])
        return out


class SequentialTest:
    """Always-valid two-arm test, fed cumulative totals after every batch.

    One instance tests one metric: either proportions (`update`, successes out of n) or means
    (`update_means`, e.g. a mean reward with its sample variance); the first update fixes which, and
    mixing them raises. The state is plain data (`to_dict`/`from_dict`) so a Lambda can keep it in
    the rollout's Step Functions payload or a table between looks.
    """

    def __init__(
        self,
        *,
        max_samples_per_arm: int,
        alpha: float = 0.05,
        tau: float | None = None,
        mde: float | None = None,
        min_samples_per_arm: int = 100,
        non_inferiority_margin: float = 0.0,
    ) -> None:
        _check_open_unit("alpha", alpha)
        if tau is None:
            if mde is None or mde == 0 or not math.isfinite(mde):
                raise ValueError("give tau (mixing standard deviation) or a non-zero planned mde to derive it from")
            tau = abs(mde)
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a positive finite number, got {tau!r}")
        if min_samples_per_arm < 2:
            raise ValueError(f"min_samples_per_arm must be >= 2, got {min_samples_per_arm}")
        if max_samples_per_arm < min_samples_per_arm:
            raise ValueError(
                f"max_samples_per_arm ({max_samples_per_arm}) must be >= min_samples_per_arm ({min_samples_per_arm})"
            )
        if not math.isfinite(non_inferiority_margin):
            raise ValueError(f"non_inferiority_margin must be finite, got {non_inferiority_margin!r}")
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.max_samples_per_arm = int(max_samples_per_arm)
        self.min_samples_per_arm = int(min_samples_per_arm)
        self.non_inferiority_margin = float(non_inferiority_margin)
        self.kind: Literal["proportion", "mean"] | None = None
        self.looks = 0
        self.p_value = 1.0
        self.lower = -math.inf
        self.upper = math.inf
        self.n_control = 0
        self.n_treatment = 0

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        *,
        inflation: float | None = None,
        tau: float | None = None,
        min_samples_per_arm: int = 100,
        non_inferiority_margin: float = 0.0,
    ) -> SequentialTest:
        """A test with the plan's alpha, tau = |mde| and a horizon of ``inflation`` times the plan's arms."""
        k = sequential_inflation(plan, tau) if inflation is None else inflation
        horizon = math.ceil(k * min(plan.n_control, plan.n_treatment))
        return cls(
            alpha=plan.alpha,
            tau=tau,
            mde=plan.mde,
            max_samples_per_arm=max(horizon, min_samples_per_arm),
            min_samples_per_arm=min_samples_per_arm,
            non_inferiority_margin=non_inferiority_margin,
        )

    @property
    def tau2(self) -> float:
        return self.tau * self.tau

    @property
    def boundary(self) -> float:
        return math.log(1.0 / self.alpha)

    # -- state ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "alpha": self.alpha,
            "tau": self.tau,
            "max_samples_per_arm": self.max_samples_per_arm,
            "min_samples_per_arm": self.min_samples_per_arm,
            "non_inferiority_margin": self.non_inferiority_margin,
            "kind": self.kind,
            "looks": self.looks,
            "p_value": self.p_value,
            "lower": _json_float(self.lower),
            "upper": _json_float(self.upper),
            "n_control": self.n_control,
            "n_treatment": self.n_treatment,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SequentialTest:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported SequentialTest state version {state.get('version')!r}")
        test = cls(
            alpha=state["alpha"],
            tau=state["tau"],
            max_samples_per_arm=state["max_samples_per_arm"],
            min_samples_per_arm=state["min_samples_per_arm"],
            non_inferiority_margin=state["non_inferiority_margin"],
        )
        if state["kind"] not in (None, "proportion", "mean"):
            raise ValueError(f"unknown metric kind {state['kind']!r}")
        test.kind = state["kind"]
        test.looks = int(state["looks"])
        test.p_value = float(state["p_value"])
        test.lower = -math.inf if state["lower"] is None else float(state["lower"])
        test.upper = math.inf if state["upper"] is None else float(state["upper"])
        test.n_control = int(state["n_control"])
        test.n_treatment = int(state["n_treatment"])
        return test

    # -- looks ------------------------------------------------------------------------------------

    def update(self, control_successes: int, control_n: int, treatment_successes: int, treatment_n: int) -> Decision:
        """Look at cumulative successes/trials of both arms (e.g. correct predictions out of feedback)."""
        for name, s, n in (("control", control_successes, control_n), ("treatment", treatment_successes, treatment_n)):
            if not (0 <= s <= n):
                raise ValueError(f"{name}: need 0 <= successes <= n, got {s} of {n}")
        rate_c = control_successes / control_n if control_n else 0.0
        rate_t = treatment_successes / treatment_n if treatment_n else 0.0
        var = 0.0
        if control_n and treatment_n:
            # Half a success of smoothing: an arm at 0/n or n/n would otherwise claim zero variance.
            sc = (control_successes + 0.5) / (control_n + 1)
            st = (treatment_successes + 0.5) / (treatment_n + 1)
            var = sc * (1 - sc) / control_n + st * (1 - st) / treatment_n
        return self._look("proportion", rate_c, rate_t, var, control_n, treatment_n)

    def update_means(self, mean_c: float, var_c: float, n_c: int, mean_t: float, var_t: float, n_t: int) -> Decision:
        """Look at cumulative means and sample variances of a continuous metric (e.g. a reward)."""
        if n_c < 0 or n_t < 0:
            raise ValueError(f"sample sizes must be >= 0, got {n_c} and {n_t}")
        values = (mean_c, var_c, mean_t, var_t)
        if not all(math.isfinite(v) for v in values) or var_c < 0 or var_t < 0:
            raise ValueError(f"means and variances must be finite, variances >= 0, got {values}")
        var = var_c / n_c + var_t / n_t if n_c and n_t else 0.0
        # A metric that never varied would give an infinite statistic on the first look.
        var = max(var, 1e-12 * self.tau2)
        return self._look("mean", float(mean_c), float(mean_t), var, n_c, n_t)

    def _look(
        self, kind: Literal["proportion", "mean"], rate_c: float, rate_t: float, var: float, n_c: int, n_t: int
    ) -> Decision:
        if self.kind is not None and self.kind != kind:
            raise ValueError(f"this test compares {self.kind}s; do not mix update() and update_means()")
        if n_c < self.n_control or n_t < self.n_treatment:
            raise ValueError(
                f"counts are cumulative and cannot decrease: had n=({self.n_control}, {self.n_treatment}), "
                f"got ({n_c}, {n_t})"
            )
        self.kind = kind
        self.n_control, self.n_treatment = int(n_c), int(n_t)
        diff = rate_t - rate_c
        n_min = min(n_c, n_t)

        def decide(action: Action, reason: str, statistic: float) -> Decision:
            return Decision(
                action,
                self.p_value,
                self.lower,
                self.upper,
                self.n_control,
                self.n_treatment,
                rate_c,
                rate_t,
                self.boundary,
                statistic,
                reason,
            )

        if n_min < self.min_samples_per_arm:
            return decide("continue", f"burn-in: {n_min} of {self.min_samples_per_arm} samples in the smaller arm", 0.0)

        self.looks += 1
        statistic = _log_mixture_lr(diff, var, self.tau2)
        half = _half_width(var, self.tau2, self.alpha)
        self.p_value = min(self.p_value, math.exp(-statistic) if statistic > 0 else 1.0)
        self.lower = max(self.lower, diff - half)
        self.upper = min(self.upper, diff + half)
        if kind == "proportion":
            self.lower, self.upper = max(self.lower, -1.0), min(self.upper, 1.0)
        interval = f"[{self.lower:+.4f}, {self.upper:+.4f}]"

        if self.p_value <= self.alpha:
            if self.lower > self.upper:
                # Possible only when the effect moves over time (or with probability <= alpha): trust now.
                better = diff > 0
                why = f"the confidence sequence is empty (the effect is not stable over time); now {diff:+.4f}"
            else:
                # Outside the sequence on exactly one side; the current sign settles a rounding tie.
                better = self.lower > 0 or (self.upper >= 0 and diff > 0)
                why = f"treatment - control in {interval}"
            if better:
                return decide("promote", f"challenger better (p={self.p_value:.3g} <= {self.alpha}): {why}", statistic)
            return decide("rollback", f"challenger worse (p={self.p_value:.3g} <= {self.alpha}): {why}", statistic)
        if self.upper < -self.non_inferiority_margin:
            return decide(
                "rollback",
                f"challenger worse than the margin allows: treatment - control in {interval}, "
                f"upper bound below {-self.non_inferiority_margin:+.4f}",
                statistic,
            )
        if n_min >= self.max_samples_per_arm:
            return decide(
                "stop_no_difference",
                f"no significant difference after {n_min} samples per arm "
                f"(p={self.p_value:.3g}, {interval}); keep the champion",
                statistic,
            )
        return decide(
            "continue",
            f"not significant yet (p={self.p_value:.3g} > {self.alpha}, {interval}, "
            f"{n_min}/{self.max_samples_per_arm} samples)",
            statistic,
        )


# --------------------------------------------------------------------------------------------------
# Guardrails
# --------------------------------------------------------------------------------------------------


def guardrail_breached(
    error_rate_challenger: float | None,
    error_rate_champion: float | None,
    p95_challenger_ms: float | None,
    p95_champion_ms: float | None,
    *,
    max_error_rate_increase: float = 0.01,
    max_p95_ratio: float = 1.5,
    min_requests: int = 200,
    challenger_requests: int | None = None,
) -> str | None:
    """The reason to roll back on operational health, or None.

    Breached when the challenger's error rate exceeds the champion's by more than
    `max_error_rate_increase` (absolute, e.g. 0.01 = one point), or its p95 latency exceeds
    `max_p95_ratio` times the champion's. With `challenger_requests` given, nothing is judged below
    `min_requests` (three errors in ten requests say little); a metric that is missing (None/NaN) is
    not judged.
    """
    if challenger_requests is not None and challenger_requests < min_requests:
        return None

    def known(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    reasons = []
    err_t, err_c = known(error_rate_challenger), known(error_rate_champion)
    if err_t is not None and err_c is not None and err_t - err_c > max_error_rate_increase:
        reasons.append(
            f"error rate {err_t:.2%} vs champion {err_c:.2%} (allowed increase {max_error_rate_increase:.2%})"
        )
    p95_t, p95_c = known(p95_challenger_ms), known(p95_champion_ms)
    if p95_t is not None and p95_c is not None and p95_c > 0 and p95_t > max_p95_ratio * p95_c:
        reasons.append(f"p95 latency {p95_t:.1f} ms vs champion {p95_c:.1f} ms (allowed x{max_p95_ratio:g})")
    return "; ".join(reasons) or None


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw: exact for small counts, else its normal approximation (what a duration estimate needs)."""
    if n * p * (1.0 - p) < 25:
        return sum(rng.random() < p for _ in range(n))
    return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1.0 - p))))))


@dataclass(frozen=True)
class Schedule:
    """How long a canary's test takes at a given traffic, in days: to the fixed-horizon sample size, to the
    sequential test's horizon (its worst case: no difference, or one smaller than planned), and the sequential test's
    expected stop if the planned effect is real (the median and 90th percentile of simulated tests)."""

    daily_requests: float
    feedback_rate: float
    challenger_weight: float
    daily_feedback_control: float
    daily_feedback_challenger: float
    fixed_horizon_days: float
    sequential_worst_case_days: float
    sequential_expected_days: float
    sequential_p90_days: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_schedule(plan: Plan, *, daily_requests: float, feedback_rate: float = 1.0,
                  challenger_weight: float | None = None, simulations: int = 300, seed: int = 7) -> Schedule:
    """The plan's durations at ``daily_requests`` predictions a day of which ``feedback_rate`` get a label, the
    challenger getting ``challenger_weight`` of them (default: the plan's allocation). The expected stop comes from
    ``simulations`` tests whose arms have the plan's rates, looked at every 1/200 of the horizon (the rollout looks
    more often, and stops no later: the figure errs long)."""
    if not (math.isfinite(daily_requests) and daily_requests > 0):
        raise ValueError(f"daily requests must be a positive number, got {daily_requests!r}")
    if not 0.0 < feedback_rate <= 1.0:
        raise ValueError(f"the feedback rate is the share of predictions that get a label: in (0, 1], got "
                         f"{feedback_rate!r}")
    weight = plan.ratio / (1.0 + plan.ratio) if challenger_weight is None else challenger_weight
    _check_open_unit("challenger_weight", weight)
    daily = daily_requests * feedback_rate
    per_arm = (daily * (1.0 - weight), daily * weight)  # (control, challenger) labels a day
    horizon = SequentialTest.from_plan(plan).max_samples_per_arm
    worst = horizon / min(per_arm)  # the horizon counts the smaller arm
    rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
    step = max(1, math.ceil(horizon / 200))  # labels of the smaller arm between two looks
    scale = max(per_arm) / min(per_arm)
    small = 0 if per_arm[0] <= per_arm[1] else 1  # the arm that sets the pace
    rates = (plan.baseline, plan.baseline + plan.mde)
    stops = []
    for _ in range(simulations):
        sim = SequentialTest.from_plan(plan)
        successes = [0, 0]
        n = [0, 0]
        while True:
            add = [0, 0]
            add[small] = step
            add[1 - small] = round(step * scale)
            for arm in (0, 1):
                successes[arm] += _binomial(rng, add[arm], rates[arm])
                n[arm] += add[arm]
            decision = sim.update(successes[0], n[0], successes[1], n[1])
            if decision.action != "continue" or n[small] >= horizon:
                stops.append(min(n[small], horizon) / min(per_arm))
                break
    stops.sort()
    return Schedule(
        daily_requests=float(daily_requests), feedback_rate=float(feedback_rate), challenger_weight=weight,
        daily_feedback_control=per_arm[0], daily_feedback_challenger=per_arm[1],
        fixed_horizon_days=expected_duration(plan, daily / 24.0, weight) / 24.0,
        sequential_worst_case_days=worst,
        sequential_expected_days=stops[len(stops) // 2],
        sequential_p90_days=stops[min(len(stops) - 1, int(0.9 * len(stops)))],
    )

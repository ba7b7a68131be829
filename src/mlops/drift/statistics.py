"""Drift statistics: a window of serving data against the training baseline (``mlops.data.baseline``).

Everything accumulates from chunks, so a window of any size is read once with bounded memory:

- numeric: the exact two-sample Kolmogorov-Smirnov statistic against the baseline's reservoir sample, the
  Wasserstein-1 distance to it (divided by the training standard deviation) and the PSI on the baseline's
  quantile bins. Each chunk is binned once on a grid made of the reservoir's distinct values, keeping a count
  and a sum per cell, which is enough for an exact KS statistic (the ECDF difference only peaks at grid
  points) and an exact Wasserstein distance except inside the rare cells where the two CDFs cross;
- categorical: a chi-square test of homogeneity (baseline counts vs window counts, so the baseline's own
  sampling noise is accounted for and large windows do not raise false alarms), with categories unseen in
  training counted in their own cells, and the Jensen-Shannon distance (base 2, in [0, 1]);
- predictions: the same, on the model's outputs against its evaluation-time outputs;
- concept: the window's feedback metric (accuracy with a Wilson interval, or mean absolute error) against
  the metric the model was registered with.

A feature drifts when its effect size reaches its threshold AND its p-value, adjusted across features with
Benjamini-Hochberg, is below alpha: a p-value alone flags any tiny shift at large n, an effect size alone
flags noise at small n. Fewer rows than ``min_samples`` give ``insufficient_data``, never "no drift".

The p-values are computed here with numpy and the standard library (no scipy at run time): the KS p-value is
the asymptotic Kolmogorov distribution with Stephens' small-sample correction (within a few percent of
``scipy.stats.ks_2samp(method="asymp")``), the chi-square one the regularized incomplete gamma function.

Why one module of this length: every statistic of a window is fed by the same streamed accumulators and judged
by the same rule (effect size and Benjamini-Hochberg adjusted p-value across all the window's tests), so they
change together.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from mlops.core.config import DriftConfig
from mlops.data.baseline import OTHER

DRIFTED, NO_DRIFT, INSUFFICIENT = "drifted", "no_drift", "insufficient_data"
SKIPPED = "skipped"  # a concept a model without labels (a clustering) does not have
UNSEEN_CELLS = 20  # unseen categories kept in their own cells; the rest share one
MAX_TRACKED = 10_000  # distinct window categories remembered; beyond, new ones are lumped (memory bound)
UNSEEN_OTHER = "__unseen_other__"


# -- distributions ---------------------------------------------------------------------------------------
def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square(dof): the regularized upper incomplete gamma Q(dof/2, x/2)."""
    if dof <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    log_prefactor = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1.0:  # series for P, converges fast here
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return float(min(1.0, max(0.0, 1.0 - total * math.exp(log_prefactor))))
    # continued fraction for Q (modified Lentz)
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return float(min(1.0, max(0.0, math.exp(log_prefactor) * h)))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided p-value of a two-sample KS statistic ``d`` for sample sizes ``n`` and ``m``."""
    if n <= 0 or m <= 0 or d <= 0:
        return 1.0
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 1.18:  # the theta-function form converges where the alternating series does not
        if lam < 0.2:
            return 1.0
        tail = sum(math.exp(-((2 * j - 1) ** 2) * math.pi**2 / (8 * lam * lam)) for j in range(1, 8))
        return float(min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / lam * tail)))
    series = sum((-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam) for j in range(1, 101))
    return float(min(1.0, max(0.0, 2.0 * series)))


def chi2_homogeneity(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, int]:
    """Chi-square test that two count vectors come from one distribution: (statistic, p-value, dof).
    Cells empty in both are dropped; it equals ``scipy.stats.chi2_contingency([a, b], correction=False)``
    when more than two cells remain."""
    table = np.asarray([a, b], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or (rows == 0).any():
        return 0.0, 1.0, 0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return statistic, chi2_sf(statistic, dof), dof


def psi(baseline_shares: Sequence[float], current_shares: Sequence[float], floor: float = 1e-4) -> float:
    """Population stability index; empty bins are floored so a bin that empties out counts, finitely."""
    b = np.clip(np.asarray(baseline_shares, dtype=np.float64), floor, None)
    c = np.clip(np.asarray(current_shares, dtype=np.float64), floor, None)
    return float(((c - b) * np.log(c / b)).sum())


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance in base 2: 0 for the same distribution, 1 for disjoint ones."""
    pa, qa = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if pa.sum() <= 0 or qa.sum() <= 0:
        return 0.0
    pa, qa = pa / pa.sum(), qa / qa.sum()
    mid = (pa + qa) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float((x[mask] * np.log2(x[mask] / mid[mask])).sum())

    return math.sqrt(max(0.0, (kl(pa) + kl(qa)) / 2))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values), in the input order; equals statsmodels' ``fdr_bh``."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in out]


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# -- results ---------------------------------------------------------------------------------------------
@dataclass
class FeatureDrift:
    feature: str
    kind: str  # numeric | categorical
    method: str  # ks (numeric with a reservoir) | chi2 (categorical, or numeric bins only)
    n: int  # non-missing values in the window
    statistic: float | None = None
    raw_p_value: float | None = None
    p_value: float | None = None  # Benjamini-Hochberg adjusted across the features of one check
    effect_size: float | None = None  # normalised Wasserstein (numeric) | Jensen-Shannon distance | PSI
    effect_name: str = ""
    threshold: float | None = None
    psi: float | None = None
    drifted: bool = False
    status: str = INSUFFICIENT
    reason: str = ""
    missing_share: float = 0.0
    unseen: dict[str, int] = field(default_factory=dict)  # categories absent from the baseline (top ones)
    # for the plot: labels of bins/categories and the two share vectors
    labels: list[str] = field(default_factory=list)
    baseline_shares: list[float] = field(default_factory=list)
    current_shares: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ConceptDrift:
    metric: str
    n: int
    baseline: float | None
    value: float | None = None
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    drifted: bool = False
    status: str = INSUFFICIENT
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def not_measured(cls, reason: str) -> ConceptDrift:
        """No concept drift to measure (a model without labels), said as such rather than as too little feedback."""
        return cls("none", 0, None, status=SKIPPED, reason=reason)


@dataclass
class DriftResult:
    status: str  # drifted | no_drift | insufficient_data
    rows: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None = None
    concept: ConceptDrift | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def data_drift(self) -> bool:
        return bool(self.drifted_features)

    @property
    def any_drift(self) -> bool:
        return self.data_drift or bool(self.concept and self.concept.drifted) or bool(
            self.prediction and self.prediction.drifted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "rows": self.rows, "drifted_features": self.drifted_features,
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "concept": self.concept.to_dict() if self.concept else None,
        }


# -- accumulators ----------------------------------------------------------------------------------------
def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [float(c) / total if total else 0.0 for c in counts]


class NumericAccumulator:
    """One numeric column of a window against its baseline summary (and reservoir values, if any)."""

    def __init__(self, name: str, summary: Mapping[str, Any], reference: np.ndarray | None = None) -> None:
        self.name = name
        self.summary = summary
        self.edges = [float(e) for e in summary.get("edges") or []]
        self.bins = np.zeros(max(len(self.edges) - 1, 1), dtype=np.int64)
        ref = None if reference is None else np.asarray(reference, dtype=np.float64)
        ref = None if ref is None else ref[~np.isnan(ref)]
        self.reference = ref if ref is not None and ref.size else None
        if self.reference is not None:
            self.grid, ref_counts = np.unique(self.reference, return_counts=True)
            cum = np.cumsum(ref_counts) / self.reference.size
            below = np.concatenate([[0.0], cum[:-1]])
            # reference CDF per cell: cell 2k is the open interval below grid[k], 2k+1 the point grid[k]
            self.ref_cdf = np.empty(2 * self.grid.size + 1)
            self.ref_cdf[0:-1:2], self.ref_cdf[1::2], self.ref_cdf[-1] = below, cum, 1.0
            self.cells = np.zeros(2 * self.grid.size + 1, dtype=np.int64)
            self.sums = np.zeros(2 * self.grid.size + 1)
        self.n = 0
        self.missing = 0

    def update(self, values: np.ndarray | Sequence[float | None]) -> None:
        # Sort the chunk once and search the grid points and edges in it, rather than one cache-unfriendly
        # binary search per value (~3x faster at a million rows). NaN sorts last: the present values are a prefix.
        xs = np.sort(np.asarray(values, dtype=np.float64))
        k = int(np.searchsorted(xs, np.inf, side="right"))
        self.missing += xs.size - k
        if not k:
            return
        xs = xs[:k]
        self.n += k
        if self.edges:
            # right-closed bins, outer ones open: the convention of mlops.data.baseline.bin_counts (tested equal)
            upper = np.searchsorted(xs, np.asarray(self.edges[1:-1], dtype=np.float64), side="right")
            self.bins += np.diff(np.concatenate([[0], upper, [k]]))
        if self.reference is not None:
            cum = np.empty(k + 1)
            cum[0] = 0.0
            np.cumsum(xs, out=cum[1:])
            left = np.searchsorted(xs, self.grid, side="left")
            right = left.copy()
            tied = xs[np.minimum(left, k - 1)] == self.grid
            tied &= left < k
            if tied.any():  # only grid values present in the chunk need the second search
                right[tied] = np.searchsorted(xs, self.grid[tied], side="right")
            bounds = np.empty(2 * self.grid.size + 2, dtype=np.int64)
            bounds[0], bounds[-1] = 0, k
            bounds[1:-1:2], bounds[2:-1:2] = left, right
            self.cells += np.diff(bounds)
            self.sums += np.diff(cum[bounds])

    def _ks_and_wasserstein(self) -> tuple[float, float]:
        assert self.reference is not None
        cur_cdf = np.cumsum(self.cells) / self.n
        d = float(np.abs(cur_cdf - self.ref_cdf).max())
        g = self.grid
        # below the grid: reference CDF 0; above: 1; both tails are exact from counts and sums
        w = (self.cells[0] * g[0] - self.sums[0]) / self.n + (self.sums[-1] - self.cells[-1] * g[-1]) / self.n
        if g.size > 1:
            k = np.arange(1, g.size)
            width = g[k] - g[k - 1]
            ref = self.ref_cdf[2 * k]  # constant inside the open interval (g[k-1], g[k])
            start = cur_cdf[2 * k - 1]
            cnt, tot = self.cells[2 * k], self.sums[2 * k]
            end = start + cnt / self.n
            signed = (start - ref) * width + (cnt * g[k] - tot) / self.n
            crossing = (start < ref) & (end > ref)
            span = np.where(crossing, end - start, 1.0)
            # where the CDFs cross inside a cell, assume the window's values spread evenly in it
            crossed = width * ((ref - start) ** 2 + (end - ref) ** 2) / (2 * span)
            w += float(np.where(crossing, crossed, np.abs(signed)).sum())
        return d, float(w)

    def result(self, cfg: DriftConfig) -> FeatureDrift:
        total = self.n + self.missing
        labels = _bin_labels(self.edges)
        base_counts = list(self.summary.get("counts") or [])
        out = FeatureDrift(self.name, "numeric", "ks" if self.reference is not None else "chi2", self.n,
                           missing_share=self.missing / total if total else 0.0, labels=labels,
                           baseline_shares=_shares(base_counts), current_shares=_shares(self.bins.tolist()))
        if self.n < cfg.min_samples:
            out.reason = f"{self.n} values in the window; at least {cfg.min_samples} are needed"
            return out
        if base_counts and len(base_counts) == self.bins.size:
            out.psi = psi(out.baseline_shares, out.current_shares)
        if self.reference is not None:
            d, w = self._ks_and_wasserstein()
            scale = float(self.summary.get("std") or 0.0) or 1.0
            out.statistic, out.raw_p_value = d, ks_pvalue(d, self.n, int(self.reference.size))
            out.effect_size, out.effect_name, out.threshold = w / scale, "wasserstein", cfg.wasserstein_threshold
        elif base_counts and len(base_counts) == self.bins.size:
            out.statistic, out.raw_p_value, _dof = chi2_homogeneity(base_counts, self.bins.tolist())
            out.effect_size, out.effect_name, out.threshold = out.psi, "psi", cfg.psi_threshold
        else:
            out.reason = "the baseline holds no values of this feature"
        return out


class CategoricalAccumulator:
    def __init__(self, name: str, summary: Mapping[str, Any]) -> None:
        self.name = name
        self.base_counts = {str(k): int(v) for k, v in (summary.get("counts") or {}).items()}
        self.counts: dict[str, int] = {}
        self.lumped = 0  # window values beyond MAX_TRACKED distinct ones
        self.missing = 0

    def update(self, values: Iterable[Any]) -> None:
        # Counter hashes a chunk in C; the few distinct keys are normalised afterwards, not every value
        for value, count in Counter(values).items():
            if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
                self.missing += count
                continue
            key = str(value)
            if key in self.counts or len(self.counts) < MAX_TRACKED:
                self.counts[key] = self.counts.get(key, 0) + count
            else:
                self.lumped += count

    @property
    def n(self) -> int:
        return sum(self.counts.values()) + self.lumped

    def result(self, cfg: DriftConfig, *, kind: str = "categorical") -> FeatureDrift:
        known = [k for k in self.base_counts if k != OTHER]
        other_in_baseline = self.base_counts.get(OTHER, 0) > 0
        unseen = sorted(((v, c) for v, c in self.counts.items() if v not in self.base_counts),
                        key=lambda kv: (-kv[1], kv[0]))
        labels = list(known)
        base = [self.base_counts[k] for k in known]
        cur = [self.counts.get(k, 0) for k in known]
        rest = self.lumped
        if other_in_baseline:
            # rare training categories were pooled: a value outside the kept ones may be one of them
            rest += sum(c for _, c in unseen) + self.counts.get(OTHER, 0)
            labels.append(OTHER)
            base.append(self.base_counts[OTHER])
            cur.append(rest)
        else:
            for value, count in unseen[:UNSEEN_CELLS]:
                labels.append(value)
                base.append(0)
                cur.append(count)
            rest += sum(c for _, c in unseen[UNSEEN_CELLS:])
            if rest:
                labels.append(UNSEEN_OTHER)
                base.append(0)
                cur.append(rest)
        total = self.n + self.missing
        out = FeatureDrift(self.name, kind, "chi2", self.n, missing_share=self.missing / total if total else 0.0,
                           unseen=dict(unseen[:10]), labels=labels, baseline_shares=_shares(base),
                           current_shares=_shares(cur))
        if self.n < cfg.min_samples:
            out.reason = f"{self.n} values in the window; at least {cfg.min_samples} are needed"
            return out
        if not sum(base):
            out.reason = "the baseline holds no values of this feature"
            return out
        out.statistic, out.raw_p_value, _dof = chi2_homogeneity(base, cur)
        out.effect_size, out.effect_name, out.threshold = js_distance(base, cur), "jensen_shannon", cfg.js_threshold
        out.psi = psi(out.baseline_shares, out.current_shares)
        return out


def _bin_labels(edges: Sequence[float]) -> list[str]:
    if len(edges) < 2:
        return [f"{edges[0]:.4g}"] if edges else []
    inner = [f"{e:.4g}" for e in edges[1:-1]]
    if not inner:
        return ["all"]
    return [f"≤{inner[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(inner)), f">{inner[-1]}"]


class ConceptAccumulator:
    """Feedback joined with predictions: accuracy for classifiers, mean absolute error for regressors."""

    def __init__(self, *, classification: bool) -> None:
        self.classification = classification
        self.n = 0
        self.correct = 0
        self.abs_error = 0.0
        self.sq_abs_error = 0.0

    def update(self, predictions: Sequence[Any], labels: Sequence[Any]) -> None:
        if self.classification:
            self.correct += sum(str(p) == str(y) for p, y in zip(predictions, labels, strict=True))
            self.n += len(labels)
            return
        err = np.abs(np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64))
        err = err[~np.isnan(err)]
        self.n += err.size
        self.abs_error += float(err.sum())
        self.sq_abs_error += float((err**2).sum())

    def result(self, cfg: DriftConfig, baseline_metrics: Mapping[str, Any] | None) -> ConceptDrift:
        metrics = baseline_metrics or {}
        z = NormalDist().inv_cdf(1 - cfg.alpha / 2)
        if self.classification:
            base = metrics.get("accuracy")
            out = ConceptDrift("accuracy", self.n, None if base is None else float(base))
            if self.n:
                out.value = self.correct / self.n
                out.interval = wilson_interval(self.correct, self.n, z)
        else:
            base = metrics.get("mae")
            out = ConceptDrift("mae", self.n, None if base is None else float(base))
            if self.n:
                mean = self.abs_error / self.n
                sd = math.sqrt(max(0.0, self.sq_abs_error / self.n - mean * mean))
                out.value, out.interval = mean, (mean - z * sd / math.sqrt(self.n), mean + z * sd / math.sqrt(self.n))
        if self.n < cfg.min_feedback:
            out.reason = f"{self.n} predictions with feedback; at least {cfg.min_feedback} are needed"
            return out
        if out.baseline is None or out.value is None or out.interval is None:
            out.reason = f"the model was registered without a {out.metric} to compare with"  # cannot tell
            return out
        worse = out.baseline - out.value if self.classification else out.value - out.baseline
        # one-sided: only a worse metric is concept drift
        significant = out.interval[1] < out.baseline if self.classification else out.interval[0] > out.baseline
        limit = cfg.concept_threshold if self.classification else cfg.concept_threshold * abs(out.baseline)
        out.drifted = bool(significant and worse >= limit)
        out.status = DRIFTED if out.drifted else NO_DRIFT
        out.reason = (f"{out.metric} {out.value:.4f} (interval {out.interval[0]:.4f}-{out.interval[1]:.4f}, "
                      f"n={self.n}) vs {out.baseline:.4f} at evaluation; worse by {worse:+.4f}, "
                      f"threshold {limit:.4f}, {'significant' if significant else 'not significant'}")
        return out


def decide(features: list[FeatureDrift], cfg: DriftConfig) -> None:
    """Adjust p-values across the features that have them (BH) and set each verdict in place."""
    tested = [(f, f.raw_p_value) for f in features if f.raw_p_value is not None]
    for (f, _), q in zip(tested, benjamini_hochberg([p for _, p in tested]), strict=True):
        f.p_value = q
        big = f.effect_size is not None and f.threshold is not None and f.effect_size >= f.threshold
        if f.kind == "numeric" and f.psi is not None and f.psi >= cfg.psi_threshold:
            big = True  # a bin-level rearrangement that the Wasserstein distance underrates
        f.drifted = bool(big and q < cfg.alpha)
        f.status = DRIFTED if f.drifted else NO_DRIFT
        f.reason = (f"{f.effect_name} {f.effect_size:.4f} {'≥' if big else '<'} {f.threshold}"
                    + (f" (psi {f.psi:.4f})" if f.psi is not None else "")
                    + f"; adjusted p {q:.3g} {'<' if q < cfg.alpha else '≥'} {cfg.alpha}")


class WindowDrift:
    """All features of one window: feed column chunks, then ``result()``."""

    def __init__(self, baseline: Mapping[str, Any], cfg: DriftConfig, *, classification: bool | None = None) -> None:
        self.baseline = baseline
        self.cfg = cfg
        records = (baseline.get("reservoir") or {}).get("records") or []
        self.numeric: dict[str, NumericAccumulator] = {}
        self.categorical: dict[str, CategoricalAccumulator] = {}
        for name, summary in baseline["features"].items():
            if summary["kind"] == "numeric":
                ref = np.asarray([r.get(name) for r in records], dtype=np.float64)  # None (missing) -> NaN
                self.numeric[name] = NumericAccumulator(name, summary, ref if records else None)
            else:
                self.categorical[name] = CategoricalAccumulator(name, summary)
        preds = baseline.get("predictions")
        self.prediction: NumericAccumulator | CategoricalAccumulator | None = None
        if preds and preds.get("kind") == "classes":
            self.prediction = CategoricalAccumulator("prediction", preds)
        elif preds:
            self.prediction = NumericAccumulator("prediction", preds)
        is_classification = classification if classification is not None else (
            preds is None or preds.get("kind") == "classes")
        self.concept = ConceptAccumulator(classification=is_classification)
        self.rows = 0

    @property
    def feature_names(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def update(self, columns: Mapping[str, Any], rows: int) -> None:
        """One chunk: ``columns`` maps feature names to equally long value sequences (missing ones are
        counted as missing)."""
        self.rows += rows
        for name, acc in self.numeric.items():
            values = columns.get(name)
            acc.update(np.full(rows, np.nan) if values is None else _floats(values))
        for name, cat in self.categorical.items():
            cat.update(columns[name] if name in columns else [None] * rows)

    def update_predictions(self, predictions: Sequence[Any]) -> None:
        if isinstance(self.prediction, NumericAccumulator):
            self.prediction.update(_floats(predictions))
        elif self.prediction is not None:
            self.prediction.update([str(p) for p in predictions])

    def result(self, baseline_metrics: Mapping[str, Any] | None = None, *, with_concept: bool = True) -> DriftResult:
        features = [acc.result(self.cfg) for acc in self.numeric.values()]
        features += [cat.result(self.cfg) for cat in self.categorical.values()]
        decide(features, self.cfg)
        prediction = None
        if self.prediction is not None and (self.prediction.n or self.rows):
            prediction = (self.prediction.result(self.cfg, kind="prediction")
                          if isinstance(self.prediction, CategoricalAccumulator) else self.prediction.result(self.cfg))
            decide([prediction], self.cfg)
        concept = self.concept.result(self.cfg, baseline_metrics) if with_concept else None
        status = INSUFFICIENT if self.rows < self.cfg.min_samples or not any(
            f.status != INSUFFICIENT for f in features) else (DRIFTED if any(f.drifted for f in features) else NO_DRIFT)
        if concept is not None and concept.drifted:
            status = DRIFTED
        return DriftResult(status, self.rows, features, prediction, concept)


def _floats(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):  # None mixed in: a Python list of floats and None
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)

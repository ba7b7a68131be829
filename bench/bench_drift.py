"""Drift check: 1M rows x 30 numeric features of a window against a fitted baseline, streamed in chunks
(mlops.drift.statistics), versus scipy.stats.ks_2samp per feature on the same data (reference and window held whole).

Designed features: f00 mean +0.5 sigma, f01 variance x1.3 (both must be found by both), f02 mean +0.02 sigma
(a bare KS p-value flags it at this n; ours must not call it drift); the other 27 do not move.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np

from bench.harness import Result

FEATURES = 30
CHUNK = 250_000
RESERVOIR = 20_000
SEED = 2026
DESIGNED = {"f00": "mean +0.5 sigma", "f01": "variance x1.3"}
TINY = "f02"


def _window_chunk(rng: np.random.Generator, rows: int) -> np.ndarray:
    x = rng.normal(0.0, 1.0, (rows, FEATURES))
    x[:, 0] += 0.5
    x[:, 1] *= np.sqrt(1.3)
    x[:, 2] += 0.02
    return x


def _ours(baseline: dict[str, Any], window: np.ndarray, names: list[str]) -> set[str]:
    from mlops.core.config import DriftConfig
    from mlops.drift.statistics import WindowDrift

    check = WindowDrift(baseline, DriftConfig())
    for start in range(0, len(window), CHUNK):
        part = window[start:start + CHUNK]
        check.update({name: part[:, i] for i, name in enumerate(names)}, len(part))
    return set(check.result(with_concept=False).drifted_features)


def _scipy(reference: np.ndarray, window: np.ndarray, names: list[str]) -> set[str]:
    from scipy import stats

    return {name for i, name in enumerate(names) if stats.ks_2samp(reference[:, i], window[:, i]).pvalue < 0.05}


def _seconds_and_peak(fn: Any) -> tuple[float, float, Any]:
    """Wall seconds of an untraced run, then the peak MiB allocated by a traced one (tracemalloc slows numpy's
    allocations, so it stays out of the timing)."""
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, out


def run(quick: bool) -> list[Result]:
    import pandas as pd

    from mlops.data.baseline import build_baseline
    from mlops.data.inference import infer_contract

    rows = 100_000 if quick else 1_000_000
    names = [f"f{i:02d}" for i in range(FEATURES)]
    rng = np.random.default_rng(SEED)
    reference = rng.normal(0.0, 1.0, (rows, FEATURES))
    frame = pd.DataFrame(reference, columns=names)
    contract = infer_contract(frame.head(1000).assign(label=0), "label")
    # fitted once, when the model is registered; a large reservoir so the KS test can see a variance change
    baseline = build_baseline(frame, contract, reservoir=RESERVOIR)
    del frame
    window = np.concatenate([_window_chunk(rng, min(CHUNK, rows - s)) for s in range(0, rows, CHUNK)])

    ours_s, ours_mib, ours_flagged = _seconds_and_peak(lambda: _ours(baseline, window, names))
    ref_s, _, scipy_flagged = _seconds_and_peak(lambda: _scipy(reference, window, names))
    # ks_2samp runs feature by feature: its peak beyond the arrays is that of one call
    _, ref_mib, _ = _seconds_and_peak(lambda: _scipy(reference[:, :1], window[:, :1], names[:1]))
    same_designed = all((n in ours_flagged) == (n in scipy_flagged) for n in DESIGNED)
    details = {
        "rows": rows, "features": FEATURES, "chunk_rows": CHUNK, "reservoir": RESERVOIR,
        "ours_drifted": sorted(ours_flagged), "scipy_p_below_0.05": sorted(scipy_flagged),
        "designed_found_by_both": same_designed and set(DESIGNED) <= ours_flagged,
        "tiny_shift_ours": TINY in ours_flagged, "tiny_shift_bare_ks": TINY in scipy_flagged,
        "null_features_flagged_ours": len(ours_flagged - set(DESIGNED) - {TINY}),
        "null_features_flagged_bare_ks": len(scipy_flagged - set(DESIGNED) - {TINY}),
    }
    verdicts_ok = bool(details["designed_found_by_both"]) and not details["tiny_shift_ours"]
    return [
        Result(benchmark=f"drift check {rows:,} x {FEATURES} numeric, streamed (s)", value=ours_s,
               reference_name="scipy.stats.ks_2samp per feature", reference=ref_s, unit="s",
               target="ratio < 1 and same verdicts on designed drifts", passed=ours_s < ref_s and verdicts_ok,
               details=details),
        # scipy needs every window value at once; the streamed check holds its accumulators and one chunk
        Result(benchmark=f"drift check {rows:,} x {FEATURES}: peak memory of the check",
               value=ours_mib, reference_name="ks_2samp: the window held whole + its peak",
               reference=window.nbytes / 2**20 + ref_mib, unit="MiB", target="ratio <= 0.5",
               passed=ours_mib <= 0.5 * (window.nbytes / 2**20 + ref_mib),
               details={"scipy_peak_beyond_the_window_MiB": round(ref_mib, 1),
                        "window_MiB": round(window.nbytes / 2**20, 1)}),
    ]

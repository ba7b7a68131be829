"""The contract between benchmark modules and the report.

A benchmark module is ``bench/bench_<topic>.py`` with ``run(quick: bool) -> list[Result]``. Each result
compares a measurement of ours with a reference measured in the same run (so the ratio holds on any
machine), states the target ratio, and says whether it was met. ``python -m bench`` runs them all and
writes ``bench/results.json`` and ``bench/results.md``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    benchmark: str  # what was measured, e.g. "infer handler p50 vs bare InferenceSession.run"
    value: float  # ours
    reference_name: str  # what it was compared with
    reference: float  # the reference, same unit, same run
    unit: str  # "ms", "s", "MiB"...
    target: str  # the claim, e.g. "ratio <= 5"
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)  # p95/p99, sizes, verdicts...

    @property
    def ratio(self) -> float:
        return self.value / self.reference if self.reference else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 of samples (any unit), from the sorted samples."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "mean": statistics.fmean(ordered),
            "n": float(len(ordered))}


def interleaved(fns: Mapping[str, Callable[[], Any]], *, repeat: int, warmup: int = 5) -> dict[str, list[float]]:
    """Milliseconds per call of each function, measured in turn, call by call: when the machine's load changes during
    the run (two shared cores), it weighs on every variant alike, so that their ratio still means something."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name].append((time.perf_counter() - start) * 1000)
    return out


def timed(fn: Callable[[], Any], *, repeat: int, warmup: int = 5) -> list[float]:
    """Milliseconds per call, after a warm-up."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out

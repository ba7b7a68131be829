"""Run every ``bench/bench_*.py`` and write ``bench/results.json`` and ``bench/results.md``.

``python -m bench [--quick] [--only TOPIC ...]``; ``make bench`` runs the full set.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Result

HERE = Path(__file__).resolve().parent


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.machine(),
            "cpus": os.cpu_count(), "time": datetime.now(UTC).isoformat(timespec="seconds")}


def markdown(results: list[Result], errors: dict[str, str], info: dict[str, Any]) -> str:
    lines = ["# Benchmarks", "",
             f"Measured {info['time']} on {info['platform']} ({info['cpus']} CPUs, Python {info['python']}). "
             "Each line compares ours with a reference measured in the same run; rerun with `make bench`.", "",
             "| benchmark | ours | reference | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.benchmark} | {r.value:.4g} {r.unit} | {r.reference_name}: {r.reference:.4g} {r.unit} "
                     f"| {r.ratio:.3g} | {r.target} | {'yes' if r.passed else '**no**'} |")
    for topic, error in errors.items():
        lines.append(f"\n**{topic} failed:** `{error}`")
    details = [r for r in results if r.details]
    if details:
        lines += ["", "## Details", ""]
        for r in details:
            lines.append(f"- **{r.benchmark}**: " + ", ".join(f"{k} = {v}" for k, v in r.details.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", nargs="*", default=None, help="topics (bench_<topic>.py) to run")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    topics = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    results: list[Result] = []
    errors: dict[str, str] = {}
    for topic in topics:
        if args.only and topic not in args.only:
            continue
        print(f"[bench] {topic} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"bench.bench_{topic}")
            for result in module.run(quick=args.quick):
                results.append(result)
                print(f"[bench]   {result.benchmark}: {result.value:.4g} {result.unit} vs {result.reference_name} "
                      f"{result.reference:.4g} (ratio {result.ratio:.3g}, {result.target}: "
                      f"{'met' if result.passed else 'NOT met'})", file=sys.stderr, flush=True)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            errors[topic] = f"{type(exc).__name__}: {exc}"
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": info, "results": [r.as_dict() for r in results], "errors": errors}, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results, errors, info))
    print(f"[bench] wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)
    return 1 if errors or not all(r.passed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

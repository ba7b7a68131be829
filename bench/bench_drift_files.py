"""`mlops drift --reference A.csv --current B.csv` end to end versus Evidently's DataDriftPreset, on two CSV files of
200,000 rows x 31 numeric columns (about 113 MiB each, as in issue 18's measurement; 50,000 rows with --quick).

Both sides run as a fresh process, timed from its start to its exit, one after the other on the same files: ours is
the installed command (``python -m mlops.cli drift ... --json``: interpreter, imports, both files read by ingest's
reader and validated, the reference summarised, the current checked, the report); the reference is
``bench/evidently_drift.py`` (``pd.read_csv`` of both files, then ``Report([DataDriftPreset()]).run``) run by the
interpreter of a virtualenv of its own, ``.bench/evidently``, created here on first use from
``bench/evidently-requirements.txt`` (Evidently does not import with pandas 3, ours). ``MLOPS_BENCH_EVIDENTLY_PYTHON``
names another interpreter with Evidently installed instead.

Designed features: f00 mean +0.5 sigma and f01 standard deviation x1.3 must be found by both; f02 mean +0.02 sigma by
neither (a shift that small is not drift); the other 28 do not move.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Result

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EVIDENTLY_VENV = ROOT / ".bench" / "evidently"
REQUIREMENTS = HERE / "evidently-requirements.txt"
FEATURES = 31
SEED = 2018
DESIGNED = {"f00": "mean +0.5 sigma", "f01": "standard deviation x1.3"}
TINY = "f02"
TARGET_RATIO = 0.25  # "well under a third of Evidently's time"


def _write(path: Path, rows: int, *, drifted: bool, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (rows, FEATURES))
    if drifted:
        x[:, 0] += 0.5
        x[:, 1] *= 1.3
        x[:, 2] += 0.02
    table = pa.table({f"f{i:02d}": x[:, i] for i in range(FEATURES)})
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))


def evidently_python() -> Path:
    """The interpreter of the Evidently virtualenv, created (or re-created when the requirements changed) first."""
    override = os.environ.get("MLOPS_BENCH_EVIDENTLY_PYTHON")
    if override:
        return Path(override)
    python = EVIDENTLY_VENV / "bin" / "python"
    stamp = EVIDENTLY_VENV / ".requirements"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"[bench]   creating {EVIDENTLY_VENV.relative_to(ROOT)} from {REQUIREMENTS.relative_to(ROOT)} "
          "(once; about a minute)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(EVIDENTLY_VENV)], check=True)  # noqa: S603
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)  # noqa: S603
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True)  # noqa: S603
    stamp.write_text(wanted)
    return python


def _process(cmd: list[str], ok: tuple[int, ...]) -> tuple[float, float, str]:
    """Wall seconds from start to exit, peak RSS (MiB) and stdout of a fresh process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as rss:
        started = time.perf_counter()
        # through a small launcher: a child forked from this process (grown by the other benchmarks) would report
        # this process's size as its own peak (ru_maxrss counts the pages shared at fork)
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, rss.name, *cmd], stdout=out, stderr=err,  # noqa: S603
                                cwd=ROOT)
        proc.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {err.read().decode()[-2000:]}")
        # ru_maxrss is in KiB on Linux, in bytes on macOS
        peak = int(rss.read()) / (2**20 if sys.platform == "darwin" else 2**10)
        return seconds, peak, out.read().decode()


# run argv[2:], write its peak RSS (wait4's ru_maxrss) to argv[1], exit with its exit code
_LAUNCHER = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(quick: bool) -> list[Result]:
    rows = 50_000 if quick else 200_000
    python = evidently_python()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-drift-") as tmp:
        reference, current = Path(tmp) / "reference.csv", Path(tmp) / "current.csv"
        _write(reference, rows, drifted=False, seed=SEED)
        _write(current, rows, drifted=True, seed=SEED + 1)
        ours_cmd = [sys.executable, "-m", "mlops.cli", "drift", "--reference", str(reference), "--current",
                    str(current), "--json"]
        ref_cmd = [str(python), str(HERE / "evidently_drift.py"), str(reference), str(current)]
        _process(ours_cmd, (0, 1))  # warm the page cache and the imports' .pyc files, for both alike
        ours: list[tuple[float, float, str]] = []
        # ours runs three times around the reference's one, so a change of the machine's load weighs on both
        ours.append(_process(ours_cmd, (0, 1)))
        ref_s, ref_mib, ref_out = _process(ref_cmd, (0,))
        ours += [_process(ours_cmd, (0, 1)) for _ in range(2)]
        mb = reference.stat().st_size / 2**20
    ours_s = statistics.median(s for s, _, _ in ours)
    ours_mib = max(m for _, m, _ in ours)
    report = json.loads(ours[0][2])
    evidently = json.loads(ref_out)
    ours_flagged, ref_flagged = set(report["drifted_features"]), set(evidently["drifted"])
    details: dict[str, Any] = {
        "rows": rows, "features": FEATURES, "file_MiB": round(mb, 1), "ours_runs_s": [round(s, 2) for s, _, _ in ours],
        "evidently_s": {k: round(v, 2) for k, v in evidently["seconds"].items()},
        "evidently_version": evidently["evidently"], "evidently_pandas": evidently["pandas"],
        "ours_drifted": sorted(ours_flagged), "evidently_drifted": sorted(ref_flagged),
        "designed_found_by_both": set(DESIGNED) <= ours_flagged & ref_flagged,
        "tiny_shift_flagged": {"ours": TINY in ours_flagged, "evidently": TINY in ref_flagged},
        "null_features_flagged": {"ours": len(ours_flagged - set(DESIGNED) - {TINY}),
                                  "evidently": len(ref_flagged - set(DESIGNED) - {TINY})},
    }
    same_verdicts = bool(details["designed_found_by_both"]) and TINY not in ours_flagged and not any(
        details["null_features_flagged"].values())
    return [
        Result(benchmark=f"mlops drift on two CSV files, {rows:,} x {FEATURES} numeric, end to end (s)",
               value=ours_s, reference_name="Evidently DataDriftPreset incl. pd.read_csv, end to end", reference=ref_s,
               unit="s", target=f"ratio <= {TARGET_RATIO} and the same verdicts on designed drifts",
               passed=ours_s <= TARGET_RATIO * ref_s and same_verdicts, details=details),
        Result(benchmark=f"mlops drift on two CSV files, {rows:,} x {FEATURES}: peak RSS of the process",
               value=ours_mib, reference_name="Evidently DataDriftPreset incl. pd.read_csv", reference=ref_mib,
               unit="MiB", target="informational", passed=True,
               details={"ours_MiB": round(ours_mib), "evidently_MiB": round(ref_mib)}),
    ]

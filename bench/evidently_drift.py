"""The reference of bench/bench_drift_files.py, run by the Evidently virtualenv's interpreter (never imports mlops):
``python evidently_drift.py REFERENCE.csv CURRENT.csv`` reads both files with ``pd.read_csv`` and runs Evidently's
DataDriftPreset (its defaults: per column, the normed Wasserstein distance above 1000 rows, threshold 0.1), then
prints one JSON line: the drifted columns and where the time went.
"""

from __future__ import annotations

import json
import sys
import time


def main(reference: str, current: str) -> None:
    started = time.perf_counter()
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    imported = time.perf_counter()
    ref, cur = pd.read_csv(reference), pd.read_csv(current)
    read = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(cur, ref)
    metrics = snapshot.dict()["metrics"]
    done = time.perf_counter()
    drifted = []
    for metric in metrics:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        value, threshold, method = float(metric["value"]), float(config["threshold"]), str(config.get("method"))
        # p-value tests drift below their threshold, distances at or above it
        if (value < threshold) if "p_value" in method else (value >= threshold):
            drifted.append(config["column"])
    print(json.dumps({"drifted": sorted(drifted), "evidently": __import__("evidently").__version__,
                      "pandas": pd.__version__, "seconds": {"import": imported - started, "read_csv": read - imported,
                                                            "report": done - read}}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

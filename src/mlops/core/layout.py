"""Where the platform keeps things in its buckets: the top-level key prefixes, declared once.

data bucket      incoming/<model>/ (uploads), curated/<model>/<sha256>/, quarantine/<model>/, contracts/<model>/,
                 labelled/<model>/ (drift_check's labelled captures), batch/<model>/ (batch inputs),
                 batch-runs/<model>/<batch id>/ (batch outputs), predictions/<model>/ (push answers),
                 ingest-runs/<model>/<run>/ (a large file's parts while the ingest Distributed Map runs)
models bucket    candidates/<model>/<run id>/, models/<model>/runs/<run id>/ (registered), reports/<model>/ (drift)
captures bucket  captures/YYYY/MM/DD/HH/ (Firehose)
"""

from __future__ import annotations

from typing import Final

INCOMING: Final = "incoming/"
CURATED: Final = "curated/"
QUARANTINE: Final = "quarantine/"
CONTRACTS: Final = "contracts/"
LABELLED: Final = "labelled/"
BATCH: Final = "batch/"
BATCH_RUNS: Final = "batch-runs/"
# a file validated in parts (mlops.data.ingest_map): its ranges, parts and summaries until the merge removes them
INGEST_RUNS: Final = "ingest-runs/"
PREDICTIONS: Final = "predictions/"
CANDIDATES: Final = "candidates/"
MODELS: Final = "models/"
REPORTS: Final = "reports/"
CAPTURES: Final = "captures/"

# Every prefix the platform keeps in its own buckets. A model's declared batch input may not start with one, whatever
# its bucket: CloudFormation names the platform's buckets, so mlops.toml cannot know their names, only their keys'.
RESERVED: Final = tuple(sorted((INCOMING, CURATED, QUARANTINE, CONTRACTS, LABELLED, BATCH, BATCH_RUNS, PREDICTIONS,
                                CANDIDATES, MODELS, REPORTS, CAPTURES, INGEST_RUNS)))

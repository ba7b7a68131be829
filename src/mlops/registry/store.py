"""The model registry, the one entry point its callers use: versions, aliases (``champion``/``challenger``), run
outcomes and the rollout's and drift_check's records, on one DynamoDB table (``table``); artefacts in S3.

Each group of records lives in a module of its own, with its types and sort keys; ``Registry`` is all of them over
one table. The groups are mixed in rather than held, so a call from one operation to another (``register`` reading
``latest_version``) goes through the registry, where a test can stand in for it.
"""

from __future__ import annotations

from typing import Any

from mlops.registry.drift_checks import DriftChecks
from mlops.registry.rollouts import Rollouts
from mlops.registry.runs import Runs
from mlops.registry.table import Table
from mlops.registry.versions import Versions


class Registry(Versions, Runs, Rollouts, DriftChecks):
    def __init__(self, dynamodb: Any, table: str) -> None:
        super().__init__(Table(dynamodb, table))
        # callers name the table in their messages (``registry.table``); tests reach the client through it
        self.db = dynamodb
        self.table = table

"""Pipeline runs: the outcome of each (registered | rejected | failed) and the claim of its dataset.

A dataset trains once: the first run to claim its sha256 trains it, a duplicate upload or a replay finds the
claim taken."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from mlops.core.clock import now_iso
from mlops.registry.table import RecordGroup, key_tail


def run_sk(run_id: str) -> str:
    return f"RUN#{run_id}"


def dataset_sk(dataset_sha256: str) -> str:
    return f"DATASET#{dataset_sha256}"


@dataclass(frozen=True)
class RunRecord:
    model: str
    run_id: str
    outcome: str
    reason: str
    at: str
    details: dict[str, Any] = field(default_factory=dict)

    def attributes(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reason": self.reason, "at": self.at,
                "details": json.dumps(self.details, default=str)}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RunRecord:
        return cls(key_tail(item["pk"]), key_tail(item["sk"]), item["outcome"], item["reason"], item["at"],
                   json.loads(item["details"]))


@dataclass(frozen=True)
class DatasetClaim:
    run_id: str
    at: str
    # makes the SDK's retry of the claiming call succeed: when a first attempt was written but its answer lost
    # (a timeout, a 5xx after the commit), the retry must not find "someone else's" claim
    claim_token: str

    def attributes(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "at": self.at, "claim_token": self.claim_token}


class Runs(RecordGroup):
    def run(self, model: str, run_id: str) -> RunRecord | None:
        item = self.records.get(model, run_sk(run_id))
        return RunRecord.from_item(item) if item else None

    def runs(self, model: str) -> list[RunRecord]:
        return [RunRecord.from_item(item) for item in self.records.query(model, "RUN#")]

    def record_run(self, model: str, run_id: str, outcome: str, reason: str, details: dict[str, Any]) -> RunRecord:
        record = RunRecord(model, run_id, outcome, reason, now_iso(), details)
        self.records.put(model, run_sk(run_id), record.attributes())
        return record

    def claim_dataset(self, model: str, dataset_sha256: str, run_id: str) -> bool:
        """True for the first claim of a dataset; later claims (duplicates, replays) get False."""
        claim = DatasetClaim(run_id, now_iso(), uuid.uuid4().hex)
        return self.records.put_if(model, dataset_sk(dataset_sha256), claim.attributes(),
                                   "attribute_not_exists(pk) OR claim_token = :token",
                                   values={":token": claim.claim_token})

    def release_dataset(self, model: str, dataset_sha256: str) -> None:
        """Undo a claim whose pipeline could not even start, so the dataset can be retried."""
        self.records.delete(model, dataset_sk(dataset_sha256))

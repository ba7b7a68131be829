"""drift_check's records: the checked windows, the claim of a retraining request (its cooldown) and every retrain
decision with its reason. A replayed window overwrites its own item; of two concurrent checks asking for a
retraining, one wins the claim."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from mlops.registry.table import RecordGroup

RETRAIN = "RETRAIN#LATEST"


@dataclass(frozen=True)
class DriftWindow:
    window_end: str
    status: str
    drifted: bool
    labelled_rows: int
    details: dict[str, Any]

    def attributes(self) -> dict[str, Any]:
        return {"window_end": self.window_end, "status": self.status, "drifted": self.drifted,
                "labelled_rows": int(self.labelled_rows), "details": json.dumps(self.details, default=str)}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DriftWindow:
        return cls(item["window_end"], item["status"], item["drifted"], item["labelled_rows"],
                   json.loads(item["details"]))


@dataclass(frozen=True)
class RetrainDecision:
    at: str
    requested: bool
    reason: str
    details: dict[str, Any]

    def attributes(self) -> dict[str, Any]:
        return {"at": self.at, "requested": self.requested, "reason": self.reason,
                "details": json.dumps(self.details, default=str)}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RetrainDecision:
        return cls(item["at"], item["requested"], item["reason"], json.loads(item["details"]))


class DriftChecks(RecordGroup):
    def record_drift_window(self, model: str, window_end: str, *, status: str, drifted: bool, labelled_rows: int,
                            details: dict[str, Any]) -> None:
        window = DriftWindow(window_end, status, drifted, labelled_rows, details)
        self.records.put(model, f"DRIFT#{window_end}", window.attributes())

    def drift_windows(self, model: str, *, after: str = "") -> list[dict[str, Any]]:
        """Checked windows ending after ``after`` (an ISO time; default: all), oldest first."""
        # BETWEEN is inclusive: the window ending exactly at `after` is dropped here
        return [asdict(DriftWindow.from_item(item)) for item in self.records.between(model, f"DRIFT#{after}", "DRIFT#~")
                if item["window_end"] > after]

    def last_retrain_request(self, model: str) -> str | None:
        item = self.records.get(model, RETRAIN)
        return item["requested_at"] if item else None

    def claim_retrain(self, model: str, at: str, *, not_after: str) -> bool:
        """Record a retraining request at ``at`` unless another was made after ``not_after`` (the cooldown):
        of two concurrent checks, one wins. A claim already made at ``at`` is this very one: the SDK's retry of
        a write whose answer was lost, or the same window checked again after a failure."""
        return self.records.put_if(model, RETRAIN, {"requested_at": at},
                                   "attribute_not_exists(pk) OR requested_at <= :cutoff OR requested_at = :at",
                                   values={":cutoff": not_after, ":at": at})

    def release_retrain(self, model: str, at: str, *, previous: str | None) -> None:
        """Give back the claim made at ``at`` (its request could not be made), restoring the one before it, so
        that the next check may ask; a claim made since by another check stays."""
        if previous is None:
            self.records.delete_if(model, RETRAIN, "requested_at = :at", values={":at": at})
        else:
            self.records.put_if(model, RETRAIN, {"requested_at": previous}, "requested_at = :at", values={":at": at})

    def record_retrain_decision(self, model: str, at: str, *, requested: bool, reason: str,
                                details: dict[str, Any]) -> None:
        decision = RetrainDecision(at, requested, reason, details)
        self.records.put(model, f"RETRAINDECISION#{at}#{uuid.uuid4().hex[:8]}", decision.attributes())

    def retrain_decisions(self, model: str) -> list[dict[str, Any]]:
        """Every retrain decision, oldest first."""
        return [asdict(RetrainDecision.from_item(item)) for item in self.records.query(model, "RETRAINDECISION#")]

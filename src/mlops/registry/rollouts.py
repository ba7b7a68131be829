"""The rollout's records: its looks, the audit trail of alias changes, its lock, and the alias changes themselves
(promote, retire the challenger), each written in one transaction with its audit event."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from mlops.core.clock import now_iso
from mlops.registry.table import RecordGroup
from mlops.registry.versions import CHALLENGER, CHAMPION, alias_sk

LOCK = "LOCK#rollout"


def look_prefix(challenger: int) -> str:
    return f"LOOK#{challenger:06d}#"


def event_sk(at: str) -> str:
    """A new key per event: two events in the same second are two records."""
    return f"EVENT#{at}#{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class AuditEvent:
    at: str
    action: str
    who: str
    why: str
    details: dict[str, Any]

    def attributes(self) -> dict[str, Any]:
        return {"at": self.at, "action": self.action, "who": self.who, "why": self.why,
                "details": json.dumps(self.details, default=str)}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> AuditEvent:
        return cls(item["at"], item["action"], item["who"], item["why"], json.loads(item["details"]))


@dataclass(frozen=True)
class RolloutLock:
    owner: str
    expires: int  # epoch seconds; an expired lock can be taken over

    def attributes(self) -> dict[str, Any]:
        return {"owner": self.owner, "expires": int(self.expires)}


class Rollouts(RecordGroup):
    def looks(self, model: str, challenger: int | None = None) -> list[dict[str, Any]]:
        """The rollout's looks (statistics and action of each), oldest first; of one challenger if given."""
        prefix = look_prefix(challenger) if challenger is not None else "LOOK#"
        return [json.loads(item["look"]) for item in self.records.query(model, prefix)]

    def record_look(self, model: str, challenger: int, look: dict[str, Any]) -> None:
        at = str(look.get("at") or now_iso())
        # looks a second apart or less keep their order by their number (``at`` has whole seconds)
        number = f"{int(look['number']):06d}#" if look.get("number") is not None else ""
        sk = f"{look_prefix(challenger)}{at}#{number}{uuid.uuid4().hex[:6]}"
        self.records.put(model, sk, {"look": json.dumps({**look, "challenger": challenger}, default=str)})

    def events(self, model: str) -> list[dict[str, Any]]:
        """The audit trail of alias changes (promotions, rollbacks), oldest first."""
        return [asdict(AuditEvent.from_item(item)) for item in self.records.query(model, "EVENT#")]

    def record_event(self, model: str, action: str, *, who: str, why: str, details: dict[str, Any]) -> None:
        """An audit record of a change that moves no alias (e.g. a republish on new code)."""
        self._audited(model, [], AuditEvent(now_iso(), action, who, why, details), f"record {action} of {model}")

    def promote(self, model: str, *, champion: int, challenger: int, who: str, why: str) -> None:
        """The challenger becomes the champion, if the aliases are still what the caller saw."""
        self._audited(model, [
            self._delete_alias_if(model, CHALLENGER, challenger),
            self.records.put_op(model, alias_sk(CHAMPION), {"version": challenger},
                                condition="version = :v", values={":v": champion}),
        ], AuditEvent(now_iso(), "promote", who, why, {"from": champion, "to": challenger}),
            f"promoting {model} v{challenger}")

    def retire_challenger(self, model: str, *, challenger: int, who: str, why: str, action: str = "rollback") -> None:
        self._audited(model, [self._delete_alias_if(model, CHALLENGER, challenger)],
                      AuditEvent(now_iso(), action, who, why, {"challenger": challenger}),
                      f"rolling back {model} v{challenger}")

    def _delete_alias_if(self, model: str, alias: str, version: int) -> dict[str, Any]:
        """Remove an alias only if it still points where the caller saw it point."""
        return self.records.delete_op(model, alias_sk(alias), condition="version = :v", values={":v": version})

    def _audited(self, model: str, operations: list[dict[str, Any]], event: AuditEvent, what: str) -> None:
        """The operations and their audit event, all or nothing; the event's new key tells a retry of a
        committed transaction from a lost race."""
        sk = event_sk(event.at)
        self.records.transact([*operations, self.records.put_op(model, sk, event.attributes())],
                              conflict=f"{what}: the aliases changed meanwhile; look again and retry",
                              witness=(model, sk))

    def acquire_lock(self, model: str, owner: str, ttl_seconds: int = 900) -> bool:
        """One rollout (or manual promote/rollback) at a time per model; an expired lock can be taken over."""
        now = int(time.time())
        return self.records.put_if(model, LOCK, RolloutLock(owner, now + ttl_seconds).attributes(),
                                   "attribute_not_exists(pk) OR expires < :now OR #o = :owner",
                                   names={"#o": "owner"}, values={":now": now, ":owner": owner})

    def release_lock(self, model: str, owner: str) -> None:
        self.records.delete_if(model, LOCK, "#o = :owner", names={"#o": "owner"}, values={":owner": owner})

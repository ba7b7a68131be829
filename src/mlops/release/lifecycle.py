"""Moving traffic between model versions: promote the challenger, roll it back, and say where things stand.

Each change is one alias update (the traffic) plus one registry transaction (the record, with who and
why), under the model's rollout lock so that a running rollout and a person cannot both move the alias.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from mlops.core.errors import MlopsError
from mlops.registry.store import Registry
from mlops.registry.versions import CHALLENGER, CHAMPION, ModelVersion
from mlops.release.deploy import ServingDeployer


class RolloutInProgress(MlopsError):
    """Another rollout or manual change holds the model's lock."""


class NothingToDo(MlopsError):
    """The requested change does not apply (e.g. no challenger to promote)."""


def _deployed(version: ModelVersion | None, role: str, model: str) -> ModelVersion:
    if version is None:
        raise NothingToDo(f"{model} has no {role}")
    if version.lambda_version is None:
        raise NothingToDo(f"{model} v{version.version} ({role}) was never deployed to its infer function")
    return version


class Lifecycle:
    def __init__(self, *, registry: Registry, deployer: ServingDeployer, function: str) -> None:
        self.registry = registry
        self.deployer = deployer
        self.function = function

    def _move(self, model: str, *, to: str, lock_owner: str | None,
              record: Callable[[ModelVersion, ModelVersion], None]) -> tuple[ModelVersion, ModelVersion]:
        """Under the model's lock: route all traffic to the champion or the challenger (`to`), then record it.
        Returns (champion, challenger) as they were before the move."""
        owner = lock_owner or f"manual-{uuid.uuid4().hex[:12]}"
        if not self.registry.acquire_lock(model, owner):
            raise RolloutInProgress(f"a rollout of {model} is in progress; wait for it or let it decide")
        try:
            champion = _deployed(self.registry.alias(model, CHAMPION), CHAMPION, model)
            challenger = _deployed(self.registry.alias(model, CHALLENGER), CHALLENGER, model)
            target = challenger if to == CHALLENGER else champion
            assert target.lambda_version is not None
            with self.deployer.provisional(self.function):
                self.deployer.route(self.function, target.lambda_version)
                record(champion, challenger)
        finally:
            self.registry.release_lock(model, owner)
        return champion, challenger

    def promote(self, model: str, *, who: str, why: str, lock_owner: str | None = None) -> dict[str, Any]:
        champion, challenger = self._move(
            model, to=CHALLENGER, lock_owner=lock_owner,
            record=lambda old, new: self.registry.promote(model, champion=old.version, challenger=new.version,
                                                          who=who, why=why))
        return {"model": model, "action": "promote", "champion": challenger.version,
                "previous_champion": champion.version, "who": who, "why": why}

    def rollback(self, model: str, *, who: str, why: str, lock_owner: str | None = None) -> dict[str, Any]:
        champion, challenger = self._move(
            model, to=CHAMPION, lock_owner=lock_owner,
            record=lambda _c, n: self.registry.retire_challenger(model, challenger=n.version, who=who, why=why))
        return {"model": model, "action": "rollback", "champion": champion.version,
                "rolled_back": challenger.version, "who": who, "why": why}

    def republish(self, model: str, *, who: str, why: str = "the function's code changed",
                  lock_owner: str | None = None) -> dict[str, Any]:
        """Champion and challenger published again on the function's current code (after a code-only
        ``cdk deploy``), with the traffic split unchanged; recorded in the registry."""
        owner = lock_owner or f"republish-{uuid.uuid4().hex[:12]}"
        if not self.registry.acquire_lock(model, owner):
            raise RolloutInProgress(f"a rollout of {model} holds its lock; try again in a few seconds")
        try:
            champion = _deployed(self.registry.alias(model, CHAMPION), CHAMPION, model)
            challenger = self.registry.alias(model, CHALLENGER)
            split = self.deployer.split(self.function)
            moved = {champion.version: self.deployer.publish(self.function, champion.version)}
            if challenger is not None and challenger.lambda_version is not None:
                moved[challenger.version] = self.deployer.publish(self.function, challenger.version)
            self.deployer.route(self.function, moved[champion.version],
                                moved.get(challenger.version) if challenger else None, split.challenger_weight)
            before = {v.version: v.lambda_version for v in (champion, challenger) if v is not None}
            for version, lambda_version in moved.items():
                self.registry.set_lambda_version(model, version, lambda_version)
            details = {"lambda_versions": {str(v): {"before": before.get(v), "after": lv} for v, lv in moved.items()},
                       "challenger_weight": split.challenger_weight}
            self.registry.record_event(model, "republish", who=who, why=why, details=details)
        finally:
            self.registry.release_lock(model, owner)
        return {"model": model, "action": "republish", **details, "who": who, "why": why}

    def status(self, model: str) -> dict[str, Any]:
        split = self.deployer.split(self.function)
        weights = {split.champion: 1 - split.challenger_weight, split.challenger: split.challenger_weight}
        versions = []
        for v in self.registry.versions(model):
            status = v.aliases[0] if v.aliases else "retired"
            weight = weights.get(v.lambda_version, 0.0) if v.lambda_version else 0.0
            versions.append({**v.to_dict(), "status": status, "weight": round(weight, 6)})
        return {"model": model, "split": split.to_dict(), "versions": versions,
                "events": self.registry.events(model)}

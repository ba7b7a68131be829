"""Model versions and their aliases (``champion``/``challenger``); artefacts are in S3, under the run's prefix.

A version exists only once its record is written, and it is written in one transaction together with
the version counter, its alias and its run outcome: a failure before that leaves no trace in the registry,
and the artefacts it uploaded sit under the run's own prefix where nothing points at them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlops.core.clock import now_iso
from mlops.core.errors import RegistryConflict
from mlops.registry.runs import RunRecord, run_sk
from mlops.registry.table import RecordGroup, key_tail

CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)

META = "META"  # the version counter: latest_version
# a version's dataset_sha256 when it was trained outside the platform (mlops models import): its data is not known
EXTERNAL_DATASET = "external"


def version_sk(version: int) -> str:
    return f"VERSION#{version:06d}"


def alias_sk(alias: str) -> str:
    return f"ALIAS#{alias}"


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    run_id: str
    status: str
    created_at: str
    artefacts_prefix: str  # s3://bucket/models/<model>/runs/<run_id>/
    onnx_sha256: str
    dataset_sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    lambda_version: str | None = None  # the infer function version serving it, once deployed
    # of the manifest.json register wrote: what serving verifies the manifest (and through it the contract)
    # against. None for a version registered without it, which serving refuses: nothing vouches for its files.
    manifest_sha256: str | None = None

    @property
    def model_uri(self) -> str:
        return self.artefacts_prefix + "model.onnx"

    @property
    def manifest_uri(self) -> str:
        return self.artefacts_prefix + "manifest.json"

    @property
    def baseline_uri(self) -> str:
        return self.artefacts_prefix + "baseline.json"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "status": self.status,
            "aliases": list(self.aliases),
            "created_at": self.created_at,
            "model_uri": self.model_uri,
            "manifest_uri": self.manifest_uri,
            "baseline_uri": self.baseline_uri,
            "onnx_sha256": self.onnx_sha256,
            "manifest_sha256": self.manifest_sha256,
            "dataset_sha256": self.dataset_sha256,
            "metrics": self.metrics,
            "lambda_version": self.lambda_version,
        }

    def attributes(self) -> dict[str, Any]:
        """The stored record; its aliases are items of their own. An attribute without a value is left out."""
        return {
            "version": int(self.version), "run_id": self.run_id, "status": self.status,
            "created_at": self.created_at, "artefacts_prefix": self.artefacts_prefix,
            "onnx_sha256": self.onnx_sha256, "dataset_sha256": self.dataset_sha256,
            "metrics": json.dumps(self.metrics, default=str),
            **({"manifest_sha256": self.manifest_sha256} if self.manifest_sha256 else {}),
            **({"lambda_version": self.lambda_version} if self.lambda_version is not None else {}),
        }

    @classmethod
    def from_item(cls, item: dict[str, Any], aliases: dict[str, int]) -> ModelVersion:
        version = item["version"]
        return cls(
            model=key_tail(item["pk"]), version=version, run_id=item["run_id"], status=item["status"],
            created_at=item["created_at"], artefacts_prefix=item["artefacts_prefix"],
            onnx_sha256=item["onnx_sha256"], dataset_sha256=item["dataset_sha256"],
            metrics=json.loads(item["metrics"]),
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
            lambda_version=item.get("lambda_version"), manifest_sha256=item.get("manifest_sha256"),
        )


class Versions(RecordGroup):
    def aliases(self, model: str) -> dict[str, int]:
        return {key_tail(item["sk"]): item["version"] for item in self.records.query(model, "ALIAS#")}

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        aliases = self.aliases(model)
        version = aliases.get(alias)
        if version is None:
            return None
        item = self.records.get(model, version_sk(version))
        return ModelVersion.from_item(item, aliases) if item else None

    def version(self, model: str, version: int) -> ModelVersion | None:
        item = self.records.get(model, version_sk(version))
        return ModelVersion.from_item(item, self.aliases(model)) if item else None

    def versions(self, model: str) -> list[ModelVersion]:
        aliases = self.aliases(model)
        return [ModelVersion.from_item(item, aliases) for item in self.records.query(model, "VERSION#")]

    def latest_version(self, model: str) -> int:
        item = self.records.get(model, META)
        return int(item["latest_version"]) if item else 0

    def set_lambda_version(self, model: str, version: int, lambda_version: str) -> None:
        self.records.update(model, version_sk(version), "SET lambda_version = :l",
                            condition="attribute_exists(pk)", values={":l": lambda_version})

    def register(self, *, model: str, run_id: str, artefacts_prefix: str, onnx_sha256: str,
                 dataset_sha256: str, metrics: dict[str, Any], alias: str | None,
                 manifest_sha256: str | None = None) -> ModelVersion:
        """Write the next version, its alias and its run outcome in one transaction.

        Idempotent per run: a retried register of the same run returns the version it already made.
        ``manifest_sha256``: of the manifest stored under ``artefacts_prefix``; serving refuses a version without.
        """
        for _attempt in range(5):
            # Checked before every attempt: a write whose answer was lost (a timeout or 5xx after the commit)
            # looks like a lost race, and must come back as the version it made, not make a second one.
            run = self.records.get(model, run_sk(run_id))
            previous = RunRecord.from_item(run) if run else None
            if previous and previous.outcome == "registered":
                existing = self.version(model, int(previous.details["version"]))
                if existing:
                    return existing
            latest = self.latest_version(model)
            version = latest + 1
            created = now_iso()
            record = ModelVersion(model, version, run_id, alias or "registered", created, artefacts_prefix,
                                  onnx_sha256, dataset_sha256, metrics, manifest_sha256=manifest_sha256)
            outcome = RunRecord(model, run_id, "registered", f"registered as version {version}", created,
                                {"version": version, "alias": alias})
            operations = [
                self.records.update_op(
                    model, META, "SET latest_version = :v",
                    condition="attribute_not_exists(latest_version) OR latest_version = :prev",
                    values={":v": version, ":prev": latest}),
                self.records.put_op(model, version_sk(version), record.attributes(),
                                    condition="attribute_not_exists(pk)"),
                self.records.put_op(model, run_sk(run_id), outcome.attributes()),
            ]
            if alias:
                operations.append(self.records.put_op(model, alias_sk(alias), {"version": version}))
            try:
                self.records.transact(operations, conflict=f"registering {model} v{version}")
            except RegistryConflict:
                continue  # another register won this version number; take the next one
            registered = self.version(model, version)
            assert registered is not None
            return registered
        raise RegistryConflict(f"could not allocate a version for {model} after 5 attempts (concurrent registers)")

"""Ingest: a CSV under ``incoming/<model>/`` becomes a curated, content-addressed Parquet dataset.

Layout in the data bucket::

    incoming/<model>/<file>.csv                  the original, never modified or deleted
    curated/<model>/<sha256>/data.parquet        the good rows, typed
    curated/<model>/<sha256>/manifest.json       written last: its arrival starts training
    quarantine/<model>/<sha256>/rows.csv         bad rows with their line number and reason
    quarantine/<model>/<sha256>/report.json      what happened to the file, for people and tools
    contracts/<model>/v000001.json               the data contract, one immutable object per version

``sha256`` is the hash of the source file's bytes, so the same content delivered twice (or under two
names) is the same dataset and trains once.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.core.clock import now_iso
from mlops.core.config import ModelConfig, ProjectConfig
from mlops.core.errors import FileRejected, RegistryConflict, UnknownModel
from mlops.data.frames import put_parquet
from mlops.data.inference import infer_contract
from mlops.data.reading import read_csv
from mlops.data.schema import DataContract
from mlops.data.validation import validate

_CONTRACT_KEY = re.compile(r"v(\d{6})\.json$")


@dataclass
class IngestOutcome:
    status: str  # curated | rejected
    model: str | None
    source: str
    source_version: str | None
    reason: str = ""
    code: str = ""
    rows_in: int = 0
    rows_curated: int = 0
    rows_quarantined: int = 0
    dataset_sha256: str | None = None
    contract_version: int | None = None
    manifest_uri: str | None = None
    report_uri: str | None = None
    quarantine_uri: str | None = None
    new_categories: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ContractStore:
    """Versioned data contracts, one immutable JSON object per version."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def _prefix(self, model: str) -> str:
        return f"contracts/{model}/"

    def current(self, model: str) -> DataContract | None:
        versions = sorted(
            int(m.group(1)) for k in self.store.keys(self._prefix(model)) if (m := _CONTRACT_KEY.search(k))
        )
        return self.get(model, versions[-1]) if versions else None

    def get(self, model: str, version: int) -> DataContract:
        return DataContract.from_json(self.store.get_bytes(f"{self._prefix(model)}v{version:06d}.json").decode())

    def save(self, model: str, contract: DataContract) -> DataContract:
        """Create-only: when two ingests race to write the same version, the first one wins and is used."""
        key = f"{self._prefix(model)}v{contract.version:06d}.json"
        try:
            self.store.put_bytes(key, contract.to_json().encode(), content_type="application/json", create_only=True)
        except RegistryConflict:
            return self.get(model, contract.version)
        return contract


def model_of_key(key: str) -> tuple[str, str]:
    """``incoming/<model>/<name>`` -> (model, name); path tricks are rejected, not normalised."""
    path = PurePosixPath(key)
    parts = path.parts
    if len(parts) < 3 or parts[0] != layout.INCOMING.rstrip("/") or any(p in ("..", ".", "") for p in parts):
        raise FileRejected("bad_key", f"object key {key!r} is not of the form incoming/<model>/<file>.csv")
    return parts[1], "/".join(parts[2:])


def _report_prefix(model: str | None, dataset_sha256: str | None, key: str, etag: str | None) -> str:
    if dataset_sha256:
        ident = dataset_sha256
    else:
        # Not downloaded (too large, unknown model): name the report after the object and its etag.
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePosixPath(key).name)[:80] or "object"
        ident = f"{stem}-{(etag or 'noetag').strip(chr(34))[:16]}"
    return f"quarantine/{model or '_unknown'}/{ident}/"


def _reject(outcome: IngestOutcome, store: ObjectStore, exc: FileRejected, key: str, etag: str | None) -> IngestOutcome:
    prefix = _report_prefix(outcome.model, outcome.dataset_sha256, key, etag)
    outcome.status, outcome.code, outcome.reason = "rejected", exc.code, exc.message
    outcome.report_uri = store.uri(prefix + "report.json")
    # The original stays where it landed (incoming/ is never touched); the report says where it is.
    store.put_json(prefix + "report.json", {**outcome.to_dict(), "at": now_iso(),
                                            "what_to_do": _advice(exc.code)})
    return outcome


_ADVICE = {
    "too_large": "split the file into parts below the limit and upload them separately",
    "encoding": "save the file as UTF-8 CSV and upload it again",
    "compressed": "upload the uncompressed CSV",
    "unknown_model": "upload under incoming/<model>/ for a model declared in mlops.toml",
    "missing_columns": "add the missing columns, or declare a new contract version",
    "unexpected_columns": "remove the extra columns, or declare a new contract version",
    "too_many_bad_rows": "fix the rows listed in the quarantine report and upload the file again",
}


def _advice(code: str) -> str:
    return _ADVICE.get(code, "fix the file as described in `reason` and upload it again")


def ingest_object(*, bucket: str, key: str, version_id: str | None, etag: str | None, size: int | None,
                  config: ProjectConfig, store: ObjectStore) -> IngestOutcome:
    """Validate one incoming object and curate it. Never raises for bad input: the outcome says why."""
    outcome = IngestOutcome(status="rejected", model=None, source=f"s3://{bucket}/{key}", source_version=version_id)
    try:
        model_name, _name = model_of_key(key)
        outcome.model = model_name
        try:
            model = config.model(model_name)
        except UnknownModel as exc:
            raise FileRejected("unknown_model", str(exc)) from exc
        max_bytes = model.max_file_mb * 1024 * 1024
        if size is not None and size > max_bytes:
            raise FileRejected(
                "too_large",
                f"{key} is {size / 2**20:.1f} MB; one ingest holds at most {model.max_file_mb} MB in memory",
            )
        data = store.get_bytes(key, version_id)
        outcome.dataset_sha256 = hashlib.sha256(data).hexdigest()
        return _curate(outcome, model, data, max_bytes, store)
    except FileRejected as exc:
        return _reject(outcome, store, exc, key, etag)


def _curate(outcome: IngestOutcome, model: ModelConfig, data: bytes, max_bytes: int,
            store: ObjectStore) -> IngestOutcome:
    assert outcome.dataset_sha256 is not None
    frame = read_csv(data, max_bytes=max_bytes)
    contracts = ContractStore(store)
    contract = contracts.current(model.name)
    if contract is None:
        declared = DataContract.model_validate({**model.contract, "target": model.target}) if model.contract else None
        contract = contracts.save(model.name, declared or infer_contract(frame, model.target))
    result = validate(frame, contract, max_bad_row_fraction=model.max_bad_row_fraction)
    if result.new_categories:
        contract = contracts.save(model.name, contract.with_categories(result.new_categories))
    prefix = f"{model.name}/{outcome.dataset_sha256}/"
    outcome.rows_in, outcome.rows_curated, outcome.rows_quarantined = result.rows_in, len(result.good), len(result.bad)
    outcome.contract_version, outcome.new_categories = contract.version, result.new_categories
    if len(result.bad):
        buffer = io.StringIO()
        result.bad.to_csv(buffer, index=False)
        store.put_bytes(f"quarantine/{prefix}rows.csv", buffer.getvalue().encode(), content_type="text/csv")
        outcome.quarantine_uri = store.uri(f"quarantine/{prefix}rows.csv")
        outcome.report_uri = store.uri(f"quarantine/{prefix}report.json")
        top = Counter(r for reasons in result.bad["_reason"] for r in str(reasons).split("; ")).most_common(10)
        store.put_json(f"quarantine/{prefix}report.json", {**outcome.to_dict(), "status": "partially_curated",
                                                           "top_reasons": top, "at": now_iso()})
    if result.good.empty:
        raise FileRejected("no_valid_rows", f"none of the {result.rows_in} rows is valid; see {outcome.quarantine_uri}")
    parquet = put_parquet(store, f"curated/{prefix}data.parquet", result.good)
    manifest = {
        "model": model.name,
        "dataset_sha256": outcome.dataset_sha256,
        "parquet_sha256": hashlib.sha256(parquet).hexdigest(),
        "data_uri": store.uri(f"curated/{prefix}data.parquet"),
        "source": {"uri": outcome.source, "version_id": outcome.source_version},
        "rows": {"in": result.rows_in, "curated": len(result.good), "quarantined": len(result.bad)},
        "contract_version": contract.version,
        "quarantine_uri": outcome.quarantine_uri,
        "created_at": now_iso(),
    }
    store.put_json(f"curated/{prefix}manifest.json", manifest)
    outcome.status = "curated"
    outcome.manifest_uri = store.uri(f"curated/{prefix}manifest.json")
    return outcome


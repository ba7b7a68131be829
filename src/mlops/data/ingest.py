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

import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from mlops.aws.storage import ObjectStore
from mlops.core import layout
from mlops.core.clock import now_iso
from mlops.core.config import ModelConfig, ProjectConfig
from mlops.core.errors import FileRejected, RegistryConflict, UnknownModel
from mlops.data.frames import PARQUET
from mlops.data.inference import infer_contract
from mlops.data.reading import CsvReader
from mlops.data.schema import DataContract, contract_key
from mlops.data.validation import ChunkedValidation
from mlops.data.writers import CuratedWriter, QuarantineWriter

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
    # a file above its model's ingest_map_above_mb: the ingest state machine's execution and how many parts it has
    execution: str | None = None
    parts: int = 0
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
        return f"{layout.CONTRACTS}{model}/"

    def current(self, model: str) -> DataContract | None:
        versions = sorted(
            int(m.group(1)) for k in self.store.keys(self._prefix(model)) if (m := _CONTRACT_KEY.search(k))
        )
        return self.get(model, versions[-1]) if versions else None

    def get(self, model: str, version: int) -> DataContract:
        return DataContract.from_json(self.store.get_bytes(contract_key(model, version)).decode())

    def save(self, model: str, contract: DataContract) -> DataContract:
        """Create-only: when two ingests race to write the same version, the first one wins and is used."""
        key = contract_key(model, contract.version)
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


def reject(outcome: IngestOutcome, store: ObjectStore, exc: FileRejected, key: str, etag: str | None) -> IngestOutcome:
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


# (execution name, execution input) -> the execution's ARN, or None when an execution of that name exists already
MapStarter = Callable[[str, dict[str, Any]], "str | None"]
# what takes over a file above its model's ingest_map_above_mb: mlops.data.ingest_map.plan with its starter, given
# (outcome, model, reader of the object, store) and the keywords key, version_id, etag, size, chunk_bytes
MapPlanner = Callable[..., "IngestOutcome"]


def ingest_object(*, bucket: str, key: str, version_id: str | None, etag: str | None, size: int | None,
                  config: ProjectConfig, store: ObjectStore, chunk_bytes: int | None = None,
                  progress: Progress | None = None, plan_map: MapPlanner | None = None) -> IngestOutcome:
    """Validate one incoming object and curate it, streaming it chunk by chunk; or, above the model's
    ingest_map_above_mb and given ``plan_map``, hand it to that (mlops.data.ingest_map.plan: it starts the ingest state
    machine, which validates the file in parts). Never raises for bad input: the outcome says why."""
    outcome = IngestOutcome(status="rejected", model=None, source=f"s3://{bucket}/{key}", source_version=version_id)
    reader: CsvReader | None = None
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
                f"{key} is {size / 2**20:.1f} MB, over the model's max_file_mb ({model.max_file_mb} MB); split it "
                "into parts below the limit, or raise max_file_mb in mlops.toml",
            )
        chunk_bytes = chunk_bytes or max(int(model.ingest_chunk_mb * 2**20), 1)
        reader = CsvReader(store.open(key, version_id), max_bytes=max_bytes, chunk_bytes=chunk_bytes)
        if plan_map is not None and size is not None and size > model.ingest_map_above_mb * 1024 * 1024:
            planned: IngestOutcome = plan_map(outcome, model, reader, store, key=key, version_id=version_id, etag=etag,
                                              size=size, chunk_bytes=chunk_bytes)
            return planned
        with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as work:
            return _curate(outcome, model, reader, store, Path(work), size=size, progress=progress)
    except FileRejected as exc:
        if reader is not None and exc.code != "too_large" and outcome.dataset_sha256 is None:
            # the report is filed under the content's hash, as a curated file's is: read what is left
            outcome.dataset_sha256 = reader.blocks.drain()
        return reject(outcome, store, exc, key, etag)
    finally:
        if reader is not None:
            reader.close()


Progress = Callable[[dict[str, Any]], None]


@dataclass
class Curation:
    """A file read and judged chunk by chunk: its good rows and bad rows in local files, and the verdicts."""

    contract: DataContract
    validation: ChunkedValidation
    curated: CuratedWriter
    quarantine: QuarantineWriter


def curate_stream(reader: CsvReader, *, contract: Callable[[pd.DataFrame], DataContract], max_bad_row_fraction: float,
                  work: Path, progress: Progress | None = None, size: int | None = None) -> Curation:
    """Read, validate and write a file chunk by chunk; ``contract`` gives the contract from the first rows read
    (the current one, or one inferred from them). Raises FileRejected for a file refused whole."""
    curation: Curation | None = None
    quarantine = QuarantineWriter(work / "rows.csv")
    for number, (frame, hashes) in enumerate(reader.hashed_chunks(), start=1):
        if curation is None:
            if frame.empty:
                continue  # a header longer than a chunk: the rows come next
            rules = contract(frame)
            curation = Curation(rules, ChunkedValidation(rules, max_bad_row_fraction=max_bad_row_fraction),
                                CuratedWriter(work / "data.parquet", rules), quarantine)
        result = curation.validation.chunk(frame, hashes)
        curation.curated.write(result.good)
        quarantine.write(result.bad)
        del frame, hashes, result  # one chunk in memory at a time: not this one while the next is read
        if progress is not None:
            progress({"chunk": number, "bytes_read": reader.blocks.bytes_read, "bytes_total": size,
                      "rows": curation.validation.rows, "rows_quarantined": curation.validation.bad})
    reader.finish()
    assert curation is not None  # finish() refuses a file without rows
    curation.validation.finish()
    return curation


def contract_rules(model: ModelConfig, contracts: ContractStore) -> Callable[[pd.DataFrame], DataContract]:
    """The contract a file is validated with, given its first rows: the current one, else the one mlops.toml declares,
    else one inferred from those rows (saved as the model's first version)."""

    def rules(first_rows: pd.DataFrame) -> DataContract:
        current = contracts.current(model.name)
        if current is not None:
            return current
        declared = DataContract.model_validate({**model.contract, "target": model.target}) if model.contract else None
        return contracts.save(model.name, declared or infer_contract(first_rows, model.target))

    return rules


def _curate(outcome: IngestOutcome, model: ModelConfig, reader: CsvReader, store: ObjectStore, work: Path, *,
            size: int | None, progress: Progress | None) -> IngestOutcome:
    contracts = ContractStore(store)
    curation = curate_stream(reader, contract=contract_rules(model, contracts),
                             max_bad_row_fraction=model.max_bad_row_fraction, work=work, progress=progress, size=size)
    outcome.dataset_sha256 = reader.sha256
    validation = curation.validation
    return publish(outcome, model, store, curation.contract, rows_in=validation.rows, curated=curation.curated,
                   quarantine=curation.quarantine, top_reasons=validation.reasons.most_common(10),
                   new_categories=validation.categories())


def publish(outcome: IngestOutcome, model: ModelConfig, store: ObjectStore, contract: DataContract, *, rows_in: int,
            curated: CuratedWriter, quarantine: QuarantineWriter, top_reasons: list[tuple[str, int]],
            new_categories: dict[str, list[str]]) -> IngestOutcome:
    """A judged file's outputs: the quarantined rows and their report, the curated Parquet, then the manifest, last
    (its arrival starts training). Raises FileRejected when no row is valid."""
    contracts = ContractStore(store)
    if new_categories:
        contract = contracts.save(model.name, contract.with_categories(new_categories))
    prefix = f"{model.name}/{outcome.dataset_sha256}/"
    outcome.rows_in, outcome.rows_curated, outcome.rows_quarantined = rows_in, curated.rows, quarantine.rows
    outcome.contract_version, outcome.new_categories = contract.version, new_categories
    if quarantine.rows:
        store.put_file(f"quarantine/{prefix}rows.csv", quarantine.path, content_type="text/csv")
        outcome.quarantine_uri = store.uri(f"quarantine/{prefix}rows.csv")
        outcome.report_uri = store.uri(f"quarantine/{prefix}report.json")
        store.put_json(f"quarantine/{prefix}report.json", {**outcome.to_dict(), "status": "partially_curated",
                                                           "top_reasons": top_reasons, "at": now_iso()})
    if not curated.rows:
        raise FileRejected("no_valid_rows",
                           f"none of the {rows_in} rows is valid; see {outcome.quarantine_uri}")
    parquet_sha256 = curated.close()
    store.put_file(f"curated/{prefix}data.parquet", curated.path, content_type=PARQUET, sha256=parquet_sha256)
    manifest = {
        "model": model.name,
        "dataset_sha256": outcome.dataset_sha256,
        "parquet_sha256": parquet_sha256,
        "data_uri": store.uri(f"curated/{prefix}data.parquet"),
        "source": {"uri": outcome.source, "version_id": outcome.source_version},
        "rows": {"in": rows_in, "curated": curated.rows, "quarantined": quarantine.rows},
        "contract_version": contract.version,
        "quarantine_uri": outcome.quarantine_uri,
        "created_at": now_iso(),
    }
    store.put_json(f"curated/{prefix}manifest.json", manifest)
    outcome.status = "curated"
    outcome.manifest_uri = store.uri(f"curated/{prefix}manifest.json")
    return outcome

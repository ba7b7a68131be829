"""Retraining on drift, debounced: asked for only when ``retrain_windows`` of the last ``retrain_window_of`` windows
since the previous request drifted (data or concept), at least ``retrain_min_labels`` labelled rows arrived since then,
and the cooldown has passed (claimed with a conditional write, so two concurrent checks cannot both ask). It goes
through the ordinary path: the newest curated dataset plus the labelled captured rows, as one CSV under
``incoming/<model>/``, which ingest validates against the contract and curates, and whose curated manifest starts the
training pipeline through train_trigger.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from mlops.aws.step_errors import is_transient
from mlops.aws.storage import ObjectStore, parse_s3_uri
from mlops.core import layout
from mlops.core.clock import iso, stamp
from mlops.core.config import DriftConfig, ModelConfig
from mlops.core.errors import MlopsError, RegistryConflict
from mlops.registry.store import Registry
from mlops.registry.versions import ModelVersion

RETRAIN_HORIZON = timedelta(days=30)


class DriftCheckRefused(MlopsError):
    """AWS refused one of the check's writes for good (a policy, a key): the message says which."""


@contextmanager
def refused_as(what: str) -> Iterator[None]:
    """A permanent refusal inside the block becomes a DriftCheckRefused naming ``what`` (S3 never names the
    key it refused); transient errors pass unchanged, the SDK has retried them already."""
    try:
        yield
    except ClientError as exc:
        if is_transient(exc):
            raise
        error = exc.response.get("Error", {})
        raise DriftCheckRefused(f"{what} was refused: {error.get('Code')} on {exc.operation_name} "
                                f"({error.get('Message')})") from exc


def retrain_decision(windows: list[dict[str, Any]], *, last_request: str | None, at: datetime,
                     cfg: DriftConfig) -> tuple[bool, str, dict[str, Any]]:
    """Whether to ask for retraining now, and why (or why not). ``windows`` are the checked windows, oldest
    first, this one included; only those after the last request count."""
    since = [w for w in windows if last_request is None or w["window_end"] > last_request]
    recent = since[-cfg.retrain_window_of:]
    drifting = sum(1 for w in recent if w["drifted"])
    labels = sum(w["labelled_rows"] for w in since)
    details = {"drifting_windows": drifting, "windows": len(recent), "labelled_rows": labels,
               "last_request": last_request}
    if not cfg.retrain:
        return False, "retraining on drift is switched off for this model", details
    if drifting < cfg.retrain_windows:
        return False, (f"{drifting} of the last {len(recent)} windows drifted; {cfg.retrain_windows} of "
                       f"{cfg.retrain_window_of} are needed"), details
    if last_request is not None:
        ready = datetime.fromisoformat(last_request) + timedelta(hours=cfg.retrain_cooldown_hours)
        if at < ready:
            return False, (f"cooldown: retraining was asked for at {last_request}; not again before "
                           f"{iso(ready)}"), details
    if labels < cfg.retrain_min_labels:
        return False, (f"{labels} new labelled rows since the last request; {cfg.retrain_min_labels} are "
                       "needed"), details
    return True, (f"{drifting} of the last {len(recent)} windows drifted and {labels} new labelled rows exist"), details


def retraining_csv(model: str, *, data: ObjectStore, contract: dict[str, Any],
                   since: str | None, captured: bool = True) -> tuple[bytes, int, int, int]:
    """The newest curated rows plus (``captured``) the labelled captured rows since ``since`` (a window stamp), as
    CSV text that ingest reads back exactly: (bytes, curated rows, captured rows, duplicate rows left out).

    Live traffic repeats inputs, so the captured rows repeat curated ones and each other: ingest would quarantine
    every repeat as a duplicate row, and past ``max_bad_row_fraction`` of them reject the whole file, retraining
    nothing. Each distinct row goes in once."""
    import pandas as pd

    from mlops.data.curated import newest_manifest
    from mlops.data.frames import get_parquet

    columns = [c["name"] for c in contract["columns"]]
    frames = []
    manifest = newest_manifest(data, model)
    curated = 0
    if manifest is not None:
        _bucket, key = parse_s3_uri(manifest["data_uri"])
        frame = get_parquet(data, key)
        frames.append(frame[[c for c in columns if c in frame.columns]])
        curated = len(frame)
    captured_rows: list[dict[str, Any]] = []
    for key in sorted(data.keys(f"{layout.LABELLED}{model}/") if captured else ()):
        if since is None or key.rsplit("/", 1)[-1].removesuffix(".jsonl") > since:  # the last request used up to it
            text = data.get_bytes(key).decode()
            captured_rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    if captured_rows:
        frames.append(pd.DataFrame(captured_rows).reindex(columns=columns))
    combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for spec in contract["columns"]:
        name = spec["name"]
        if spec.get("kind") == "boolean" and name in combined:
            # booleans are curated as 0/1 floats; "1.0" is not a boolean spelling the contract accepts
            combined[name] = pd.to_numeric(combined[name], errors="coerce").map(
                {1.0: "true", 0.0: "false"}).astype("string")
    # as ingest compares them: by their text (a curated 0 and a captured "0" are the same cell in the file)
    distinct = combined[~combined.astype("string").duplicated()]
    buffer = io.StringIO()
    distinct.to_csv(buffer, index=False)
    return buffer.getvalue().encode(), curated, len(captured_rows), len(combined) - len(distinct)


def _retraining_contract(model_cfg: ModelConfig, *, models: ObjectStore, data: ObjectStore,
                         champion: ModelVersion) -> dict[str, Any]:
    """The columns the retraining file has: the champion's contract, or for a model with a feature store the data's
    own contract under contracts/ (the champion takes computed features, but ingest wants the data's columns)."""
    model = model_cfg.name
    if model_cfg.features is None:
        key = parse_s3_uri(champion.artefacts_prefix + "contract.json")[1]
        with refused_as(f"reading the contract of {model} v{champion.version} {models.uri(key)}"):
            contract: dict[str, Any] = models.get_json(key)
        return contract
    from mlops.data.ingest import ContractStore

    with refused_as(f"reading the data contract of {model} under {data.uri(f'contracts/{model}/')}"):
        raw = ContractStore(data).current(model)
    return raw.model_dump(mode="json") if raw else {"columns": []}


def maybe_retrain(model_cfg: ModelConfig, *, at: datetime, registry: Registry, models: ObjectStore,
                  data: ObjectStore, champion: ModelVersion) -> dict[str, Any]:
    model, cfg = model_cfg.name, model_cfg.drift
    last = registry.last_retrain_request(model)
    # windows (and labelled rows) count from the last request, and at most RETRAIN_HORIZON back
    horizon = iso(at - RETRAIN_HORIZON)
    since = max(last or "", horizon)
    requested, reason, details = retrain_decision(registry.drift_windows(model, after=since), last_request=last,
                                                  at=at, cfg=cfg)
    if requested:
        # Everything that can fail is read before the claim: a claim whose request is never made holds off every
        # request for the cooldown.
        contract = _retraining_contract(model_cfg, models=models, data=data, champion=champion)
        with refused_as(f"reading the data of {model} to retrain on ({data.uri(f'curated/{model}/')}, "
                        f"{data.uri(f'{layout.LABELLED}{model}/')})"):
            # a captured row holds only the features, not the entity's history they came from: for a model with a
            # feature store it cannot go back into the data
            body, curated, captured, duplicates = retraining_csv(
                model, data=data, contract=contract, since=stamp(datetime.fromisoformat(since)),
                captured=model_cfg.features is None)
        cooldown_start = iso(at - timedelta(hours=cfg.retrain_cooldown_hours))
        with refused_as(f"claiming the retraining of {model} in {registry.table}"):
            claimed = registry.claim_retrain(model, iso(at), not_after=cooldown_start)
        if not claimed:
            requested, reason = False, "another check asked for retraining meanwhile"
    if requested:
        key = f"{model_cfg.incoming_prefix}drift-retrain-{stamp(at)}.csv"
        try:
            with refused_as(f"writing the retraining file {data.uri(key)}"):
                data.put_bytes(key, body, content_type="text/csv", create_only=True)
        except RegistryConflict:
            reason += "; the retraining file of this window existed already"
        except BaseException:
            # nothing was asked for: the claim goes back, or the cooldown would hold off a request never made
            registry.release_retrain(model, iso(at), previous=last)
            raise
        details.update({"file": data.uri(key), "curated_rows": curated, "captured_rows": captured,
                        "duplicate_rows_left_out": duplicates})
    with refused_as(f"recording the retraining decision of {model} in {registry.table}"):
        registry.record_retrain_decision(model, iso(at), requested=requested, reason=reason, details=details)
    return {"requested": requested, "reason": reason, **details}

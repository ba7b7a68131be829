"""The curated datasets of a model, as ingest leaves them (``curated/<model>/<sha256>/{data.parquet, manifest.json}``):
found by their manifests, without reading the data (no pandas: train_trigger imports this)."""

from __future__ import annotations

from typing import Any

from mlops.aws.storage import ObjectStore
from mlops.core import layout


def newest_manifest(store: ObjectStore, model: str) -> dict[str, Any] | None:
    """The most recently curated dataset of a model (curated by mlops.data.ingest), to retrain on demand."""
    manifests = [store.get_json(k) for k in store.keys(f"{layout.CURATED}{model}/") if k.endswith("/manifest.json")]
    return max(manifests, key=lambda m: m["created_at"]) if manifests else None

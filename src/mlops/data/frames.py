"""Data frames kept in object storage as Parquet: the curated datasets, a training run's test split.

Functions over an :class:`~mlops.aws.storage.ObjectStore` rather than methods of it, so that ``mlops.aws``, which
the light functions (zip packages without the scientific stack) import, never imports pandas.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from mlops.aws.storage import ObjectStore

PARQUET = "application/vnd.apache.parquet"


def put_parquet(store: ObjectStore, key: str, frame: pd.DataFrame) -> bytes:
    """Write ``frame`` without its index; the bytes written, which a manifest checksums."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    store.put_bytes(key, data, content_type=PARQUET)
    return data


def get_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    # imported on use: the pipeline's steps import this module at load, and only the heavy ones use it
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.get_bytes(key)))

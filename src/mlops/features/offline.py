"""The feature store: a model's inputs computed from its curated data by the definitions it declares once
(``[model.features]`` in mlops.toml, ``mlops.core.config.FeatureStoreConfig``).

- Offline: the curated Parquet in S3. ``training_set`` gives every row the features *as of its own time*: an
  aggregate over the entity's rows up to that time (inclusive), never after it, so a training row cannot see
  the future (a point-in-time join). Without a ``timestamp`` column, file order is time order.
- Online: DynamoDB (the ``features`` table; pk = model, sk = entity id), materialised after each ingest with
  each entity's features as of its newest row, computed by the same function.

Training and serving therefore cannot skew: one computation, and every online item carries the sha256 of the
definitions that produced it, which serving compares with the one the model was trained with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mlops.core.errors import InvalidDataset

if TYPE_CHECKING:
    import pandas as pd

    from mlops.aws.storage import ObjectStore
    from mlops.core.config import FeatureDefinition, FeatureStoreConfig, ModelConfig
    from mlops.data.reading import DataContract

MARKER = "#materialized"  # the sk of a model's item that records which dataset the online store holds


def definitions_sha256(definitions: FeatureStoreConfig) -> str:
    return hashlib.sha256(json.dumps(definitions.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def entity_text(value: Any) -> str:
    """One spelling per entity id, whether it came from a Parquet float, a CSV integer or a JSON string."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# -- offline ---------------------------------------------------------------------------------------------------
def _timeline(frame: pd.DataFrame, definitions: FeatureStoreConfig) -> pd.DataFrame:
    """entity, time and file position of every row, sorted by entity then time (ties in file order)."""
    import numpy as np
    import pandas as pd

    key = definitions.entity_key
    missing = [c for c in (key, definitions.timestamp) if c and c not in frame.columns]
    if missing:
        raise InvalidDataset(f"the data has no column(s) {missing}, which the feature definitions name as entity key "
                             f"or timestamp; its columns are {list(frame.columns)}")
    if (unkeyed := int(frame[key].isna().sum())):
        raise InvalidDataset(f"{unkeyed} row(s) have no {key!r}: features are computed per entity, so the entity key "
                             "must be present in every row (declare it non-nullable in the data contract)")
    timeline = pd.DataFrame({"entity": [entity_text(v) for v in frame[key].tolist()],
                             "position": np.arange(len(frame))}, index=frame.index)
    if definitions.timestamp is None:
        timeline["time"] = timeline["position"]
    else:
        raw = frame[definitions.timestamp]
        numeric = pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw)
        times = pd.to_datetime(raw, utc=True, errors="coerce", unit="s" if numeric else None)
        if (bad := int(times.isna().sum())):
            first = raw[times.isna()].iloc[0]
            raise InvalidDataset(f"{bad} row(s) have a {definitions.timestamp!r} that is not a time (first: {first!r});"
                                 " use ISO 8601 (2026-01-31T12:00:00Z) or seconds since the epoch")
        timeline["time"] = times
    return timeline.sort_values(["entity", "time", "position"], kind="stable")


_UNITS = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days"}


def _duration(window: str) -> Any:
    import re

    import pandas as pd

    number, unit = re.fullmatch(r"(\d+)(s|min|h|d)", window).groups()  # type: ignore[union-attr]
    return pd.Timedelta(**{_UNITS[unit]: int(number)})


def _aggregate(values: pd.Series, timeline: pd.DataFrame, feature: FeatureDefinition) -> pd.Series:
    """The feature for every row of ``timeline`` (its order), as of that row's time, ties included."""
    import pandas as pd

    if feature.aggregate == "last":
        result = values
    else:
        series = pd.to_numeric(values, errors="coerce") if feature.aggregate != "count" else values.notna()
        how = "sum" if feature.aggregate == "count" else feature.aggregate
        work = pd.DataFrame({"entity": timeline["entity"], "time": timeline["time"], "value": series})
        groups = work.groupby("entity", sort=False)
        if feature.window:
            rolled = groups.rolling(_duration(feature.window), on="time", min_periods=1)["value"]
        else:
            rolled = groups["value"].expanding(min_periods=1)
        # the timeline is sorted by entity, so the groups come out in its order, each in time order
        result = pd.Series(getattr(rolled, how)().to_numpy(), index=timeline.index)
        if feature.aggregate == "count":
            result = result.fillna(0).astype("int64")
    # rows sharing an entity and a time are one moment: each sees all of them, as the last of them does
    return result.groupby([timeline["entity"], timeline["time"]], sort=False).transform("last")


def compute(frame: pd.DataFrame, definitions: FeatureStoreConfig) -> pd.DataFrame:
    """Every row's features as of its own time (index and order of ``frame``)."""
    import pandas as pd

    timeline = _timeline(frame, definitions)
    ordered = frame.loc[timeline.index]
    for feature in definitions.columns:
        if feature.column not in frame.columns:
            raise InvalidDataset(f"feature {feature.name!r} is computed from {feature.column!r}, which is not a column "
                                 f"of the data; its columns are {list(frame.columns)}")
    out = pd.DataFrame({f.name: _aggregate(ordered[f.column], timeline, f) for f in definitions.columns},
                       index=timeline.index)
    return out.loc[frame.index]


def feature_contract(contract: DataContract, definitions: FeatureStoreConfig) -> DataContract:
    """The contract of the model's inputs: what serving validates requests against and drift compares."""
    from mlops.data.reading import ColumnKind, ColumnSpec, DataContract

    specs = []
    for feature in definitions.columns:
        try:
            source = contract.column(feature.column)
        except KeyError as exc:
            raise InvalidDataset(f"feature {feature.name!r}: {exc.args[0]}") from exc
        if feature.aggregate == "last":
            specs.append(source.model_copy(update={"name": feature.name}))
        elif feature.aggregate == "count":
            specs.append(ColumnSpec(name=feature.name, kind=ColumnKind.INTEGER, min=0))
        elif source.kind is ColumnKind.CATEGORICAL:
            raise InvalidDataset(f"feature {feature.name!r}: the {feature.aggregate} of the categorical column "
                                 f"{source.name!r} means nothing; use `last` or `count`")
        else:
            # a mean, min or max stays within the source's bounds; a sum does not
            bounded = feature.aggregate != "sum"
            specs.append(ColumnSpec(name=feature.name, kind=ColumnKind.NUMERIC, nullable=source.nullable,
                                    min=source.min if bounded else None, max=source.max if bounded else None))
    return DataContract(version=contract.version, target=contract.target,
                        columns=[*specs, contract.column(contract.target)],
                        new_categories=contract.new_categories, allow_duplicates=True)


def training_set(frame: pd.DataFrame, contract: DataContract,
                 definitions: FeatureStoreConfig) -> tuple[pd.DataFrame, DataContract]:
    """The features of every curated row as of its time, next to its label, and their contract."""
    derived = feature_contract(contract, definitions)
    features = compute(frame, definitions)
    features[contract.target] = frame[contract.target]
    return features.reset_index(drop=True), derived


def latest(frame: pd.DataFrame, definitions: FeatureStoreConfig) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(entity id, as of, features) for every entity: its features as of its newest row."""
    timeline = _timeline(frame, definitions)
    features = compute(frame, definitions).loc[timeline.index]
    last = ~timeline["entity"].duplicated(keep="last")
    for (entity, at), row in zip(timeline.loc[last, ["entity", "time"]].itertuples(index=False, name=None),
                                 features.loc[last.to_numpy()].to_dict("records"), strict=True):
        as_of = at.isoformat() if hasattr(at, "isoformat") else f"row {int(at) + 1}"
        yield entity, as_of, {name: _plain(value) for name, value in row.items()}


def _plain(value: Any) -> Any:
    """A JSON value as serving expects it: None for a missing one, Python numbers, text."""
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- online ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnlineFeatures:
    model: str
    entity_id: str
    as_of: str
    values: dict[str, Any]
    definitions_sha256: str
    dataset_sha256: str


class OnlineStore:
    """Each entity's newest features, one DynamoDB item per (model, entity)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.ddb = dynamodb
        self.table = table

    def get(self, model: str, entity_id: str) -> OnlineFeatures | None:
        item = self.ddb.get_item(TableName=self.table, Key={"pk": {"S": model}, "sk": {"S": entity_id}},
                                 ConsistentRead=False).get("Item")
        if item is None:
            return None
        return OnlineFeatures(model=model, entity_id=entity_id, as_of=item["as_of"]["S"],
                              values=json.loads(item["features"]["S"]),
                              definitions_sha256=item["definitions_sha256"]["S"],
                              dataset_sha256=item["dataset_sha256"]["S"])

    def claim(self, model: str, *, dataset_sha256: str, created_at: str) -> bool:
        """Record that the online store now holds this dataset, unless a newer dataset got there first (an older
        file ingested late must not overwrite newer values). A retry of the same dataset claims again."""
        try:
            self.ddb.put_item(
                TableName=self.table,
                Item={"pk": {"S": model}, "sk": {"S": MARKER}, "dataset_sha256": {"S": dataset_sha256},
                      "created_at": {"S": created_at}},
                ConditionExpression="attribute_not_exists(pk) OR created_at <= :at OR dataset_sha256 = :sha",
                ExpressionAttributeValues={":at": {"S": created_at}, ":sha": {"S": dataset_sha256}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def put_all(self, model: str, rows: Iterable[tuple[str, str, Mapping[str, Any]]], *, dataset_sha256: str,
                definitions_sha256: str) -> int:
        written = 0
        batch: list[dict[str, Any]] = []
        for entity, as_of, values in rows:
            batch.append({"PutRequest": {"Item": {
                "pk": {"S": model}, "sk": {"S": entity}, "as_of": {"S": as_of},
                "features": {"S": json.dumps(values, default=str)}, "dataset_sha256": {"S": dataset_sha256},
                "definitions_sha256": {"S": definitions_sha256}}}})
            if len(batch) == 25:  # BatchWriteItem's limit
                written += self._write(batch)
                batch = []
        return written + (self._write(batch) if batch else 0)

    def _write(self, batch: list[dict[str, Any]]) -> int:
        pending = {self.table: batch}
        for _attempt in range(8):
            pending = self.ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                return len(batch)
        raise RuntimeError(f"DynamoDB left {len(pending[self.table])} feature items unprocessed after 8 attempts")


def materialize(model_cfg: ModelConfig, manifest: Mapping[str, Any], *, data: ObjectStore,
                online: OnlineStore) -> dict[str, Any]:
    """Write the entities' newest features from one curated dataset (its manifest, as ingest wrote it)."""
    from mlops.aws.storage import parse_s3_uri

    definitions = model_cfg.features
    if definitions is None:
        return {"status": "no_features", "model": model_cfg.name}
    sha = manifest["dataset_sha256"]
    summary: dict[str, Any] = {"model": model_cfg.name, "dataset_sha256": sha,
                               "definitions_sha256": definitions_sha256(definitions)}
    if not online.claim(model_cfg.name, dataset_sha256=sha, created_at=manifest["created_at"]):
        return {**summary, "status": "skipped", "reason": "a newer dataset is already materialised", "entities": 0}
    frame = data.get_parquet(parse_s3_uri(manifest["data_uri"])[1])
    entities = online.put_all(model_cfg.name, latest(frame, definitions), dataset_sha256=sha,
                              definitions_sha256=summary["definitions_sha256"])
    return {**summary, "status": "materialized", "entities": entities}

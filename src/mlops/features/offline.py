"""The feature store's offline side: a model's inputs computed from its curated data by the definitions it declares
once (``[model.features]`` in mlops.toml, ``mlops.core.config.FeatureStoreConfig``), with pandas.

- Training: ``training_set`` gives every curated row the features *as of its own time*: an aggregate over the
  entity's rows up to that time (inclusive), never after it, so a training row cannot see the future (a
  point-in-time join). Without a ``timestamp`` column, file order is time order.
- Materialisation: after each ingest, ``materialize`` writes each entity's features as of its newest row, computed
  by the same function, to the online store (``mlops.features.online``).

Training and serving therefore cannot skew: one computation, and every online item carries the sha256 of the
definitions that produced it, which serving compares with the one the model was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mlops.core.errors import InvalidDataset
from mlops.features.online import OnlineStore, definitions_sha256, entity_text

if TYPE_CHECKING:
    import pandas as pd

    from mlops.aws.storage import ObjectStore
    from mlops.core.config import FeatureDefinition, FeatureStoreConfig, ModelConfig
    from mlops.data.ingest import IngestOutcome
    from mlops.data.schema import DataContract


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
    from mlops.data.schema import ColumnKind, ColumnSpec, DataContract

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
    # a model without a target (a clustering) has its features alone
    label = [] if contract.target is None else [contract.column(contract.target)]
    return DataContract(version=contract.version, target=contract.target, columns=[*specs, *label],
                        new_categories=contract.new_categories, allow_duplicates=True)


def training_set(frame: pd.DataFrame, contract: DataContract,
                 definitions: FeatureStoreConfig) -> tuple[pd.DataFrame, DataContract]:
    """The features of every curated row as of its time, next to its label, and their contract."""
    derived = feature_contract(contract, definitions)
    features = compute(frame, definitions)
    if contract.target is not None:
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


def materialize(model_cfg: ModelConfig, manifest: Mapping[str, Any], *, data: ObjectStore,
                online: OnlineStore) -> dict[str, Any]:
    """Write the entities' newest features from one curated dataset (its manifest, as ingest wrote it)."""
    from mlops.aws.storage import parse_s3_uri
    from mlops.data.frames import get_parquet

    definitions = model_cfg.features
    if definitions is None:
        return {"status": "no_features", "model": model_cfg.name}
    sha = manifest["dataset_sha256"]
    summary: dict[str, Any] = {"model": model_cfg.name, "dataset_sha256": sha,
                               "definitions_sha256": definitions_sha256(definitions)}
    if not online.claim(model_cfg.name, dataset_sha256=sha, created_at=manifest["created_at"]):
        return {**summary, "status": "skipped", "reason": "a newer dataset is already materialised", "entities": 0}
    frame = get_parquet(data, parse_s3_uri(manifest["data_uri"])[1])
    entities = online.put_all(model_cfg.name, latest(frame, definitions), dataset_sha256=sha,
                              definitions_sha256=summary["definitions_sha256"])
    return {**summary, "status": "materialized", "entities": entities}


def materialize_curated(model: ModelConfig, outcome: IngestOutcome, *, data: ObjectStore,
                        online: OnlineStore) -> dict[str, Any]:
    """After a file is curated: the online feature store gets its entities' newest features."""
    from mlops.aws.storage import parse_s3_uri

    assert outcome.manifest_uri is not None
    return materialize(model, data.get_json(parse_s3_uri(outcome.manifest_uri)[1]), data=data, online=online)

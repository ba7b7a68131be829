"""The online feature store: each entity's newest features in DynamoDB (the ``features`` table; pk = model,
sk = entity id), which the ``infer`` and ``push`` functions look an ``entity_id`` up in.

Every item carries the sha256 of the definitions that computed it (``definitions_sha256``), which serving compares
with the one the model was trained with. This module is on serving's cold-start path: no pandas and no
``mlops.data`` here, not even inside a function (what computes the items is ``mlops.features.offline``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mlops.core.config import FeatureStoreConfig

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


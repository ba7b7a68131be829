"""The registry's one DynamoDB table: keys, (de)serialisation, reads, conditional writes and transactions.

One partition per model; each group of records owns its sort keys::

    pk=MODEL#<name>  sk=META                       versions: latest_version (the version counter)
                     sk=VERSION#000007             versions: the version record (status, URIs, sha256, metrics)
                     sk=ALIAS#champion             versions: version
                     sk=RUN#<run_id>               runs: outcome of a pipeline run (registered | rejected | failed)
                     sk=DATASET#<sha256>           runs: the run that claimed this dataset (a dataset trains once)
                     sk=LOOK#000007#<at>#...       rollouts: one look of the rollout of challenger v7
                     sk=EVENT#<at>#<id>            rollouts: an audit record of a promotion, rollback, republish
                     sk=LOCK#rollout               rollouts: one rollout or manual change at a time
                     sk=DRIFT#<window end>         drift_checks: one checked window
                     sk=RETRAIN#LATEST             drift_checks: the last retraining request (the cooldown)
                     sk=RETRAINDECISION#<at>#<id>  drift_checks: every retrain decision, requested or not

The groups see plain values (str, int, bool; numbers come back as int), never DynamoDB's typed attribute values:
those are this module's business, and boto3's ``TypeSerializer`` writes them exactly as the hand-written ones did.
Structured values (metrics, details, looks) are stored as JSON strings, which keeps the items as they have been.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from mlops.core.errors import RegistryConflict

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def encode(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values as DynamoDB attribute values (ints as ``N``, bools as ``BOOL``, strings as ``S``)."""
    return {name: _serializer.serialize(value) for name, value in values.items()}


def decode(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as plain values; numbers as int, as the registry stores only whole numbers."""
    values = {name: _deserializer.deserialize(value) for name, value in item.items()}
    return {name: int(v) if isinstance(v, Decimal) else v for name, v in values.items()}


def key_tail(sort_key: str) -> str:
    """What follows the kind of a sort key: ``champion`` of ``ALIAS#champion``."""
    return sort_key.split("#", 1)[1]


class Table:
    def __init__(self, dynamodb: Any, name: str) -> None:
        self.db = dynamodb
        self.name = name

    @staticmethod
    def key(model: str, sk: str) -> dict[str, Any]:
        return encode({"pk": f"MODEL#{model}", "sk": sk})

    # -- reads (consistent: a write is seen by the next read) --------------------------------------------
    def get(self, model: str, sk: str) -> dict[str, Any] | None:
        item = self.db.get_item(TableName=self.name, Key=self.key(model, sk), ConsistentRead=True).get("Item")
        return decode(item) if item else None

    def query(self, model: str, prefix: str) -> list[dict[str, Any]]:
        """The items whose sort key starts with ``prefix``, in sort key order."""
        return self._query("pk = :pk AND begins_with(sk, :p)", {":pk": f"MODEL#{model}", ":p": prefix})

    def between(self, model: str, low: str, high: str) -> list[dict[str, Any]]:
        """The items whose sort key lies between ``low`` and ``high``, both included, in sort key order."""
        return self._query("pk = :pk AND sk BETWEEN :lo AND :hi", {":pk": f"MODEL#{model}", ":lo": low, ":hi": high})

    def _query(self, condition: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.name, "KeyConditionExpression": condition,
                                  "ExpressionAttributeValues": encode(values), "ConsistentRead": True}
        while True:
            page = self.db.query(**kwargs)
            items.extend(decode(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- writes ------------------------------------------------------------------------------------------
    def put(self, model: str, sk: str, attributes: Mapping[str, Any]) -> None:
        self.db.put_item(TableName=self.name, Item=self._item(model, sk, attributes))

    def put_if(self, model: str, sk: str, attributes: Mapping[str, Any], condition: str, *,
               names: Mapping[str, str] | None = None, values: Mapping[str, Any] | None = None) -> bool:
        """A conditional put: False (not an error) when the condition does not hold."""
        return self._unless_condition_fails(self.db.put_item, Item=self._item(model, sk, attributes),
                                            **_condition(condition, names, values))

    def update(self, model: str, sk: str, expression: str, *, condition: str, values: Mapping[str, Any]) -> None:
        """An update that raises ``ConditionalCheckFailedException`` when the condition does not hold."""
        self.db.update_item(TableName=self.name, Key=self.key(model, sk), UpdateExpression=expression,
                            **_condition(condition, None, values))

    def delete(self, model: str, sk: str) -> None:
        self.db.delete_item(TableName=self.name, Key=self.key(model, sk))

    def delete_if(self, model: str, sk: str, condition: str, *, names: Mapping[str, str] | None = None,
                  values: Mapping[str, Any] | None = None) -> bool:
        """A conditional delete: False (not an error) when the condition does not hold."""
        return self._unless_condition_fails(self.db.delete_item, Key=self.key(model, sk),
                                            **_condition(condition, names, values))

    def _unless_condition_fails(self, write: Any, **kwargs: Any) -> bool:
        try:
            write(TableName=self.name, **kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _item(self, model: str, sk: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.key(model, sk), **encode(attributes)}

    # -- transactions ------------------------------------------------------------------------------------
    def put_op(self, model: str, sk: str, attributes: Mapping[str, Any], *, condition: str | None = None,
               values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"Put": {"TableName": self.name, "Item": self._item(model, sk, attributes),
                        **_condition(condition, None, values)}}

    def update_op(self, model: str, sk: str, expression: str, *, condition: str,
                  values: Mapping[str, Any]) -> dict[str, Any]:
        return {"Update": {"TableName": self.name, "Key": self.key(model, sk), "UpdateExpression": expression,
                           **_condition(condition, None, values)}}

    def delete_op(self, model: str, sk: str, *, condition: str, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"Delete": {"TableName": self.name, "Key": self.key(model, sk), **_condition(condition, None, values)}}

    def transact(self, operations: list[dict[str, Any]], *, conflict: str,
                 witness: tuple[str, str] | None = None) -> None:
        """Write all the operations or none; RegistryConflict(``conflict``) when a condition did not hold.

        ``witness``: the (model, sort key) of an item with a new key that the transaction puts (an audit event):
        finding it after a cancellation means this very transaction committed."""
        try:
            self.db.transact_write_items(TransactItems=operations)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            # The SDK's retry of a transaction that committed, its answer lost, is cancelled by its own first
            # attempt. DynamoDB makes such a retry a no-op through its ClientRequestToken; moto does not.
            if witness is not None and self.get(*witness) is not None:
                return
            raise RegistryConflict(conflict) from exc


def _condition(condition: str | None, names: Mapping[str, str] | None,
               values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The condition arguments of a write, only those given."""
    return {**({"ConditionExpression": condition} if condition else {}),
            **({"ExpressionAttributeNames": dict(names)} if names else {}),
            **({"ExpressionAttributeValues": encode(values)} if values else {})}


class RecordGroup:
    """A group of the registry's records: their types and the operations on them, over the one table."""

    def __init__(self, records: Table) -> None:
        self.records = records

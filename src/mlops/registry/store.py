"""The model registry: versions, aliases (``champion``/``challenger``) and run outcomes on DynamoDB,
artefacts in S3.

One table, one partition per model::

    pk=MODEL#<name>  sk=META              latest_version
                     sk=VERSION#000007    the version record (status, URIs, sha256, metrics, lineage)
                     sk=ALIAS#champion    version
                     sk=RUN#<run_id>      outcome of a pipeline run: registered | rejected | failed
                     sk=DATASET#<sha256>  the run that claimed this dataset (a dataset trains once)
                     sk=LOOK#000007#<at>  one look of the rollout of challenger v7: its statistics, its action

A version exists only once its record is written, and it is written in one transaction together with
the version counter, its alias and its run outcome: a failure before that leaves no trace in the registry,
and the artefacts it uploaded sit under the run's own prefix where nothing points at them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from mlops.core.errors import RegistryConflict

CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _pk(model: str) -> dict[str, str]:
    return {"S": f"MODEL#{model}"}


def _key(model: str, sk: str) -> dict[str, dict[str, str]]:
    return {"pk": _pk(model), "sk": {"S": sk}}


def _version_sk(version: int) -> str:
    return f"VERSION#{version:06d}"


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


@dataclass(frozen=True)
class RunRecord:
    model: str
    run_id: str
    outcome: str
    reason: str
    at: str
    details: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self.db = dynamodb
        self.table = table

    # -- reads -------------------------------------------------------------------------------------------
    def _query(self, model: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": _pk(model), ":p": {"S": prefix}},
            "ConsistentRead": True,
        }
        while True:
            page = self.db.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _get(self, model: str, sk: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.db.get_item(
            TableName=self.table, Key=_key(model, sk), ConsistentRead=True
        ).get("Item")
        return item

    def aliases(self, model: str) -> dict[str, int]:
        return {i["sk"]["S"].split("#", 1)[1]: int(i["version"]["N"]) for i in self._query(model, "ALIAS#")}

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        aliases = self.aliases(model)
        version = aliases.get(alias)
        if version is None:
            return None
        item = self._get(model, _version_sk(version))
        return self._to_version(item, aliases) if item else None

    def _to_version(self, item: dict[str, Any], aliases: dict[str, int]) -> ModelVersion:
        version = int(item["version"]["N"])
        return ModelVersion(
            model=item["pk"]["S"].split("#", 1)[1],
            version=version,
            run_id=item["run_id"]["S"],
            status=item["status"]["S"],
            created_at=item["created_at"]["S"],
            artefacts_prefix=item["artefacts_prefix"]["S"],
            onnx_sha256=item["onnx_sha256"]["S"],
            dataset_sha256=item["dataset_sha256"]["S"],
            metrics=json.loads(item["metrics"]["S"]),
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
            lambda_version=item["lambda_version"]["S"] if "lambda_version" in item else None,
            manifest_sha256=item["manifest_sha256"]["S"] if "manifest_sha256" in item else None,
        )

    def version(self, model: str, version: int) -> ModelVersion | None:
        item = self._get(model, _version_sk(version))
        return self._to_version(item, self.aliases(model)) if item else None

    def versions(self, model: str) -> list[ModelVersion]:
        aliases = self.aliases(model)
        return [self._to_version(i, aliases) for i in self._query(model, "VERSION#")]

    def run(self, model: str, run_id: str) -> RunRecord | None:
        item = self._get(model, f"RUN#{run_id}")
        if not item:
            return None
        return RunRecord(model, run_id, item["outcome"]["S"], item["reason"]["S"], item["at"]["S"],
                         json.loads(item["details"]["S"]))

    def runs(self, model: str) -> list[RunRecord]:
        return [
            RunRecord(model, i["sk"]["S"].split("#", 1)[1], i["outcome"]["S"], i["reason"]["S"], i["at"]["S"],
                      json.loads(i["details"]["S"]))
            for i in self._query(model, "RUN#")
        ]

    def latest_version(self, model: str) -> int:
        item = self._get(model, "META")
        return int(item["latest_version"]["N"]) if item else 0

    def events(self, model: str) -> list[dict[str, Any]]:
        """The audit trail of alias changes (promotions, rollbacks), oldest first."""
        return [{"at": i["at"]["S"], "action": i["action"]["S"], "who": i["who"]["S"], "why": i["why"]["S"],
                 "details": json.loads(i["details"]["S"])} for i in self._query(model, "EVENT#")]

    def looks(self, model: str, challenger: int | None = None) -> list[dict[str, Any]]:
        """The rollout's looks (statistics and action of each), oldest first; of one challenger if given."""
        prefix = "LOOK#" + (_version_sk(challenger).split("#", 1)[1] + "#" if challenger is not None else "")
        return [json.loads(i["look"]["S"]) for i in self._query(model, prefix)]

    # -- writes ------------------------------------------------------------------------------------------
    def record_look(self, model: str, challenger: int, look: dict[str, Any]) -> None:
        at = str(look.get("at") or now_iso())
        # looks a second apart or less keep their order by their number (``at`` has whole seconds)
        number = f"{int(look['number']):06d}#" if look.get("number") is not None else ""
        sk = f"LOOK#{_version_sk(challenger).split('#', 1)[1]}#{at}#{number}{uuid.uuid4().hex[:6]}"
        self.db.put_item(TableName=self.table, Item={
            **_key(model, sk), "look": {"S": json.dumps({**look, "challenger": challenger}, default=str)}})

    def record_event(self, model: str, action: str, *, who: str, why: str, details: dict[str, Any]) -> None:
        """An audit record of a change that moves no alias (e.g. a republish on new code)."""
        self._transact([self._event_put(model, action, who, why, details)], f"record {action} of {model}")

    def _event_put(self, model: str, action: str, who: str, why: str, details: dict[str, Any]) -> dict[str, Any]:
        at = now_iso()
        return {"Put": {"TableName": self.table, "Item": {
            **_key(model, f"EVENT#{at}#{uuid.uuid4().hex[:8]}"), "at": {"S": at}, "action": {"S": action},
            "who": {"S": who}, "why": {"S": why}, "details": {"S": json.dumps(details, default=str)}}}}

    def _delete_alias_if(self, model: str, alias: str, version: int) -> dict[str, Any]:
        """Remove an alias only if it still points where the caller saw it point."""
        return {"Delete": {"TableName": self.table, "Key": _key(model, f"ALIAS#{alias}"),
                           "ConditionExpression": "version = :v",
                           "ExpressionAttributeValues": {":v": {"N": str(version)}}}}

    def _transact(self, items: list[dict[str, Any]], what: str) -> None:
        try:
            self.db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            # The SDK's retry of a transaction that committed, its answer lost, is cancelled by its own first
            # attempt. DynamoDB makes such a retry a no-op through its ClientRequestToken; moto does not.
            if self._committed(items):
                return
            raise RegistryConflict(f"{what}: the aliases changed meanwhile; look again and retry") from exc

    def _committed(self, items: list[dict[str, Any]]) -> bool:
        """Whether a transaction holding an audit event is committed already: each event's key is new, so
        finding it means this very transaction went through."""
        for item in items:
            put = item.get("Put", {}).get("Item", {})
            if put.get("sk", {}).get("S", "").startswith("EVENT#"):
                key = {"pk": put["pk"], "sk": put["sk"]}
                return "Item" in self.db.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        return False

    def promote(self, model: str, *, champion: int, challenger: int, who: str, why: str) -> None:
        """The challenger becomes the champion, if the aliases are still what the caller saw."""
        self._transact([
            self._delete_alias_if(model, CHALLENGER, challenger),
            {"Put": {"TableName": self.table, "Item": {**_key(model, f"ALIAS#{CHAMPION}"),
                                                       "version": {"N": str(challenger)}},
                     "ConditionExpression": "version = :v",
                     "ExpressionAttributeValues": {":v": {"N": str(champion)}}}},
            self._event_put(model, "promote", who, why, {"from": champion, "to": challenger}),
        ], f"promoting {model} v{challenger}")

    def retire_challenger(self, model: str, *, challenger: int, who: str, why: str, action: str = "rollback") -> None:
        self._transact([
            self._delete_alias_if(model, CHALLENGER, challenger),
            self._event_put(model, action, who, why, {"challenger": challenger}),
        ], f"rolling back {model} v{challenger}")

    def acquire_lock(self, model: str, owner: str, ttl_seconds: int = 900) -> bool:
        """One rollout (or manual promote/rollback) at a time per model; an expired lock can be taken over."""
        now = int(time.time())
        return self._put_if(
            {**_key(model, "LOCK#rollout"), "owner": {"S": owner}, "expires": {"N": str(now + ttl_seconds)}},
            "attribute_not_exists(pk) OR expires < :now OR #o = :owner",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":now": {"N": str(now)}, ":owner": {"S": owner}},
        )

    def _put_if(self, item: dict[str, Any], condition: str, **expression: Any) -> bool:
        """A conditional put: False (not an error) when the condition does not hold."""
        try:
            self.db.put_item(TableName=self.table, Item=item, ConditionExpression=condition, **expression)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_lock(self, model: str, owner: str) -> None:
        try:
            self.db.delete_item(TableName=self.table, Key=_key(model, "LOCK#rollout"),
                                ConditionExpression="#o = :owner", ExpressionAttributeNames={"#o": "owner"},
                                ExpressionAttributeValues={":owner": {"S": owner}})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def set_lambda_version(self, model: str, version: int, lambda_version: str) -> None:
        self.db.update_item(
            TableName=self.table, Key=_key(model, _version_sk(version)),
            UpdateExpression="SET lambda_version = :l", ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":l": {"S": lambda_version}},
        )

    def claim_dataset(self, model: str, dataset_sha256: str, run_id: str) -> bool:
        """True for the first claim of a dataset; later claims (duplicates, replays) get False.

        The token makes the SDK's retry of this very call succeed: when a first attempt was written but its
        answer lost (a timeout, a 5xx after the commit), the retry must not find "someone else's" claim."""
        token = uuid.uuid4().hex
        return self._put_if(
            {**_key(model, f"DATASET#{dataset_sha256}"), "run_id": {"S": run_id}, "at": {"S": now_iso()},
             "claim_token": {"S": token}},
            "attribute_not_exists(pk) OR claim_token = :token", ExpressionAttributeValues={":token": {"S": token}},
        )

    def release_dataset(self, model: str, dataset_sha256: str) -> None:
        """Undo a claim whose pipeline could not even start, so the dataset can be retried."""
        self.db.delete_item(TableName=self.table, Key=_key(model, f"DATASET#{dataset_sha256}"))

    def record_run(self, model: str, run_id: str, outcome: str, reason: str, details: dict[str, Any]) -> RunRecord:
        record = RunRecord(model, run_id, outcome, reason, now_iso(), details)
        self.db.put_item(TableName=self.table, Item=self._run_item(record))
        return record

    @staticmethod
    def _run_item(record: RunRecord) -> dict[str, Any]:
        return {
            **_key(record.model, f"RUN#{record.run_id}"),
            "outcome": {"S": record.outcome},
            "reason": {"S": record.reason},
            "at": {"S": record.at},
            "details": {"S": json.dumps(record.details, default=str)},
        }

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
            previous = self.run(model, run_id)
            if previous and previous.outcome == "registered":
                existing = self.version(model, int(previous.details["version"]))
                if existing:
                    return existing
            latest = self.latest_version(model)
            version = latest + 1
            created = now_iso()
            record = RunRecord(model, run_id, "registered", f"registered as version {version}", created,
                               {"version": version, "alias": alias})
            items: list[dict[str, Any]] = [
                {"Update": {
                    "TableName": self.table, "Key": _key(model, "META"),
                    "UpdateExpression": "SET latest_version = :v",
                    "ConditionExpression": "attribute_not_exists(latest_version) OR latest_version = :prev",
                    "ExpressionAttributeValues": {":v": {"N": str(version)}, ":prev": {"N": str(latest)}},
                }},
                {"Put": {
                    "TableName": self.table,
                    "Item": {
                        **_key(model, _version_sk(version)),
                        "version": {"N": str(version)}, "run_id": {"S": run_id},
                        "status": {"S": alias or "registered"}, "created_at": {"S": created},
                        "artefacts_prefix": {"S": artefacts_prefix}, "onnx_sha256": {"S": onnx_sha256},
                        "dataset_sha256": {"S": dataset_sha256},
                        "metrics": {"S": json.dumps(metrics, default=str)},
                        **({"manifest_sha256": {"S": manifest_sha256}} if manifest_sha256 else {}),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }},
                {"Put": {"TableName": self.table, "Item": self._run_item(record)}},
            ]
            if alias:
                items.append({"Put": {"TableName": self.table,
                                      "Item": {**_key(model, f"ALIAS#{alias}"), "version": {"N": str(version)}}}})
            try:
                self.db.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "TransactionCanceledException":
                    continue  # another register won this version number; take the next one
                raise
            registered = self.version(model, version)
            assert registered is not None
            return registered
        raise RegistryConflict(f"could not allocate a version for {model} after 5 attempts (concurrent registers)")

    # -- drift monitoring (drift_check) ------------------------------------------------------------------
    # sk=DRIFT#<window end>        one item per checked window (a replayed window overwrites its own item)
    # sk=RETRAIN#LATEST            the last retraining request, claimed conditionally (the cooldown)
    # sk=RETRAINDECISION#<at>#<id> every retrain decision, requested or not, with its reason
    def record_drift_window(self, model: str, window_end: str, *, status: str, drifted: bool, labelled_rows: int,
                            details: dict[str, Any]) -> None:
        self.db.put_item(TableName=self.table, Item={
            **_key(model, f"DRIFT#{window_end}"), "window_end": {"S": window_end}, "status": {"S": status},
            "drifted": {"BOOL": drifted}, "labelled_rows": {"N": str(labelled_rows)},
            "details": {"S": json.dumps(details, default=str)}})

    def drift_windows(self, model: str, *, after: str = "") -> list[dict[str, Any]]:
        """Checked windows ending after ``after`` (an ISO time; default: all), oldest first."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            # BETWEEN is inclusive: the window ending exactly at `after` is dropped below
            "ExpressionAttributeValues": {":pk": _pk(model), ":lo": {"S": f"DRIFT#{after}"}, ":hi": {"S": "DRIFT#~"}},
        }
        while True:
            page = self.db.query(**kwargs)
            items.extend(i for i in page.get("Items", []) if i["window_end"]["S"] > after)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [{"window_end": i["window_end"]["S"], "status": i["status"]["S"], "drifted": i["drifted"]["BOOL"],
                 "labelled_rows": int(i["labelled_rows"]["N"]), "details": json.loads(i["details"]["S"])}
                for i in items]

    def last_retrain_request(self, model: str) -> str | None:
        item = self._get(model, "RETRAIN#LATEST")
        return item["requested_at"]["S"] if item else None

    def claim_retrain(self, model: str, at: str, *, not_after: str) -> bool:
        """Record a retraining request at ``at`` unless another was made after ``not_after`` (the cooldown):
        of two concurrent checks, one wins. A claim already made at ``at`` is this very one: the SDK's retry of
        a write whose answer was lost, or the same window checked again after a failure."""
        return self._put_if(
            {**_key(model, "RETRAIN#LATEST"), "requested_at": {"S": at}},
            "attribute_not_exists(pk) OR requested_at <= :cutoff OR requested_at = :at",
            ExpressionAttributeValues={":cutoff": {"S": not_after}, ":at": {"S": at}},
        )

    def release_retrain(self, model: str, at: str, *, previous: str | None) -> None:
        """Give back the claim made at ``at`` (its request could not be made), restoring the one before it, so
        that the next check may ask; a claim made since by another check stays."""
        condition: dict[str, Any] = {"ConditionExpression": "requested_at = :at",
                                     "ExpressionAttributeValues": {":at": {"S": at}}}
        try:
            if previous is None:
                self.db.delete_item(TableName=self.table, Key=_key(model, "RETRAIN#LATEST"), **condition)
            else:
                self.db.put_item(TableName=self.table, Item={**_key(model, "RETRAIN#LATEST"),
                                                             "requested_at": {"S": previous}}, **condition)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def record_retrain_decision(self, model: str, at: str, *, requested: bool, reason: str,
                                details: dict[str, Any]) -> None:
        self.db.put_item(TableName=self.table, Item={
            **_key(model, f"RETRAINDECISION#{at}#{uuid.uuid4().hex[:8]}"), "at": {"S": at},
            "requested": {"BOOL": requested}, "reason": {"S": reason},
            "details": {"S": json.dumps(details, default=str)}})

    def retrain_decisions(self, model: str) -> list[dict[str, Any]]:
        """Every retrain decision, oldest first."""
        return [{"at": i["at"]["S"], "requested": i["requested"]["BOOL"], "reason": i["reason"]["S"],
                 "details": json.loads(i["details"]["S"])} for i in self._query(model, "RETRAINDECISION#")]

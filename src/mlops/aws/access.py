"""What each function's role may do, declared once: the CDK app turns it into IAM statements on the deployed
resources (``infra/stack.py``), and the local cloud into the policies its IAM guard evaluates every AWS call of a
handler against (``mlops.local.iam``). A parity test compares those with the statements of the synthesized
template, so the two cannot allow different things.

Resources are named by their platform names (``mlops.aws.platform``): each consumer resolves a :class:`Resource` to
ARNs of its own (CloudFormation tokens, the local cloud's ARNs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal

from mlops.aws import platform
from mlops.core import layout

if TYPE_CHECKING:
    from mlops.core.config import ModelConfig

READ: Final = "read"
WRITE: Final = "write"

ResourceKind = Literal["bucket", "objects", "table", "state_machine", "executions", "stream", "topic", "queue",
                       "key", "infer_functions", "any", "outside_bucket", "outside_objects"]


@dataclass(frozen=True)
class Resource:
    """A resource a statement names: ``objects`` are the keys matching ``pattern`` in bucket ``name``;
    ``executions`` are the executions of state machine ``name``; ``infer_functions`` are every model's infer
    function with its versions and aliases. Topics are ``notifications`` or ``predictions:<model>``, queues
    ``dead-letters:<model>``. ``outside_bucket`` and ``outside_objects`` name a bucket outside the platform by its
    own name (the batch inputs a model declares, ``Access.reads_outside``)."""

    kind: ResourceKind
    name: str = ""
    pattern: str = ""


@dataclass(frozen=True)
class Statement:
    actions: tuple[str, ...]
    resources: tuple[Resource, ...]
    # IAM condition operator -> {key: value}
    conditions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Access:
    """What one function may touch. Object access is by key prefix; table access is read or read-write."""

    read: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # bucket -> key prefixes
    write: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    deletes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # bucket -> key prefixes (s3:DeleteObject)
    read_versions: bool = False  # reads a given object version (s3:GetObjectVersion)
    tables: Mapping[str, Literal["read", "write"]] = field(default_factory=dict)
    starts: tuple[str, ...] = ()  # state machines it starts executions of
    describes: tuple[str, ...] = ()  # state machines whose executions it describes
    puts: tuple[str, ...] = ()  # Firehose delivery streams it puts records to (firehose:PutRecordBatch)
    publishes: tuple[str, ...] = ()  # topics it publishes to (sns:Publish)
    sends: tuple[str, ...] = ()  # queues it sends messages to (sqs:SendMessage)
    infer: tuple[str, ...] = ()  # Lambda actions on every model's infer function and its versions and aliases
    grants_api: bool = False  # lets API Gateway invoke an infer function's `live` alias (lambda:AddPermission)
    reads_metrics: bool = False  # cloudwatch:GetMetricData (the rollout's guardrails, mlops.release.guardrails)
    # s3://bucket/prefix/ outside the platform's buckets it lists and reads (batch inputs models declare, batch_access)
    reads_outside: tuple[str, ...] = ()


# mlops.release.deploy.ServingDeployer: pin a model version in $LATEST's environment, publish it, move the `live` alias
ROUTE = ("lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration", "lambda:GetAlias",
         "lambda:CreateAlias", "lambda:UpdateAlias")
# register also publishes the version of a new model version, and checks (and repairs) API Gateway's right to
# invoke the `live` alias (lambda:AddPermission, for the API's principal only: see statements())
DEPLOY = (*ROUTE, "lambda:PublishVersion", "lambda:GetPolicy")
API_PRINCIPAL: Final = "apigateway.amazonaws.com"

DDB_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem",
            "dynamodb:DescribeTable")
# TransactWriteItems is authorised item by item with these
DDB_WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")
# What S3 (SSE-KMS) and DynamoDB (customer-managed key) ask of the caller: CDK's grant helpers would add
# kms:GenerateDataKey* and kms:ReEncrypt*, which none of these calls needs.
KMS_DECRYPT = ("kms:Decrypt", "kms:DescribeKey")
KMS_ENCRYPT = ("kms:Encrypt", "kms:GenerateDataKey")
# What SNS and SQS ask of a sender to a topic or queue encrypted with a customer-managed key
KMS_SEND = ("kms:Decrypt", "kms:GenerateDataKey")
# What a push function's event source mapping does with the function's role: receive from the queue, delete what
# was handled, hide what failed (aws-cdk-lib's SqsEventSource grants the same)
QUEUE_CONSUMER = ("sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                  "sqs:ReceiveMessage")
# Where batch runs read their inputs in the data bucket (batch/<model>/, mlops.batch.start) and where each run writes
# its predictions, manifest and working files (batch-runs/<model>/<batch id>/): never incoming/ (a write there starts
# ingest, then training) nor the curated data, contracts and quarantine; and a run writes nowhere runs read inputs.
NOTIFICATIONS: Final = platform.TOPIC
# What CloudWatch Logs' role may do with the capture stream, into which each infer and push function's log group
# subscription delivers the capture lines (infra/constructs/serving.py, mlops.local.cloud.subscribe_captures): the
# record writes, on that stream only (aws-cdk-lib's FirehoseDestination grants the same)
CAPTURE_DELIVERY = ("firehose:PutRecord", "firehose:PutRecordBatch")


def predictions_topic(model: str) -> str:
    return f"predictions:{model}"


def dead_letters(model: str) -> str:
    return f"dead-letters:{model}"


ACCESS: dict[str, Access] = {
    # reads the exact version an S3 event names; the data contract is read and versioned under contracts/; reads back
    # the manifest it curated to fill the online feature store (mlops.features.offline)
    # a file above its model's ingest_map_above_mb: its ranges, parts and summaries under ingest-runs/ (written by the
    # plan and the parts, read and then removed by the merge), and the ingest state machine's execution that runs them
    "ingest": Access(read={"data": ("incoming/", "contracts/", "curated/", layout.INGEST_RUNS)},
                     write={"data": ("curated/", "quarantine/", "contracts/", layout.INGEST_RUNS)},
                     deletes={"data": (layout.INGEST_RUNS,)},
                     read_versions=True, tables={"idempotency": WRITE, "features": WRITE},
                     starts=(platform.INGEST_STATE_MACHINE,)),
    # the manifest it was notified of, or the newest one, and the dataset's data contract (its columns, for the
    # training_backend "auto" rule, mlops.pipeline.backend); claims the dataset in the registry
    "train_trigger": Access(read={"data": ("curated/", "contracts/")}, tables={"registry": WRITE},
                            starts=(platform.STATE_MACHINE,)),
    "train": Access(read={"data": ("curated/", "contracts/")}, write={"models": ("candidates/",)}),
    # the candidate, and the champion's registered model
    "evaluate": Access(read={"models": ("candidates/", "models/")}, tables={"registry": READ}),
    # publishes a version of the model's infer function, moves its alias, and starts the canary's rollout
    "register": Access(read={"models": ("candidates/", "models/")}, write={"models": ("models/",)},
                       tables={"registry": WRITE}, starts=(platform.ROLLOUT_STATE_MACHINE,), infer=DEPLOY,
                       grants_api=True),
    "record_outcome": Access(tables={"registry": WRITE}),
    # reads the captured predictions and feedback (Firehose writes them under captures/), moves the alias
    # (and hands a long canary over to a new execution of its own state machine before its history fills up)
    "rollout": Access(read={"captures": ("captures/",)}, tables={"registry": WRITE}, infer=ROUTE,
                      reads_metrics=True, starts=(platform.ROLLOUT_STATE_MACHINE,)),
    # mlops.drift.check.check_drift: the window's captures, the champion's baseline, manifest and contract; writes the
    # report (reports/), the labelled captured rows (labelled/) and, to retrain, a CSV under incoming/ that ingest
    # curates like any other; reads the newest curated dataset (and, for a feature-store model, the data's own
    # contract) to build that CSV; alerts on the topic
    # (a retraining file already there is compared with the one it would write, so it reads back under incoming/)
    "drift_check": Access(read={"captures": ("captures/",), "models": ("models/",),
                                "data": ("curated/", "labelled/", "contracts/", "incoming/")},
                          write={"models": ("reports/",), "data": ("labelled/", "incoming/")},
                          tables={"registry": WRITE}, publishes=(NOTIFICATIONS,)),
    # mlops.batch.run: a run's input objects under batch/ in the data bucket (and under the prefixes models declare,
    # see batch_access), its predictions, manifest and working files under batch-runs/; the model version's artefacts
    "batch": Access(read={"data": (layout.BATCH, layout.BATCH_RUNS), "models": (layout.MODELS,)},
                    write={"data": (layout.BATCH_RUNS,)}, tables={"registry": READ}),
}


def infer_access(model: str) -> Access:
    """A model's infer function: that model's registered artefacts, the registry and the online features; it starts
    and describes batch runs (POST and GET /models/<name>/batch, mlops.batch.start). It captures by writing to its own
    log (mlops.serving.capture), so it puts nothing into the capture stream itself: CloudWatch Logs does, with
    CAPTURE_DELIVERY."""
    return Access(read={"models": (f"models/{model}/",)}, tables={"registry": READ, "features": READ},
                  starts=(platform.BATCH_STATE_MACHINE,), describes=(platform.BATCH_STATE_MACHINE,))


def push_access(queue: platform.PushQueue) -> Access:
    """A model's push function scores like its infer function (batch runs aside); it sends poison messages to its
    dead-letter queue and answers on its topic or, with push_output = "s3", under predictions/<model>/ in the data
    bucket. Receiving from its queue is the event source mapping's part (infra/constructs/push.py)."""
    infer = infer_access(queue.model)
    if queue.output == "s3":
        return Access(read=infer.read, tables=infer.tables, sends=(dead_letters(queue.model),),
                      write={"data": (f"{layout.PREDICTIONS}{queue.model}/",)})
    return Access(read=infer.read, tables=infer.tables, sends=(dead_letters(queue.model),),
                  publishes=(predictions_topic(queue.model),))


def batch_access(models: Iterable[ModelConfig]) -> Access:
    """The batch function: ACCESS["batch"], and the prefixes outside the platform that models declare as their batch
    inputs (``batch_inputs`` in mlops.toml), read only. Which model may read which prefix is checked before a run
    starts (mlops.batch.start); one batch function serves every model, so its role holds them all."""
    declared = tuple(sorted({uri for model in models for uri in model.batch_inputs}))
    return replace(ACCESS["batch"], reads_outside=declared)


def statements(access: Access) -> list[Statement]:
    """The IAM statements an Access stands for."""
    out: list[Statement] = []
    kms: set[str] = set()
    for bucket in sorted({*access.read, *access.write, *access.deletes}):
        read, write = access.read.get(bucket, ()), access.write.get(bucket, ())
        # Without s3:ListBucket a HEAD on a missing key answers 403 instead of 404, and ObjectStore.exists
        # and ObjectStore.keys rely on the 404 and on listing.
        out.append(Statement(("s3:ListBucket",), (Resource("bucket", bucket),)))
        if read:
            out.append(Statement(("s3:GetObject", *(("s3:GetObjectVersion",) if access.read_versions else ())),
                                 tuple(Resource("objects", bucket, f"{prefix}*") for prefix in read)))
            kms.update(KMS_DECRYPT)
        if write:
            out.append(Statement(("s3:PutObject",), tuple(Resource("objects", bucket, f"{p}*") for p in write)))
            kms.update(KMS_ENCRYPT)
        if deletes := access.deletes.get(bucket, ()):
            out.append(Statement(("s3:DeleteObject",), tuple(Resource("objects", bucket, f"{p}*") for p in deletes)))
    for uri in access.reads_outside:
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        # listing is limited to the declared prefix, as reading is; a bucket's own KMS key is its owner's to grant
        out.append(Statement(("s3:ListBucket",), (Resource("outside_bucket", bucket),),
                             {"StringLike": {"s3:prefix": f"{prefix}*"}}))
        out.append(Statement(("s3:GetObject",), (Resource("outside_objects", bucket, f"{prefix}*"),)))
    for table, mode in sorted(access.tables.items()):
        out.append(Statement((*DDB_READ, *(DDB_WRITE if mode == WRITE else ())), (Resource("table", table),)))
        kms.update(KMS_DECRYPT, KMS_ENCRYPT if mode == WRITE else ())
    for machine in access.starts:
        out.append(Statement(("states:StartExecution",), (Resource("state_machine", machine),)))
    for machine in access.describes:
        out.append(Statement(("states:DescribeExecution",), (Resource("executions", machine),)))
    if access.publishes:
        out.append(Statement(("sns:Publish",), tuple(Resource("topic", t) for t in access.publishes)))
        kms.update(KMS_SEND)
    if access.sends:
        out.append(Statement(("sqs:SendMessage",), tuple(Resource("queue", q) for q in access.sends)))
        kms.update(KMS_SEND)
    if kms:
        out.append(Statement(tuple(sorted(kms)), (Resource("key", "data"),)))
    if access.reads_metrics:
        # GetMetricData has no resource-level permission
        out.append(Statement(("cloudwatch:GetMetricData",), (Resource("any"),)))
    if access.puts:
        out.append(Statement(("firehose:PutRecordBatch",), tuple(Resource("stream", s) for s in access.puts)))
    if access.infer:
        out.append(Statement(tuple(sorted(access.infer)), (Resource("infer_functions"),)))
    if access.grants_api:
        # only for API Gateway's principal: a role that may add any permission could let anyone invoke the models
        out.append(Statement(("lambda:AddPermission",), (Resource("infer_functions"),),
                             {"StringEquals": {"lambda:Principal": API_PRINCIPAL}}))
    return out

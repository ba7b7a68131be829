"""AWS operations as IAM authorises them: each (service, operation) with its parameters -> the actions and resource
ARNs AWS asks of the caller (Amazon's Service Authorization Reference). An operation with no mapping fails loudly."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class UnmappedOperation(RuntimeError):
    """A handler called an AWS operation the guard cannot map to IAM actions: add it to OPERATIONS."""


@dataclass(frozen=True)
class Target:
    """One authorisation an operation needs: an action on a resource, with the request's condition values."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    region: str
    account: str
    params: Mapping[str, Any]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"


# -- operations -> (action, resource) ------------------------------------------------------------------------------
def _s3_object(call: Call, bucket_key: str = "Bucket", key_key: str = "Key") -> str:
    return f"arn:aws:s3:::{call.params[bucket_key]}/{call.params[key_key]}"


def _s3_bucket(call: Call) -> str:
    return f"arn:aws:s3:::{call.params['Bucket']}"


def _s3_read(call: Call) -> list[Target]:
    action = "s3:GetObjectVersion" if call.params.get("VersionId") else "s3:GetObject"
    return [Target(action, _s3_object(call))]


def _s3_copy(call: Call) -> list[Target]:
    source = call.params["CopySource"]
    if isinstance(source, str):
        path, _, query = source.lstrip("/").partition("?versionId=")
        bucket, _, key = path.partition("/")
        version = query or None
    else:
        bucket, key, version = source["Bucket"], source["Key"], source.get("VersionId")
    return [Target("s3:GetObjectVersion" if version else "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}"),
            Target("s3:PutObject", _s3_object(call))]


def _s3_delete(call: Call) -> list[Target]:
    action = "s3:DeleteObjectVersion" if call.params.get("VersionId") else "s3:DeleteObject"
    return [Target(action, _s3_object(call))]


def _s3_delete_many(call: Call) -> list[Target]:
    return [Target("s3:DeleteObjectVersion" if o.get("VersionId") else "s3:DeleteObject",
                   f"arn:aws:s3:::{call.params['Bucket']}/{o['Key']}") for o in call.params["Delete"]["Objects"]]


def _object(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, _s3_object(call))]


def _bucket(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, _s3_bucket(call))]


def _list(call: Call) -> list[Target]:
    # a listing is authorised with the prefix it asks for (the s3:prefix condition key)
    return [Target("s3:ListBucket", _s3_bucket(call), {"s3:prefix": str(call.params.get("Prefix", ""))})]


def _table_arn(call: Call, table: str, index: str | None = None) -> str:
    return call.arn("dynamodb", f"table/{table}" + (f"/index/{index}" if index else ""))


def _table(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, _table_arn(call, call.params["TableName"], call.params.get("IndexName")))]


def _tables(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, _table_arn(call, table)) for table in call.params["RequestItems"]]


_TRANSACT_ACTIONS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                     "ConditionCheck": "dynamodb:ConditionCheckItem", "Get": "dynamodb:GetItem"}


def _transact(call: Call) -> list[Target]:
    """A transaction is authorised item by item, with each item's own action on its table."""
    out = []
    for item in call.params["TransactItems"]:
        [(kind, body)] = item.items()
        out.append(Target(_TRANSACT_ACTIONS[kind], _table_arn(call, body["TableName"])))
    return out


def _function_arn(call: Call, *, qualified: bool = True) -> str:
    name = str(call.params["FunctionName"])
    if name.startswith("arn:"):
        parts = name.split(":")
        name, qualifier = parts[6], (parts[7] if len(parts) > 7 else None)
    else:
        name, _, qualifier = name.partition(":")
    qualifier = call.params.get("Qualifier") or qualifier or None
    return call.arn("lambda", f"function:{name}" + (f":{qualifier}" if qualified and qualifier else ""))


def _function(action: str, *, qualified: bool = True) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, _function_arn(call, qualified=qualified))]


def _add_permission(call: Call) -> list[Target]:
    return [Target("lambda:AddPermission", _function_arn(call),
                   {"lambda:Principal": str(call.params.get("Principal", ""))})]


def _state_machine(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, str(call.params["stateMachineArn"]))]


def _execution(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, str(call.params["executionArn"]))]


def _stream(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, call.arn("firehose", f"deliverystream/{call.params['DeliveryStreamName']}"))]


def _queue_arn(call: Call) -> str:
    # https://sqs.<region>.amazonaws.com/<account>/<name> (or moto's http://host:port/<account>/<name>)
    account, name = str(call.params["QueueUrl"]).rstrip("/").split("/")[-2:]
    return f"arn:aws:sqs:{call.region}:{account}:{name}"


def _queue(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, _queue_arn(call))]


def _topic(call: Call) -> list[Target]:
    return [Target("sns:Publish", str(call.params.get("TopicArn") or call.params.get("TargetArn")))]


def _anything(action: str) -> Callable[[Call], list[Target]]:
    return lambda call: [Target(action, "*")]


def _free(call: Call) -> list[Target]:
    return []  # needs no permission (sts:GetCallerIdentity)


# (IAM service prefix, operation name) -> the authorisations AWS asks for it
OPERATIONS: dict[tuple[str, str], Callable[[Call], list[Target]]] = {
    ("s3", "GetObject"): _s3_read,
    ("s3", "HeadObject"): _s3_read,
    ("s3", "GetObjectAttributes"): _s3_read,
    ("s3", "SelectObjectContent"): _object("s3:GetObject"),
    ("s3", "PutObject"): _object("s3:PutObject"),
    ("s3", "CopyObject"): _s3_copy,
    ("s3", "CreateMultipartUpload"): _object("s3:PutObject"),
    ("s3", "UploadPart"): _object("s3:PutObject"),
    ("s3", "CompleteMultipartUpload"): _object("s3:PutObject"),
    ("s3", "AbortMultipartUpload"): _object("s3:AbortMultipartUpload"),
    ("s3", "ListParts"): _object("s3:ListMultipartUploadParts"),
    ("s3", "DeleteObject"): _s3_delete,
    ("s3", "DeleteObjects"): _s3_delete_many,
    ("s3", "ListObjectsV2"): _list,
    ("s3", "ListObjects"): _list,
    ("s3", "HeadBucket"): _bucket("s3:ListBucket"),
    ("s3", "ListObjectVersions"): _bucket("s3:ListBucketVersions"),
    ("s3", "GetBucketLocation"): _bucket("s3:GetBucketLocation"),
    **{("dynamodb", op): _table(f"dynamodb:{op}") for op in (
        "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable")},
    ("dynamodb", "BatchGetItem"): _tables("dynamodb:BatchGetItem"),
    ("dynamodb", "BatchWriteItem"): _tables("dynamodb:BatchWriteItem"),
    ("dynamodb", "TransactWriteItems"): _transact,
    ("dynamodb", "TransactGetItems"): _transact,
    **{("lambda", op): _function(f"lambda:{op}") for op in (
        "GetFunctionConfiguration", "GetFunction", "UpdateFunctionConfiguration", "PublishVersion", "GetPolicy",
        "RemovePermission")},
    ("lambda", "Invoke"): _function("lambda:InvokeFunction"),
    ("lambda", "ListVersionsByFunction"): _function("lambda:ListVersionsByFunction", qualified=False),
    ("lambda", "ListAliases"): _function("lambda:ListAliases", qualified=False),
    # alias operations are authorised on the function (the alias is a parameter, not part of the ARN)
    **{("lambda", op): _function(f"lambda:{op}", qualified=False) for op in (
        "GetAlias", "CreateAlias", "UpdateAlias", "DeleteAlias")},
    ("lambda", "AddPermission"): _add_permission,
    ("states", "StartExecution"): _state_machine("states:StartExecution"),
    ("states", "StartSyncExecution"): _state_machine("states:StartSyncExecution"),
    ("states", "DescribeStateMachine"): _state_machine("states:DescribeStateMachine"),
    ("states", "ListExecutions"): _state_machine("states:ListExecutions"),
    ("states", "DescribeExecution"): _execution("states:DescribeExecution"),
    ("states", "StopExecution"): _execution("states:StopExecution"),
    ("states", "GetExecutionHistory"): _execution("states:GetExecutionHistory"),
    ("states", "RedriveExecution"): _execution("states:RedriveExecution"),
    ("firehose", "PutRecord"): _stream("firehose:PutRecord"),
    ("firehose", "PutRecordBatch"): _stream("firehose:PutRecordBatch"),
    ("firehose", "DescribeDeliveryStream"): _stream("firehose:DescribeDeliveryStream"),
    ("sns", "Publish"): _topic,
    **{("sqs", op): _queue(f"sqs:{op}") for op in (
        "SendMessage", "ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "GetQueueAttributes",
        "PurgeQueue")},
    ("sqs", "SendMessageBatch"): _queue("sqs:SendMessage"),
    ("sqs", "DeleteMessageBatch"): _queue("sqs:DeleteMessage"),
    ("sqs", "ChangeMessageVisibilityBatch"): _queue("sqs:ChangeMessageVisibility"),
    ("sqs", "GetQueueUrl"): lambda call: [Target("sqs:GetQueueUrl", call.arn("sqs", str(call.params["QueueName"])))],
    ("monitoring", "GetMetricData"): _anything("cloudwatch:GetMetricData"),
    ("monitoring", "GetMetricStatistics"): _anything("cloudwatch:GetMetricStatistics"),
    ("monitoring", "PutMetricData"): _anything("cloudwatch:PutMetricData"),
    ("monitoring", "ListMetrics"): _anything("cloudwatch:ListMetrics"),
    ("sts", "GetCallerIdentity"): _free,
}
# botocore's endpoint prefix -> IAM's service prefix, where they differ
_IAM_PREFIX = {"monitoring": "cloudwatch"}
# what each service calls a refusal (code, HTTP status), as AWS answers it
DENIAL = {"s3": ("AccessDenied", 403), "sns": ("AuthorizationError", 403), "sqs": ("AccessDenied", 403),
           "monitoring": ("AccessDenied", 403), "lambda": ("AccessDeniedException", 403)}


def targets(endpoint_prefix: str, operation: str, params: Mapping[str, Any], *, region: str,
            account: str) -> list[Target]:
    """The authorisations AWS asks of a caller for one operation with these parameters."""
    try:
        rule = OPERATIONS[(endpoint_prefix, operation)]
    except KeyError:
        raise UnmappedOperation(
            f"the local IAM guard has no mapping for {endpoint_prefix}:{operation}: add the IAM actions and resource "
            "ARNs AWS authorises it with to mlops.local.iam.operations.OPERATIONS (see AWS's Service Authorization "
            "Reference)") from None
    return rule(Call(region, account, params))


GUARDED_SERVICES = tuple(sorted({_IAM_PREFIX.get(prefix, prefix) for prefix, _op in OPERATIONS}))

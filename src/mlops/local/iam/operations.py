"""The local cloud's IAM: every AWS call a handler makes is authorised against its function's role policy before it
reaches moto, and a call the policy does not allow fails with the AccessDenied error AWS returns.

moto evaluates no identity policy the platform could rely on (its own enforcement checks resources only for S3, SQS,
IAM and STS and denies every least-privilege statement elsewhere), so the check happens on the client side: every
botocore client call in this process passes ``BaseClient._make_api_call``, where the guard maps the operation and its
parameters to the IAM actions and resource ARNs AWS authorises it with (:data:`OPERATIONS`) and asks moto's policy
evaluator (``moto.iam.access_control.IAMPolicy``) about each. The caller is the function whose handler runs on the
calling thread (its ``AWS_LAMBDA_FUNCTION_NAME``, from the runtime's per-thread environment); calls from outside a
handler (tests, the CLI, moto's own Step Functions engine) are not checked. An operation with no mapping fails
loudly (:class:`UnmappedOperation`), so a new call cannot slip through unchecked.

Where the policies come from: in the tests, the synthesized CloudFormation template (:func:`template_policies`, the
thing that is deployed); in ``mlops local up``, the platform's declaration (:func:`platform_policies`, from
``mlops.aws.access``); a parity test keeps the two equal.

What it does not evaluate (docs/local.md): resource policies other than Lambda's (mlops.local.permissions), KMS
(S3, DynamoDB, SNS and SQS call KMS on the caller's behalf; locally nothing is encrypted), permission boundaries,
SCPs and session policies, and condition keys other than the ones an operation passes (``lambda:Principal`` of
AddPermission, ``s3:prefix`` of a listing); moto's evaluator applies ``StringEquals`` only and ignores other
condition operators (a ``StringLike`` on ``s3:prefix`` is taken as met).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.iam.access_control import IAMPolicy, PermissionResult

from mlops.aws import access, platform
from mlops.core.config import ProjectConfig

_ORIGINAL_CALL = BaseClient._make_api_call
FUNCTION_VARIABLE = "AWS_LAMBDA_FUNCTION_NAME"


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
_DENIAL = {"s3": ("AccessDenied", 403), "sns": ("AuthorizationError", 403), "sqs": ("AccessDenied", 403),
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


# -- evaluation ----------------------------------------------------------------------------------------------------
class RolePolicy:
    """One role's identity-based policy (its statements), evaluated as IAM does: an explicit Deny wins, else an Allow,
    else the implicit deny."""

    def __init__(self, role: str, statements: Sequence[Mapping[str, Any]]) -> None:
        self.role = role
        self.statements = [dict(s) for s in statements]
        self._policy = IAMPolicy(json.dumps({"Version": "2012-10-17", "Statement": self.statements}))

    def allows(self, target: Target) -> bool:
        result = self._policy.is_action_permitted(target.action, target.resource,
                                                  incoming_condition_values=dict(target.context) or None)
        return result == PermissionResult.PERMITTED


@dataclass
class Denial:
    function: str
    operation: str
    target: Target


class Guard:
    """Checks every handler's AWS calls against ``policies`` (physical function name -> its role's statements)."""

    def __init__(self, policies: Mapping[str, Sequence[Mapping[str, Any]]], *, account: str) -> None:
        self.policies = {name: RolePolicy(f"{name}-role", statements) for name, statements in policies.items()}
        self.account = account
        self.denials: list[Denial] = []
        self.checked = 0
        self._lock = threading.Lock()

    def caller(self) -> str | None:
        """The function whose handler runs on this thread (the runtime's per-thread environment), if any."""
        return os.environ.get(FUNCTION_VARIABLE)

    def check(self, client: BaseClient, operation: str, params: Mapping[str, Any]) -> None:
        function = self.caller()
        if function is None:
            return
        prefix = client.meta.service_model.endpoint_prefix
        found = targets(prefix, operation, params, region=client.meta.region_name, account=self.account)
        policy = self.policies.get(function)
        with self._lock:
            self.checked += 1
        for target in found:
            if policy is not None and policy.allows(target):
                continue
            with self._lock:
                self.denials.append(Denial(function, operation, target))
            code, status = _DENIAL.get(prefix, ("AccessDeniedException", 400))
            identity = f"arn:aws:sts::{self.account}:assumed-role/{function}-role/{function}"
            raise ClientError({"Error": {"Code": code, "Message": (
                f"User: {identity} is not authorized to perform: {target.action} on resource: {target.resource} "
                f"because no identity-based policy allows the {target.action} action")},
                "ResponseMetadata": {"HTTPStatusCode": status}}, operation)

    def install(self) -> None:
        guard = self

        def _make_api_call(client: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
            guard.check(client, operation_name, api_params)
            return _ORIGINAL_CALL(client, operation_name, api_params)

        BaseClient._make_api_call = _make_api_call

    def uninstall(self) -> None:
        BaseClient._make_api_call = _ORIGINAL_CALL

    def __enter__(self) -> Guard:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


# -- policies from the platform's declaration ----------------------------------------------------------------------
@dataclass(frozen=True)
class LocalNames:
    """What the local cloud calls the platform's resources (mlops.local.cloud.Deployment gives them)."""

    region: str
    account: str
    project: str
    names: Mapping[str, str]  # platform.resource_names
    models: Sequence[str]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def function_arn(self, name: str) -> str:
        return self.arn("lambda", f"function:{name}")

    def resolve(self, resource: access.Resource, config: ProjectConfig) -> list[str]:
        kind, name = resource.kind, resource.name
        if kind == "bucket":
            return [f"arn:aws:s3:::{self.names[name]}"]
        if kind == "objects":
            return [f"arn:aws:s3:::{self.names[name]}/{resource.pattern}"]
        if kind == "table":
            return [self.arn("dynamodb", f"table/{self.names[name]}")]
        if kind == "state_machine":
            return [self.arn("states", f"stateMachine:{self.names[name]}")]
        if kind == "executions":
            return [self.arn("states", f"execution:{self.names[name]}:*")]
        if kind == "stream":
            return [self.arn("firehose", f"deliverystream/{self.names[name]}")]
        if kind == "topic":
            if name == access.NOTIFICATIONS:
                return [self.arn("sns", self.names[name])]
            queue = _push_queue(config, name.removeprefix("predictions:"))
            return [self.arn("sns", str(queue.topic))]
        if kind == "queue":
            return [self.arn("sqs", _push_queue(config, name.removeprefix("dead-letters:")).dead_letter_queue)]
        if kind == "key":
            return [self.arn("kms", f"key/{self.project}-{name}")]
        if kind == "infer_functions":
            arns = [self.function_arn(platform.infer_function_name(self.project, m)) for m in self.models]
            return [*arns, *(f"{arn}:*" for arn in arns)]
        if kind == "any":
            return ["*"]
        if kind == "outside_bucket":
            return [f"arn:aws:s3:::{name}"]
        if kind == "outside_objects":
            return [f"arn:aws:s3:::{name}/{resource.pattern}"]
        raise ValueError(f"no local resource for {resource}")


def _push_queue(config: ProjectConfig, model: str) -> platform.PushQueue:
    return next(q for q in platform.push_queues(config) if q.model == model)


def render(statements: Iterable[access.Statement], names: LocalNames, config: ProjectConfig) -> list[dict[str, Any]]:
    return [{"Effect": "Allow", "Action": list(s.actions),
             "Resource": [arn for r in s.resources for arn in names.resolve(r, config)],
             **({"Condition": {op: dict(values) for op, values in s.conditions.items()}} if s.conditions else {})}
            for s in statements]


def platform_policies(names: LocalNames, config: ProjectConfig) -> dict[str, list[dict[str, Any]]]:
    """Each function's role policy as the platform declares it (mlops.aws.access), on the local cloud's resources; plus
    what the Lambda service does with the role on the function's behalf and the local cloud plays too (a push
    function's event source mapping receives from its queue)."""
    declared = {**access.ACCESS, "batch": access.batch_access(config.models)}
    out = {spec.physical_name(names.project): render(access.statements(declared[spec.name]), names, config)
           for spec in platform.FUNCTIONS}
    for model in names.models:
        out[platform.infer_function_name(names.project, model)] = render(
            access.statements(access.infer_access(model)), names, config)
    for queue in platform.push_queues(config):
        consume = {"Effect": "Allow", "Action": list(access.QUEUE_CONSUMER),
                   "Resource": [names.arn("sqs", queue.queue)]}
        out[queue.function] = [*render(access.statements(access.push_access(queue)), names, config), consume]
    return out


# -- policies from a synthesized template --------------------------------------------------------------------------
class Unresolved(str):
    """A template value naming something the local cloud does not have (a log group, a failure queue)."""


def evaluate(value: Any, resources: Mapping[str, Mapping[str, str]], pseudo: Mapping[str, str]) -> Any:
    """A CloudFormation value with its intrinsic functions evaluated: ``resources`` gives each logical id's local
    ``Ref`` and attributes; a logical id it does not know evaluates to an :class:`Unresolved` marker."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [evaluate(v, resources, pseudo) for v in value]
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        ref = value["Ref"]
        if ref in pseudo:
            return pseudo[ref]
        found = resources.get(ref, {}).get("Ref")
        return found if found is not None else Unresolved(f"<unresolved Ref {ref}>")
    if "Fn::GetAtt" in value:
        lid, attribute = value["Fn::GetAtt"]
        found = resources.get(lid, {}).get(attribute)
        return found if found is not None else Unresolved(f"<unresolved {lid}.{attribute}>")
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        rendered = [evaluate(p, resources, pseudo) for p in parts]
        text = str(separator).join(str(p) for p in rendered)
        return Unresolved(text) if any(isinstance(p, Unresolved) for p in rendered) else text
    if "Fn::Select" in value:
        index, items = value["Fn::Select"]
        rendered = evaluate(items, resources, pseudo)
        return Unresolved(str(rendered)) if isinstance(rendered, Unresolved) else rendered[int(index)]
    if "Fn::Split" in value:
        separator, text = value["Fn::Split"]
        rendered = evaluate(text, resources, pseudo)
        return Unresolved(str(rendered)) if isinstance(rendered, Unresolved) else str(rendered).split(separator)
    return {key: evaluate(v, resources, pseudo) for key, v in value.items()}


def template_policies(template: Mapping[str, Any], *, roles: Mapping[str, str],
                      resources: Mapping[str, Mapping[str, str]], region: str,
                      account: str) -> dict[str, list[dict[str, Any]]]:
    """Each role's policy as the template deploys it: ``roles`` maps a role's logical id to the name its policy goes
    by (the local function it is the role of), ``resources`` each logical id to its local ``Ref`` and attributes. A
    statement's resource the local cloud does not have is dropped (it can match no local call)."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": region, "AWS::AccountId": account,
              "AWS::URLSuffix": "amazonaws.com"}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in roles.values()}
    for lid, resource in template["Resources"].items():
        documents: list[tuple[str, Mapping[str, Any]]] = []
        if resource["Type"] == "AWS::IAM::Policy":
            for role in resource["Properties"].get("Roles", []):
                if isinstance(role, dict) and role.get("Ref") in roles:
                    documents.append((roles[role["Ref"]], resource["Properties"]["PolicyDocument"]))
        elif resource["Type"] == "AWS::IAM::Role" and lid in roles:
            documents.extend((roles[lid], p["PolicyDocument"]) for p in resource["Properties"].get("Policies", []))
        for name, document in documents:
            for statement in _as_list(document["Statement"]):
                rendered = evaluate(statement, resources, pseudo)
                wanted = [r for r in _as_list(rendered.get("Resource", [])) if not isinstance(r, Unresolved)]
                if wanted:
                    out[name].append({**rendered, "Resource": wanted})
    return out


def role_of(resource: Mapping[str, Any]) -> str:
    """The logical id of a function's (Role) or state machine's (RoleArn) role in a template."""
    props = resource["Properties"]
    role = props.get("Role") or props["RoleArn"]
    return str(role["Fn::GetAtt"][0])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def pairs(statements: Iterable[Mapping[str, Any]], services: Iterable[str]) -> set[tuple[str, str, str]]:
    """(action, resource, condition) of every Allow in ``services``: what a parity test compares."""
    wanted = set(services)
    out: set[tuple[str, str, str]] = set()
    for statement in statements:
        if statement.get("Effect", "Allow") != "Allow":
            continue
        condition = json.dumps(statement.get("Condition") or {}, sort_keys=True)
        for action in _as_list(statement.get("Action", [])):
            if action.split(":", 1)[0] in wanted:
                out.update((action, str(resource), condition) for resource in _as_list(statement.get("Resource", [])))
    return out


GUARDED_SERVICES = tuple(sorted({_IAM_PREFIX.get(prefix, prefix) for prefix, _op in OPERATIONS}))

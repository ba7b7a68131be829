"""Lambda resource-based policies in the local cloud, enforced where AWS enforces them.

On AWS a service invokes a function only if the function's (or the invoked alias's) resource policy lets it:
API Gateway answers 500 when it may not invoke its integration's alias, S3 refuses a notification configuration
whose function it may not invoke (and drops an event whose permission was removed since), and EventBridge counts a
failed invocation. moto stores permissions but checks none of this, and keeps an alias's statements on whichever
version the alias pointed at when they were added. Here:

- ``install()`` gives each alias a policy of its own (as Lambda does: it outlives the alias's moves), refuses a
  duplicate statement id (ResourceConflictException, as AWS), makes S3 refuse a notification configuration naming a
  function it may not invoke, and routes S3's deliveries through :func:`deliver_s3_event`;
- :func:`may_invoke` is asked by the local gateway (``mlops.local.gateway``) and the scheduler
  (``mlops.local.scheduler``) before they invoke.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaBackend, lambda_backends
from moto.awslambda.policy import Policy
from moto.s3 import notifications
from moto.s3.exceptions import InvalidArgumentError
from moto.s3.models import FakeBucket

from mlops.aws.lambda_policy import allows_invoke, statements_of

_ORIGINAL_ADD = LambdaBackend.add_permission
_ORIGINAL_GET = LambdaBackend.get_policy
_ORIGINAL_REMOVE = LambdaBackend.remove_permission
_ORIGINAL_NOTIFY = notifications._invoke_awslambda
_ORIGINAL_CONFIGURE = FakeBucket.set_notification_configuration

S3_PRINCIPAL = "s3.amazonaws.com"


def _is_alias(qualifier: str | None) -> bool:
    return bool(qualifier) and qualifier != "$LATEST" and not str(qualifier).isdigit()


def _name(function: str) -> tuple[str, str | None]:
    """A function name, ``name:qualifier`` or an ARN -> (name, qualifier)."""
    if function.startswith("arn:"):
        parts = function.split(":")
        return parts[6], parts[7] if len(parts) > 7 else None
    name, _, qualifier = function.partition(":")
    return name, qualifier or None


def _alias_policies(backend: LambdaBackend) -> dict[tuple[str, str], Policy]:
    found: dict[tuple[str, str], Policy] | None = getattr(backend, "_mlops_alias_policies", None)
    if found is None:
        found = {}
        backend._mlops_alias_policies = found  # type: ignore[attr-defined]
    return found


def _add_permission(backend: LambdaBackend, function_name: str, qualifier: str | None, raw: str) -> dict[str, Any]:
    name, named = _name(function_name)
    qualifier = qualifier or named
    sid = json.loads(raw).get("StatementId")
    if not _is_alias(qualifier):
        current = backend.get_function(name, qualifier).policy.statements
        if sid and any(s.get("Sid") == sid for s in current):
            raise _duplicate(sid)
        return _ORIGINAL_ADD(backend, function_name, qualifier, raw)  # type: ignore[arg-type]
    assert qualifier is not None
    backend.get_alias(qualifier, name)  # an alias that does not exist: ResourceNotFoundException, as AWS
    policy = _alias_policies(backend).setdefault((name, qualifier), Policy(backend.get_function(name)))
    if sid and any(s.get("Sid") == sid for s in policy.statements):
        raise _duplicate(sid)
    statement, _revision = policy.add_statement(raw, qualifier)
    return dict(statement)


def _duplicate(sid: str) -> LambdaClientError:
    # AWS's code for it; moto's own conflicts say ConflictException
    return LambdaClientError("ResourceConflictException", f"The statement id ({sid}) provided already exists. "
                             "Please provide a new statement id, or remove the existing statement.")


def _get_policy(backend: LambdaBackend, function_name: str, qualifier: str | None = None) -> str:
    name, named = _name(function_name)
    qualifier = qualifier or named
    if _is_alias(qualifier):
        assert qualifier is not None
        backend.get_alias(qualifier, name)
        policy = _alias_policies(backend).get((name, qualifier)) or Policy(backend.get_function(name))
        return policy.wire_format()  # no statement: moto's "not found", as AWS answers
    return _ORIGINAL_GET(backend, function_name, qualifier)


def _remove_permission(backend: LambdaBackend, function_name: str, sid: str, revision: str = "") -> None:
    """moto's RemovePermission does not pass the Qualifier on: a statement id found in one of the function's alias
    policies is removed there (statement ids are unique per policy, and the platform's are per alias)."""
    name, _qualifier = _name(function_name)
    for (function, _alias), policy in _alias_policies(backend).items():
        if function == name and any(s.get("Sid") == sid for s in policy.statements):
            policy.del_statement(sid, revision)
            return
    _ORIGINAL_REMOVE(backend, function_name, sid, revision)


def function_statements(account: str, region: str, function: str,
                        qualifier: str | None = None) -> list[Mapping[str, Any]]:
    """The statements of a function's (or its alias's or version's) resource policy; [] when it has none."""
    backend = lambda_backends[account][region]
    try:
        return statements_of(json.loads(_get_policy(backend, function, qualifier)))
    except Exception:  # no such function, alias or policy: nothing allows anything
        return []


def may_invoke(account: str, region: str, *, function: str, qualifier: str | None, service: str,
               source_arn: str, source_account: str | None = None) -> bool:
    """Whether ``service`` may invoke ``function`` (at ``qualifier``) for ``source_arn``, by its resource policy."""
    name, named = _name(function)
    qualifier = qualifier or named
    arn = f"arn:aws:lambda:{region}:{account}:function:{name}" + (f":{qualifier}" if qualifier else "")
    return allows_invoke(function_statements(account, region, name, qualifier), service=service, function_arn=arn,
                         source_arn=source_arn, source_account=source_account or account)


def _bucket_of(event_body: Any) -> str | None:
    try:
        return str(event_body["Records"][0]["s3"]["bucket"]["name"])
    except (KeyError, IndexError, TypeError):
        return None


def deliver_s3_event(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
    """S3's asynchronous invocation of a notification's function: only if the function's policy still lets S3
    invoke it for this bucket (otherwise AWS drops the event; here it is said on stderr)."""
    bucket = _bucket_of(event_body)
    if bucket is not None and not may_invoke(account_id, region_name, function=fn_arn, qualifier=None,
                                             service=S3_PRINCIPAL, source_arn=f"arn:aws:s3:::{bucket}",
                                             source_account=account_id):
        print(f"[s3] event for s3://{bucket} not delivered: the resource policy of {fn_arn} does not let "
              f"{S3_PRINCIPAL} invoke it for this bucket", file=sys.stderr, flush=True)
        return
    _ORIGINAL_NOTIFY(account_id, event_body, fn_arn, region_name)


def _configure(bucket: FakeBucket, notification_config: dict[str, Any] | None) -> None:
    """AWS validates a notification configuration's destinations: a function S3 may not invoke is refused."""
    previous = bucket.notification_configuration
    _ORIGINAL_CONFIGURE(bucket, notification_config)
    configured = bucket.notification_configuration
    for target in getattr(configured, "cloud_function", None) or []:
        if not may_invoke(bucket.account_id, bucket.region_name, function=target.arn, qualifier=None,
                          service=S3_PRINCIPAL, source_arn=f"arn:aws:s3:::{bucket.name}",
                          source_account=bucket.account_id):
            bucket.notification_configuration = previous
            raise InvalidArgumentError("Unable to validate the following destination configurations",
                                       target.arn, "Not authorized to invoke function")


def install() -> None:
    LambdaBackend.add_permission = _add_permission  # type: ignore[method-assign,assignment]
    LambdaBackend.get_policy = _get_policy  # type: ignore[method-assign,assignment]
    LambdaBackend.remove_permission = _remove_permission  # type: ignore[method-assign,assignment]
    notifications._invoke_awslambda = deliver_s3_event
    FakeBucket.set_notification_configuration = _configure  # type: ignore[method-assign,assignment]


def uninstall() -> None:
    LambdaBackend.add_permission = _ORIGINAL_ADD  # type: ignore[method-assign]
    LambdaBackend.get_policy = _ORIGINAL_GET  # type: ignore[method-assign]
    LambdaBackend.remove_permission = _ORIGINAL_REMOVE  # type: ignore[method-assign]
    notifications._invoke_awslambda = _ORIGINAL_NOTIFY
    FakeBucket.set_notification_configuration = _ORIGINAL_CONFIGURE  # type: ignore[method-assign]

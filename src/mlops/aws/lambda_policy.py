"""Reading a Lambda function's resource-based policy: may this AWS service invoke it, for this source?

register uses it on AWS to find out whether API Gateway may still invoke a model's `live` alias (and repairs the
permission when it may not); the local cloud uses it to refuse an invocation, as API Gateway, S3 and EventBridge
would, when the function's policy does not let them invoke it.

What it evaluates: Allow statements whose Principal names the service, whose Action covers lambda:InvokeFunction
and whose Resource is the function (or the qualified ARN invoked), with the conditions AWS puts on service
invocations (``ArnLike``/``ArnEquals`` on ``AWS:SourceArn``, ``StringEquals`` on ``AWS:SourceAccount``). A
statement with any other condition is not taken as allowing (it would need a context this check does not have).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

INVOKE = "lambda:InvokeFunction"


def _pattern(text: str) -> re.Pattern[str]:
    """An IAM string pattern: ``*`` any run of characters, ``?`` one character, everything else literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text), re.DOTALL)


def matches(pattern: str, value: str) -> bool:
    return _pattern(pattern).fullmatch(value) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal_is(statement: Mapping[str, Any], service: str) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return service in _as_list(principal.get("Service", [])) or "*" in _as_list(principal.get("AWS", []))


def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, str | None]) -> bool:
    known = {key.lower(): value for key, value in context.items()}
    for operator, pairs in conditions.items():
        for key, expected in pairs.items():
            actual = known.get(key.lower())
            if actual is None:
                return False  # AWS: a condition on a key the request does not carry does not match
            if operator in ("ArnLike", "StringLike"):
                ok = any(matches(str(e), actual) for e in _as_list(expected))
            elif operator in ("ArnEquals", "StringEquals"):
                ok = actual in [str(e) for e in _as_list(expected)]
            else:
                return False
            if not ok:
                return False
    return True


def statements_of(policy: str | Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The statements of a policy as GetPolicy answers it (its ``Policy`` is a JSON string), or of a document."""
    if policy is None:
        return []
    document = json.loads(policy) if isinstance(policy, str) else policy
    if "Policy" in document:
        document = json.loads(document["Policy"]) if isinstance(document["Policy"], str) else document["Policy"]
    return [s for s in _as_list(document.get("Statement", [])) if isinstance(s, Mapping)]


def allows_invoke(statements: Iterable[Mapping[str, Any]], *, service: str, function_arn: str,
                  source_arn: str | None = None, source_account: str | None = None) -> bool:
    """Whether ``service`` (e.g. ``apigateway.amazonaws.com``) may invoke ``function_arn`` (qualified when an alias
    or version is invoked) for ``source_arn`` and ``source_account``. An explicit Deny wins, as in IAM."""
    context = {"AWS:SourceArn": source_arn, "AWS:SourceAccount": source_account}
    allowed = False
    for statement in statements:
        if not _principal_is(statement, service):
            continue
        if not any(matches(str(a), INVOKE) for a in _as_list(statement.get("Action", []))):
            continue
        if not any(matches(str(r), function_arn) for r in _as_list(statement.get("Resource", []))):
            continue
        if not _conditions_hold(statement.get("Condition") or {}, context):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed

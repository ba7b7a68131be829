"""The guard: every AWS call a handler makes, authorised against its function's role policy before it reaches moto."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.iam.access_control import IAMPolicy, PermissionResult

from mlops.local.iam.operations import DENIAL, Target, targets

_ORIGINAL_CALL = BaseClient._make_api_call
FUNCTION_VARIABLE = "AWS_LAMBDA_FUNCTION_NAME"


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

    def statements_of(self, function: str) -> list[dict[str, Any]] | None:
        """The statements of ``function``'s role, None for a function the guard knows no policy of."""
        policy = self.policies.get(function)
        return None if policy is None else policy.statements

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
            code, status = DENIAL.get(prefix, ("AccessDeniedException", 400))
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

"""Deploying model versions behind a model's infer function.

Each model version runs as its own published version of the model's infer function, pinned through its
environment (``MODEL_VERSION``); the ``live`` alias routes between at most two of them (champion 1-w,
challenger w). The alias belongs to the platform, not to CloudFormation: register and rollout move it at
run time, and a rollback is one alias update.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from mlops.aws.access import API_PRINCIPAL
from mlops.aws.lambda_policy import INVOKE, allows_invoke, statements_of
from mlops.core.errors import TransientError

LIVE_ALIAS = "live"


@dataclass(frozen=True)
class Split:
    """What the live alias does now: lambda versions and their traffic shares."""

    champion: str | None
    challenger: str | None
    challenger_weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"champion_lambda_version": self.champion, "challenger_lambda_version": self.challenger,
                "weights": {"champion": round(1 - self.challenger_weight, 6) if self.champion else 0.0,
                            "challenger": round(self.challenger_weight, 6)}}


class ServingDeployer:
    def __init__(self, lambda_client: Any, api_source_arn: str | None = None) -> None:
        self.lam = lambda_client
        # the API's execute-api ARN (for any method and path of its stage): API Gateway's right to invoke the alias
        # is checked, and repaired, against it
        self.api_source_arn = api_source_arn

    def ensure_api_permission(self, function: str) -> bool:
        """Let API Gateway invoke the function's `live` alias if its resource policy does not already (the stack
        adds that permission at deploy time; a lost one is repaired here, by register and `models republish`).
        True when a permission was added."""
        if not self.api_source_arn:
            return False
        try:
            policy = self.lam.get_policy(FunctionName=function, Qualifier=LIVE_ALIAS)
        except self.lam.exceptions.ResourceNotFoundException:
            policy = None  # no policy on the alias yet
        alias_arn = self.lam.get_alias(FunctionName=function, Name=LIVE_ALIAS)["AliasArn"]
        # a concrete invocation the API's pattern (…/<stage>/*/*) stands for
        example = self.api_source_arn.replace("*", "x")
        if allows_invoke(statements_of(policy), service=API_PRINCIPAL, function_arn=alias_arn, source_arn=example):
            return False
        # one statement id per API: a rebuilt API (new id) gets its own statement instead of a conflict
        statement_id = f"apigateway-{hashlib.sha256(self.api_source_arn.encode()).hexdigest()[:16]}"
        # added meanwhile by a concurrent or retried deploy: nothing more to do
        with contextlib.suppress(self.lam.exceptions.ResourceConflictException):
            self.lam.add_permission(FunctionName=function, Qualifier=LIVE_ALIAS, StatementId=statement_id,
                                    Action=INVOKE, Principal=API_PRINCIPAL, SourceArn=self.api_source_arn)
        return True

    def _wait_updated(self, function: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.lam.get_function_configuration(FunctionName=function).get("LastUpdateStatus", "Successful")
            if status == "Successful":
                return
            if status == "Failed":
                raise RuntimeError(f"updating {function} failed; see its LastUpdateStatusReason")
            if time.monotonic() > deadline:
                raise TransientError(f"{function} is still updating after {timeout:.0f}s")
            time.sleep(1)

    def publish(self, function: str, model_version: int) -> str:
        """A new function version whose environment pins ``model_version``; returns its version number."""
        self._wait_updated(function)
        env = self.lam.get_function_configuration(FunctionName=function).get("Environment", {}).get("Variables", {})
        self.lam.update_function_configuration(
            FunctionName=function, Environment={"Variables": {**env, "MODEL_VERSION": str(model_version)}})
        self._wait_updated(function)
        published = self.lam.publish_version(FunctionName=function, Description=f"model version {model_version}")
        return str(published["Version"])

    def split(self, function: str) -> Split:
        try:
            alias = self.lam.get_alias(FunctionName=function, Name=LIVE_ALIAS)
        except self.lam.exceptions.ResourceNotFoundException:
            return Split(None, None, 0.0)
        if alias["FunctionVersion"] == "$LATEST":
            return Split(None, None, 0.0)  # where the deploy put it: no model version deployed yet
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        if weights:
            [(challenger, weight)] = weights.items()
            return Split(alias["FunctionVersion"], challenger, float(weight))
        return Split(alias["FunctionVersion"], None, 0.0)

    @contextlib.contextmanager
    def provisional(self, function: str) -> Iterator[None]:
        """Alias moves made in the block are undone if the block then fails (the record of the move refused,
        say): traffic never goes where the registry does not say it goes."""
        before = self.split(function)
        try:
            yield
        except Exception:
            if before.champion is not None:
                self.route(function, before.champion, before.challenger, before.challenger_weight)
            raise

    def route(self, function: str, champion: str, challenger: str | None = None, weight: float = 0.0) -> Split:
        """Point ``live`` at the champion, with ``weight`` of the traffic to the challenger if given."""
        routing = {"AdditionalVersionWeights": {challenger: weight}} if challenger and weight > 0 else {
            "AdditionalVersionWeights": {}}
        try:
            self.lam.update_alias(FunctionName=function, Name=LIVE_ALIAS, FunctionVersion=champion,
                                  RoutingConfig=routing)
        except self.lam.exceptions.ResourceNotFoundException:
            try:
                self.lam.create_alias(FunctionName=function, Name=LIVE_ALIAS, FunctionVersion=champion,
                                      RoutingConfig=routing)
            except ClientError as exc:
                # created meanwhile: by our own attempt whose answer was lost, or a replayed step (AWS says
                # ResourceConflictException, moto ConflictException)
                if exc.response["Error"]["Code"] not in ("ResourceConflictException", "ConflictException"):
                    raise
                self.lam.update_alias(FunctionName=function, Name=LIVE_ALIAS, FunctionVersion=champion,
                                      RoutingConfig=routing)
        # checked on every move: a register that died between the alias and its permission is repaired by the next
        self.ensure_api_permission(function)
        return self.split(function)

"""Each function's role policy, for the guard: from the platform's declaration (mlops.aws.access, what `mlops local up`
evaluates) or from a synthesized CloudFormation template (what the tests evaluate), on the local cloud's resources."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlops.aws import access, platform
from mlops.core.config import ProjectConfig


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

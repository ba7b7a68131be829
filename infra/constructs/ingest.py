"""Ingest at scale: the ingest state machine (``infra/ingest.asl.json``, a Distributed Map over a large file's byte
ranges, then one merge: mlops.data.ingest_map), its log group and its role: invoking the ingest function (which runs
the parts and the merge), reading the ranges' list (ItemReader) and running its own child executions.

The ingest function starts its executions (mlops.aws.access ACCESS["ingest"], granted by the stack) and is told the
state machine's ARN built from its physical name, not from the state machine itself: the state machine invokes the
function, so the function naming the state machine would make a dependency cycle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import ArnFormat, Fn, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.function import PlatformFunction
from infra.constructs.nag import acknowledge
from infra.constructs.pipeline import stack_instance, vended_log_group_name
from infra.constructs.storage import Storage
from mlops.aws import platform
from mlops.core import layout
from mlops.data.ingest_map import ITEMS

# The state machine's own S3 access in the data bucket: its ItemReader reads a run's list of ranges
# (ingest-runs/<model>/<run>/items.json, mlops.data.ingest_map)
ITEMS_PATTERN = f"{layout.INGEST_RUNS}*/{ITEMS}"


def state_machine_name(stack: Stack, project: str) -> str:
    """Fixed at synth (the function is told it), and unique to this creation of the stack: prod retains its state
    machines, and creating the stage again must not collide with the one a deleted stack left."""
    return f"{platform.resource_names(project)[platform.INGEST_STATE_MACHINE]}-{stack_instance(stack)}"


def state_machine_arn(stack: Stack, project: str) -> str:
    """The ingest state machine's ARN from its physical name: what the ingest function is told (no cycle)."""
    return stack.format_arn(service="states", resource="stateMachine",
                            resource_name=state_machine_name(stack, project), arn_format=ArnFormat.COLON_RESOURCE_NAME)


class IngestMap(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, project: str, storage: Storage,
                 functions: Mapping[str, PlatformFunction], log_retention: logs.RetentionDays,
                 removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy,
            log_group_name=vended_log_group_name(self, platform.INGEST_STATE_MACHINE))
        invoked = sorted(set(platform.INGEST_SUBSTITUTIONS.values()))
        self.state_machine = machine = sfn.StateMachine(
            self, "StateMachine",
            state_machine_name=state_machine_name(stack, project),
            definition_body=sfn.DefinitionBody.from_file(str(platform.INGEST_ASL)),
            definition_substitutions={placeholder: functions[name].function.function_arn
                                      for placeholder, name in platform.INGEST_SUBSTITUTIONS.items()},
            state_machine_type=sfn.StateMachineType.STANDARD,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            removal_policy=removal_policy,
        )
        machine.add_to_role_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"], resources=[functions[name].function.function_arn for name in invoked]))
        data = storage.buckets["data"]
        machine.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                       resources=[data.arn_for_objects(ITEMS_PATTERN)]))
        machine.add_to_role_policy(iam.PolicyStatement(actions=["kms:Decrypt"], resources=[storage.key.key_arn]))
        data_id = stack.resolve(data.node.default_child.logical_id)  # type: ignore[union-attr]
        acknowledge(machine, f"AwsSolutions-IAM5[Resource::<{data_id}.Arn>/{ITEMS_PATTERN}]",
                    "the Distributed Map reads the list of a large file's byte ranges, whose prefix (model, run) is "
                    f"only known at run time, under {layout.INGEST_RUNS} in the data bucket")
        acknowledge(machine, "AwsSolutions-IAM5[Resource::*]",
                    "CloudWatch Logs delivery and X-Ray have no resource-level permissions; aws-cdk-lib adds them "
                    "for logging and tracing")
        self._distributed_map(stack)

    def _distributed_map(self, stack: Stack) -> None:
        """What a Distributed Map needs of its own state machine's role, as the batch construct grants it: start,
        describe and stop its child executions, and redrive them (a separate policy, so no dependency cycle)."""
        policy = iam.Policy(self, "DistributedMapPolicy")
        self.state_machine.role.attach_inline_policy(policy)
        self.state_machine.grant_start_execution(policy)
        self.state_machine.grant_execution(policy, "states:DescribeExecution", "states:StopExecution")
        name = Fn.select(6, Fn.split(":", self.state_machine.state_machine_arn))
        children = f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{name}/*:*"
        policy.add_statements(iam.PolicyStatement(actions=["states:RedriveExecution"], resources=[children]))
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{self._executions_nag(stack)}]",
                    "the Distributed Map starts one child execution per byte range, named by Step Functions at run "
                    "time")
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{self._executions_nag(stack, children=True)}]",
                    "a redriven run redrives its map run's failed child executions, named by Step Functions at run "
                    "time under the map run's label")

    def _executions_nag(self, stack: Stack, *, children: bool = False) -> str:
        name = json.dumps(stack.resolve(Fn.select(6, Fn.split(":", self.state_machine.state_machine_arn))),
                          separators=(",", ":"))
        executions = f"{name}/*" if children else name
        return f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{executions}:*"

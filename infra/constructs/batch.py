"""Batch inference: the batch state machine (``infra/batch.asl.json``, a Distributed Map over the objects under
an input prefix, one child execution per object), its log group and grants, the infer functions' right to start
and watch its executions, and the API's status route of a run.

The batch function itself is a platform function like the others (``mlops.platform.FUNCTIONS``, created by the
pipeline construct, its data access in ``infra/stack.py`` ACCESS); this construct adds what batch needs beyond.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aws_cdk import Fn, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.function import PlatformFunction
from infra.constructs.nag import acknowledge
from infra.constructs.pipeline import _nag_arn
from infra.constructs.serving import live_invocation_uri
from infra.constructs.storage import Storage
from mlops import platform, settings

# Where runs read and write in the data bucket: never incoming/ (a write there starts ingest, then training) nor the
# curated data, contracts and quarantine. infra/stack.py ACCESS grants the batch function the same prefix.
DATA_PREFIX = "batch/"


class Batch(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        functions: Mapping[str, PlatformFunction],
        infer_functions: Mapping[str, PlatformFunction],
        api: apigw.RestApi,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        extra_buckets: Sequence[str] = (),
    ) -> None:
        """`functions`: the platform's functions (the pipeline construct's). `extra_buckets`: names of buckets
        outside the stack that runs may read inputs from and write outputs to (whole buckets, SSE-S3 or unencrypted:
        a bucket's own KMS key is granted by its owner)."""
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy,
            # vended logs: no CloudWatch Logs resource policy per log group (see the pipeline construct)
            log_group_name=f"/aws/vendedlogs/states/{stack.stack_name}-{platform.BATCH_STATE_MACHINE}")
        function = functions["batch"]
        substitutions = {placeholder: functions[name].function.function_arn
                         for placeholder, name in platform.BATCH_SUBSTITUTIONS.items()}
        self.state_machine = sfn.StateMachine(
            self, "StateMachine",
            definition_body=sfn.DefinitionBody.from_file(str(platform.BATCH_ASL)),
            definition_substitutions=substitutions,
            state_machine_type=sfn.StateMachineType.STANDARD,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            removal_policy=removal_policy,
        )
        machine = self.state_machine
        machine.add_to_role_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"],
            resources=[functions[name].function.function_arn for name in set(platform.BATCH_SUBSTITUTIONS.values())]))
        self._distributed_map(stack)
        # the ItemReader reads the object list that the plan step wrote under the run's output prefix, and the
        # ResultWriter writes the child executions' outputs beside it
        data = storage.buckets["data"]
        machine.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject"],
            resources=[data.arn_for_objects(f"{DATA_PREFIX}*"), *(_objects(stack, b) for b in extra_buckets)]))
        machine.add_to_role_policy(iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"],
                                                       resources=[storage.key.key_arn]))
        data_id = stack.resolve(data.node.default_child.logical_id)  # type: ignore[union-attr]
        acknowledge(machine, f"AwsSolutions-IAM5[Resource::<{data_id}.Arn>/{DATA_PREFIX}*]",
                    "the Distributed Map reads the object list of a run and writes its results, whose keys (output "
                    f"prefix, batch id) are only known at run time, under {DATA_PREFIX} in the data bucket")
        acknowledge(machine, "AwsSolutions-IAM5[Resource::*]",
                    "CloudWatch Logs delivery and X-Ray have no resource-level permissions; aws-cdk-lib adds them "
                    "for logging and tracing")
        if extra_buckets:
            self._grant_buckets(function, extra_buckets)
            for bucket in extra_buckets:
                acknowledge(machine, f"AwsSolutions-IAM5[Resource::{_nag_arn(self, _objects(stack, bucket))}]",
                            f"runs read their object list and write their results in {bucket}, a bucket the deployer "
                            "names")

        for model, infer in infer_functions.items():
            # POST /models/<name>/batch starts a run, GET /models/<name>/batch/<id> describes it: no other action,
            # on no other state machine
            machine.grant_start_execution(infer.role)
            machine.grant_execution(infer.role, "states:DescribeExecution")
            infer.function.add_environment(settings.BATCH_STATE_MACHINE_ARN, machine.state_machine_arn)
            acknowledge(infer.role, f"AwsSolutions-IAM5[Resource::{self._executions_nag()}]",
                        f"infer ({model}) reads the status of batch runs, executions named by a batch id only known "
                        "at run time, of the batch state machine only")
            resource = api.root.resource_for_path(f"/models/{model}/batch")  # made by the serving construct
            resource.add_resource("{batch_id}").add_method("GET", apigw.Integration(
                type=apigw.IntegrationType.AWS_PROXY, integration_http_method="POST",
                uri=live_invocation_uri(infer.function.function_arn)))

    def _distributed_map(self, stack: Stack) -> None:
        """What a Distributed Map needs of its own state machine's role: start, watch and stop the child executions.
        A separate policy (as aws-cdk-lib's DistributedMap does): the state machine does not wait for it, so naming
        the state machine's own ARN makes no dependency cycle."""
        policy = iam.Policy(self, "DistributedMapPolicy")
        self.state_machine.role.attach_inline_policy(policy)
        self.state_machine.grant_start_execution(policy)
        self.state_machine.grant_execution(policy, "states:DescribeExecution", "states:StopExecution",
                                           "states:RedriveExecution")
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{self._executions_nag()}]",
                    "the Distributed Map starts one child execution per object, named by Step Functions at run time")

    def _executions_nag(self) -> str:
        """The ARN of this state machine's executions (what grant_execution names) as cdk-nag names it in a finding."""
        stack = Stack.of(self)
        name = json.dumps(stack.resolve(Fn.select(6, Fn.split(":", self.state_machine.state_machine_arn))),
                          separators=(",", ":"))
        return f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{name}:*"

    def _grant_buckets(self, function: PlatformFunction, buckets: Sequence[str]) -> None:
        stack = Stack.of(self)
        function.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[f"arn:{stack.partition}:s3:::{b}" for b in buckets]))
        function.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject"], resources=[_objects(stack, b) for b in buckets]))
        for bucket in buckets:
            acknowledge(function.role, f"AwsSolutions-IAM5[Resource::{_nag_arn(self, _objects(stack, bucket))}]",
                        f"batch runs read inputs from and write predictions to {bucket}, a bucket the deployer "
                        "names for batch runs (MlopsStack batch_buckets)")


def _objects(stack: Stack, bucket: str) -> str:
    """Every object of a bucket outside the stack."""
    return f"arn:{stack.partition}:s3:::{bucket}/*"

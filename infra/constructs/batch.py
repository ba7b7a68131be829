"""Batch inference: the batch state machine (``infra/batch.asl.json``, a Distributed Map over the objects under
an input prefix, one child execution per object), its log group and grants, the infer functions' right to start
and watch its executions, the API's status route of a run, the batch function's read-only access to the prefixes
models declare as batch inputs, and the check that batch runs fit the stage's Lambda concurrency.

The batch function itself is a platform function like the others (``mlops.aws.platform.FUNCTIONS``, created by the
pipeline construct, its data access in ``mlops.aws.access`` ACCESS); this construct adds what batch needs beyond. The
infer functions' right to start and describe runs is declared there too (``infer_access``) and granted by the stack.
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
from infra.constructs.pipeline import _nag_arn, vended_log_group_name
from infra.constructs.serving import live_invocation_uri
from infra.constructs.storage import Storage
from mlops.aws import environment, platform
from mlops.aws.access import Access, Resource, batch_access, statements
from mlops.batch.start import MAP_RESULTS, WORK_PREFIX
from mlops.core import layout
from mlops.core.config import ModelConfig

# The state machine's own S3 access, in the data bucket: its ItemReader reads a run's object list and its ResultWriter
# writes the map's results, both among the run's working files (batch-runs/<model>/<batch id>/_batch/,
# mlops.batch.start)
ITEMS_PATTERN = f"{layout.BATCH_RUNS}*/{WORK_PREFIX}items.json"
RESULTS_PATTERN = f"{layout.BATCH_RUNS}*/{WORK_PREFIX}{MAP_RESULTS}*"
# What AWS documents for a ResultWriter ("IAM policies for using Distributed Map state"): it writes in parts
RESULT_WRITER_ACTIONS = ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"]
# Lambda keeps at least this many of an account's concurrent executions unreserved, and refuses a reservation that
# would leave fewer
UNRESERVED_MINIMUM = 100
# What a new account may run at once: AWS documents that new accounts get reduced quotas (raised with use), 10 in
# practice, and `aws lambda get-account-settings` tells (AccountLimit.ConcurrentExecutions); 1,000 is the default after
NEW_ACCOUNT_CONCURRENCY = 10


def check_concurrency(*, quota: int, reserved: Mapping[str, int], batch: Mapping[str, int]) -> None:
    """Refuse, at synthesis, what the account cannot run: reservations (by function) that leave fewer than
    UNRESERVED_MINIMUM of the account's Lambda `quota` unreserved (Lambda would fail the deploy), and a model whose
    batch runs (batch_max_concurrency, by model) may take more than half of what is unreserved: the functions without
    a reservation share it, ingest and the pipeline's steps, and the API itself in an account too small to reserve."""
    total = sum(reserved.values())
    listed = ", ".join(f"{name} {n}" for name, n in sorted(reserved.items())) or "none"
    if total and quota - total < UNRESERVED_MINIMUM:
        raise ValueError(
            f"the stage reserves {total} concurrent Lambda executions ({listed}) in an account whose quota it declares "
            f"as {quota}: Lambda keeps at least {UNRESERVED_MINIMUM} unreserved and would refuse the deploy. Lower the "
            "reservations (infra/app.py STAGES), or raise the account's quota (Service Quotas: Lambda, Concurrent "
            "executions) and the stage's lambda_concurrency_quota")
    unreserved = quota - total
    limit = unreserved // 2
    if greedy := sorted(f"{model} ({n})" for model, n in batch.items() if n > limit):
        raise ValueError(
            f"batch_max_concurrency of {', '.join(greedy)} in mlops.toml is more than {limit}: the account's quota as "
            f"the stage declares it ({quota}, lambda_concurrency_quota in infra/app.py STAGES) less its reservations "
            f"({listed}) leaves {unreserved} unreserved, and a batch run may take at most half of that, so that the "
            "functions without a reservation keep the rest. Lower batch_max_concurrency, or raise the account's quota "
            "and the stage's lambda_concurrency_quota")


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
        models: Sequence[ModelConfig],
        lambda_concurrency_quota: int,
        reserved_concurrency: Mapping[str, int],
    ) -> None:
        """`functions`: the platform's functions (the pipeline construct's). `models`: the declared models, whose
        batch inputs the batch function may read and whose batch_max_concurrency is checked against the Lambda
        concurrency quota of the account the stage deploys to (`lambda_concurrency_quota`) and every reservation of
        the stack, by function (`reserved_concurrency`)."""
        super().__init__(scope, construct_id)
        check_concurrency(quota=lambda_concurrency_quota, reserved=reserved_concurrency,
                          batch={model.name: model.batch_max_concurrency for model in models})
        stack = Stack.of(self)
        log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy,
            # vended logs: no CloudWatch Logs resource policy per log group (see the pipeline construct)
            log_group_name=vended_log_group_name(self, platform.BATCH_STATE_MACHINE))
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
        data = storage.buckets["data"]
        # the ItemReader reads a JSON object (it lists nothing); the ResultWriter writes beside it
        machine.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                       resources=[data.arn_for_objects(ITEMS_PATTERN)]))
        machine.add_to_role_policy(iam.PolicyStatement(actions=RESULT_WRITER_ACTIONS,
                                                       resources=[data.arn_for_objects(RESULTS_PATTERN)]))
        machine.add_to_role_policy(iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"],
                                                       resources=[storage.key.key_arn]))
        data_id = stack.resolve(data.node.default_child.logical_id)  # type: ignore[union-attr]
        for pattern, what in ((ITEMS_PATTERN, "reads the object list"), (RESULTS_PATTERN, "writes the results")):
            acknowledge(machine, f"AwsSolutions-IAM5[Resource::<{data_id}.Arn>/{pattern}]",
                        f"the Distributed Map {what} of a run, among its working files, whose prefix (model, batch id) "
                        f"is only known at run time, under {layout.BATCH_RUNS} in the data bucket")
        acknowledge(machine, "AwsSolutions-IAM5[Resource::*]",
                    "CloudWatch Logs delivery and X-Ray have no resource-level permissions; aws-cdk-lib adds them "
                    "for logging and tracing")
        self._grant_outside(functions["batch"], models)

        for model, infer in infer_functions.items():
            # POST /models/<name>/batch starts a run, GET /models/<name>/batch/<id> describes it (the stack grants both)
            infer.function.add_environment(environment.BATCH_STATE_MACHINE_ARN, machine.state_machine_arn)
            # where runs read (batch/<model>/) and write (batch-runs/<model>/): the route checks and names them
            infer.function.add_environment(environment.DATA_BUCKET, data.bucket_name)
            resource = api.root.resource_for_path(f"/models/{model}/batch")  # made by the serving construct
            resource.add_resource("{batch_id}").add_method("GET", apigw.Integration(
                type=apigw.IntegrationType.AWS_PROXY, integration_http_method="POST",
                uri=live_invocation_uri(infer.function.function_arn)))

    def _distributed_map(self, stack: Stack) -> None:
        """What a Distributed Map needs of its own state machine's role (AWS: "IAM policies for using Distributed Map
        state"): start child executions of its state machine, describe and stop them, and redrive them when its
        execution is redriven. A child's ARN is execution:<name>/<map run label>:<child name>, which the executions'
        execution:<name>:* does not match. A separate policy (as aws-cdk-lib's DistributedMap does): the state machine
        does not wait for it, so naming the state machine's own ARN makes no dependency cycle."""
        policy = iam.Policy(self, "DistributedMapPolicy")
        self.state_machine.role.attach_inline_policy(policy)
        self.state_machine.grant_start_execution(policy)
        self.state_machine.grant_execution(policy, "states:DescribeExecution", "states:StopExecution")
        policy.add_statements(iam.PolicyStatement(actions=["states:RedriveExecution"],
                                                  resources=[self.child_executions_arn(self.state_machine)]))
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{self.executions_nag()}]",
                    "the Distributed Map starts one child execution per object, named by Step Functions at run time")
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{self.executions_nag(children=True)}]",
                    "a redriven run redrives its map run's failed child executions, named by Step Functions at run "
                    "time under the map run's label")

    def _grant_outside(self, function: PlatformFunction, models: Sequence[ModelConfig]) -> None:
        """The prefixes outside the platform that models declare as their batch inputs, read only: mlops.aws.access
        declares them with the batch function's other access (batch_access), which the stack grants from ACCESS."""
        stack = Stack.of(self)
        outside = Access(reads_outside=batch_access(models).reads_outside)
        for statement in statements(outside):
            function.role.add_to_principal_policy(iam.PolicyStatement(
                actions=list(statement.actions), resources=[_outside_arn(stack, r) for r in statement.resources],
                conditions={op: dict(values) for op, values in statement.conditions.items()} or None))
            for resource in statement.resources:
                if resource.kind == "outside_objects":
                    acknowledge(function.role,
                                f"AwsSolutions-IAM5[Resource::{_nag_arn(self, _outside_arn(stack, resource))}]",
                                f"batch runs read the objects under s3://{resource.name}/"
                                f"{resource.pattern.removesuffix('*')}, a prefix mlops.toml declares as a model's "
                                "batch input (batch_inputs); whose keys are only known at run time")

    @staticmethod
    def executions_arn(machine: sfn.StateMachine) -> str:
        """Every execution of a state machine (what grant_execution names)."""
        stack = Stack.of(machine)
        name = Fn.select(6, Fn.split(":", machine.state_machine_arn))
        return f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{name}:*"

    @staticmethod
    def child_executions_arn(machine: sfn.StateMachine) -> str:
        """Every child execution of a Distributed Map of a state machine, whatever its map run's label."""
        stack = Stack.of(machine)
        name = Fn.select(6, Fn.split(":", machine.state_machine_arn))
        return f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{name}/*:*"

    def executions_nag(self, *, children: bool = False) -> str:
        """The ARN of this state machine's executions (or of its Distributed Map's children) as cdk-nag names it in a
        finding."""
        stack = Stack.of(self)
        name = json.dumps(stack.resolve(Fn.select(6, Fn.split(":", self.state_machine.state_machine_arn))),
                          separators=(",", ":"))
        executions = f"{name}/*" if children else name
        return f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{executions}:*"


def _outside_arn(stack: Stack, resource: Resource) -> str:
    """A bucket outside the stack, or objects of it, named by the bucket's own name (mlops.aws.access reads_outside)."""
    if resource.kind == "outside_bucket":
        return f"arn:{stack.partition}:s3:::{resource.name}"
    if resource.kind == "outside_objects":
        return f"arn:{stack.partition}:s3:::{resource.name}/{resource.pattern}"
    raise ValueError(f"not a resource outside the platform: {resource}")

"""The platform's functions and state machines as ``mlops.platform`` declares them, and the S3 notifications
that start ingest and train_trigger. Each state machine is built from the very ASL file the local cloud runs,
its ``${...}`` placeholders filled by CloudFormation (DefinitionSubstitutions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.function import Packaging, PlatformFunction
from infra.constructs.nag import acknowledge
from infra.constructs.storage import Storage
from mlops import platform, settings


@dataclass(frozen=True)
class StateMachineSpec:
    name: str  # construct id, as in platform.resource_names
    asl: Path
    functions: Mapping[str, str]  # ${placeholder} -> platform function name
    arn_variable: str  # the mlops.settings variable that carries its ARN to the functions that start it


STATE_MACHINES = (
    StateMachineSpec(platform.STATE_MACHINE, platform.TRAINING_ASL, platform.ASL_SUBSTITUTIONS,
                     settings.TRAINING_STATE_MACHINE_ARN),
    StateMachineSpec(platform.ROLLOUT_STATE_MACHINE, platform.ROLLOUT_ASL, platform.ROLLOUT_SUBSTITUTIONS,
                     settings.ROLLOUT_STATE_MACHINE_ARN),
)


def uses_topic(spec: StateMachineSpec) -> bool:
    return f"${{{platform.ASL_TOPIC_SUBSTITUTION}}}" in spec.asl.read_text()


class Pipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        environment: Mapping[str, str],
        project: str,
        config_file: Path,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        reserved_concurrency: Mapping[str, int],
    ) -> None:
        """`environment` holds a value for each resource variable (mlops.settings) this construct does not
        create itself; the state machines' ARNs are added here once the state machines exist."""
        super().__init__(scope, construct_id)
        declared = {spec.name for spec in platform.FUNCTIONS}
        if unknown := set(reserved_concurrency) - declared:
            raise ValueError(f"reserved concurrency for functions the platform does not declare: {sorted(unknown)}")
        packaging = Packaging(self, "Packaging", config_file=config_file)
        asynchronous = {trigger.function for trigger in platform.S3_TRIGGERS}
        deferred = {machine.arn_variable for machine in STATE_MACHINES}

        # separate scopes: the platform names a function and a state machine `rollout` alike
        functions, machines = Construct(self, "Functions"), Construct(self, "StateMachines")
        self.functions: dict[str, PlatformFunction] = {}
        for spec in platform.FUNCTIONS:
            if missing := [v for v in spec.env if v not in environment and v not in deferred]:
                raise KeyError(f"{spec.name} needs {missing} (mlops.platform) but the CDK app provides no value")
            self.functions[spec.name] = PlatformFunction(
                functions, spec,
                code=packaging.image(spec) if spec.image else packaging.zip(spec),
                layers=[] if spec.image else [packaging.powertools_layer],
                environment={
                    **{v: environment[v] for v in spec.env if v not in deferred},
                    "POWERTOOLS_SERVICE_NAME": spec.name,
                    "POWERTOOLS_METRICS_NAMESPACE": project,
                },
                asynchronous=spec.name in asynchronous,
                key=storage.key,
                log_retention=log_retention,
                removal_policy=removal_policy,
                reserved_concurrency=reserved_concurrency.get(spec.name),
            )

        self.state_machines: dict[str, sfn.StateMachine] = {}
        for machine in STATE_MACHINES:
            self.state_machines[machine.name] = self._state_machine(machines, machine, storage, log_retention,
                                                                    removal_policy)
            for spec in platform.FUNCTIONS:
                if machine.arn_variable in spec.env:
                    self.functions[spec.name].function.add_environment(
                        machine.arn_variable, self.state_machines[machine.name].state_machine_arn)

        for trigger in platform.S3_TRIGGERS:
            storage.buckets[trigger.bucket].add_event_notification(
                s3.EventType.OBJECT_CREATED,
                s3n.LambdaDestination(self.functions[trigger.function].function),
                s3.NotificationKeyFilter(prefix=trigger.prefix, suffix=trigger.suffix or None),
            )

    def _state_machine(self, scope: Construct, machine: StateMachineSpec, storage: Storage,
                       log_retention: logs.RetentionDays, removal_policy: RemovalPolicy) -> sfn.StateMachine:
        log_group = logs.LogGroup(
            scope, f"{machine.name}_logs", retention=log_retention, removal_policy=removal_policy,
            # Step Functions delivers vended logs: under this prefix CloudWatch Logs needs no resource policy per
            # log group (that policy has a 5,120-character limit per account and region).
            log_group_name=f"/aws/vendedlogs/states/{Stack.of(self).stack_name}-{machine.name}",
        )
        substitutions = {placeholder: self.functions[function].function.function_arn
                         for placeholder, function in machine.functions.items()}
        if uses_topic(machine):
            substitutions[platform.ASL_TOPIC_SUBSTITUTION] = storage.topic.topic_arn
        state_machine = sfn.StateMachine(
            scope, machine.name,
            definition_body=sfn.DefinitionBody.from_file(str(machine.asl)),
            definition_substitutions=substitutions,
            state_machine_type=sfn.StateMachineType.STANDARD,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            removal_policy=removal_policy,
        )
        # The ASL's Task states name the unqualified function ARNs.
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"],
            resources=[self.functions[name].function.function_arn for name in sorted(set(machine.functions.values()))],
        ))
        if uses_topic(machine):
            state_machine.add_to_role_policy(iam.PolicyStatement(actions=["sns:Publish"],
                                                                 resources=[storage.topic.topic_arn]))
            # what SNS asks of a publisher to a topic encrypted with a customer-managed key
            state_machine.add_to_role_policy(iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"],
                                                                 resources=[storage.key.key_arn]))
        acknowledge(state_machine, "AwsSolutions-IAM5[Resource::*]",
                    "CloudWatch Logs delivery (logs:CreateLogDelivery, ...) and X-Ray (xray:PutTraceSegments, ...) "
                    "have no resource-level permissions; aws-cdk-lib adds them for logging and tracing")
        return state_machine

"""The platform's functions and state machines as ``mlops.aws.platform`` declares them, the S3 notifications
that start ingest and train_trigger, and the per-model EventBridge schedules (drift_check). Each state machine
is built from the very ASL file the local cloud runs, its ``${...}`` placeholders filled by CloudFormation
(DefinitionSubstitutions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from aws_cdk import ArnFormat, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.function import Packaging, PlatformFunction
from infra.constructs.nag import acknowledge
from infra.constructs.storage import Storage
from mlops.aws import environment, platform


@dataclass(frozen=True)
class StateMachineSpec:
    name: str  # construct id, as in platform.resource_names
    asl: Path
    functions: Mapping[str, str]  # ${placeholder} -> platform function name
    arn_variable: str  # the mlops.aws.environment variable that carries its ARN to the functions that start it


STATE_MACHINES = (
    StateMachineSpec(platform.STATE_MACHINE, platform.TRAINING_ASL, platform.ASL_SUBSTITUTIONS,
                     environment.TRAINING_STATE_MACHINE_ARN),
    StateMachineSpec(platform.ROLLOUT_STATE_MACHINE, platform.ROLLOUT_ASL, platform.ROLLOUT_SUBSTITUTIONS,
                     environment.ROLLOUT_STATE_MACHINE_ARN),
)


# The names of the training pipeline's SageMaker training jobs (TrainOnSageMaker: this prefix and a hash of the
# execution ARN), which scope what the state machine may do with training jobs and where the jobs may log
TRAINING_JOB_PREFIX = "mlops-train-"
# the rule Step Functions keeps in the account to learn when a training job it waits for (.sync) ends
SYNC_RULE = "StepFunctionsGetEventsForSageMakerTrainingJobsRule"


def vended_log_group_name(scope: Construct, name: str) -> str:
    """A state machine's log group: `/aws/vendedlogs/states/<stack>-<name>-<stack instance>`. Step Functions delivers
    vended logs, and under this prefix CloudWatch Logs needs no resource policy per log group (that policy has a
    5,120-character limit per account and region). The last part of the StackId's UUID tells apart the stack's
    successive instances: a stage deleted with its logs retained (prod) can be created again without colliding with
    the log group it left."""
    stack = Stack.of(scope)
    return f"/aws/vendedlogs/states/{stack.stack_name}-{name}-{stack_instance(stack)}"


def stack_instance(stack: Stack) -> str:
    """The last part of the StackId's UUID: unique to this creation of the stack (a token)."""
    return Fn.select(4, Fn.split("-", Fn.select(2, Fn.split("/", stack.stack_id))))


def uses_topic(spec: StateMachineSpec) -> bool:
    return f"${{{platform.ASL_TOPIC_SUBSTITUTION}}}" in spec.asl.read_text()


def uses_training_jobs(spec: StateMachineSpec) -> bool:
    text = spec.asl.read_text()
    return any(f"${{{placeholder}}}" in text for placeholder in platform.ASL_TRAINING_JOB_SUBSTITUTIONS)


class Pipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        environment: Mapping[str, str],
        project: str,
        packaging: Packaging,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        reserved_concurrency: Mapping[str, int],
        schedules: Sequence[platform.ScheduledRule],
    ) -> None:
        """`environment` holds a value for each resource variable (mlops.aws.environment) this construct does not
        create itself; the state machines' ARNs are added here once the state machines exist. `project` is the
        metrics namespace (the project in its stage)."""
        super().__init__(scope, construct_id)
        self.environment = dict(environment)
        declared = {spec.name for spec in platform.FUNCTIONS}
        if unknown := set(reserved_concurrency) - declared:
            raise ValueError(f"reserved concurrency for functions the platform does not declare: {sorted(unknown)}")
        # S3 and EventBridge invoke asynchronously
        asynchronous = {trigger.function for trigger in platform.S3_TRIGGERS} | {s.function for s in schedules}
        deferred = {machine.arn_variable for machine in STATE_MACHINES}

        # separate scopes: the platform names a function and a state machine `rollout` alike
        functions, machines = Construct(self, "Functions"), Construct(self, "StateMachines")
        self.functions: dict[str, PlatformFunction] = {}
        for spec in platform.FUNCTIONS:
            if missing := [v for v in spec.env if v not in environment and v not in deferred]:
                raise KeyError(f"{spec.name} needs {missing} (mlops.aws.platform) but the CDK app provides no value")
            self.functions[spec.name] = PlatformFunction(
                functions, spec,
                code=packaging.image(spec) if spec.image else packaging.zip(spec),
                layers=[] if spec.image else packaging.layers(spec),
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

        self.training_job_role = self._training_job_role()
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

        rules = Construct(self, "Schedules")
        self.schedules: dict[tuple[str, str], events.Rule] = {}
        for schedule in schedules:
            self.schedules[(schedule.function, schedule.model)] = events.Rule(
                rules, f"{schedule.function}-{schedule.model}",
                rule_name=schedule.rule_name,
                description=f"serverless-mlops: {schedule.function} for model {schedule.model}",
                schedule=events.Schedule.expression(schedule.expression),
                targets=[targets.LambdaFunction(
                    self.functions[schedule.function].function,
                    event=events.RuleTargetInput.from_object(schedule.input),
                    # delivery to Lambda only: a run that fails is retried by Lambda and then kept in the function's
                    # failure queue; a missed window is caught up by the next one
                    retry_attempts=2, max_event_age=Duration.hours(1),
                )],
            )

    def _state_machine(self, scope: Construct, machine: StateMachineSpec, storage: Storage,
                       log_retention: logs.RetentionDays, removal_policy: RemovalPolicy) -> sfn.StateMachine:
        log_group = logs.LogGroup(
            scope, f"{machine.name}_logs", retention=log_retention, removal_policy=removal_policy,
            log_group_name=vended_log_group_name(self, machine.name),
        )
        substitutions = {placeholder: self.functions[function].function.function_arn
                         for placeholder, function in machine.functions.items()}
        if uses_topic(machine):
            substitutions[platform.ASL_TOPIC_SUBSTITUTION] = storage.topic.topic_arn
        if uses_training_jobs(machine):
            substitutions.update(self.training_job_substitutions(storage))
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
        if uses_training_jobs(machine):
            self._grant_training_jobs(state_machine, storage)
        acknowledge(state_machine, "AwsSolutions-IAM5[Resource::*]",
                    "CloudWatch Logs delivery (logs:CreateLogDelivery, ...) and X-Ray (xray:PutTraceSegments, ...) "
                    "have no resource-level permissions; aws-cdk-lib adds them for logging and tracing")
        return state_machine

    # -- the training pipeline's SageMaker path -----------------------------------------------------------------
    @property
    def training_image_uri(self) -> str:
        """The train function's image: a training job runs the very image (and so code) the train function does."""
        code = cast(lambda_.CfnFunction, self.functions["train"].function.node.default_child).code
        if not isinstance(code, lambda_.CfnFunction.CodeProperty) or not code.image_uri:
            raise TypeError("train must be an image function (mlops.aws.platform): the training jobs run its image")
        return code.image_uri

    def training_job_substitutions(self, storage: Storage) -> dict[str, str]:
        values = {
            "TrainingImageUri": self.training_image_uri,
            "SageMakerRoleArn": self.training_job_role.role_arn,
            "ModelsBucketName": storage.buckets["models"].bucket_name,
            "DataKeyArn": storage.key.key_arn,
        }
        assert set(values) == set(platform.ASL_TRAINING_JOB_SUBSTITUTIONS)
        return values

    def _training_job_role(self) -> iam.Role:
        """The role SageMaker runs the training jobs with. The stack grants it the train function's data access; here
        what a training job needs besides: pulling the image and writing its logs. Created whether or not a model
        trains on SageMaker: a role no one can pass grants nothing, and the ASL names it in every deployment."""
        stack = Stack.of(self)
        role = iam.Role(self, "TrainingJobRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                        description="serverless-mlops train (SageMaker training jobs)")
        # <account>.dkr.ecr.<region>.<suffix>/<repository>:<tag>
        repository = Fn.select(0, Fn.split(":", Fn.select(1, Fn.split("/", self.training_image_uri))))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            resources=[stack.format_arn(service="ecr", resource="repository", resource_name=repository)]))
        role.add_to_principal_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        # SageMaker's log group for every training job in the account and region: created by the first job, and not
        # by this stack, which would take it from other stacks and stages
        log_group = stack.format_arn(service="logs", resource="log-group", resource_name="/aws/sagemaker/TrainingJobs",
                                     arn_format=ArnFormat.COLON_RESOURCE_NAME)
        role.add_to_principal_policy(iam.PolicyStatement(actions=["logs:CreateLogGroup"], resources=[log_group]))
        streams = f"{log_group}:log-stream:{TRAINING_JOB_PREFIX}*"
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"], resources=[streams]))
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken has no resource-level permission; pulling is limited to the image's "
                    "repository")
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{_nag_arn(self, streams)}]",
                    "a training job's log streams are named after the job, whose name is only known at run time "
                    f"(it starts with {TRAINING_JOB_PREFIX})")
        return role

    def _grant_training_jobs(self, state_machine: sfn.StateMachine, storage: Storage) -> None:
        """TrainOnSageMaker and LoadTrainingJobResult: start, watch and stop this pipeline's training jobs with the
        training job role (and no other role, for no other service), then read the train.json the job wrote."""
        stack = Stack.of(self)
        jobs = stack.format_arn(service="sagemaker", resource="training-job", resource_name=f"{TRAINING_JOB_PREFIX}*")
        state_machine.add_to_role_policy(iam.PolicyStatement(
            # AddTags: the job is created with tags (its model and run). ListTags: in the policy AWS documents for
            # the createTrainingJob.sync integration (on "*" there); it reads the tags of the resource it names,
            # which for this integration is the job it started, one of these
            actions=["sagemaker:AddTags", "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                     "sagemaker:ListTags", "sagemaker:StopTrainingJob"],
            resources=[jobs]))
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["iam:PassRole"], resources=[self.training_job_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}))
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["events:DescribeRule", "events:PutRule", "events:PutTargets"],
            resources=[stack.format_arn(service="events", resource="rule", resource_name=SYNC_RULE)]))
        models = storage.buckets["models"]
        state_machine.add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                             resources=[models.arn_for_objects("candidates/*")]))
        state_machine.add_to_role_policy(iam.PolicyStatement(actions=["kms:Decrypt"],
                                                             resources=[storage.key.key_arn]))
        bucket_id = stack.resolve(cast(s3.CfnBucket, models.node.default_child).logical_id)
        acknowledge(state_machine, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/candidates/*]",
                    "LoadTrainingJobResult reads the train.json of a candidate, whose key (model, run id) is only "
                    "known at run time")
        acknowledge(state_machine, f"AwsSolutions-IAM5[Resource::{_nag_arn(self, jobs)}]",
                    "training job names are derived from the execution at run time; all of them start with "
                    f"{TRAINING_JOB_PREFIX}")


def _nag_arn(scope: Construct, arn: str) -> str:
    """An ARN as cdk-nag names it in a finding: as synthesized, with pseudo parameters left as <AWS::...>."""
    resolved = Stack.of(scope).resolve(arn)
    if isinstance(resolved, str):
        return resolved
    return "".join(part if isinstance(part, str) else f"<{part['Ref']}>" for part in resolved["Fn::Join"][1])

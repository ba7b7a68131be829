"""Serving: one infer function per declared model, the Firehose stream that captures every prediction and
feedback into the captures bucket, and the REST API in front of the models.

Capture takes no network call on the request path (docs/capture.md): an infer or push function writes each record as
a marked JSON line to its log, a subscription filter on its log group (``subscribe_captures``, filtered on
mlops.serving.capture.FILTER_PATTERN) has CloudWatch Logs put the marked lines into the capture stream with a role of
its own, and the stream decompresses them, keeps each log event's message and ends it with a newline: JSON lines
under captures/, as the rollout and drift_check read them.

An infer function's `live` alias belongs to the platform, not to CloudFormation (docs/architecture.md): register and
rollout move its weights. CloudFormation only makes sure it exists, so that the API answers from the first deploy:
for each model, a custom resource creates `live` on `$LATEST` when the function has no such alias yet (on Create
only; an alias that exists is the platform's and is left as it is; on Update and Delete it does nothing, and the
function's deletion removes its aliases), and an `AWS::Lambda::Permission` lets API Gateway, from this API's stage
only, invoke `<function arn>:live`. Until a model version is registered, `$LATEST` answers 503 "no version deployed";
register then moves `live` to published versions, and checks (and repairs) the permission with API_SOURCE_ARN.

The stage logs every request. API Gateway writes those logs with the account's CloudWatch Logs role, a setting of
the account and region (AWS::ApiGateway::Account): by default the stack creates a role and sets it, and retains
both on delete, so that deleting one stage never leaves another stage's logging with a deleted role.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aws_cdk import Aws, RemovalPolicy, Stack, Tags
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.constructs.function import Packaging, PlatformFunction
from infra.constructs.nag import acknowledge
from infra.constructs.storage import Storage
from mlops.aws import environment as variables  # the resource variables' names
from mlops.aws import platform
from mlops.aws.access import CAPTURE_DELIVERY
from mlops.core import layout
from mlops.release.deploy import LIVE_ALIAS
from mlops.serving import capture

# The tag naming the model an infer function serves (next to mlops:function=infer).
MODEL_TAG: Final = "mlops:model"
# An infer function's own resource variable, beside the platform's (mlops.aws.platform.INFER.env); the local cloud sets
# the same one.
MODEL_NAME: Final = variables.MODEL_NAME
# Where Firehose writes in the captures bucket, and how long it buffers: the same as the local cloud's stream
# (mlops.local.cloud.provision). Rollout reads feedback from there, so a short interval keeps the A/B test current.
CAPTURE_BUFFER_MB: Final = 1
CAPTURE_BUFFER_SECONDS: Final = 60
API_STAGE: Final = "v1"
# Stage-wide throttling (every method): a ceiling against runaway clients, not a capacity plan.
THROTTLE_RATE_PER_SECOND: Final = 100
THROTTLE_BURST: Final = 200
# API Gateway checks that POST bodies are JSON objects; the handler validates their fields against the model's
# data contract (it knows the model's features, API Gateway does not).
JSON_OBJECT_SCHEMA = apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT)
# The handler's error shape (mlops.serving.errors.ServingError.body) for a body API Gateway refuses.
BAD_BODY_TEMPLATE = json.dumps({"error": "MalformedRequest", "message": "$context.error.validationErrorString",
                                "field": "body"})
# Routes of functions/infer/handler.py under /models/<model>: (path below it, HTTP method, has a body)
MODEL_ROUTES: Final = (("", "GET", False), ("predict", "POST", True), ("feedback", "POST", True),
                       ("batch", "POST", True))  # and GET batch/{batch_id} (infra/constructs/batch.py)
API_PRINCIPAL: Final = "apigateway.amazonaws.com"
# The custom resource that creates a model's `live` alias at deploy time, if the platform has not yet
LIVE_ALIAS_RESOURCE_TYPE: Final = "Custom::LiveAlias"
# what CreateAlias answers when the alias exists: it is the platform's, and stays as the platform left it
ALIAS_EXISTS: Final = "ResourceConflictException"


@dataclass(frozen=True)
class ApiKeyPlan:
    """API keys on top of AWS_IAM (never instead of it): every request must also carry a key of the usage plan,
    which meters each caller and caps it. A key identifies a client; it does not authorize one."""

    quota_per_day: int
    rate_per_second: float = THROTTLE_RATE_PER_SECOND / 4
    burst: int = THROTTLE_BURST // 4


def live_invocation_uri(function_arn: str) -> str:
    """API Gateway's Lambda-proxy URI for the function's `live` alias (created at run time by register)."""
    return (f"arn:{Aws.PARTITION}:apigateway:{Aws.REGION}:lambda:path/2015-03-31/functions/"
            f"{function_arn}:{LIVE_ALIAS}/invocations")


class Serving(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        project: str,
        packaging: Packaging,
        models: Sequence[str],
        capture_stream_name: str,
        capture_sample_rates: Mapping[str, float] | None = None,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        api_keys: ApiKeyPlan | None = None,
        throttle_rate_per_second: float = THROTTLE_RATE_PER_SECOND,
        throttle_burst: int = THROTTLE_BURST,
        api_gateway_logging_role: bool = True,
        reserved_concurrency: int | None = None,
    ) -> None:
        """`environment` holds a value for each resource variable of mlops.aws.platform.INFER this construct does not
        create itself (the capture stream's name is added here). `throttle_*` is the stage-wide ceiling of every
        method; `api_keys` also requires a usage plan's API key on every method. `api_gateway_logging_role` creates
        the account's API Gateway CloudWatch Logs role and sets it (AWS::ApiGateway::Account); without it, the
        account must have one already (scripts/preflight.py checks it). `reserved_concurrency`: what each infer
        function keeps of the account's Lambda concurrency, so that batch runs and the pipeline cannot take it (it is
        each function's ceiling too); None reserves nothing (a new account cannot reserve any)."""
        super().__init__(scope, construct_id)
        if not models:
            raise ValueError("the project declares no model: there is nothing to serve")
        self.stream = self._capture_stream(storage, capture_stream_name, log_retention, removal_policy)
        self.capture_logs_role, self._capture_logs_policy = self._capture_delivery()
        self.capture_subscriptions: dict[str, logs.CfnSubscriptionFilter] = {}
        environment = {**environment, variables.CAPTURE_STREAM: self.stream.ref}
        if missing := [v for v in platform.INFER.env if v not in environment]:
            raise KeyError(f"infer needs {missing} (mlops.aws.platform) but the CDK app provides no value")

        functions = Construct(self, "Functions")
        self.functions: dict[str, PlatformFunction] = {}
        for model in models:
            function = PlatformFunction(
                functions, platform.INFER,
                construct_id=model,
                function_name=platform.infer_function_name(project, model),
                # onnxruntime + numpy come from the infer layer (layers/builder.py): a zip function cold-starts
                # faster than the container image, and its versions are what the `live` alias splits between
                code=packaging.zip(platform.INFER),
                layers=packaging.layers(platform.INFER),
                environment={
                    **{v: environment[v] for v in platform.INFER.env},
                    **platform.serving_env(model, (capture_sample_rates or {}).get(model, 1.0)),
                    "POWERTOOLS_SERVICE_NAME": platform.INFER.name,
                    "POWERTOOLS_METRICS_NAMESPACE": project,
                },
                asynchronous=False,
                key=storage.key,
                log_retention=log_retention,
                removal_policy=removal_policy,
                reserved_concurrency=reserved_concurrency,
            )
            Tags.of(function).add(MODEL_TAG, model)
            self.functions[model] = function
            self.subscribe_captures(f"infer-{model}", function.log_group)
        self.api_key: apigw.IApiKey | None = None
        self.usage_plan: apigw.UsagePlan | None = None
        self.api = self._api(project, log_retention, removal_policy, api_keys, throttle_rate_per_second,
                             throttle_burst, api_gateway_logging_role)
        self.live_aliases: dict[str, cr.AwsCustomResource] = {}
        self.live_permissions: dict[str, lambda_.CfnPermission] = {}
        # the alias resources' provider (one function for all of them) logs here, kept as long as the stage's logs
        alias_logs = logs.LogGroup(self, "LiveAliasLogs", retention=log_retention, removal_policy=removal_policy)
        for model, function in self.functions.items():
            self._live_alias(model, function, alias_logs)

    @property
    def stream_arn(self) -> str:
        return self.stream.attr_arn

    def subscribe_captures(self, name: str, log_group: logs.ILogGroup) -> logs.CfnSubscriptionFilter:
        """A function's log group delivers its capture lines (and nothing else it logs) to the capture stream."""
        subscription = logs.CfnSubscriptionFilter(
            self, f"CaptureSubscription-{name}",
            log_group_name=log_group.log_group_name,
            filter_name=capture.SUBSCRIPTION_FILTER,
            filter_pattern=capture.FILTER_PATTERN,
            destination_arn=self.stream.attr_arn,
            role_arn=self.capture_logs_role.role_arn,
        )
        # CloudWatch Logs puts a test record into the stream when the filter is created: the role must allow it by then
        subscription.node.add_dependency(self._capture_logs_policy)
        self.capture_subscriptions[name] = subscription
        return subscription

    def _capture_delivery(self) -> tuple[iam.Role, iam.Policy]:
        """The role CloudWatch Logs assumes to put the subscriptions' deliveries into the capture stream: from this
        account's and region's log groups only (the confused deputy), into that one stream only."""
        stack = Stack.of(self)
        role = iam.Role(
            self, "CaptureLogsRole",
            description="serverless-mlops: CloudWatch Logs delivers the functions' capture lines to the capture stream",
            assumed_by=iam.ServicePrincipal("logs.amazonaws.com", conditions={"StringLike": {
                "aws:SourceArn": stack.format_arn(service="logs", resource="*")}}),
        )
        policy = iam.Policy(self, "CaptureLogsPolicy", roles=[role], statements=[
            iam.PolicyStatement(actions=list(CAPTURE_DELIVERY), resources=[self.stream.attr_arn])])
        return role, policy

    @property
    def api_source_arn(self) -> str:
        """What API Gateway presents as the source of its invocations, for any method and path of the stage."""
        return self.api.arn_for_execute_api(stage=API_STAGE)

    def _live_alias(self, model: str, function: PlatformFunction, log_group: logs.ILogGroup) -> None:
        """`live` on `$LATEST` if the function has no `live` yet, and API Gateway's right to invoke it."""
        fn = function.function
        scope = Construct(self, f"{model}-live")
        alias = cr.AwsCustomResource(
            scope, "Alias",
            resource_type=LIVE_ALIAS_RESOURCE_TYPE,
            on_create=cr.AwsSdkCall(
                service="Lambda", action="createAlias",
                parameters={"FunctionName": fn.function_name, "Name": LIVE_ALIAS, "FunctionVersion": "$LATEST",
                            "Description": "serverless-mlops: moved by register and rollout, never by CloudFormation"},
                physical_resource_id=cr.PhysicalResourceId.of(f"{fn.function_name}:{LIVE_ALIAS}"),
                ignore_error_codes_matching=ALIAS_EXISTS,
            ),
            # no on_update, no on_delete: a deploy never resets the traffic split, and deleting the function deletes
            # its aliases
            policy=cr.AwsCustomResourcePolicy.from_statements([
                iam.PolicyStatement(actions=["lambda:CreateAlias"], resources=[fn.function_arn])]),
            install_latest_aws_sdk=False,
            log_group=log_group,
        )
        permission = lambda_.CfnPermission(
            scope, "ApiInvokesLive",
            action="lambda:InvokeFunction",
            function_name=f"{fn.function_arn}:{LIVE_ALIAS}",
            principal=API_PRINCIPAL,
            source_arn=self.api_source_arn,
        )
        # a permission on an alias that does not exist yet fails
        permission.node.add_dependency(alias)
        # the provider is aws-cdk-lib's singleton function, shared by every model's alias resource
        acknowledge(alias.grant_principal,  # type: ignore[arg-type]
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    "aws-cdk-lib's AwsCustomResource provider runs only at deploy time and this managed policy only "
                    "lets it write its logs; what it may call is one lambda:CreateAlias per infer function")
        self.live_aliases[model], self.live_permissions[model] = alias, permission

    def _capture_stream(self, storage: Storage, name: str, log_retention: logs.RetentionDays,
                        removal_policy: RemovalPolicy) -> firehose.CfnDeliveryStream:
        bucket, key = storage.buckets["captures"], storage.key
        log_group = logs.LogGroup(self, "CaptureLogs", retention=log_retention, removal_policy=removal_policy)
        log_stream = logs.LogStream(self, "CaptureDeliveryLogs", log_group=log_group, removal_policy=removal_policy)
        role = iam.Role(
            self, "CaptureRole", description="serverless-mlops: Firehose delivers captures to the captures bucket",
            assumed_by=iam.ServicePrincipal("firehose.amazonaws.com",
                                            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}),
        )
        # what Firehose asks of its role for an S3 destination, limited to the captures/ prefix and to where it puts
        # the records it could not decompress or process
        statements = [
            iam.PolicyStatement(actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                                resources=[bucket.bucket_arn]),
            iam.PolicyStatement(actions=["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
                                resources=[bucket.arn_for_objects(f"{layout.CAPTURES}*"),
                                           bucket.arn_for_objects(f"{capture.FAILURES_PREFIX}*")]),
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[key.key_arn],
                                conditions={"StringEquals": {"kms:ViaService": f"s3.{Aws.REGION}.amazonaws.com"}}),
            iam.PolicyStatement(actions=["logs:PutLogEvents"], resources=[log_group.log_group_arn]),
        ]
        policy = iam.Policy(self, "CapturePolicy", statements=statements, roles=[role])
        bucket_id = Stack.of(self).resolve(bucket.node.default_child.logical_id)  # type: ignore[union-attr]
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{layout.CAPTURES}*]",
                    "Firehose writes objects whose keys it derives from the arrival time under captures/ in the "
                    "captures bucket, and nothing outside it")
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{capture.FAILURES_PREFIX}*]",
                    f"Firehose writes the records it could not decompress or process under {capture.FAILURES_PREFIX} "
                    "(keys it derives from the error type and the arrival time), apart from the captures the readers "
                    "list")
        stream = firehose.CfnDeliveryStream(
            self, "CaptureStream",
            delivery_stream_name=name,
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=firehose.CfnDeliveryStream
            .DeliveryStreamEncryptionConfigurationInputProperty(key_type="CUSTOMER_MANAGED_CMK", key_arn=key.key_arn),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=bucket.bucket_arn,
                role_arn=role.role_arn,
                prefix=layout.CAPTURES,
                error_output_prefix=capture.FAILURES_PREFIX,
                # the subscriptions' deliveries are gzipped CloudWatch Logs documents: decompressed, reduced to their
                # log events' messages, one per line (what DecompressionProcessor, CloudWatchLogProcessor and
                # AppendDelimiterToRecordProcessor render; this stream is CloudFormation's own resource)
                processing_configuration=firehose.CfnDeliveryStream.ProcessingConfigurationProperty(
                    enabled=True,
                    processors=[firehose.CfnDeliveryStream.ProcessorProperty(
                        type=kind,
                        parameters=[firehose.CfnDeliveryStream.ProcessorParameterProperty(
                            parameter_name=name, parameter_value=value) for name, value in parameters.items()] or None,
                    ) for kind, parameters in capture.STREAM_PROCESSORS]),
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    size_in_m_bs=CAPTURE_BUFFER_MB, interval_in_seconds=CAPTURE_BUFFER_SECONDS),
                compression_format="UNCOMPRESSED",
                encryption_configuration=firehose.CfnDeliveryStream.EncryptionConfigurationProperty(
                    kms_encryption_config=firehose.CfnDeliveryStream.KMSEncryptionConfigProperty(
                        awskms_key_arn=key.key_arn)),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True, log_group_name=log_group.log_group_name,
                    log_stream_name=log_stream.log_stream_name),
            ),
        )
        # Firehose checks its role when the stream is created
        stream.node.add_dependency(policy)
        return stream

    def _api(self, project: str, log_retention: logs.RetentionDays, removal_policy: RemovalPolicy,
             api_keys: ApiKeyPlan | None, rate: float, burst: int, logging_role: bool) -> apigw.RestApi:
        access_logs = logs.LogGroup(self, "ApiAccessLogs", retention=log_retention, removal_policy=removal_policy)
        api = apigw.RestApi(
            self, "Api",
            rest_api_name=f"{Stack.of(self).stack_name}-api",
            description=f"serverless-mlops ({project}): predict, feedback and describe each declared model",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # A stage with access logging fails to deploy while the account has no CloudWatch Logs role. The role is
            # account- and region-wide: kept when a stage is deleted (AWS keeps using the role the setting names,
            # and another stage may have set this one), replaced by whichever stage deploys last.
            cloud_watch_role=logging_role,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN if logging_role else None,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM,
                                                       api_key_required=api_keys is not None),
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE,
                tracing_enabled=True,
                # per-method metrics: the per-model alarms and dashboards (infra/constructs/monitoring.py) read
                # /models/<model>/predict's latency and 5XX; CloudWatch bills them only while requests arrive
                metrics_enabled=True,
                throttling_rate_limit=rate,
                throttling_burst_limit=burst,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True, resource_path=True,
                    response_length=True, status=True, user=True),
            ),
        )
        if api_keys is not None:
            self.usage_plan = api.add_usage_plan(
                "UsagePlan", name=f"{Stack.of(self).stack_name}-clients",
                description="each API key's rate and daily quota",
                throttle=apigw.ThrottleSettings(rate_limit=api_keys.rate_per_second, burst_limit=api_keys.burst),
                quota=apigw.QuotaSettings(limit=api_keys.quota_per_day, period=apigw.Period.DAY),
                api_stages=[apigw.UsagePlanPerApiStage(api=api, stage=api.deployment_stage)],
            )
            # the first client's key; API Gateway generates its value (`aws apigateway get-api-key --include-value`)
            self.api_key = api.add_api_key("ApiKey", description="serverless-mlops: the first client's key")
            self.usage_plan.add_api_key(self.api_key)
        validator = api.add_request_validator("BodyValidator", validate_request_body=True,
                                              validate_request_parameters=True)
        body_model = api.add_model("JsonObject", content_type="application/json", schema=JSON_OBJECT_SCHEMA,
                                   description="a JSON object; the handler checks its fields")
        api.add_gateway_response("BadRequestBody", type=apigw.ResponseType.BAD_REQUEST_BODY, status_code="400",
                                 templates={"application/json": BAD_BODY_TEMPLATE})

        # /health answers from API Gateway itself: it needs no model deployed and costs no invocation
        api.root.add_resource("health").add_method(
            "GET",
            apigw.MockIntegration(
                request_templates={"application/json": '{"statusCode": 200}'},
                integration_responses=[apigw.IntegrationResponse(
                    status_code="200", response_templates={"application/json": '{"status": "ok"}'})],
                passthrough_behavior=apigw.PassthroughBehavior.NEVER,
            ),
            method_responses=[apigw.MethodResponse(status_code="200")],
        )
        models = api.root.add_resource("models")
        for model, function in self.functions.items():
            integration = apigw.Integration(type=apigw.IntegrationType.AWS_PROXY, integration_http_method="POST",
                                            uri=live_invocation_uri(function.function.function_arn))
            resource = models.add_resource(model)
            for path, method, has_body in MODEL_ROUTES:
                target = resource.add_resource(path) if path else resource
                target.add_method(method, integration, request_validator=validator if has_body else None,
                                  request_models={"application/json": body_model} if has_body else None)
        acknowledge(api, "AwsSolutions-APIG3",
                    "every method needs a SigV4-signed request (AWS_IAM) and the stage is throttled; a WAF web ACL "
                    "(a fixed monthly cost) is for when the API is opened beyond IAM principals")
        acknowledge(api, "AwsSolutions-APIG6",
                    "each request is recorded in the stage's access log group; execution logs (every request's "
                    "integration details, bodies included) would also record the features clients send")
        if logging_role:
            acknowledge(api, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                             "AmazonAPIGatewayPushToCloudWatchLogs]",
                        "the account's API Gateway logging role uses the managed policy AWS documents for it; API "
                        "Gateway names its log groups itself, so the role cannot be scoped to this stack's")
        acknowledge(api, "AwsSolutions-COG4",
                    "the API authorizes with AWS_IAM (SigV4), not with a Cognito user pool: its callers are AWS "
                    "principals (CI, services, the mlops CLI)")
        return api

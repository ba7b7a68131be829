"""Serving in the synthesized template: one infer function per declared model (found by its physical name), the
capture stream into the captures bucket, and the IAM-authorized REST API that invokes each model's `live` alias:
created on `$LATEST` at deploy time if absent, moved by the platform (register, rollout), never by CloudFormation."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.app import CONFIG_CONTEXT, STAGE_CONTEXT, cdk_json_context
from infra.constructs.serving import (
    ALIAS_EXISTS,
    API_STAGE,
    LIVE_ALIAS_RESOURCE_TYPE,
    MODEL_NAME,
    THROTTLE_BURST,
    THROTTLE_RATE_PER_SECOND,
)
from mlops.aws import environment, platform
from mlops.aws.access import CAPTURE_DELIVERY, DEPLOY, ROUTE
from mlops.aws.environment import API_SOURCE_ARN
from mlops.core import layout
from mlops.core.config import load_config
from mlops.release.deploy import LIVE_ALIAS
from mlops.serving import capture

CONFIG = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
# physical names carry the stage, so that two stages can share an account
NAMES = f"{CONFIG.project}-{cdk_json_context()[STAGE_CONTEXT]}"
MODELS = {model.name for model in CONFIG.models}
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(synthesized: Synthesized, role: Any) -> list[dict[str, Any]]:
    lid = synthesized.logical_id(role)
    return [statement
            for policy in synthesized.of_type("AWS::IAM::Policy").values()
            if {"Ref": lid} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]]


def stream(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    [(lid, resource)] = synthesized.of_type("AWS::KinesisFirehose::DeliveryStream").items()
    return lid, resource["Properties"]


# -- infer functions --------------------------------------------------------------------------------------------
def test_one_infer_function_per_declared_model(synthesized: Synthesized) -> None:
    serving = synthesized.serving()
    assert set(serving) == MODELS
    spec = platform.INFER
    for model, (_lid, resource) in serving.items():
        props = resource["Properties"]
        # the name register and rollout find it by (INFER_FUNCTIONS), with the stage in it
        assert props["FunctionName"] == platform.infer_function_name(NAMES, model)
        variables = props["Environment"]["Variables"]
        # infer also starts batch runs (infra/constructs/batch.py): the one variable push does not share with it
        # infer also starts batch runs, whose inputs and outputs are in the data bucket (mlops.batch.start)
        assert set(variables) == {*spec.env, MODEL_NAME, environment.CAPTURE_SAMPLE_RATE, *POWERTOOLS_ENV,
                                  environment.BATCH_STATE_MACHINE_ARN, environment.DATA_BUCKET}, model
        assert variables[MODEL_NAME] == model
        assert float(variables[environment.CAPTURE_SAMPLE_RATE]) == CONFIG.model(model).capture_sample_rate
        assert variables["POWERTOOLS_SERVICE_NAME"] == spec.name
        assert variables[environment.REGISTRY_TABLE] == {
            "Ref": synthesized.logical_id(synthesized.stack.storage.tables["registry"])}
        assert variables[environment.CAPTURE_STREAM] == {"Ref": stream(synthesized)[0]}
        assert props["Timeout"] == spec.timeout_s
        assert props["MemorySize"] == spec.memory_mb
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogGroup"]["Ref"] in synthesized.of_type("AWS::Logs::LogGroup")
        # a zip function: onnxruntime + numpy come from the infer layer, shared by every model's function
        assert "PackageType" not in props
        assert props["Runtime"] == "python3.12"
        assert props["Handler"] == "handler.handler"
        assert props["Layers"][1:] == [{"Ref": synthesized.logical_id(synthesized.stack.packaging.layer("infer"))}]


def test_the_traffic_split_is_left_to_the_platform(synthesized: Synthesized) -> None:
    # CloudFormation owns no alias nor version: a deploy never moves the split that register and rollout set
    assert not synthesized.of_type("AWS::Lambda::Alias")
    assert not synthesized.of_type("AWS::Lambda::Version")


def live_alias_resources(synthesized: Synthesized) -> dict[str, tuple[str, dict[str, Any]]]:
    """Model -> (logical id, resource) of the custom resource that creates its `live` alias at deploy time."""
    found = {}
    for lid, resource in synthesized.of_type(LIVE_ALIAS_RESOURCE_TYPE).items():
        create = json.loads(synthesized.render(resource["Properties"]["Create"]))
        [model] = [m for m, (_l, r) in synthesized.serving().items()
                   if r["Properties"]["FunctionName"] == create["parameters"]["FunctionName"]]
        found[model] = (lid, resource)
    return found


def test_each_models_live_alias_is_created_on_latest_if_absent_and_never_touched_again(
        synthesized: Synthesized) -> None:
    aliases = live_alias_resources(synthesized)
    assert set(aliases) == MODELS
    for model, (_lid, resource) in aliases.items():
        props = resource["Properties"]
        create = json.loads(synthesized.render(props["Create"]))
        assert (create["service"], create["action"]) == ("Lambda", "createAlias")
        assert create["parameters"]["FunctionName"] == platform.infer_function_name(NAMES, model)
        assert (create["parameters"]["Name"], create["parameters"]["FunctionVersion"]) == (LIVE_ALIAS, "$LATEST")
        # an alias that exists is the platform's: CreateAlias's conflict is not a failure
        assert create["ignoreErrorCodesMatching"] == ALIAS_EXISTS == "ResourceConflictException"
        # nothing on update (the split stays), nothing on delete (deleting the function deletes its aliases)
        assert "Update" not in props
        assert "Delete" not in props
        # its provider may create aliases of the infer functions, and do nothing else
        policies = [r["Properties"] for plid, r in synthesized.of_type("AWS::IAM::Policy").items()
                    if plid in resource["DependsOn"]]
        [statement] = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
        function_lid = synthesized.serving()[model][0]
        assert (statement["Action"], statement["Resource"]) == (
            "lambda:CreateAlias", {"Fn::GetAtt": [function_lid, "Arn"]})


def test_api_gateway_may_invoke_each_live_alias_from_this_apis_stage_only(synthesized: Synthesized) -> None:
    [api] = synthesized.of_type("AWS::ApiGateway::RestApi")
    aliases = live_alias_resources(synthesized)
    infer = {lid: model for model, (lid, _r) in synthesized.serving().items()}
    found = {}
    for lid, permission in synthesized.of_type("AWS::Lambda::Permission").items():
        props = permission["Properties"]
        target = synthesized.render(props["FunctionName"])
        if not any(function in target for function in infer):
            continue
        [model] = [m for function, m in infer.items() if target == f"{function}.Arn:{LIVE_ALIAS}"]
        assert (props["Action"], props["Principal"]) == ("lambda:InvokeFunction", "apigateway.amazonaws.com")
        assert synthesized.render(props["SourceArn"]) == (
            f"arn:aws:execute-api:us-east-1:123456789012:ref:{api}/{API_STAGE}/*/*")
        # created once the alias exists
        assert aliases[model][0] in permission["DependsOn"]
        found[model] = lid
    assert set(found) == MODELS


# -- capture stream ---------------------------------------------------------------------------------------------
def test_capture_stream_delivers_into_the_captures_bucket_with_kms(synthesized: Synthesized) -> None:
    storage = synthesized.stack.storage
    key = {"Fn::GetAtt": [synthesized.logical_id(storage.key), "Arn"]}
    _lid, props = stream(synthesized)
    assert props["DeliveryStreamName"] == platform.resource_names(NAMES)[platform.CAPTURE_STREAM]
    assert props["DeliveryStreamType"] == "DirectPut"
    assert props["DeliveryStreamEncryptionConfigurationInput"] == {"KeyType": "CUSTOMER_MANAGED_CMK", "KeyARN": key}
    destination = props["ExtendedS3DestinationConfiguration"]
    assert destination["BucketARN"] == {"Fn::GetAtt": [synthesized.logical_id(storage.buckets["captures"]), "Arn"]}
    assert destination["Prefix"] == layout.CAPTURES
    assert destination["EncryptionConfiguration"] == {"KMSEncryptionConfig": {"AWSKMSKeyARN": key}}
    assert destination["CloudWatchLoggingOptions"]["Enabled"] is True
    # its own role, which writes under captures/ and, for what it cannot process, under capture-failures/ only
    role = destination["RoleARN"]["Fn::GetAtt"][0]
    assert synthesized.resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "firehose.amazonaws.com"}
    written = [synthesized.render(resource)
               for policy in synthesized.of_type("AWS::IAM::Policy").values()
               if {"Ref": role} in policy["Properties"]["Roles"]
               for statement in policy["Properties"]["PolicyDocument"]["Statement"]
               if "s3:PutObject" in as_list(statement["Action"])
               for resource in as_list(statement["Resource"])]
    bucket = synthesized.logical_id(storage.buckets["captures"])
    assert sorted(written) == [f"{bucket}.Arn/{capture.FAILURES_PREFIX}*", f"{bucket}.Arn/{layout.CAPTURES}*"]


def test_the_capture_stream_turns_log_deliveries_into_json_lines_under_captures(synthesized: Synthesized) -> None:
    """What CloudWatch Logs delivers is gzipped documents of log events: the stream decompresses them, keeps each
    event's message and ends it with a newline, so the objects under captures/ stay the JSON lines rollout and
    drift_check read; what it cannot process goes under capture-failures/, which they never list."""
    destination = stream(synthesized)[1]["ExtendedS3DestinationConfiguration"]
    assert destination["ProcessingConfiguration"] == {"Enabled": True, "Processors": [
        {"Type": "Decompression", "Parameters": [{"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]},
        {"Type": "CloudWatchLogProcessing",
         "Parameters": [{"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}]},
        {"Type": "AppendDelimiterToRecord"},
    ]}
    assert destination["ErrorOutputPrefix"] == capture.FAILURES_PREFIX
    assert not capture.FAILURES_PREFIX.startswith(layout.CAPTURES)


def capture_subscriptions(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """Log group logical id -> the properties of its subscription filter."""
    return {props["LogGroupName"]["Ref"]: props
            for props in (r["Properties"] for r in synthesized.of_type("AWS::Logs::SubscriptionFilter").values())}


def test_each_infer_and_push_functions_log_group_delivers_its_capture_lines_to_the_stream(
        synthesized: Synthesized) -> None:
    stack = synthesized.stack
    subscriptions = capture_subscriptions(synthesized)
    functions = [*stack.serving.functions.values(), *stack.push.functions.values()]
    assert set(subscriptions) == {synthesized.logical_id(f.log_group) for f in functions}
    assert len(functions) == 2 * len(MODELS)
    logs_role = synthesized.logical_id(stack.serving.capture_logs_role)
    for props in subscriptions.values():
        # only the marked lines: the function's own logs and its metrics never reach the captures
        assert props["FilterPattern"] == capture.FILTER_PATTERN == '{ $.mlops_capture = 1 }'
        assert props["FilterName"] == capture.SUBSCRIPTION_FILTER
        assert props["DestinationArn"] == {"Fn::GetAtt": [stream(synthesized)[0], "Arn"]}
        assert props["RoleArn"] == {"Fn::GetAtt": [logs_role, "Arn"]}
    # created once the role may put records: CloudWatch Logs tests the destination when a filter is created
    policy = synthesized.stack.resolve(stack.serving._capture_logs_policy.node.default_child.logical_id)
    for lid, resource in synthesized.of_type("AWS::Logs::SubscriptionFilter").items():
        assert policy in resource.get("DependsOn", []), lid


def test_cloudwatch_logs_alone_puts_records_and_only_into_the_capture_stream(synthesized: Synthesized) -> None:
    """The functions capture by logging: no function role may put records into a stream (they did, with a
    synchronous PutRecordBatch per request, before docs/capture.md). The role CloudWatch Logs assumes may put into the
    capture stream and nothing else, and only for this account's and region's log groups."""
    stream_arn = {"Fn::GetAtt": [stream(synthesized)[0], "Arn"]}
    logs_role = synthesized.logical_id(synthesized.stack.serving.capture_logs_role)
    putters = set()
    for policy in synthesized.of_type("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = [a for a in as_list(statement["Action"]) if a.startswith("firehose:")]
            if actions:
                assert sorted(actions) == sorted(CAPTURE_DELIVERY) == ["firehose:PutRecord", "firehose:PutRecordBatch"]
                assert as_list(statement["Resource"]) == [stream_arn]
                putters |= {role["Ref"] for role in policy["Properties"]["Roles"]}
    assert putters == {logs_role}
    [trust] = synthesized.resources[logs_role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "logs.amazonaws.com"}
    stack = synthesized.stack
    assert trust["Condition"] == {"StringLike": {"aws:SourceArn": f"arn:aws:logs:{stack.region}:{stack.account}:*"}}


# -- API --------------------------------------------------------------------------------------------------------
def api_methods(synthesized: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, HTTP method) -> the method's properties."""
    resources = synthesized.of_type("AWS::ApiGateway::Resource")
    [api] = synthesized.of_type("AWS::ApiGateway::RestApi")

    def path(parent: Any) -> str:
        if parent == {"Fn::GetAtt": [api, "RootResourceId"]}:
            return ""
        props = resources[parent["Ref"]]["Properties"]
        return f"{path(props['ParentId'])}/{props['PathPart']}"

    return {(path(m["Properties"]["ResourceId"]), m["Properties"]["HttpMethod"]): m["Properties"]
            for m in synthesized.of_type("AWS::ApiGateway::Method").values()}


def test_api_routes_are_the_handlers_with_iam_authorization(synthesized: Synthesized) -> None:
    methods = api_methods(synthesized)
    expected = {("/health", "GET")}
    for model in MODELS:
        expected |= {(f"/models/{model}", "GET"), (f"/models/{model}/predict", "POST"),
                     (f"/models/{model}/feedback", "POST")}
        # batch runs (mlops.batch.start)
        expected |= {(f"/models/{model}/batch", "POST"), (f"/models/{model}/batch/{{batch_id}}", "GET")}
    assert set(methods) == expected
    assert {props["AuthorizationType"] for props in methods.values()} == {"AWS_IAM"}
    validators = synthesized.of_type("AWS::ApiGateway::RequestValidator")
    for (path, verb), props in methods.items():
        if verb != "POST":
            assert "RequestValidatorId" not in props, path
            continue
        validator = validators[props["RequestValidatorId"]["Ref"]]["Properties"]
        assert validator["ValidateRequestBody"] is True, path
        model = synthesized.resources[props["RequestModels"]["application/json"]["Ref"]]["Properties"]
        assert model["Schema"]["type"] == "object"
    assert methods[("/health", "GET")]["Integration"]["Type"] == "MOCK"


def test_each_model_route_invokes_that_models_live_alias(synthesized: Synthesized) -> None:
    methods = api_methods(synthesized)
    for model, (lid, _r) in synthesized.serving().items():
        for path in (f"/models/{model}", f"/models/{model}/predict", f"/models/{model}/feedback",
                     f"/models/{model}/batch", f"/models/{model}/batch/{{batch_id}}"):
            [(route, integration)] = [(k, m["Integration"]) for k, m in methods.items() if k[0] == path]
            assert integration["Type"] == "AWS_PROXY"
            assert integration["IntegrationHttpMethod"] == "POST"
            uri = synthesized.render(integration["Uri"])
            assert uri.endswith(f":{LIVE_ALIAS}/invocations"), route
            assert uri == (f"arn:<AWS::Partition>:apigateway:<AWS::Region>:lambda:path/2015-03-31/functions/"
                           f"{lid}.Arn:{LIVE_ALIAS}/invocations"), route


def test_stage_is_traced_throttled_and_access_logged(synthesized: Synthesized) -> None:
    [stage] = synthesized.of_type("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == API_STAGE
    assert props["TracingEnabled"] is True
    [settings_] = [s for s in props["MethodSettings"] if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    assert settings_["ThrottlingRateLimit"] == THROTTLE_RATE_PER_SECOND
    assert settings_["ThrottlingBurstLimit"] == THROTTLE_BURST
    destination = json.dumps(props["AccessLogSetting"]["DestinationArn"])
    assert [lid for lid in synthesized.of_type("AWS::Logs::LogGroup") if lid in destination], destination
    assert props["AccessLogSetting"]["Format"]


# -- register and rollout ---------------------------------------------------------------------------------------
def test_register_gets_the_infer_functions_and_the_api_source_arn(synthesized: Synthesized) -> None:
    variables = synthesized.functions()["register"][1]["Properties"]["Environment"]["Variables"]
    assert json.loads(synthesized.render(variables[environment.INFER_FUNCTIONS])) == {
        model: platform.infer_function_name(NAMES, model) for model in MODELS}
    [api] = synthesized.of_type("AWS::ApiGateway::RestApi")
    assert synthesized.render(variables[API_SOURCE_ARN]).endswith(f":ref:{api}/{API_STAGE}/*/*")
    assert synthesized.render(variables[API_SOURCE_ARN]).startswith("arn:aws:execute-api:")


def lambda_grants(synthesized: Synthesized, function: str) -> tuple[set[str], set[str]]:
    actions: set[str] = set()
    resources: set[str] = set()
    for statement in role_statements(synthesized, synthesized.stack.pipeline.functions[function].role):
        found = [a for a in as_list(statement["Action"]) if a.startswith("lambda:")]
        if found:
            actions |= set(found)
            resources |= {synthesized.render(r) for r in as_list(statement["Resource"])}
    return actions, resources


def test_register_and_rollout_move_only_the_infer_functions(synthesized: Synthesized) -> None:
    infer = {lid for lid, _r in synthesized.serving().values()}
    qualified = {f"{lid}.Arn" for lid in infer} | {f"{lid}.Arn:*" for lid in infer}
    assert lambda_grants(synthesized, "register") == ({*DEPLOY, "lambda:AddPermission"}, qualified)
    assert lambda_grants(synthesized, "rollout") == (set(ROUTE), qualified)
    assert {"lambda:PublishVersion", "lambda:AddPermission"} & set(ROUTE) == set()
    # register may let API Gateway invoke an alias, and no one else: the statement is conditioned on the principal
    [adds] = [s for s in role_statements(synthesized, synthesized.stack.pipeline.functions["register"].role)
              if "lambda:AddPermission" in as_list(s["Action"])]
    assert as_list(adds["Action"]) == ["lambda:AddPermission"]
    assert adds["Condition"] == {"StringEquals": {"lambda:Principal": "apigateway.amazonaws.com"}}
    for name in synthesized.functions():
        if name not in ("register", "rollout"):
            assert lambda_grants(synthesized, name) == (set(), set()), name


def test_register_starts_the_rollout(synthesized: Synthesized) -> None:
    rollout = {"Ref": synthesized.logical_id(synthesized.stack.pipeline.state_machines[platform.ROLLOUT_STATE_MACHINE])}
    statements = role_statements(synthesized, synthesized.stack.pipeline.functions["register"].role)
    assert any("states:StartExecution" in as_list(s["Action"]) and rollout in as_list(s["Resource"])
               for s in statements)


def test_api_keys_are_an_option_on_top_of_iam(tmp_path: Any, synthesize_with: Any) -> None:
    """`-c mlops:api-key-quota-per-day=N`: every method also needs a key of a usage plan capped at N a day."""
    from infra.app import API_KEY_CONTEXT

    plain = {props.get("ApiKeyRequired", False) for props in api_methods_of(synthesize_with(tmp_path / "a"))}
    assert plain == {False}
    keyed = synthesize_with(tmp_path / "b", **{API_KEY_CONTEXT: 5000})
    assert {(p["AuthorizationType"], p["ApiKeyRequired"]) for p in api_methods_of(keyed)} == {("AWS_IAM", True)}
    [plan] = [r["Properties"] for r in keyed.of_type("AWS::ApiGateway::UsagePlan").values()]
    assert plan["Quota"] == {"Limit": 5000, "Period": "DAY"}
    assert plan["Throttle"]["RateLimit"] <= THROTTLE_RATE_PER_SECOND
    [stage] = keyed.of_type("AWS::ApiGateway::Stage")
    assert plan["ApiStages"][0]["Stage"] == {"Ref": stage}
    [key] = keyed.of_type("AWS::ApiGateway::ApiKey")
    [binding] = keyed.of_type("AWS::ApiGateway::UsagePlanKey").values()
    assert binding["Properties"]["KeyId"] == {"Ref": key}
    assert keyed.template["Outputs"]["ApiKeyId"]["Value"] == {"Ref": key}


def api_methods_of(synthesized: Synthesized) -> list[dict[str, Any]]:
    return [m["Properties"] for m in synthesized.of_type("AWS::ApiGateway::Method").values()]


def test_outputs_give_the_api_url_and_the_deployments_variables(synthesized: Synthesized) -> None:
    outputs = synthesized.template["Outputs"]
    [api] = synthesized.of_type("AWS::ApiGateway::RestApi")
    assert f"ref:{api}" in synthesized.render(outputs["ApiUrl"]["Value"])
    # a JSON object whose values CloudFormation fills in (INFER_FUNCTIONS is itself a JSON string in it)
    rendered = synthesized.render(outputs["Environment"]["Value"])
    variables = set(re.findall(r'(?<![\\])"([A-Z_]+)":', rendered))
    needed = {v for spec in (*platform.FUNCTIONS, platform.INFER) for v in spec.env} - {environment.CAPTURE_STREAM}
    assert needed <= variables
    assert f'"POWERTOOLS_METRICS_NAMESPACE":"{NAMES}"' in rendered
    assert "ApiKeyId" not in outputs  # IAM only by default

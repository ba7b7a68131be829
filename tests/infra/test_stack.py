"""Assertions on the synthesized template: the platform as mlops.aws.platform declares it, secured as the design
says, with cdk-nag enforced on every synthesis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.app import CONFIG_CONTEXT, LAMBDA_MEMORY_QUOTA_CONTEXT, STAGE_CONTEXT, STAGES, cdk_json_context
from infra.constructs.function import DOCKERFILE, IMAGE_CONTEXT, MEMORY_QUOTA_WARNING
from infra.constructs.ingest import state_machine_arn as ingest_state_machine_arn
from infra.constructs.pipeline import STATE_MACHINES, StateMachineSpec, uses_topic
from layers import builder as layer_build
from mlops.aws import environment, platform
from mlops.aws.access import ACCESS, infer_access
from mlops.aws.platform import TABLE_KEYS
from mlops.core.config import load_config

POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
CONFIG = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])
MODELS = [model.name for model in CONFIG.models]
S3_FUNCTIONS = {trigger.function for trigger in platform.S3_TRIGGERS}
# physical names carry the stage: the project in its stage is what the platform's naming functions get
NAMED = CONFIG.model_copy(update={"project": f"{CONFIG.project}-{cdk_json_context()[STAGE_CONTEXT]}"})
SCHEDULED_RULES = platform.scheduled_rules(NAMED)
ASYNC_FUNCTIONS = S3_FUNCTIONS | {rule.function for rule in SCHEDULED_RULES}
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


def statements(synthesized: Synthesized) -> list[tuple[str, dict[str, Any]]]:
    """(policy logical id, statement) for every IAM policy document in the template."""
    found: list[tuple[str, dict[str, Any]]] = []
    for lid, resource in synthesized.resources.items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents.extend(p["PolicyDocument"] for p in props.get("Policies", []))
        for document in documents:
            found.extend((lid, statement) for statement in document["Statement"])
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(synthesized: Synthesized, function: str) -> list[dict[str, Any]]:
    """The statements of a platform function's role, or of a model's infer function's (`infer:<model>`)."""
    if function.startswith("infer:"):
        construct = synthesized.stack.serving.functions[function.removeprefix("infer:")]
    else:
        construct = synthesized.stack.pipeline.functions[function]
    role = synthesized.logical_id(construct.role)
    return [
        statement
        for policy in synthesized.of_type("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


# -- functions --------------------------------------------------------------------------------------------------
def test_every_platform_function_is_deployed_as_its_spec_says(synthesized: Synthesized) -> None:
    functions = synthesized.functions()
    assert set(functions) == {spec.name for spec in platform.FUNCTIONS}
    for spec in platform.FUNCTIONS:
        props = functions[spec.name][1]["Properties"]
        assert set(props["Environment"]["Variables"]) == {*spec.env, *POWERTOOLS_ENV}, spec.name
        assert props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == spec.name
        assert props["Timeout"] == spec.timeout_s
        assert props["MemorySize"] == spec.memory_mb
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Description"] == spec.description
        assert props["LoggingConfig"]["LogGroup"]["Ref"] in synthesized.of_type("AWS::Logs::LogGroup")
        if spec.image:
            assert props["PackageType"] == "Image"
            assert props["ImageConfig"]["Command"] == [f"functions.{spec.name}.handler.handler"]
        else:
            assert props["Runtime"] == "python3.12"
            assert props["Handler"] == "handler.handler"
            assert layer_names(synthesized, props) == ["powertools", *spec.layers], spec.name


def layer_names(synthesized: Synthesized, props: dict[str, Any]) -> list[str]:
    """A zip function's layers by name: every one is a layer the project builds (layers/builder.py), none a public
    layer whose content no test sees."""
    built = {synthesized.logical_id(layer): name for name, layer in synthesized.stack.packaging.built_layers.items()}
    assert all(layer["Ref"] in built for layer in props["Layers"]), props["Layers"]
    return [built[layer["Ref"]] for layer in props["Layers"]]


def test_environment_values_point_at_the_stack_resources(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    storage, pipeline = stack.storage, stack.pipeline
    expected = {
        environment.DATA_BUCKET: {"Ref": synthesized.logical_id(storage.buckets["data"])},
        environment.MODELS_BUCKET: {"Ref": synthesized.logical_id(storage.buckets["models"])},
        environment.CAPTURES_BUCKET: {"Ref": synthesized.logical_id(storage.buckets["captures"])},
        environment.REGISTRY_TABLE: {"Ref": synthesized.logical_id(storage.tables["registry"])},
        environment.IDEMPOTENCY_TABLE: {"Ref": synthesized.logical_id(storage.tables["idempotency"])},
        environment.FEATURES_TABLE: {"Ref": synthesized.logical_id(storage.tables["features"])},
        environment.NOTIFICATIONS_TOPIC_ARN: {"Ref": synthesized.logical_id(storage.topic)},
        **{machine.arn_variable: {"Ref": synthesized.logical_id(pipeline.state_machines[machine.name])}
           for machine in STATE_MACHINES},
        # for when mlops.aws.platform declares it for register (test_serving checks what it points at)
        environment.API_SOURCE_ARN: stack.resolve(stack.serving.api_source_arn),
        # from the state machine's physical name, not its Ref: the state machine invokes ingest (no cycle)
        environment.INGEST_STATE_MACHINE_ARN: stack.resolve(ingest_state_machine_arn(stack, stack.name_prefix)),
    }
    project = NAMED.project
    infer_functions = {model: platform.infer_function_name(project, model) for model in synthesized.serving()}
    assert infer_functions
    for name, (_lid, resource) in synthesized.functions().items():
        variables = resource["Properties"]["Environment"]["Variables"]
        for variable in platform.function(name).env:
            if variable == environment.INFER_FUNCTIONS:  # a JSON object built from the functions' names
                assert json.loads(synthesized.render(variables[variable])) == infer_functions, name
            else:
                assert variables[variable] == expected[variable], (name, variable)


def test_async_functions_retry_then_keep_failed_events_in_an_encrypted_queue(synthesized: Synthesized) -> None:
    configs = {synthesized.function_names_by_logical_id()[c["Properties"]["FunctionName"]["Ref"]]: c["Properties"]
               for c in synthesized.of_type("AWS::Lambda::EventInvokeConfig").values()}
    assert set(configs) == ASYNC_FUNCTIONS
    queues = synthesized.of_type("AWS::SQS::Queue")
    for name, config in configs.items():
        assert config["MaximumRetryAttempts"] == 2
        queue = config["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
        assert queues[queue]["Properties"]["KmsMasterKeyId"] == {
            "Fn::GetAtt": [synthesized.logical_id(synthesized.stack.storage.key), "Arn"]}
        assert ssl_only(synthesized, "AWS::SQS::QueuePolicy", "Queues", queue)
        # the function's own role may send there (the on-failure destination uses the execution role)
        assert any("sqs:SendMessage" in as_list(s["Action"]) and s["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
                   for s in role_statements(synthesized, name))


def test_zip_functions_bundle_the_handler_config_and_core_package(synthesized: Synthesized) -> None:
    for spec in (s for s in platform.FUNCTIONS if not s.image):
        bundle = zip_bundle(synthesized, spec.name)
        assert (bundle / "handler.py").read_bytes() == (spec.code_dir / "handler.py").read_bytes()
        assert (bundle / "mlops.toml").is_file()
        assert (bundle / "mlops" / "pipeline" / "steps.py").is_file()
        assert not (bundle / "mlops" / "local").exists()  # the moto-based local cloud stays out


def zip_props(synthesized: Synthesized, function: str) -> dict[str, Any]:
    if function == platform.INFER.name:  # one per model, all from the same bundle
        props: dict[str, Any] = next(iter(synthesized.serving().values()))[1]["Properties"]
    elif function == platform.PUSH.name:  # likewise
        props = next(iter(synthesized.push().values()))[1]["Properties"]
    else:
        props = synthesized.functions()[function][1]["Properties"]
    return props


def zip_bundle(synthesized: Synthesized, function: str) -> Path:
    return synthesized.file_asset(zip_props(synthesized, function)["Code"]["S3Key"])


def layer_packages(spec: platform.FunctionSpec) -> set[str]:
    """The top-level packages the function's built layers hold."""
    return {path.name.split(".")[0] for name in spec.layers
            for path in (layer_build.layer_dir(name) / "python").iterdir()
            if path.is_dir() and not path.name.endswith((".dist-info", ".libs"))}


# Powertools (with pydantic and the X-Ray SDK) comes from its layer and boto3 from the runtime: what a zip
# function may not import is the scientific stack beyond what its own layers hold, which only the container
# image carries.
IMAGE_ONLY = ("numpy", "pandas", "pyarrow", "scipy", "sklearn", "skl2onnx", "onnx", "onnxruntime")
IMPORT_CHECK = """
import importlib.abc, os, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in a zip function (only in the container image)")
sys.meta_path.insert(0, Block())
sys.path.insert(0, os.getcwd())
import handler, mlops
assert mlops.__file__.startswith(os.getcwd()), mlops.__file__
"""


ZIP_FUNCTIONS = [pytest.param(spec, id=spec.name) for spec in (*platform.FUNCTIONS, platform.INFER, platform.PUSH)
                 if not spec.image]


@pytest.mark.parametrize("spec", ZIP_FUNCTIONS)
def test_zip_functions_import_only_what_their_layers_hold(synthesized: Synthesized,
                                                          spec: platform.FunctionSpec) -> None:
    # the values the template gives literally (a function's model and capture_sample_rate), placeholders for the
    # resources' tokens
    env = {variable: value if isinstance(value, str) else "placeholder"
           for variable, value in zip_props(synthesized, spec.name)["Environment"]["Variables"].items()}
    blocked = set(IMAGE_ONLY) - layer_packages(spec)
    assert blocked < set(IMAGE_ONLY) if spec.layers else blocked == set(IMAGE_ONLY)
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, ",".join(sorted(blocked))], cwd=zip_bundle(synthesized, spec.name),
        env={**env, "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true", "PATH": ""},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_image_functions_share_one_image_built_from_the_dockerfile(synthesized: Synthesized) -> None:
    manifest = json.loads((synthesized.assembly_dir / f"{synthesized.stack.artifact_id}.assets.json").read_text())
    images = manifest["dockerImages"]
    assert len(images) == 1, "one image for every image function"
    source = next(iter(images.values()))["source"]
    assert source["dockerFile"] == DOCKERFILE
    assert source["platform"] == "linux/amd64"
    context = synthesized.assembly_dir / source["directory"]
    top_level = {p.name for p in context.iterdir()}
    assert top_level == {path.split("/")[0] for path in IMAGE_CONTEXT} | {"mlops.toml"}
    assert not list(context.rglob("__pycache__"))
    assert (context / DOCKERFILE).read_text().startswith("# The container image")


# -- triggers ---------------------------------------------------------------------------------------------------
def test_s3_notifications_are_the_platform_triggers(synthesized: Synthesized) -> None:
    assert synthesized.notification_triggers() == {(t.function, t.bucket, t.prefix, t.suffix)
                                                  for t in platform.S3_TRIGGERS}
    # S3 may invoke each triggered function, from its own account and bucket only
    permissions = synthesized.of_type("AWS::Lambda::Permission").values()
    names = synthesized.function_names_by_logical_id()
    invoked = {names[p["Properties"]["FunctionName"]["Fn::GetAtt"][0]] for p in permissions
               if p["Properties"]["Principal"] == "s3.amazonaws.com" and "SourceAccount" in p["Properties"]}
    assert invoked == S3_FUNCTIONS


def test_each_models_schedule_invokes_its_function_with_the_model(synthesized: Synthesized) -> None:
    assert SCHEDULED_RULES, "mlops.toml's models keep drift monitoring on by default"
    names = synthesized.function_names_by_logical_id()
    rules = synthesized.of_type("AWS::Events::Rule")
    found = {}
    for rule in rules.values():
        props = rule["Properties"]
        [target] = props["Targets"]
        found[props["Name"]] = (names[target["Arn"]["Fn::GetAtt"][0]], props["ScheduleExpression"],
                                json.loads(target["Input"]), props["State"])
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
    assert found == {rule.rule_name: (rule.function, rule.expression, rule.input, "ENABLED")
                     for rule in SCHEDULED_RULES}
    # EventBridge may invoke the function, from these rules only
    permissions = [p["Properties"] for p in synthesized.of_type("AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] == "events.amazonaws.com"]
    assert sorted(p["SourceArn"]["Fn::GetAtt"][0] for p in permissions) == sorted(rules)


# -- state machines ---------------------------------------------------------------------------------------------
def expected_definition(machine: StateMachineSpec) -> str:
    text = machine.asl.read_text()
    for placeholder, function in machine.functions.items():
        text = text.replace(f"${{{placeholder}}}", f"function:{function}")
    for placeholder, target in platform.ASL_TRAINING_JOB_SUBSTITUTIONS.items():
        text = text.replace(f"${{{placeholder}}}", target)
    return text.replace(f"${{{platform.ASL_TOPIC_SUBSTITUTION}}}", "topic:notifications")


@pytest.mark.parametrize("machine", STATE_MACHINES, ids=lambda m: m.name)
def test_state_machine_runs_the_asl_file_with_its_substitutions(synthesized: Synthesized,
                                                                machine: StateMachineSpec) -> None:
    props, text = synthesized.state_machine(machine.name)
    assert not PLACEHOLDER.search(text), "every ${...} placeholder has a substitution"
    assert json.loads(text) == json.loads(expected_definition(machine))
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is True


@pytest.mark.parametrize("machine", STATE_MACHINES, ids=lambda m: m.name)
def test_state_machine_may_invoke_exactly_its_functions(synthesized: Synthesized, machine: StateMachineSpec) -> None:
    state_machine = synthesized.stack.pipeline.state_machines[machine.name]
    role = synthesized.logical_id(state_machine.role)
    names = synthesized.function_names_by_logical_id()
    invoked, published = set(), False
    for policy in synthesized.of_type("AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "lambda:InvokeFunction" in as_list(statement["Action"]):
                invoked |= {names[r["Fn::GetAtt"][0]] for r in as_list(statement["Resource"])}
            published |= "sns:Publish" in as_list(statement["Action"])
    assert invoked == set(machine.functions.values())
    assert published == uses_topic(machine)


# -- storage ----------------------------------------------------------------------------------------------------
def ssl_only(synthesized: Synthesized, policy_type: str, key: str, logical_id: str) -> bool:
    for policy in synthesized.of_type(policy_type).values():
        props = policy["Properties"]
        targets = as_list(props.get(key) or props.get("Bucket"))
        if {"Ref": logical_id} not in targets:
            continue
        for statement in props["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                    "Bool": {"aws:SecureTransport": "false"}}:
                return True
    return False


def test_buckets_are_encrypted_private_ssl_only_and_logged(synthesized: Synthesized) -> None:
    storage = synthesized.stack.storage
    key = {"Fn::GetAtt": [synthesized.logical_id(storage.key), "Arn"]}
    logs_bucket = synthesized.logical_id(storage.access_logs)
    buckets = synthesized.of_type("AWS::S3::Bucket")
    assert set(buckets) == {logs_bucket, *(synthesized.logical_id(b) for b in storage.buckets.values())}
    for lid, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        assert ssl_only(synthesized, "AWS::S3::BucketPolicy", "Bucket", lid), lid
        if lid == logs_bucket:
            assert sse == {"SSEAlgorithm": "AES256"}  # the only encryption S3 access logging accepts
            continue
        assert sse == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_bucket}
        rules = props["LifecycleConfiguration"]["Rules"]
        assert any("NoncurrentVersionExpiration" in rule for rule in rules)
    models = buckets[synthesized.logical_id(storage.buckets["models"])]["Properties"]
    assert any(r.get("Prefix") == "candidates/" and "ExpirationInDays" in r
               for r in models["LifecycleConfiguration"]["Rules"])


def test_tables_have_pitr_kms_and_the_declared_keys(synthesized: Synthesized) -> None:
    storage = synthesized.stack.storage
    tables = synthesized.of_type("AWS::DynamoDB::Table")
    assert set(tables) == {synthesized.logical_id(t) for t in storage.tables.values()}
    assert set(storage.tables) == set(platform.TABLES)
    key = {"Fn::GetAtt": [synthesized.logical_id(storage.key), "Arn"]}
    for name, table in storage.tables.items():
        props = tables[synthesized.logical_id(table)]["Properties"]
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key}
        declared = TABLE_KEYS[name]
        expected_keys = [{"AttributeName": declared.partition, "KeyType": "HASH"}]
        if declared.sort:
            expected_keys.append({"AttributeName": declared.sort, "KeyType": "RANGE"})
        assert props["KeySchema"] == expected_keys
        if declared.ttl:
            assert props["TimeToLiveSpecification"] == {"AttributeName": declared.ttl, "Enabled": True}
    assert TABLE_KEYS["idempotency"].ttl == "expiration"  # Powertools' DynamoDBPersistenceLayer default


def test_topic_and_key(synthesized: Synthesized) -> None:
    storage = synthesized.stack.storage
    topic = synthesized.logical_id(storage.topic)
    assert synthesized.resources[topic]["Properties"]["KmsMasterKeyId"] == {
        "Fn::GetAtt": [synthesized.logical_id(storage.key), "Arn"]}
    assert ssl_only(synthesized, "AWS::SNS::TopicPolicy", "Topics", topic)
    (key,) = synthesized.of_type("AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True


# -- IAM --------------------------------------------------------------------------------------------------------
# The only actions AWS offers no resource-level permission for, which aws-cdk-lib grants on "*".
RESOURCELESS_ACTIONS = {
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups", "cloudwatch:GetMetricData", "ecr:GetAuthorizationToken",
}


def test_no_wildcard_actions_and_star_resources_only_where_unavoidable(synthesized: Synthesized) -> None:
    found = statements(synthesized)
    assert found
    for lid, statement in found:
        if statement["Effect"] != "Allow":
            continue
        actions = as_list(statement["Action"])
        assert not [a for a in actions if "*" in a], (lid, actions)
        if "*" in as_list(statement["Resource"]):
            assert set(actions) <= RESOURCELESS_ACTIONS, (lid, actions)


def object_grants(synthesized: Synthesized, function: str) -> set[tuple[str, str, str]]:
    """(action, bucket, key pattern) for each object-level S3 permission of a function."""
    buckets = {synthesized.logical_id(b): name for name, b in synthesized.stack.storage.buckets.items()}
    found = set()
    for statement in role_statements(synthesized, function):
        for action in as_list(statement["Action"]):
            if not action.startswith("s3:") or action == "s3:ListBucket":
                continue
            for resource in as_list(statement["Resource"]):
                arn, suffix = resource["Fn::Join"][1]
                found.add((action, buckets[arn["Fn::GetAtt"][0]], suffix.lstrip("/")))
    return found


@pytest.mark.parametrize("function", [*(spec.name for spec in platform.FUNCTIONS),
                                      *(f"infer:{model}" for model in MODELS)])
def test_functions_reach_only_their_declared_prefixes_and_tables(synthesized: Synthesized, function: str) -> None:
    access = infer_access(function.removeprefix("infer:")) if function.startswith("infer:") else ACCESS[function]
    expected = {("s3:GetObject", bucket, f"{prefix}*") for bucket, prefixes in access.read.items()
                for prefix in prefixes}
    if access.read_versions:
        expected |= {("s3:GetObjectVersion", b, p) for _a, b, p in expected}
    expected |= {("s3:PutObject", bucket, f"{prefix}*") for bucket, prefixes in access.write.items()
                 for prefix in prefixes}
    expected |= {("s3:DeleteObject", bucket, f"{prefix}*") for bucket, prefixes in access.deletes.items()
                 for prefix in prefixes}
    assert object_grants(synthesized, function) == expected

    tables = {synthesized.logical_id(t): name for name, t in synthesized.stack.storage.tables.items()}
    reached: dict[str, set[str]] = {}
    for statement in role_statements(synthesized, function):
        for resource in as_list(statement["Resource"]):
            if isinstance(resource, dict) and resource.get("Fn::GetAtt", [""])[0] in tables:
                reached.setdefault(tables[resource["Fn::GetAtt"][0]], set()).update(as_list(statement["Action"]))
    assert set(reached) == set(access.tables)
    for table, mode in access.tables.items():
        assert ("dynamodb:PutItem" in reached[table]) == (mode == "write"), table


# -- cdk-nag ----------------------------------------------------------------------------------------------------
def test_cdk_nag_found_nothing_unacknowledged(synthesized: Synthesized) -> None:
    # the session's synthesis would have raised otherwise; the report is what the CLI shows
    report = json.loads((synthesized.assembly_dir / "validation-report.json").read_text())
    # the one warning: train's memory, above a new account's quota until the deployer says otherwise
    # (infra/constructs/function.py check_memory; tests/infra/test_deploy.py)
    assert [v["ruleName"] for r in report["pluginReports"] for v in r.get("violations", [])] == [
        f"Annotation::{MEMORY_QUOTA_WARNING}"], report


def test_cdk_nag_findings_fail_the_synthesis(tmp_path: Path) -> None:
    """The app registers cdk-nag on every synthesis: one unencrypted queue in the stack is enough to stop it."""
    from aws_cdk import App
    from aws_cdk import aws_sqs as sqs

    from infra.app import build, cdk_json_context

    # assets are not copied: the synthesis is meant to stop before anything is deployed; the account's memory quota
    # is declared, so that train's memory warning does not name the pipeline in the report
    app = App(context={**cdk_json_context(), "aws:cdk:disable-asset-staging": True,
                       LAMBDA_MEMORY_QUOTA_CONTEXT: "10240"}, outdir=str(tmp_path))
    sqs.Queue(build(app), "Unencrypted", encryption=sqs.QueueEncryption.UNENCRYPTED)
    with pytest.raises(RuntimeError, match="ValidationFailed") as failure:
        app.synth()
    assert "AwsSolutions-SQS2" in str(failure.value)
    for part in ("Storage", "Pipeline", "Serving"):
        assert f"mlops-dev/{part}" not in str(failure.value)  # the platform itself stays clean


def test_prod_stage_retains_data_and_caps_ingest(tmp_path: Path, synthesize_with: Any) -> None:
    prod = synthesize_with(tmp_path, **{"mlops:stage": "prod"})
    assert prod.stack.stack_name.endswith("-prod")
    for kind in ("AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::KMS::Key"):
        assert {r.get("DeletionPolicy") for r in prod.of_type(kind).values()} == {"Retain"}, kind
    assert {r["Properties"]["RetentionInDays"] for r in prod.of_type("AWS::Logs::LogGroup").values()} == {365}
    assert prod.functions()["ingest"][1]["Properties"]["ReservedConcurrentExecutions"] == 20
    # the stage is in every physical name, so dev and prod can share an account
    for model, (_lid, resource) in prod.serving().items():
        assert resource["Properties"]["FunctionName"] == platform.infer_function_name(f"{CONFIG.project}-prod", model)
    assert {r["Properties"]["Name"] for r in prod.of_type("AWS::Events::Rule").values()}.isdisjoint(
        {rule.rule_name for rule in SCHEDULED_RULES})
    # and its alarms follow the stage's thresholds
    latency = prod.resources[prod.logical_id(prod.stack.monitoring.alarms[MODELS[0]]["latency_p95"])]["Properties"]
    assert latency["EvaluationPeriods"] == STAGES["prod"].alarms.evaluation_periods
    assert STAGES["prod"].alarms != STAGES["dev"].alarms


def granted(synthesized: Synthesized, action: str) -> dict[str, list[Any]]:
    """Platform function -> the resources of its statements that allow `action`."""
    found: dict[str, list[Any]] = {}
    for name in synthesized.functions():
        for statement in role_statements(synthesized, name):
            if action in as_list(statement["Action"]):
                found.setdefault(name, []).extend(as_list(statement["Resource"]))
    return found


def test_only_drift_check_publishes_to_the_topic(synthesized: Synthesized) -> None:
    topic = {"Ref": synthesized.logical_id(synthesized.stack.storage.topic)}
    assert granted(synthesized, "sns:Publish") == {name: [topic] for name, access in ACCESS.items()
                                                   if access.publishes}
    assert ACCESS["drift_check"].publishes
    # SNS encrypts with the topic's key on the publisher's behalf
    assert "drift_check" in granted(synthesized, "kms:GenerateDataKey")


def test_only_the_rollout_reads_metrics(synthesized: Synthesized) -> None:
    assert granted(synthesized, "cloudwatch:GetMetricData") == {"rollout": ["*"]}

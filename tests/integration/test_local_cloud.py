"""Parts of `mlops local up` that tests/e2e only sees from outside: the proxy events of the local gateway,
schedule expressions, which requests must be durable, the state directory and the re-drive after a restart."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from moto import mock_aws

from mlops import aws
from mlops.aws import platform
from mlops.aws.platform import ROOT
from mlops.core.config import load_config
from mlops.core.errors import ConfigError
from mlops.local.cloud import Deployment, provision
from mlops.local.embedded import EmbeddedCloud
from mlops.local.firehose import BufferedFirehose
from mlops.local.gateway import ApiGateway, proxy_event
from mlops.local.metrics import LogSubscriptions
from mlops.local.recovery import Recovery
from mlops.local.scheduler import Job, Scheduler, parse_rate
from mlops.local.state import PERSISTED, GroupCommit, StateDir, StateError, is_mutating, request_service
from mlops.registry.versions import CHAMPION
from mlops.release.deploy import ServingDeployer
from mlops.serving.capture import MARKER

INFER = platform.infer_function_name("mlops", "breast-cancer")  # the test project's


# -- gateway -------------------------------------------------------------------------------------------------
def _event(method: str = "POST", path: str = "/models/breast-cancer/predict?explain=1&explain=2",
           body: bytes = b'{"features": {}}') -> dict[str, Any]:
    return proxy_event(method=method, raw_path=path, headers=[("Content-Type", "application/json"), ("Host", "h")],
                       body=body, resource="/models/breast-cancer/predict", source_ip="127.0.0.1", request_id="r-1")


def test_the_proxy_event_has_the_shape_api_gateway_sends() -> None:
    real = json.loads((ROOT / "events" / "apigw_predict.json").read_text())
    event = _event()
    assert set(event) == set(real)
    assert set(event["requestContext"]) >= {"requestId", "path", "stage", "httpMethod", "resourcePath", "identity"}
    assert event["path"] == "/models/breast-cancer/predict"
    assert event["queryStringParameters"] == {"explain": "2"}
    assert event["multiValueQueryStringParameters"] == {"explain": ["1", "2"]}
    assert (event["body"], event["isBase64Encoded"]) == ('{"features": {}}', False)
    assert _event(body=b"\xff\xfe")["isBase64Encoded"] is True


def test_powertools_resolves_the_proxy_event_as_the_infer_handler_does() -> None:
    app = APIGatewayRestResolver()

    @app.post("/models/<name>/predict")
    def predict(name: str) -> dict[str, Any]:
        return {"name": name, "body": app.current_event.json_body, "id": app.current_event.request_context.request_id}

    answer = app.resolve(_event(), {})
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"name": "breast-cancer", "body": {"features": {}}, "id": "r-1"}


def test_the_gateway_routes_only_what_the_api_declares() -> None:
    gateway = ApiGateway(None, {"breast-cancer": INFER}, log=lambda line: None)
    assert gateway.route("POST", "/models/breast-cancer/predict") == ("breast-cancer", "/models/breast-cancer/predict")
    assert gateway.route("GET", "/models/breast-cancer") == ("breast-cancer", "/models/breast-cancer")
    assert gateway.route("GET", "/models/breast-cancer/predict") is None
    assert gateway.route("POST", "/models/other/predict") is None
    status, _headers, body = gateway.handle("GET", "/nowhere", [], b"", "127.0.0.1")
    assert status == 404
    assert json.loads(body)["error"] == "NotFound"
    assert gateway.handle("GET", "/health", [], b"", "127.0.0.1")[0] == 200


class _FakeLambda:
    """Answers invocations with a given payload; records what it was asked."""

    class exceptions:  # shaped like a boto3 client's
        class ResourceNotFoundException(Exception):
            pass

    meta = SimpleNamespace(region_name="us-east-1")

    def __init__(self, payload: dict[str, Any] | None, function_error: bool = False) -> None:
        self.payload, self.function_error, self.calls = payload, function_error, []

    def invoke(self, FunctionName: str, Payload: bytes) -> dict[str, Any]:  # boto3's argument names
        self.calls.append((FunctionName, json.loads(Payload)))
        if self.payload is None:
            raise self.exceptions.ResourceNotFoundException(FunctionName)
        answer: dict[str, Any] = {"Payload": io.BytesIO(json.dumps(self.payload).encode())}
        if self.function_error:
            answer["FunctionError"] = "Unhandled"
        return answer


def _allowed(function: str, source_arn: str) -> bool:
    return True


def test_the_gateway_returns_the_functions_answer_through_the_live_alias() -> None:
    lam = _FakeLambda({"statusCode": 422, "body": '{"error": "InvalidInput"}', "isBase64Encoded": False,
                       "multiValueHeaders": {"Content-Type": ["application/json"]}})
    asked: list[tuple[str, str]] = []
    gateway = ApiGateway(lam, {"breast-cancer": INFER}, log=lambda line: None,
                         authorize=lambda function, source: asked.append((function, source)) or True)
    status, headers, body = gateway.handle("POST", "/models/breast-cancer/predict", [], b"{}", "127.0.0.1")
    assert (status, headers["Content-Type"], json.loads(body)) == (422, "application/json", {"error": "InvalidInput"})
    [(function, event)] = lam.calls
    assert function == f"{INFER}:live"
    assert event["requestContext"]["requestId"] == headers["x-amzn-RequestId"]
    # the source API Gateway presents: this API, stage, method and path
    assert asked == [(INFER, "arn:aws:execute-api:us-east-1:123456789012:local/local/POST/models/breast-cancer/"
                             "predict")]


def test_the_gateway_says_502_when_the_function_fails_and_500_when_it_may_not_invoke() -> None:
    failing = ApiGateway(_FakeLambda({"errorType": "ValueError"}, function_error=True), {"breast-cancer": INFER},
                         log=lambda line: None, authorize=_allowed)
    assert failing.handle("GET", "/models/breast-cancer", [], b"", "127.0.0.1")[0] == 502
    lam = _FakeLambda({"statusCode": 200, "body": "{}"})
    refused = ApiGateway(lam, {"breast-cancer": INFER}, log=lambda line: None, authorize=lambda *_: False)
    status, _headers, body = refused.handle("GET", "/models/breast-cancer", [], b"", "127.0.0.1")
    assert (status, json.loads(body)) == (500, {"message": "Internal server error"})
    assert lam.calls == []  # API Gateway never reaches a function it may not invoke


# -- scheduler -----------------------------------------------------------------------------------------------
def test_rate_expressions() -> None:
    assert parse_rate("rate(1 hour)") == 3600
    assert parse_rate("rate(15 minutes)") == 900
    assert parse_rate("rate(2 days)") == 172800
    for wrong in ("rate(1 hours)", "rate(5 minute)", "rate(0 minutes)", "cron(0 * * * ? *)", "every hour"):
        with pytest.raises(ConfigError, match="rate"):
            parse_rate(wrong)


def test_the_scheduler_fires_each_job_on_its_interval() -> None:
    fired: list[str] = []
    scheduler = Scheduler([Job("fast", "f", 0.05, {}), Job("slow", "s", 3600, {})], lambda job: fired.append(job.name),
                          log=lambda line: None)
    scheduler.start()
    deadline = time.monotonic() + 10
    while fired.count("fast") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.stop()
    assert fired.count("fast") >= 3
    assert "slow" not in fired


# -- durability ----------------------------------------------------------------------------------------------
def _environ(method: str, service: str, path: str = "/", target: str = "") -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_X_AMZ_TARGET": target,
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=local/20261127/us-east-1/{service}/aws4_request, "
                                  "SignedHeaders=host, Signature=0"}


@pytest.mark.parametrize(("environ", "mutating"), [
    (_environ("PUT", "s3", "/mlops-data/incoming/x.csv"), True),
    (_environ("GET", "s3", "/mlops-data/incoming/x.csv"), False),
    (_environ("POST", "dynamodb", target="DynamoDB_20120810.TransactWriteItems"), True),
    (_environ("POST", "dynamodb", target="DynamoDB_20120810.Query"), False),
    (_environ("POST", "lambda", "/2015-03-31/functions/f/versions"), True),
    (_environ("POST", "lambda", "/2015-03-31/functions/f%3Alive/invocations"), False),
    (_environ("POST", "states", target="AWSStepFunctions.StartExecution"), False),  # not kept: no wait
])
def test_which_requests_wait_for_the_state_to_be_saved(environ: dict[str, Any], mutating: bool) -> None:
    assert request_service(environ) in ("s3", "dynamodb", "lambda", "states")
    assert is_mutating(environ, request_service(environ)) is mutating


def test_a_writer_is_answered_after_a_snapshot_taken_after_its_write() -> None:
    saved: list[tuple[float, set[str]]] = []

    def save(services: set[str]) -> None:
        time.sleep(0.05)
        saved.append((time.monotonic(), services))

    commit = GroupCommit(save)
    commit.start()
    done: list[float] = []

    def writer() -> None:
        commit.wait(commit.mark(["s3"]))
        done.append(time.monotonic())

    threads = [threading.Thread(target=writer) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    commit.stop()
    assert len(done) == 5
    assert 1 <= len(saved) <= 5  # concurrent writers share snapshots
    assert all(any(at <= answered for at, _ in saved) for answered in done)


# -- the state directory -------------------------------------------------------------------------------------
@pytest.fixture
def fresh_cloud(config_file: Path) -> Iterator[Deployment]:
    with mock_aws():
        aws.client.cache_clear()
        yield provision(aws.client, config_file=config_file)
    aws.client.cache_clear()


def test_state_survives_a_restart_with_versions_items_and_weights(config_file: Path, tmp_path: Path) -> None:
    with mock_aws():
        aws.client.cache_clear()
        deployment = provision(aws.client, config_file=config_file)
        s3, lam = aws.client("s3"), aws.client("lambda")
        # a key no trigger watches: nothing to invoke here
        first = s3.put_object(Bucket=deployment.data_bucket, Key="notes/a.txt", Body=b"one")["VersionId"]
        second = s3.put_object(Bucket=deployment.data_bucket, Key="notes/a.txt", Body=b"two")["VersionId"]
        aws.client("dynamodb").put_item(TableName=deployment.names["registry"],
                                        Item={"pk": {"S": "MODEL#m"}, "sk": {"S": "META"}, "n": {"N": "7"}})
        deployer = ServingDeployer(lam)
        v1, v2 = deployer.publish(INFER, 1), deployer.publish(INFER, 2)
        deployer.route(INFER, v1, v2, 0.25)
        StateDir(tmp_path, deployment, lam).save(set(PERSISTED))

    with mock_aws():
        aws.client.cache_clear()
        deployment = provision(aws.client, config_file=config_file)
        s3, lam = aws.client("s3"), aws.client("lambda")
        counts = StateDir(tmp_path, deployment, lam).restore()
        assert counts == {"objects": 2, "items": 1, "function_versions": 2}
        versions = s3.list_object_versions(Bucket=deployment.data_bucket, Prefix="notes/")["Versions"]
        assert [v["VersionId"] for v in versions] == [second, first]
        assert s3.get_object(Bucket=deployment.data_bucket, Key="notes/a.txt",
                             VersionId=first)["Body"].read() == b"one"
        item = aws.client("dynamodb").get_item(TableName=deployment.names["registry"],
                                               Key={"pk": {"S": "MODEL#m"}, "sk": {"S": "META"}})["Item"]
        assert item["n"] == {"N": "7"}
        alias = lam.get_alias(FunctionName=INFER, Name="live")
        assert (alias["FunctionVersion"], alias["RoutingConfig"]["AdditionalVersionWeights"]) == (v1, {v2: 0.25})
        pinned = lam.get_function_configuration(FunctionName=INFER, Qualifier=v2)["Environment"]["Variables"]
        assert pinned["MODEL_VERSION"] == "2"
    aws.client.cache_clear()


def test_a_state_directory_of_another_project_is_refused(fresh_cloud: Deployment, tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"format": 1, "moto": "0", "project": "other"}))
    with pytest.raises(StateError, match="another --state directory"):
        StateDir(tmp_path, fresh_cloud, aws.client("lambda")).restore()


# -- re-drive ------------------------------------------------------------------------------------------------
def test_recovery_deploys_a_version_registered_but_not_deployed(cloud: EmbeddedCloud, config_file: Path) -> None:
    version = cloud.registry.register(model="breast-cancer", run_id="run-1", artefacts_prefix="s3://m/run-1/",
                                      onnx_sha256="0" * 64, dataset_sha256="a" * 64,
                                      metrics={"metrics": {"accuracy": 0.95}}, alias=CHAMPION)
    lines: list[str] = []
    Recovery(deployment=cloud.deployment, config=load_config(config_file), client=aws.client,
             log=lines.append).run()
    deployed = cloud.registry.version("breast-cancer", version.version)
    assert deployed is not None
    assert deployed.lambda_version is not None
    alias = cloud.client("lambda").get_alias(FunctionName=INFER, Name="live")
    assert alias["FunctionVersion"] == deployed.lambda_version
    assert any("registered, not deployed" in line for line in lines)
    lines.clear()
    Recovery(deployment=cloud.deployment, config=load_config(config_file), client=aws.client,
             log=lines.append).run()
    assert lines == []  # nothing left to do: a second re-drive changes nothing


def test_recovery_ingests_an_upload_that_was_never_processed_and_trains_it_once(
        cloud: EmbeddedCloud, config_file: Path, breast_cancer_csv: bytes) -> None:
    s3, bucket = cloud.client("s3"), cloud.deployment.data_bucket
    # the upload of a process killed before its S3 event was delivered: the object is there, nothing else
    notifications = s3.get_bucket_notification_configuration(Bucket=bucket)
    notifications.pop("ResponseMetadata", None)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    cloud.upload("breast-cancer", "bc.csv", breast_cancer_csv)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=notifications)

    recovery = Recovery(deployment=cloud.deployment, config=load_config(config_file), client=aws.client,
                        log=lambda line: None)
    recovery.run()
    cloud.wait_for_executions(1)
    recovery.run()  # a second start-up re-drive: the dataset has its outcome, nothing is trained again
    [execution] = cloud.wait_for_executions(1)
    assert execution["status"] == "SUCCEEDED"
    assert [v.version for v in cloud.registry.versions("breast-cancer")] == [1]


def test_firehose_writes_one_object_per_buffer_not_per_delivery(fresh_cloud: Deployment) -> None:
    flushed: list[int] = []
    buffered = BufferedFirehose(interval_s=3600, after_flush=lambda: flushed.append(1))
    buffered.install()
    try:
        s3, subscriptions = aws.client("s3"), LogSubscriptions(fresh_cloud.region)
        for i in range(3):  # three deliveries of an infer function's log group's subscription
            subscriptions.put(f"/aws/lambda/{INFER}", [json.dumps({MARKER: 1, "n": i})])
            subscriptions.flush()
        assert s3.list_objects_v2(Bucket=fresh_cloud.names["captures"]).get("KeyCount") == 0
        buffered.flush()
    finally:
        buffered.uninstall()
    [obj] = s3.list_objects_v2(Bucket=fresh_cloud.names["captures"])["Contents"]
    body = s3.get_object(Bucket=fresh_cloud.names["captures"], Key=obj["Key"])["Body"].read().decode()
    assert [json.loads(line)["n"] for line in body.splitlines()] == [0, 1, 2]
    assert obj["Key"].startswith("captures/")
    assert flushed == [1]

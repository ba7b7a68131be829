"""The in-process Lambda runtime must take effect on every path moto invokes a function through."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from moto import mock_aws

from mlops import aws
from mlops.local.lambda_runtime import InProcessRuntime

CODE = """
import os
CALLS = []  # module state: survives invocations within one execution environment, lost on a new import

def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    CALLS.append(1)
    return {"echo": event, "colour": os.environ["COLOUR"], "calls": len(CALLS),
            "function": context.function_name, "remaining_ms": context.get_remaining_time_in_millis()}
"""


def _zip(code: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", code)
    return buffer.getvalue()


@pytest.fixture
def lam() -> Any:
    with mock_aws(), InProcessRuntime():
        aws.client.cache_clear()
        role = aws.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        client = aws.client("lambda")
        client.create_function(FunctionName="echo", Runtime="python3.12", Role=role, Handler="handler.handler",
                               Code={"ZipFile": _zip(CODE)}, Environment={"Variables": {"COLOUR": "blue"}})
        yield client
    aws.client.cache_clear()


def _invoke(client: Any, name: str, event: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_invoke_runs_the_deployed_handler_in_process(lam: Any) -> None:
    # Without the hook moto would try to start a Docker container and this call would fail.
    payload, error = _invoke(lam, "echo", {"x": 1})
    assert error is None
    assert payload["echo"] == {"x": 1}
    assert payload["colour"] == "blue"
    assert payload["function"] == "echo"
    assert payload["remaining_ms"] > 0


def test_handler_errors_come_back_as_lambda_function_errors(lam: Any) -> None:
    payload, error = _invoke(lam, "echo", {"fail": True})
    assert error == "Handled"
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "asked to fail"


def test_module_state_is_kept_per_execution_environment(lam: Any) -> None:
    assert _invoke(lam, "echo", {})[0]["calls"] == 1
    assert _invoke(lam, "echo", {})[0]["calls"] == 2  # warm: the module was not imported again


def test_each_version_runs_with_its_own_environment(lam: Any) -> None:
    v1 = lam.publish_version(FunctionName="echo")["Version"]
    lam.update_function_configuration(FunctionName="echo", Environment={"Variables": {"COLOUR": "green"}})
    v2 = lam.publish_version(FunctionName="echo")["Version"]
    assert _invoke(lam, f"echo:{v1}", {})[0]["colour"] == "blue"
    assert _invoke(lam, f"echo:{v2}", {})[0]["colour"] == "green"
    assert _invoke(lam, f"echo:{v1}", {})[0]["colour"] == "blue"


def test_s3_notifications_reach_the_handler() -> None:
    with mock_aws(), InProcessRuntime() as runtime:
        aws.client.cache_clear()
        role = aws.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        arn = aws.client("lambda").create_function(
            FunctionName="echo", Runtime="python3.12", Role=role, Handler="handler.handler",
            Code={"ZipFile": _zip(CODE)}, Environment={"Variables": {"COLOUR": "red"}})["FunctionArn"]
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="bucket-a")
        s3.put_bucket_notification_configuration(Bucket="bucket-a", NotificationConfiguration={
            "LambdaFunctionConfigurations": [{"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
        s3.put_object(Bucket="bucket-a", Key="a b.csv", Body=b"x")
        assert [i.event["Records"][0]["s3"]["object"]["key"] for i in runtime.invocations] == ["a+b.csv"]
    aws.client.cache_clear()


def test_weighted_alias_splits_traffic_by_its_weights(lam: Any) -> None:
    import math

    from mlops.release.deploy import ServingDeployer

    deployer = ServingDeployer(lam)
    v1 = lam.publish_version(FunctionName="echo")["Version"]
    lam.update_function_configuration(FunctionName="echo", Environment={"Variables": {"COLOUR": "green"}})
    v2 = lam.publish_version(FunctionName="echo")["Version"]
    deployer.route("echo", v1, v2, 0.3)
    n = 2000
    greens = sum(_invoke(lam, "echo:live", {})[0]["colour"] == "green" for _ in range(n))
    tolerance = 4 * math.sqrt(0.3 * 0.7 / n)  # 4 standard errors: a false failure about once in 16,000 runs
    assert abs(greens / n - 0.3) < tolerance
    deployer.route("echo", v2)  # promotion: one alias update, all traffic to the new version
    assert all(_invoke(lam, "echo:live", {})[0]["colour"] == "green" for _ in range(50))

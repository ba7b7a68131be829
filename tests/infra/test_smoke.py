"""scripts/smoke.py, the deploy workflow's smoke test, signs its requests with SigV4 for execute-api (and sends none
unsigned unless asked), and accepts a fresh stack's answers, against a local HTTP server standing in for API
Gateway."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import ModuleType
from typing import Any

import boto3
import pytest

from mlops.aws import platform


def load_smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke", platform.ROOT / "scripts" / "smoke.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})  # case-insensitive
            status = 200 if "Authorization" in self.headers else 403
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def test_smoke_requests_are_signed_for_execute_api(server: tuple[str, list[dict[str, str]]]) -> None:
    smoke = load_smoke()
    url, seen = server
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                            region_name="eu-west-1")
    assert smoke.request(session, f"{url}/health", sign=True, api_key=None) == (200, '{"status": "ok"}')
    authorization = seen[-1]["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "x-amz-date" in seen[-1]

    status, _body = smoke.request(session, f"{url}/health", sign=False, api_key="k")
    assert status == 403
    assert "authorization" not in seen[-1]
    assert seen[-1]["x-api-key"] == "k"


def test_smoke_reads_the_stacks_outputs() -> None:
    from moto import mock_aws

    smoke = load_smoke()
    template = ('{"Resources": {"T": {"Type": "AWS::SNS::Topic"}}, "Outputs": {"ApiUrl": {"Value": "https://x/v1/"},'
                ' "Environment": {"Value": "{\\"INFER_FUNCTIONS\\": \\"{}\\"}"}}}')
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        cloudformation.create_stack(StackName="mlops-dev", TemplateBody=template)
        outputs = smoke.stack_outputs(cloudformation, "mlops-dev")
    assert outputs["ApiUrl"] == "https://x/v1/"
    assert outputs["Environment"] == '{"INFER_FUNCTIONS": "{}"}'


@pytest.fixture
def api() -> Iterator[tuple[str, dict[str, tuple[int, dict[str, Any]]]]]:
    """A stand-in for a deployed stage: `answers` maps a path to the status and JSON body it answers signed requests
    with; unsigned requests get API Gateway's 403."""
    answers: dict[str, tuple[int, dict[str, Any]]] = {"/v1/health": (200, {"status": "ok"})}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers[self.path] if "Authorization" in self.headers else (403, {"message": "Forbidden"})
            self.send_response(status)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    httpd.shutdown()


def smoke_against(url: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """scripts/smoke.py's exit status against a stack (moto) whose ApiUrl is `url` and which serves model `m`."""
    from moto import mock_aws

    for variable, value in (("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "secret")):
        monkeypatch.setenv(variable, value)
    environment = json.dumps({"INFER_FUNCTIONS": json.dumps({"m": "mlops-dev-infer-m"})})
    template = {"Resources": {"T": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {"ApiUrl": {"Value": f"{url}/v1/"}, "Environment": {"Value": environment}}}
    with mock_aws():
        boto3.client("cloudformation", region_name="us-east-1").create_stack(
            StackName="mlops-dev", TemplateBody=json.dumps(template))
        status: int = load_smoke().main(["--stack", "mlops-dev", "--region", "us-east-1"])
    return status


def test_smoke_passes_on_a_fresh_stack_and_says_why(api: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Before the first model version, the alias (on $LATEST) answers the handler's 503: expected, and said so."""
    url, answers = api
    answers["/v1/models/m"] = (503, {"error": "NoModelDeployed", "message": "no version of 'm' is deployed yet",
                                     "field": None})
    assert smoke_against(url, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "ok   GET /models/m: 503 NoModelDeployed: no model version registered yet (expected on a fresh stack" in out
    assert "ok   GET /health (unsigned) is refused" in out


def test_smoke_fails_when_api_gateway_cannot_invoke_the_alias(api: tuple[str, dict[str, Any]],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    url, answers = api
    answers["/v1/models/m"] = (500, {"message": "Internal server error"})
    assert smoke_against(url, monkeypatch) == 1
    out = capsys.readouterr().out
    assert "FAIL GET /models/m: 500 from API Gateway itself" in out
    answers["/v1/models/m"] = (200, {"model": "m", "champion": {"version": 3}, "challenger": None})
    assert smoke_against(url, monkeypatch) == 0
    assert "ok   GET /models/m: 200, champion version 3" in capsys.readouterr().out

"""A local stand-in for the platform's REST API: HTTP requests become API Gateway proxy events.

The routes are the ones the CDK app declares (infra/constructs/serving.py): ``GET /health`` answered by the
gateway itself, and per declared model ``GET /models/<name>``, ``POST /models/<name>/predict`` and
``POST /models/<name>/feedback``, each a Lambda-proxy integration of the model's infer function through its
``live`` alias. The invocation goes through the Lambda API, so the alias's weights pick the version (the
A/B split) exactly as they do behind API Gateway, and only if the alias's resource policy lets
``apigateway.amazonaws.com`` invoke it for the request's execute-api ARN (otherwise 500, as API Gateway answers).
What this gateway does not do: SigV4 authorization, throttling, request-body validation (the handler validates
bodies itself).
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from moto.core import DEFAULT_ACCOUNT_ID

from mlops.aws.access import API_PRINCIPAL
from mlops.local.permissions import may_invoke
from mlops.release.deploy import LIVE_ALIAS

API_ID = "local"
STAGE = "local"
# (path below /models/<name>, method): the infer handler's routes, as infra/constructs/serving.py MODEL_ROUTES
MODEL_ROUTES = (("", "GET"), ("predict", "POST"), ("feedback", "POST"),
                ("batch", "POST"), ("batch/{batch_id}", "GET"))  # batch inference (mlops.batch.start)


def execute_api_arn(region: str, account: str, method: str = "*", path: str = "*") -> str:
    """The ARN API Gateway presents as the source of an invocation (``AWS:SourceArn``): for ``path`` ``*``, any
    method and path of the stage."""
    return f"arn:aws:execute-api:{region}:{account}:{API_ID}/{STAGE}/{method}/{path.lstrip('/') or '*'}"


def _json(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def not_found(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    return _json(404, {"error": "NotFound", "message": f"no route for {method} {path}; routes: GET /health, "
                       "GET /models/<name>, POST /models/<name>/predict, POST /models/<name>/feedback, "
                       "POST /models/<name>/batch, GET /models/<name>/batch/<batch_id>"})


def proxy_event(*, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes, resource: str,
                source_ip: str, request_id: str) -> dict[str, Any]:
    """The API Gateway REST (v1) Lambda-proxy event of one request."""
    split = urlsplit(raw_path)
    query = parse_qs(split.query, keep_blank_values=True)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    now = datetime.now(UTC)
    return {
        "resource": resource,
        "path": split.path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        # each model has its own resources (no {name} parameter), as in the CDK app
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local", "resourcePath": resource, "httpMethod": method, "path": f"/{STAGE}{split.path}",
            "stage": STAGE, "requestId": request_id, "extendedRequestId": request_id, "protocol": "HTTP/1.1",
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"), "requestTimeEpoch": int(now.timestamp() * 1000),
            "accountId": "123456789012", "apiId": API_ID, "domainName": multi_headers.get("Host", ["local"])[-1],
            "identity": {"sourceIp": source_ip, "userAgent": multi_headers.get("User-Agent", [""])[-1]},
        },
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


class ApiGateway:
    """Routes requests to the models' infer functions. ``functions`` maps a model to its infer function."""

    def __init__(self, lambda_client: Any, functions: dict[str, str], log: Callable[[str], None],
                 authorize: Callable[[str, str], bool] | None = None) -> None:
        """``authorize(function, source_arn)``: whether API Gateway may invoke the function's `live` alias for that
        execute-api ARN (default: its resource policy in moto, mlops.local.permissions)."""
        self.lam = lambda_client
        self.functions = functions
        self.log = log
        self.authorize = authorize or self._resource_policy_allows
        # GET /status: the page of every model (mlops.release.overview), the local cloud's own; not a route of the API
        self.status_page: Callable[[], str] | None = None

    def _resource_policy_allows(self, function: str, source_arn: str) -> bool:
        return may_invoke(DEFAULT_ACCOUNT_ID, self.lam.meta.region_name, function=function, qualifier=LIVE_ALIAS,
                          service=API_PRINCIPAL, source_arn=source_arn)

    def route(self, method: str, path: str) -> tuple[str, str] | None:
        """(model, resource) of a request, or None when the API has no such route."""
        parts = path.strip("/").split("/")
        if len(parts) not in (2, 3, 4) or parts[0] != "models" or parts[1] not in self.functions:
            return None
        below = "/".join(parts[2:])
        if len(parts) == 4 and parts[2] == "batch":
            below = "batch/{batch_id}"
        if (below, method) not in MODEL_ROUTES:
            return None
        return parts[1], "/" + "/".join(parts)

    def handle(self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes,
               source_ip: str) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(raw_path).path
        if path.rstrip("/") == "/health" and method == "GET":
            return _json(200, {"status": "ok"})
        if path.rstrip("/") == "/status" and method == "GET" and self.status_page is not None:
            return 200, {"Content-Type": "text/html; charset=utf-8"}, self.status_page().encode()
        found = self.route(method, path)
        if found is None:
            return not_found(method, path)
        model, resource = found
        request_id = str(uuid.uuid4())
        region = self.lam.meta.region_name
        if not self.authorize(self.functions[model], execute_api_arn(region, DEFAULT_ACCOUNT_ID, method, path)):
            # API Gateway's answer when its integration's alias is missing or its policy does not let it invoke
            self.log(f"[api] {method} {path}: the resource policy of {self.functions[model]}:{LIVE_ALIAS} does not let "
                     f"{API_PRINCIPAL} invoke it (or the alias does not exist): answering 500, as API Gateway does")
            return _json(500, {"message": "Internal server error"})
        event = proxy_event(method=method, raw_path=raw_path, headers=headers, body=body, resource=resource,
                            source_ip=source_ip, request_id=request_id)
        response = self.lam.invoke(FunctionName=f"{self.functions[model]}:{LIVE_ALIAS}",
                                   Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError") or not isinstance(payload, dict) or "statusCode" not in payload:
            # what API Gateway answers when the integration fails; the function's error is in the server log
            return _json(502, {"message": "Internal server error"})
        # Powertools answers with multiValueHeaders; API Gateway merges both forms
        out_headers = {k: ", ".join(str(v) for v in values) for k, values in
                       (payload.get("multiValueHeaders") or {}).items()}
        out_headers.update({k: str(v) for k, v in (payload.get("headers") or {}).items()})
        out_headers["x-amzn-RequestId"] = request_id
        raw = payload.get("body") or ""
        data = base64.b64decode(raw) if payload.get("isBase64Encoded") else str(raw).encode()
        return int(payload["statusCode"]), out_headers, data


class LambdaService:
    """Lambda's Invoke as API Gateway calls it: inside the service, not through the SDK and the public endpoint. The
    invocation goes through moto's Lambda backend, so the alias's weights (mlops.local.lambda_runtime) and the runtime
    apply as for any other caller; the resource policy is the gateway's to check (``ApiGateway.authorize``). The
    subset of a boto3 Lambda client the gateway uses."""

    def __init__(self, region: str, account: str = DEFAULT_ACCOUNT_ID) -> None:
        self.meta = SimpleNamespace(region_name=region)
        self.account = account

    def invoke(self, *, FunctionName: str, Payload: bytes) -> dict[str, Any]:
        from moto.awslambda.models import lambda_backends

        name, _, qualifier = FunctionName.partition(":")
        headers: dict[str, str] = {}
        answer = lambda_backends[self.account][self.meta.region_name].invoke(
            name, qualifier or None, Payload.decode(), {}, headers)
        data = answer.encode() if isinstance(answer, str) else (answer or b"")
        return {"Payload": io.BytesIO(data), **({"FunctionError": headers["x-amz-function-error"]}
                                                 if "x-amz-function-error" in headers else {})}


def serve(gateway: ApiGateway, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for the gateway (not started); binding raises OSError when the port is taken."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one segment (a buffered wfile, flushed once per request) with Nagle off:
        # written apart, on a kept-alive connection, the body waited for the client's delayed ACK (~40 ms each).
        wbufsize = -1
        disable_nagle_algorithm = True

        def _any(self) -> None:
            started = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, headers, data = gateway.handle(self.command, self.path, list(self.headers.items()), body,
                                                       self.client_address[0])
            except Exception as exc:  # the gateway must answer; say why in the log
                print(f"[api] {self.command} {self.path} failed: {exc!r}", file=sys.stderr, flush=True)
                status, headers, data = _json(500, {"message": "Internal server error"})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            took = (time.perf_counter() - started) * 1000
            gateway.log(f"[api] {self.command} {self.path} -> {status} ({took:.0f} ms)")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are logged once, with their outcome, by _any

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server

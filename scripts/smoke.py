"""Smoke test of a deployed stack's API: SigV4-signed requests (botocore's SigV4Auth, the caller's credentials).

    python scripts/smoke.py --stack mlops-dev [--region us-east-1] [--api-key KEY]

Checks, in order:
- GET /health, signed: 200 (API Gateway answers it itself: the stage is deployed and IAM lets the caller in);
- GET /health, unsigned: 403 (AWS_IAM is enforced);
- GET /models/<model> for every model of the stack's INFER_FUNCTIONS, answered by the model's infer function through
  its `live` alias (which the stack creates on `$LATEST` at deploy time): 200 with its champion, or, on a fresh stack
  before the first model version is registered, 200 with no champion or the handler's 503 "no version deployed"
  (NoModelDeployed), both reported as expected. Anything else fails, API Gateway's own 500 ("Internal server error":
  it could not invoke the alias) with what to look at.

Exit status 0 when every check passes. Uses only boto3/botocore (in the project's virtualenv).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

LIVE_ALIAS = "live"  # mlops.release.deploy.LIVE_ALIAS (kept literal: this script runs without the package installed)
# the handler's 503 before a model's first version (mlops.serving.errors.NoModelDeployed)
NOT_DEPLOYED = "NoModelDeployed"
FRESH = "no model version registered yet (expected on a fresh stack: upload data to train one)"


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    [description] = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}


def request(session: boto3.Session, url: str, *, sign: bool, api_key: str | None) -> tuple[int, str]:
    headers = {"accept": "application/json", **({"x-api-key": api_key} if api_key else {})}
    prepared = AWSRequest(method="GET", url=url, headers=headers)
    if sign:
        credentials = session.get_credentials()
        if credentials is None:
            raise SystemExit("no AWS credentials: configure them (CI: aws-actions/configure-aws-credentials)")
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", session.region_name).add_auth(prepared)
    outgoing = urllib.request.Request(url, headers=dict(prepared.headers.items()), method="GET")  # noqa: S310
    try:
        with urllib.request.urlopen(outgoing, timeout=30) as response:  # noqa: S310 - the stack's https URL
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def json_body(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def model_check(model: str, status: int, body: str) -> tuple[bool, str]:
    """Whether GET /models/<model> answered as a deployed stack does, and what to say about it."""
    answer = json_body(body)
    if status == 200:
        champion = answer.get("champion")
        if isinstance(champion, dict):
            return True, f"200, champion version {champion.get('version')}"
        return True, f"200, {FRESH}"
    if status == 503 and answer.get("error") == NOT_DEPLOYED:
        return True, f"503 {NOT_DEPLOYED}: {FRESH}"
    if status == 500 and answer.get("message") == "Internal server error":
        return False, (f"500 from API Gateway itself: it could not invoke the `{LIVE_ALIAS}` alias of {model}'s infer "
                       "function (is the alias there, and the permission for this API on it? the stack creates both "
                       "at deploy time; `mlops models republish` repairs the permission)")
    return False, f"{status} {body[:300]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="the stack's name, e.g. mlops-dev")
    parser.add_argument("--region", default=None)
    parser.add_argument("--api-key", default=None, help="when the stack requires API keys (usage plan)")
    args = parser.parse_args(argv)
    session = boto3.Session(region_name=args.region)
    outputs = stack_outputs(session.client("cloudformation"), args.stack)
    base = outputs["ApiUrl"].rstrip("/")
    infer_functions: dict[str, str] = json.loads(json.loads(outputs["Environment"])["INFER_FUNCTIONS"])
    failures: list[str] = []

    def check(name: str, ok: bool, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failures.append(name)

    status, body = request(session, f"{base}/health", sign=True, api_key=args.api_key)
    check("GET /health (signed)", status == 200, f"{status} {body[:200]}")
    status, body = request(session, f"{base}/health", sign=False, api_key=args.api_key)
    check("GET /health (unsigned) is refused", status == 403, f"{status} {body[:200]}")
    for model in sorted(infer_functions):
        status, body = request(session, f"{base}/models/{model}", sign=True, api_key=args.api_key)
        check(f"GET /models/{model}", *model_check(model, status, body))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Smoke test of a deployed stack's API: SigV4-signed requests (botocore's SigV4Auth, the caller's credentials).

    python scripts/smoke.py --stack mlops-dev [--region us-east-1] [--api-key KEY]

Checks, in order:
- GET /health, signed: 200 (API Gateway answers it itself: the stage is deployed and IAM lets the caller in);
- GET /health, unsigned: 403 (AWS_IAM is enforced);
- GET /models/<model> for every model of the stack's INFER_FUNCTIONS: 200, or 503 when the model has no version
  deployed yet (the handler's own answer); a model whose `live` alias does not exist yet (never trained) is
  reported and skipped, since API Gateway cannot reach it before register creates the alias.

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

LIVE_ALIAS = "live"  # mlops.deploy.LIVE_ALIAS (kept literal: this script runs without the package installed)


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


def has_live_alias(session: boto3.Session, function_name: str) -> bool:
    client = session.client("lambda")
    try:
        client.get_alias(FunctionName=function_name, Name=LIVE_ALIAS)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


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
    for model, function_name in sorted(infer_functions.items()):
        if not has_live_alias(session, function_name):
            print(f"skip GET /models/{model}: no `{LIVE_ALIAS}` alias yet (no model version registered)")
            continue
        status, body = request(session, f"{base}/models/{model}", sign=True, api_key=args.api_key)
        check(f"GET /models/{model}", status in (200, 503), f"{status} {body[:300]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

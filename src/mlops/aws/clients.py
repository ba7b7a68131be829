"""The one place AWS clients are created. Everything else receives a client (injected), so tests and the
local cloud can point it anywhere; ``AWS_ENDPOINT_URL`` is honoured by botocore itself."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# Standard retry mode with backoff: throttling and 5xx are retried by the SDK before our code sees them.
_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60)


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@cache
def client(service: str) -> Any:
    """A cached client per service; call ``client.cache_clear()`` after changing the endpoint in tests."""
    return boto3.client(service, region_name=region(), config=_CONFIG)

"""What a local Lambda invocation hands its handler (the context: the attributes of the real one that Powertools and
the handlers read) and the answer it gets back when the handler raises. Its own module, so that a worker process
(mlops.local.worker) has them without importing moto."""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LambdaContext:
    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_s: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""
    _deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def error_answer(exc: BaseException) -> dict[str, Any]:
    """Lambda's answer for an invocation whose handler raised ``exc``."""
    return {"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": traceback.format_exception(exc)}

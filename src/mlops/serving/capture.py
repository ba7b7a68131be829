"""The capture of every prediction and feedback: JSON lines to a Firehose stream, which drift checks and rollouts
read. Best effort by design: a prediction already made is answered whether or not its capture gets through."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlops.core.errors import MlopsError


class CaptureIncomplete(MlopsError):
    """Firehose kept refusing some capture records: the predictions were answered, their capture is lost."""


class CaptureSink:
    """Every prediction and feedback, as JSON lines to a Firehose stream. Never fails the request."""

    def __init__(self, firehose: Any, stream: str | None, on_error: Callable[[Exception], None]) -> None:
        self.firehose = firehose
        self.stream = stream
        self.on_error = on_error

    def put(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not self.stream or not records:
            return
        try:
            for start in range(0, len(records), 500):  # PutRecordBatch takes at most 500 records
                batch = [{"Data": (json.dumps(r, default=str) + "\n").encode()} for r in records[start:start + 500]]
                self._put_batch(batch)
        except Exception as exc:  # capture is best effort by design: the prediction has been made
            self.on_error(exc)

    def _put_batch(self, batch: list[dict[str, bytes]], attempts: int = 3) -> None:
        # PutRecordBatch succeeds as a call while refusing some records (throttled, one by one): those are sent
        # again, and what is still refused after that is reported, never dropped silently
        for _attempt in range(attempts):
            answer = self.firehose.put_record_batch(DeliveryStreamName=self.stream, Records=batch)
            if not answer.get("FailedPutCount"):
                return
            batch = [record for record, result in zip(batch, answer["RequestResponses"], strict=True)
                     if result.get("ErrorCode")]
        raise CaptureIncomplete(f"Firehose refused {len(batch)} capture record(s) after {attempts} attempts")

"""Firehose delivery in buffers, as on AWS.

A delivery stream writes to S3 once per buffer (``BufferingHints``: every IntervalInSeconds or SizeInMBs,
whichever comes first); moto writes one object per ``PutRecord(Batch)`` call. With one object per
prediction the captures bucket grows by thousands of objects in minutes, and every reader of it (the
rollout's join of feedback, drift_check's window) slows down with it. Here records are buffered per
stream and written as one object per interval, like Firehose does; the interval is shorter than AWS's
60 s minimum so that a canary decision or a drift check sees its traffic within a second or two.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from moto.firehose.models import FirehoseBackend, mock_random

_ORIGINAL = FirehoseBackend.put_s3_records


class BufferedFirehose:
    def __init__(self, interval_s: float = 1.0, max_bytes: int = 1024 * 1024,
                 after_flush: Callable[[], None] | None = None) -> None:
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self.after_flush = after_flush  # e.g. save the state: the objects were written behind the API's back
        self._buffers: dict[tuple[int, str, str], tuple[FirehoseBackend, dict[str, Any], list[dict[str, bytes]]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="firehose-buffers", daemon=True)

    def install(self) -> None:
        buffered = self

        def put_s3_records(backend: FirehoseBackend, delivery_stream_name: str, version_id: str,
                           s3_destination: dict[str, Any], records: list[dict[str, bytes]]) -> list[dict[str, str]]:
            return buffered.add(backend, delivery_stream_name, version_id, s3_destination, records)

        FirehoseBackend.put_s3_records = put_s3_records  # type: ignore[method-assign,assignment]
        self._thread.start()

    def uninstall(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.flush()
        FirehoseBackend.put_s3_records = _ORIGINAL  # type: ignore[method-assign]

    def add(self, backend: FirehoseBackend, stream: str, version_id: str, destination: dict[str, Any],
            records: list[dict[str, bytes]]) -> list[dict[str, str]]:
        with self._lock:
            key = (id(backend), stream, version_id)
            _backend, _destination, pending = self._buffers.setdefault(key, (backend, destination, []))
            pending.extend(records)
            full = sum(len(r["Data"]) for r in pending) >= self.max_bytes
        if full:
            self.flush()
        return [{"RecordId": str(mock_random.uuid4())} for _ in records]

    def flush(self) -> None:
        with self._lock:
            buffers, self._buffers = self._buffers, {}
        for (_id, stream, version_id), (backend, destination, records) in buffers.items():
            _ORIGINAL(backend, stream, version_id, destination, records)  # one object for the whole buffer
        if buffers and self.after_flush:
            self.after_flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

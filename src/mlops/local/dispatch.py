"""Asynchronous delivery of S3 notifications to Lambda, as on AWS.

moto invokes a bucket's notification target inside the request that wrote the object. Embedded, that
nests on one thread and the runtime's re-entrant lock lets it through; behind moto's HTTP server the
write arrives on another thread, so a handler that writes an object which triggers another function
(ingest's curated manifest starts train_trigger) would wait for itself. AWS delivers these events
asynchronously anyway: here they go to a queue that one worker drains in order, so the upload that
caused them is answered at once, exactly like ``aws s3 cp`` against S3.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

from moto.s3 import notifications

from mlops.local.permissions import deliver_s3_event


class AsyncNotifications:
    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._drain, name="s3-notifications", daemon=True)
        self.muted = False  # while state is restored: those objects were already delivered before
        self._previous: Any = None

    def install(self) -> None:
        def _enqueue(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
            if not self.muted:
                self._queue.put((account_id, event_body, fn_arn, region_name))

        self._previous = notifications._invoke_awslambda
        notifications._invoke_awslambda = _enqueue
        self._worker.start()

    def uninstall(self, timeout: float = 5.0) -> None:
        notifications._invoke_awslambda = self._previous
        self._queue.put(None)
        self._worker.join(timeout)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                # moto's own delivery (it swallows the target's errors, as AWS would), if the function's resource
                # policy lets S3 invoke it
                deliver_s3_event(*item)
            except Exception as exc:  # one bad event must not stop the deliveries after it
                print(f"[s3] notification failed: {exc!r}", file=sys.stderr, flush=True)
            finally:
                self._queue.task_done()

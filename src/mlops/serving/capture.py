"""The capture of every prediction and feedback, off the request path: one JSON line per record on the function's
stdout, marked by ``MARKER``. Lambda sends its stdout to the function's log group; a subscription filter on that
group (``FILTER_PATTERN``) hands the marked lines to the capture stream, which decompresses them, keeps each log
event's message and writes them as JSON lines under captures/YYYY/MM/DD/HH/ (infra/constructs/serving.py; the local
cloud plays the same path, mlops.local.metrics and mlops.local.firehose). Rollout and drift_check read those objects.

Best effort by design, as before: a prediction already made is answered whether or not its capture gets through, and
nothing here waits for the network. What can be lost, and when: docs/capture.md.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TextIO

from mlops.core.errors import MlopsError

# The field that tells a capture line from the function's other output (its logs, its EMF metrics): the subscription
# filter passes only lines carrying it, so nothing else reaches the captures. Its value is the records' format.
MARKER: Final = "mlops_capture"
FORMAT: Final = 1
FILTER_PATTERN: Final = f"{{ $.{MARKER} = {FORMAT} }}"  # CloudWatch Logs' JSON filter pattern syntax
SUBSCRIPTION_FILTER: Final = "captures"  # the filter's name on each subscribed log group
# Where the capture stream writes records it could not decompress or process: outside captures/, which the readers
# list, so that one unreadable record never stops a rollout or a drift check
FAILURES_PREFIX: Final = "capture-failures/"
# What the capture stream makes of a subscription's delivery (gzipped CloudWatch Logs documents): decompressed, each log
# event's message kept, one per line. (Firehose processor type, its parameters), as the stack and the local cloud
# configure the stream
STREAM_PROCESSORS: Final[tuple[tuple[str, dict[str, str]], ...]] = (("Decompression", {"CompressionFormat": "GZIP"}),
                            ("CloudWatchLogProcessing", {"DataMessageExtraction": "true"}),
                            ("AppendDelimiterToRecord", {}))
# CloudWatch Logs' largest event is 256 KiB, of which it counts 26 bytes per event as overhead; Lambda cuts a longer
# line, and a cut line is not JSON: such a record is reported instead of written
MAX_LINE_BYTES: Final = 256 * 1024 - 26


class CaptureRecordTooLarge(MlopsError):
    """A capture record longer than one log event can hold: the prediction was answered, its capture is lost."""


class CaptureSink:
    """Every prediction and feedback as a marked JSON line on stdout. Never fails the request.

    ``sample_rate``: the share of the records put with ``sampling=True`` that are captured (the model's
    ``capture_sample_rate``); the others (feedback, predictions of a running canary) are always captured. ``out``
    gives the stream at write time: the process's stdout, which Lambda (or the local runtime) routes to the function's
    log group. ``enabled`` is off for a function deployed without a capture stream: nothing would deliver its lines.
    """

    def __init__(self, *, enabled: bool, on_error: Callable[[Exception], None], sample_rate: float = 1.0,
                 out: Callable[[], TextIO] = lambda: sys.stdout, rng: random.Random | None = None) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.enabled = enabled
        self.on_error = on_error
        self.sample_rate = sample_rate
        self.out = out
        self.rng = rng or random.Random()  # noqa: S311 - sampling, not cryptography

    @classmethod
    def from_environment(cls, model: str, on_error: Callable[[Exception], None]) -> CaptureSink:
        """Capture is on when the function is deployed with a capture stream (CAPTURE_STREAM names the stream its log
        group is subscribed to); the model's rate is in CAPTURE_SAMPLE_RATE (mlops.aws.platform.serving_env)."""
        import os

        from mlops.aws.environment import CAPTURE_SAMPLE_RATE, CAPTURE_STREAM
        from mlops.core.errors import ConfigError

        if not os.environ.get(CAPTURE_STREAM):
            return cls(enabled=False, on_error=on_error)
        given = os.environ.get(CAPTURE_SAMPLE_RATE) or "1.0"
        try:
            return cls(enabled=True, on_error=on_error, sample_rate=float(given))
        except ValueError:  # capture never fails the function: every prediction is captured instead
            on_error(ConfigError(f"{CAPTURE_SAMPLE_RATE}={given!r} for {model}: expected a number more than 0 and at "
                                 "most 1 (the model's capture_sample_rate in mlops.toml); capturing every prediction"))
            return cls(enabled=True, on_error=on_error)

    def put(self, records: Sequence[Mapping[str, Any]], *, sampling: bool = False) -> None:
        """Capture ``records``; with ``sampling``, each one with probability ``sample_rate``."""
        if not self.enabled or not records:
            return
        try:
            if sampling and self.sample_rate < 1.0:
                records = [r for r in records if self.rng.random() < self.sample_rate]
            lines = []
            for record in records:
                line = json.dumps({MARKER: FORMAT, **record}, default=str)
                if len(line) + 1 > MAX_LINE_BYTES:  # ASCII: json.dumps escapes everything else
                    self.on_error(CaptureRecordTooLarge(
                        f"a {record.get('type', 'capture')} record of {len(line)} bytes exceeds a log event's "
                        f"{MAX_LINE_BYTES}; it is not captured"))
                    continue
                lines.append(line + "\n")
            if lines:
                out = self.out()
                out.write("".join(lines))  # one write: a request's lines are never interleaved with other output
                out.flush()  # in the log before the answer leaves: a later crash of the environment cannot lose it
        except Exception as exc:  # capture is best effort by design: the prediction has been made
            self.on_error(exc)

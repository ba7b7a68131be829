"""Firehose delivery as on AWS: in buffers, through the stream's record processors.

A delivery stream writes to S3 once per buffer (``BufferingHints``: every IntervalInSeconds or SizeInMBs,
whichever comes first); moto writes one object per ``PutRecord(Batch)`` call. With one object per
prediction the captures bucket grows by thousands of objects in minutes, and every reader of it (the
rollout's join of feedback, drift_check's window) slows down with it. Here records are buffered per
stream and written as one object per interval, like Firehose does; the interval is shorter than AWS's
60 s minimum so that a canary decision or a drift check sees its traffic within a second or two
(``max_bytes=0`` writes each delivery at once, for tests that read right after a flush).

moto also ignores the stream's ``ProcessingConfiguration``. The capture stream receives CloudWatch Logs'
subscription deliveries (mlops.local.metrics.LogSubscriptions): gzipped ``DATA_MESSAGE`` documents, which it
decompresses (``Decompression``), reduces to their log events' messages (``CloudWatchLogProcessing`` with
``DataMessageExtraction``) and ends with a newline each (``AppendDelimiterToRecord``). Those three are played
here as AWS documents them: a record that cannot be decompressed or processed goes under the destination's
``ErrorOutputPrefix`` (``decompression-failed/``, ``processing-failed/``), a ``CONTROL_MESSAGE`` is dropped,
and a stream that decompresses refuses ``PutRecord(Batch)`` from anyone but CloudWatch Logs
(``InvalidSourceException``).
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import zlib
from collections.abc import Callable
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.firehose.models import FirehoseBackend, mock_random

_ORIGINAL = FirehoseBackend.put_s3_records
_ORIGINAL_PUT_RECORD_BATCH = FirehoseBackend.put_record_batch
PROCESSORS = ("Decompression", "CloudWatchLogProcessing", "AppendDelimiterToRecord")


class InvalidSourceException(JsonRESTError):
    """What Firehose answers a PutRecord(Batch) to a stream that decompresses CloudWatch Logs."""

    code = 400

    def __init__(self, stream: str) -> None:
        super().__init__("InvalidSourceException", f"Only requests from CloudWatch Logs are supported when "
                                                   f"CloudWatch Logs decompression is enabled (stream {stream})")


class ProcessingFailed(Exception):
    def __init__(self, output_type: str, reason: str) -> None:
        super().__init__(reason)
        self.output_type = output_type  # !{firehose:error-output-type}


def _processors(destination: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    config = destination.get("ProcessingConfiguration") or {}
    if not config.get("Enabled"):
        return []
    out = []
    for processor in config.get("Processors", []):
        kind = processor["Type"]
        if kind not in PROCESSORS:
            raise NotImplementedError(f"the local Firehose plays the {', '.join(PROCESSORS)} processors, not {kind}")
        out.append((kind, {p["ParameterName"]: p["ParameterValue"] for p in processor.get("Parameters", [])}))
    return out


def decompresses(destination: dict[str, Any]) -> bool:
    return any(kind == "Decompression" for kind, _ in _processors(destination))


def process(destination: dict[str, Any], data: bytes) -> list[bytes]:
    """What the destination's processors make of one record (none, one or many records), or ProcessingFailed."""
    records = [data]
    for kind, parameters in _processors(destination):
        if kind == "Decompression":
            if parameters.get("CompressionFormat", "GZIP") != "GZIP":
                raise NotImplementedError(f"the local Firehose decompresses GZIP only, not {parameters}")
            try:
                records = [gzip.decompress(r) for r in records]
            except (OSError, EOFError, zlib.error) as exc:
                raise ProcessingFailed("decompression-failed", f"not gzip: {exc}") from exc
        elif kind == "CloudWatchLogProcessing" and parameters.get("DataMessageExtraction") == "true":
            extracted: list[bytes] = []
            for record in records:
                try:
                    document = json.loads(record)
                    if document["messageType"] == "CONTROL_MESSAGE":  # CloudWatch Logs' reachability check
                        continue
                    extracted.extend(event["message"].encode() for event in document["logEvents"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ProcessingFailed("processing-failed", f"not a CloudWatch Logs message: {exc!r}") from exc
            records = extracted
        elif kind == "AppendDelimiterToRecord":
            delimiter = parameters.get("Delimiter", "\\n").encode().decode("unicode_escape").encode()
            records = [r + delimiter for r in records]
    return records


class BufferedFirehose:
    def __init__(self, interval_s: float = 1.0, max_bytes: int = 1024 * 1024,
                 after_flush: Callable[[], None] | None = None) -> None:
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self.after_flush = after_flush  # e.g. save the state: the objects were written behind the API's back
        # (backend, stream, version, prefix) -> the destination and the records waiting to be written under the prefix
        self._buffers: dict[tuple[int, str, str, str], tuple[FirehoseBackend, dict[str, Any], list[dict[str, bytes]]]] \
            = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="firehose-buffers", daemon=True)

    def install(self) -> None:
        buffered = self

        def put_s3_records(backend: FirehoseBackend, delivery_stream_name: str, version_id: str,
                           s3_destination: dict[str, Any], records: list[dict[str, bytes]]) -> list[dict[str, str]]:
            return buffered.add(backend, delivery_stream_name, version_id, s3_destination, records)

        def put_record_batch(backend: FirehoseBackend, delivery_stream_name: str,
                             records: list[dict[str, bytes]]) -> dict[str, Any]:
            stream = backend.delivery_streams.get(delivery_stream_name)
            if stream is not None and any(decompresses(d.get("ExtendedS3") or d.get("S3") or {})
                                          for d in stream.destinations):
                raise InvalidSourceException(delivery_stream_name)
            return _ORIGINAL_PUT_RECORD_BATCH(backend, delivery_stream_name, records)

        FirehoseBackend.put_s3_records = put_s3_records  # type: ignore[method-assign,assignment]
        FirehoseBackend.put_record_batch = put_record_batch  # type: ignore[method-assign,assignment]
        self._thread.start()

    def uninstall(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.flush()
        FirehoseBackend.put_s3_records = _ORIGINAL  # type: ignore[method-assign]
        FirehoseBackend.put_record_batch = _ORIGINAL_PUT_RECORD_BATCH  # type: ignore[method-assign]

    def add(self, backend: FirehoseBackend, stream: str, version_id: str, destination: dict[str, Any],
            records: list[dict[str, bytes]]) -> list[dict[str, str]]:
        by_prefix: dict[str, list[dict[str, bytes]]] = {}
        for record in records:
            try:
                processed = process(destination, record["Data"])
                by_prefix.setdefault(destination.get("Prefix", ""), []).extend({"Data": d} for d in processed)
            except ProcessingFailed as failed:
                # kept as received (base64), beside its reason, where the readers of the destination's prefix never
                # look: the fields of Firehose's own error records
                error = {"rawData": base64.b64encode(record["Data"]).decode(), "errorCode": failed.output_type,
                         "errorMessage": str(failed)}
                prefix = f"{destination.get('ErrorOutputPrefix', '')}{failed.output_type}/"
                by_prefix.setdefault(prefix, []).append({"Data": json.dumps(error).encode() + b"\n"})
        with self._lock:
            full = False
            for prefix, processed_records in by_prefix.items():
                key = (id(backend), stream, version_id, prefix)
                _backend, _destination, pending = self._buffers.setdefault(
                    key, (backend, {**destination, "Prefix": prefix}, []))
                pending.extend(processed_records)
                full = full or sum(len(r["Data"]) for r in pending) >= self.max_bytes
        if full:
            self.flush()
        return [{"RecordId": str(mock_random.uuid4())} for _ in records]

    def flush(self) -> None:
        with self._lock:
            buffers, self._buffers = self._buffers, {}
        written = False
        for (_id, stream, version_id, _prefix), (backend, destination, records) in buffers.items():
            if records:  # a delivery whose every event was a control message writes nothing
                _ORIGINAL(backend, stream, version_id, destination, records)  # one object for the whole buffer
                written = True
        if written and self.after_flush:
            self.after_flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

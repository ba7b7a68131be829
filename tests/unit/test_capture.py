"""The capture sink: marked JSON lines on the function's stdout, nothing on the network. What it writes, what it
samples (and what it never samples), and that it never fails the request."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from mlops.serving.capture import FILTER_PATTERN, MARKER, MAX_LINE_BYTES, CaptureRecordTooLarge, CaptureSink


def _sink(out: io.StringIO, errors: list[Exception], rate: float = 1.0, seed: int = 7) -> CaptureSink:
    return CaptureSink(enabled=True, on_error=errors.append, sample_rate=rate, out=lambda: out,
                       rng=random.Random(seed))


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_record_is_one_marked_json_line_and_nothing_is_lost_of_it() -> None:
    out, errors = io.StringIO(), []
    records = [{"type": "prediction", "model": "m", "request_id": "r1", "features": {"a\nb": "x\ny"}},
               {"type": "feedback", "model": "m", "request_id": "r1", "label": "1", "reward": None}]
    _sink(out, errors).put(records)
    assert errors == []
    text = out.getvalue()
    assert text.count("\n") == 2  # one line each: newlines inside values are escaped
    assert text.endswith("\n")
    assert _lines(out) == [{MARKER: 1, **record} for record in records]
    assert FILTER_PATTERN == "{ $.mlops_capture = 1 }"


def test_sampling_keeps_about_the_rate_and_only_what_may_be_sampled() -> None:
    records = [{"type": "prediction", "request_id": str(i)} for i in range(4000)]
    out, errors = io.StringIO(), []
    sink = _sink(out, errors, rate=0.25)
    sink.put(records, sampling=True)
    kept = len(_lines(out))
    assert 800 < kept < 1200  # binomial(4000, 0.25): 1000 +- 27
    out.truncate(0)
    out.seek(0)
    sink.put(records)  # a canary's predictions, feedback: never sampled
    assert len(_lines(out)) == 4000
    out.truncate(0)
    out.seek(0)
    _sink(out, errors, rate=1.0).put(records, sampling=True)
    assert len(_lines(out)) == 4000
    assert errors == []


def test_a_sink_without_a_capture_stream_writes_nothing() -> None:
    out = io.StringIO()
    CaptureSink(enabled=False, on_error=lambda exc: None, out=lambda: out).put([{"type": "prediction"}])
    assert out.getvalue() == ""


def test_a_record_too_long_for_a_log_event_is_reported_not_cut() -> None:
    """Lambda cuts a log line longer than an event holds, and a cut line is not JSON: the rollout and drift_check
    would fail on it. Such a record is reported; the others of the request are captured."""
    out, errors = io.StringIO(), []
    huge = {"type": "prediction", "request_id": "big", "features": {"text": "x" * MAX_LINE_BYTES}}
    _sink(out, errors).put([{"type": "prediction", "request_id": "small"}, huge])
    assert [line["request_id"] for line in _lines(out)] == ["small"]
    [error] = errors
    assert isinstance(error, CaptureRecordTooLarge)
    assert "exceeds a log event" in str(error)


def test_a_broken_stdout_never_fails_the_request() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError("the log pipe is gone")

    errors: list[Exception] = []
    broken = Broken()
    CaptureSink(enabled=True, on_error=errors.append, out=lambda: broken).put([{"type": "feedback"}])
    assert [type(e) for e in errors] == [BrokenPipeError]


def test_capture_is_on_with_a_capture_stream_at_the_models_declared_rate(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.aws import platform
    from mlops.core.config import load_config
    from mlops.core.errors import ConfigError

    config = tmp_path / "mlops.toml"
    config.write_text('[[model]]\nname = "busy"\ntarget = "y"\ncapture_sample_rate = 0.05\n'
                      '[[model]]\nname = "quiet"\ntarget = "y"\n')
    declared = load_config(config)
    monkeypatch.delenv("CAPTURE_STREAM", raising=False)
    assert CaptureSink.from_environment("busy", lambda exc: None).enabled is False
    monkeypatch.setenv("CAPTURE_STREAM", "mlops-captures")
    sinks = {}
    for model in declared.models:  # each function's environment, as the CDK app and the local cloud set it
        for variable, value in platform.serving_env(model.name, model.capture_sample_rate).items():
            monkeypatch.setenv(variable, value)
        sinks[model.name] = CaptureSink.from_environment(model.name, lambda exc: None)
    assert (sinks["busy"].enabled, sinks["busy"].sample_rate) == (True, 0.05)
    assert (sinks["quiet"].enabled, sinks["quiet"].sample_rate) == (True, 1.0)
    monkeypatch.setenv("CAPTURE_SAMPLE_RATE", "lots")
    reported: list[Exception] = []
    fallback = CaptureSink.from_environment("busy", reported.append)  # the function still starts, and says why
    assert (fallback.enabled, fallback.sample_rate) == (True, 1.0)
    assert [type(e) for e in reported] == [ConfigError]
    assert "CAPTURE_SAMPLE_RATE='lots' for busy: expected a number" in str(reported[0])

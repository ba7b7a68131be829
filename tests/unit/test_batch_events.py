"""The batch events and request in events/ are what the batch function and the API route parse, and the run's
locations follow from the request as docs/batch.md says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.batch.run import skip_reason
from mlops.batch.start import BatchEvent, BatchRequest, ScoreStep, split_prefix
from mlops.serving.errors import InvalidInput

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_the_sample_score_event_is_a_score_step() -> None:
    step = BatchEvent.model_validate({"event": json.loads((EVENTS / "batch_score.json").read_text())}).event
    assert isinstance(step, ScoreStep)
    assert step.batch.manifest == step.batch.output + "manifest.json"
    assert step.batch.input + step.object.relative == f"s3://{step.batch.input[5:].split('/')[0]}/{step.object.key}"


def test_the_sample_request_is_a_batch_request() -> None:
    request = BatchRequest.model_validate(json.loads((EVENTS / "batch_request.json").read_text()))
    assert request.version == 3
    assert split_prefix(request.input, "input")[1].endswith("/")


@pytest.mark.parametrize(("uri", "message"), [
    ("mlops-data/batch/", "expected s3://bucket/prefix/"),
    ("s3:///batch/", "expected s3://bucket/prefix/"),
    ("s3://mlops-data/batch/file.csv", "is not a prefix; end it with '/'"),
])
def test_a_location_that_is_not_a_prefix_is_refused_naming_the_field(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as raised:
        split_prefix(uri, "output")
    assert raised.value.field == "output"


@pytest.mark.parametrize(("key", "skipped"), [
    ("in/a.csv", None), ("in/b.PARQUET", None), ("in/c.pq", None),
    ("in/d.csv.gz", "compressed"), ("in/e.json", "not CSV or Parquet"), ("in/README", "not CSV or Parquet"),
])
def test_objects_are_scored_or_skipped_by_their_name(key: str, skipped: str | None) -> None:
    reason = skip_reason(key)
    assert (reason is None) if skipped is None else (skipped in str(reason))

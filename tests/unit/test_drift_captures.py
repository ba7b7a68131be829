"""Which capture objects a drift window reads: Firehose keys an object by the arrival of its oldest record, which may
be a whole buffer (up to 15 minutes) older than the object's other records."""

from __future__ import annotations

from datetime import UTC, datetime

from mlops.drift.check import hour_prefixes, key_range


def test_a_window_starting_early_in_an_hour_reads_the_hour_before_it() -> None:
    # records of 10:05 can be in an object keyed 09:55, whose buffer opened then
    start, end = datetime(2026, 1, 1, 10, 5, tzinfo=UTC), datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert hour_prefixes(start, end) == ["captures/2026/01/01/09/", "captures/2026/01/01/10/",
                                         "captures/2026/01/01/11/"]


def test_the_key_range_holds_exactly_those_partitions() -> None:
    after, before = key_range(datetime(2026, 1, 1, 10, 5, tzinfo=UTC), datetime(2026, 1, 1, 11, 0, tzinfo=UTC))
    inside = ["captures/2026/01/01/09/mlops-captures-1-2026-01-01-09-55-00-a",
              "captures/2026/01/01/11/mlops-captures-1-2026-01-01-11-14-59-~"]
    outside = ["captures/2026/01/01/08/mlops-captures-1-2026-01-01-08-59-59-z",
               "captures/2026/01/01/12/mlops-captures-1-2026-01-01-12-00-00-0"]
    assert all(after < key < before for key in inside)
    assert not any(after < key < before for key in outside)

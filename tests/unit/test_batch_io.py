"""The chunked readers of batch inference on an S3 object (moto): bounded chunks, every row once, a chunk read
again from its first byte after a failure."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops.batch.chunks import STREAM_BYTES, CsvReader, ParquetReader

BUCKET = "batch-io-tests"


@pytest.fixture
def s3() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _csv(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "note", "x"])
    for i in range(rows):
        # a quoted field with a line break inside: one row, two lines
        writer.writerow([i, "line one\nline two" if i % 1000 == 7 else f"n{i}" + "-" * 100, i * 0.5])
    return out.getvalue().encode()


def test_a_large_csv_is_read_in_bounded_chunks_every_row_once(s3: Any) -> None:
    data = _csv(25_003)
    assert len(data) > 2 * STREAM_BYTES  # more than one read of the stream
    s3.put_object(Bucket=BUCKET, Key="big.csv", Body=data)
    reader = CsvReader(s3, BUCKET, "big.csv", chunk_rows=1_000)
    assert reader.columns == ["id", "note", "x"]
    sizes, ids = [], []
    while (chunk := reader.next_chunk()) is not None:
        reader.commit()
        sizes.append(chunk.size)
        ids += [int(r["id"]) for r in chunk.records]
        assert chunk.numbers == list(range(chunk.first_row, chunk.first_row + chunk.size))
    assert sizes == [1_000] * 25 + [3]
    assert ids == list(range(25_003))


def test_a_failed_chunk_is_read_again_from_its_first_row(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="retry.csv", Body=_csv(2_500))
    reader = CsvReader(s3, BUCKET, "retry.csv", chunk_rows=1_000)
    first = reader.next_chunk()
    reader.commit()
    second = reader.next_chunk()  # read, then "failed": not committed
    reader.restart()
    again = reader.next_chunk()
    reader.commit()
    third = reader.next_chunk()
    assert first is not None
    assert second is not None
    assert again is not None
    assert third is not None
    assert again.records == second.records
    assert (again.first_row, third.first_row, third.size) == (1_001, 2_001, 500)


def test_rows_with_the_wrong_field_count_are_counted_not_dropped(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="bad.csv", Body=b"a,b\n1,2\n3\n\n4,5,6\n7,8")
    reader = CsvReader(s3, BUCKET, "bad.csv", chunk_rows=10)
    chunk = reader.next_chunk()
    assert chunk is not None
    assert [r["a"] for r in chunk.records] == ["1", "7"]
    assert chunk.numbers == [1, 4]
    assert chunk.bad == {2: "the row has 1 fields, the header has 2", 3: "the row has 3 fields, the header has 2"}


def test_parquet_is_read_one_row_group_at_a_time_through_ranged_gets(s3: Any) -> None:
    table = pa.table({"x": [float(i) for i in range(40_000)], "y": [f"v{i}" for i in range(40_000)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=10_000)
    data = buffer.getvalue()
    s3.put_object(Bucket=BUCKET, Key="t.parquet", Body=data)
    fetched: list[int] = []

    def count(**kwargs: Any) -> None:
        fetched.append(int(kwargs["parsed"]["ContentLength"]))

    s3.meta.events.register("after-call.s3.GetObject", count)
    reader = ParquetReader(s3, BUCKET, "t.parquet", len(data))
    sizes = []
    while (chunk := reader.next_chunk()) is not None:
        reader.commit()
        sizes.append(chunk.size)
    assert sizes == [10_000] * 4
    assert max(fetched) < len(data) / 3  # never the whole object at once

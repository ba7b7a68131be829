"""Reading a file chunk by chunk gives what reading it whole gives: the same rejections, the same quarantined lines
and reasons, the same good rows, whatever the chunk size. Chunks here are a few bytes, so every boundary a real
file can put between two chunks (inside a quoted value, a CRLF, a blank line, a duplicate of an earlier chunk's
row) is crossed."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mlops.core.errors import FileRejected
from mlops.data import row_hashes
from mlops.data.blocks import RecordBlocks
from mlops.data.reading import CsvReader, read_csv
from mlops.data.schema import LINE, REASON, DataContract
from mlops.data.seen_rows import SeenRows
from mlops.data.validation import ChunkedValidation, validate

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_csvs"
EXPECTED: dict[str, dict] = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
CONTRACT = DataContract.from_json((CORPUS / "contract.json").read_text(encoding="utf-8"))
MAX_BAD = 0.5
MAX_BYTES = 1 << 20


def _whole(data: bytes, contract: DataContract, max_bytes: int = MAX_BYTES) -> tuple:
    try:
        result = validate(read_csv(data, max_bytes=max_bytes), contract, max_bad_row_fraction=MAX_BAD)
    except FileRejected as exc:
        return ("rejected", exc.code)
    return _shape(result.good, result.bad)


def _chunked(data: bytes, contract: DataContract, chunk_bytes: int, max_bytes: int = MAX_BYTES) -> tuple:
    reader = CsvReader(io.BytesIO(data), max_bytes=max_bytes, chunk_bytes=chunk_bytes)
    validation = ChunkedValidation(contract, max_bad_row_fraction=MAX_BAD)
    goods, bads = [], []
    try:
        for frame, hashes in reader.hashed_chunks():  # as ingest reads: plain lines hashed from their bytes
            result = validation.chunk(frame, hashes)
            goods.append(result.good)
            bads.append(result.bad)
        reader.finish()
        validation.finish()
    except FileRejected as exc:
        return ("rejected", exc.code)
    return _shape(pd.concat(goods, ignore_index=True), pd.concat(bads, ignore_index=True))


def _shape(good: pd.DataFrame, bad: pd.DataFrame) -> tuple:
    reasons = dict(zip(bad[LINE].tolist(), bad[REASON].tolist(), strict=True))
    verbatim = bad.drop(columns=[LINE, REASON]).astype(str).values.tolist()
    return ("curated", reasons, verbatim, good.astype(str).values.tolist())


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 300])
@pytest.mark.parametrize("name", sorted(n for n, case in EXPECTED.items() if "max_bytes" not in case))
def test_every_corpus_file_gets_the_same_outcome_in_chunks(name: str, chunk_bytes: int) -> None:
    data = (CORPUS / name).read_bytes()
    assert _chunked(data, CONTRACT, chunk_bytes) == _whole(data, CONTRACT)


def _random_file(rng: random.Random, rows: int) -> bytes:
    """Rows of the corpus contract's columns with every kind of damage and every way of writing a record."""
    cities = ["Paris", "Lyon", "NA", "", '"Saint, Denis"', '"Multi\nline"', '"say ""hi"""', "=1+2"]
    newline = rng.choice(["\n", "\r\n"])
    lines = ["age,income,city,member,target"]
    pool: list[str] = []
    for _ in range(rows):
        roll = rng.random()
        if pool and roll < 0.1:
            lines.append(rng.choice(pool))  # a duplicate, often of a row chunks earlier
            continue
        if roll < 0.13:
            lines.append("")  # a blank line
            continue
        if roll < 0.16:
            lines.append("1,2")  # ragged
            continue
        age = rng.choice([str(rng.randint(0, 90)), "abc", "-3", "", " 42 ", "1e400", "4.5"])
        income = rng.choice([f"{rng.uniform(0, 1e5):.2f}", "n/a", "oops", "", "1,5"])
        row = ",".join([age, income, rng.choice(cities), rng.choice(["yes", "no", "maybe", "1"]),
                        rng.choice(["0", "1", "", "2"])])
        pool.append(row)
        lines.append(row)
    return newline.join(lines).encode() + newline.encode() * rng.randint(0, 1)


@pytest.mark.parametrize("seed", range(8))
def test_random_files_get_the_same_outcome_in_chunks(seed: int) -> None:
    rng = random.Random(seed)
    data = _random_file(rng, rng.randint(20, 400))
    whole = _whole(data, CONTRACT)
    for chunk_bytes in (29, 256, 4096):
        assert _chunked(data, CONTRACT, chunk_bytes) == whole, chunk_bytes


def test_blocks_end_on_record_boundaries_and_keep_every_byte() -> None:
    data = b'a,b\n1,"x\ny"\n2,"q""\n"\r\n3,z\r4,w\n'
    for chunk_bytes in range(1, len(data) + 2):
        blocks = list(RecordBlocks(io.BytesIO(data), chunk_bytes=chunk_bytes))
        assert b"".join(b.data for b in blocks) == data
        # each block starts on a record: its first line is the file's line at its offset
        for block in blocks:
            assert block.data.count(b'"') % 2 == 0, (chunk_bytes, block)


def test_a_stray_quote_mid_field_does_not_hold_the_rest_of_the_file_in_one_block() -> None:
    data = b"height,name\n" + b'5\'10",bob\n' + b"".join(b"%d,x\n" % i for i in range(2000))
    blocks = list(RecordBlocks(io.BytesIO(data), chunk_bytes=256))
    assert b"".join(b.data for b in blocks) == data
    assert max(len(b.data) for b in blocks) < 4 * 256
    assert _chunked(data, DataContract.model_validate({"target": "name", "columns": [
        {"name": "height", "kind": "categorical", "categories": None},
        {"name": "name", "kind": "categorical", "categories": None}]}), 256)[0] == "curated"


def test_a_quote_that_never_closes_is_refused_with_its_line_not_read_into_memory() -> None:
    data = b"a,b\n1,2\n3,\"never closed\n" + b"4,5\n" * 500_000
    with pytest.raises(FileRejected) as caught:
        list(CsvReader(io.BytesIO(data), max_bytes=1 << 30, chunk_bytes=512).chunks())
    assert caught.value.code == "unparseable"
    assert "line 3" in caught.value.message


def test_an_encoding_error_deep_in_the_file_names_its_line_and_offset() -> None:
    data = b"a,b\n" + b"1,2\n" * 1000 + b"3,caf\xe9\n" + b"4,5\n" * 10
    with pytest.raises(FileRejected) as caught:
        list(CsvReader(io.BytesIO(data), max_bytes=1 << 30, chunk_bytes=100).chunks())
    assert caught.value.code == "encoding"
    assert "line 1002 " in caught.value.message
    bad_byte = data.index(b"\xe9")
    assert f"offset {bad_byte}" in caught.value.message


def test_the_sha256_is_the_whole_files_and_the_limit_holds_for_a_stream_of_unknown_size() -> None:
    data = b"a,b\n" + b"1,2\n" * 1000
    reader = CsvReader(io.BytesIO(data), max_bytes=1 << 30, chunk_bytes=64)
    assert sum(len(f) for f in reader.chunks()) == 1000
    import hashlib

    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileRejected) as caught:
        list(CsvReader(io.BytesIO(data), max_bytes=1000, chunk_bytes=64).chunks())
    assert caught.value.code == "too_large"


def test_seen_rows_finds_every_hash_across_merged_runs() -> None:
    import numpy as np

    seen = SeenRows()
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 5000, dtype=np.int64).view(np.uint64)
    for start in range(0, 5000, 333):
        part = hashes[start:start + 333]
        assert not seen.first_lines(part).any()
        seen.add(part, np.arange(start, start + len(part)) + 2)
    assert (seen.first_lines(hashes) == np.arange(5000) + 2).all()
    assert len(seen._runs) < 8


def test_a_mostly_ragged_stretch_past_the_first_chunk_is_quarantined_not_the_whole_file() -> None:
    """Only the first chunk may refuse the file early for ragged rows (a wrong delimiter shows there); further on,
    ragged rows count toward the whole file's verdict, so the chunk size never changes the outcome."""
    good = [f"{i},{i % 7},{i % 3}" for i in range(40_000)]
    ragged = [f"{i};{i % 7};{i % 3}" for i in range(1_500)]
    data = ("a,b,c\n" + "\n".join(good[:20_000] + ragged + good[20_000:]) + "\n").encode()
    contract = DataContract.model_validate({"target": "c", "columns": [
        {"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"},
        {"name": "c", "kind": "categorical", "categories": ["0", "1", "2"]}]})
    whole = _whole(data, contract, max_bytes=1 << 30)
    assert whole[0] == "curated"
    assert len(whole[1]) == 1_500
    assert _chunked(data, contract, 16 << 10, max_bytes=1 << 30) == whole


def test_a_row_hashes_alike_from_its_plain_line_and_from_its_cells() -> None:
    data = b"a,b,c\n1,x y,\n2,,z\n"
    frame = read_csv(data, max_bytes=MAX_BYTES)
    columns = [pa.array(frame[name], type=pa.large_string()) for name in frame.columns]
    assert row_hashes.from_lines(data[len(b"a,b,c\n"):], 2).tolist() == row_hashes.from_cells(columns).tolist()
    # lines that are not plainly their rows are hashed from their cells
    assert row_hashes.from_lines(b'1,"x",\n', 1) is None
    assert row_hashes.from_lines(b"1,x,\r\n", 1) is None
    assert row_hashes.from_lines(b"1,x,\n\n2,y,\n", 2) is None


def test_a_duplicate_is_found_whether_its_chunk_was_hashed_from_lines_or_from_cells() -> None:
    contract = DataContract.from_json(json.dumps({
        "version": 1, "target": "label", "columns": [
            {"name": "name", "kind": "categorical", "nullable": True},
            {"name": "n", "kind": "numeric", "nullable": True},
            {"name": "label", "kind": "numeric", "nullable": False}]}))
    plain = "".join(f"r{i},{i},1\n" for i in range(40))  # chunks of plain lines
    quoted = '"r3",3,1\n"with, comma",1,0\n"r5","5",1\n'  # the same rows as lines 5 and 7, quoted
    data = ("name,n,label\n" + plain + quoted).encode()
    reader = CsvReader(io.BytesIO(data), max_bytes=MAX_BYTES, chunk_bytes=64)
    validation = ChunkedValidation(contract)
    bads, plain_chunks = [], 0
    for frame, hashes in reader.hashed_chunks():
        plain_chunks += hashes is not None
        bads.append(validation.chunk(frame, hashes).bad)
    bad = pd.concat(bads)
    assert plain_chunks >= 3
    assert dict(zip(bad[LINE], bad[REASON], strict=True)) == {42: "duplicate of line 5", 44: "duplicate of line 7"}

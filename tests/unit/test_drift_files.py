"""`mlops drift` on two files reads them as ingest does: the same reader (ragged lines, quoted values over several
lines, missing-value spellings), the same rows left out, whole-file verdicts with the file's name; large files
stream in chunks with the reference summarised in bounded memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.cli.main import main
from mlops.data.reading import read_csv, row_errors
from mlops.drift.files import compare_files


def _rows(rng: np.random.Generator, n: int, *, shift: float = 0.0) -> list[str]:
    x = rng.normal(10 + shift, 2, n)
    colors = rng.choice(["red", "green", "blue"], n)
    return [f"{v:.4f},{c},note {i}" for i, (v, c) in enumerate(zip(x, colors, strict=True))]


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(4)
    folder = tmp_path_factory.mktemp("messy")
    reference = ["x,color,note", *_rows(rng, 600)]
    reference[10] = '11.5,red,"a note over\ntwo lines, with a comma"'  # one record on two lines
    reference[20] = "12.5,red,one field,too many"  # ragged: ingest quarantines it
    reference[30] = "NA,?,n/a"  # missing-value spellings: missing, not a category
    current = ["x,color,note", *_rows(rng, 600, shift=1.5)]
    paths = {"reference": folder / "reference.csv", "current": folder / "current.csv"}
    paths["reference"].write_text("\n".join(reference) + "\n")
    paths["current"].write_text("\r\n".join(current) + "\r\n")  # CRLF: read the same
    return paths


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["drift", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else {}


def test_a_messy_reference_is_read_as_ingest_reads_it(messy: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # the old reader (pandas) stops at the ragged line; ingest's reads every other row
    with pytest.raises(pd.errors.ParserError):
        pd.read_csv(messy["reference"])
    code, report = _run(capsys, "--reference", str(messy["reference"]), "--current", str(messy["current"]))
    assert code == 1
    ingest = read_csv(messy["reference"].read_bytes(), max_bytes=1 << 30)
    assert list(ingest.columns) == ["x", "color", "note"]
    assert [f["feature"] for f in report["features"]] == ["x", "color", "note"]
    # every row ingest keeps, the two-line record once; the ragged line left out with ingest's reason
    assert report["reference_rows"] == len(ingest) - len(row_errors(ingest)) == 599
    assert report["left_out"]["reference"]["rows"] == 1
    [reason] = report["left_out"]["reference"]["reasons"]
    assert "4 fields but the header has 3" in reason
    assert report["left_out"]["current"]["rows"] == 0
    by_name = {f["feature"]: f for f in report["features"]}
    assert report["drifted_features"] == ["x"]
    assert by_name["x"]["n"] == 600
    assert by_name["color"]["unseen"] == {}  # "?" was a missing value, not a new category
    assert by_name["note"]["method"] == "chi2"


def test_the_table_says_which_rows_were_left_out(messy: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "--reference", str(messy["reference"]), "--current", str(messy["current"])]) == 1
    assert "reference: 1 rows left out, as ingest would quarantine them: the line has 4 fields" in (
        capsys.readouterr().out)


def test_text_in_a_numeric_column(tmp_path: Path, messy: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    lines = messy["current"].read_text().splitlines()
    stray = tmp_path / "stray.csv"  # two cells of text among 600 numbers: those rows are left out, as ingest would
    stray.write_text("\n".join([lines[0], "abc,red,x", *lines[1:], "1.5.2,blue,y"]) + "\n")
    code, report = _run(capsys, "--reference", str(messy["reference"]), "--current", str(stray))
    assert code == 1
    assert report["left_out"]["current"]["rows"] == 2
    texts = tmp_path / "texts.csv"  # a column of words is not the numeric column it was
    texts.write_text("\n".join([lines[0], *(f"word{i},red,x" for i in range(300)), *lines[1:]]) + "\n")
    assert main(["drift", "--reference", str(messy["reference"]), "--current", str(texts)]) == 2
    err = capsys.readouterr().err
    assert "column 'x' is numeric in" in err
    assert "(300 of 900 values, first on line 2)" in err


@pytest.mark.parametrize(("which", "content", "code", "message"), [
    ("current", b"x,color,note\n", 1, None),  # no rows yet: not enough data, not an error
    ("reference", b"x,color,note\n", 2, "has a header but no rows"),
    ("reference", b"", 2, "the file is empty"),
    ("current", b"\x1f\x8b\x08\x00compressed", 2, "gzip-compressed"),
    ("reference", "x,color\n1,é\n".encode("latin-1"), 2, "not valid UTF-8"),
    ("current", b"x;color;note\n1;red;x\n", 2, "semicolon-separated"),
])
def test_whole_file_verdicts_name_the_file(tmp_path: Path, messy: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                           which: str, content: bytes, code: int, message: str | None) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    files = {**messy, which: bad}
    assert main(["drift", "--reference", str(files["reference"]), "--current", str(files["current"])]) == code
    err = capsys.readouterr().err
    if message is None:
        assert err == ""
    else:
        assert str(bad) in err
        assert message in err


def test_large_files_stream_in_chunks_with_a_bounded_reference_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 30_000
    ref = pd.DataFrame({"moved": rng.normal(0, 1, n), "still": rng.normal(5, 2, n), "count": rng.integers(0, 9, n),
                        "kind": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])})
    ref.loc[::50, "still"] = np.nan
    cur = ref.sample(frac=1.0, random_state=2).reset_index(drop=True)
    cur["moved"] = rng.normal(0.3, 1, n)
    paths = tmp_path / "ref.csv", tmp_path / "cur.csv"
    ref.to_csv(paths[0], index=False)
    cur.to_csv(paths[1], index=False)
    # 64 KiB chunks: dozens of them per file; a sample of 5,000 of the 30,000 reference rows
    report = compare_files(*paths, chunk_bytes=64 << 10, reservoir=2000, sample=5000)
    whole = compare_files(*paths)
    assert report["reference_rows"] == whole["reference_rows"] == n
    assert report["drifted_features"] == whole["drifted_features"] == ["moved"]
    by_name = {f["feature"]: f for f in report["features"]}
    assert by_name["still"]["missing_share"] == pytest.approx(0.02)
    assert by_name["moved"]["n"] == n
    assert by_name["kind"]["baseline_shares"] == pytest.approx(
        [ref["kind"].value_counts(normalize=True)[k] for k in by_name["kind"]["labels"]])  # exact, not sampled


def test_a_bad_chunk_late_in_a_file_stops_the_check_with_its_line(tmp_path: Path, messy: dict[str, Path]) -> None:
    from mlops.core.errors import MlopsError

    lines = messy["current"].read_bytes().split(b"\r\n")
    late = tmp_path / "late.csv"
    late.write_bytes(b"\r\n".join([*lines[:500], "1.5,caf\xe9,x".encode("latin-1"), *lines[500:]]))
    with pytest.raises(MlopsError, match=r"late\.csv: line 501 is not valid UTF-8"):
        compare_files(messy["reference"], late, chunk_bytes=2048)  # many chunks: the error comes from a later one

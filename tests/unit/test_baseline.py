"""Drift baseline: format, shares, reservoir bounds, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops.data.baseline import (
    FORMAT,
    OTHER,
    StreamedBaseline,
    bin_counts,
    build_baseline,
    categorical_summary,
    numeric_summary,
)
from mlops.data.inference import infer_contract
from mlops.data.schema import DataContract


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 2500
    x = rng.normal(10, 2, size=n)
    x[::10] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "flag": rng.integers(0, 2, size=n).astype(float),
            "const": np.full(n, 4.0),
            "color": np.where(np.arange(n) % 20 == 0, "", rng.choice(["red", "green", "blue"], size=n)),
            "label": rng.choice(["a", "b"], size=n),
        }
    )


@pytest.fixture(scope="module")
def baseline(frame: pd.DataFrame) -> dict:
    return build_baseline(
        frame, infer_contract(frame, "label"), predictions=frame["label"].to_numpy(), reservoir=100, seed=7
    )


def test_json_serialisable_and_documented_shape(baseline: dict) -> None:
    text = json.dumps(baseline, allow_nan=False)
    assert json.loads(text) == baseline
    assert baseline["format"] == FORMAT
    assert baseline["rows"] == 2500
    assert baseline["target"] == "label"
    assert set(baseline["features"]) == {"x", "flag", "const", "color"}


def test_numeric_feature(baseline: dict, frame: pd.DataFrame) -> None:
    x = baseline["features"]["x"]
    assert x["kind"] == "numeric"
    assert x["edges"] == sorted(set(x["edges"]))
    assert len(x["edges"]) == 11
    assert len(x["shares"]) == 10
    assert sum(x["shares"]) == pytest.approx(1.0)
    assert max(x["shares"]) - min(x["shares"]) < 0.01  # quantile bins are (nearly) equally filled
    assert x["missing_share"] == pytest.approx(0.1)
    assert x["mean"] == pytest.approx(frame["x"].mean())
    assert x["edges"][0] == frame["x"].min()
    assert x["edges"][-1] == frame["x"].max()


def test_discrete_and_constant_numeric_features(baseline: dict) -> None:
    flag, const = baseline["features"]["flag"], baseline["features"]["const"]
    assert flag["edges"] == [0.0, 1.0]
    assert sum(flag["shares"]) == pytest.approx(1.0)
    assert const["edges"] == [4.0]
    assert const["shares"] == [1.0]


def test_categorical_feature(baseline: dict) -> None:
    color = baseline["features"]["color"]
    assert color["kind"] == "categorical"
    assert set(color["shares"]) == {"red", "green", "blue", OTHER}
    assert sum(color["shares"].values()) == pytest.approx(1.0)
    assert color["shares"][OTHER] == 0.0
    assert color["missing_share"] == pytest.approx(0.05)


def test_prediction_distribution(baseline: dict) -> None:
    preds = baseline["predictions"]
    assert preds["kind"] == "classes"
    assert sum(preds["shares"].values()) == pytest.approx(1.0)
    values = build_baseline(pd.DataFrame({"a": [1.0, 2.0, 3.0]}), _numeric_contract(), predictions=np.arange(50.0))
    assert values["predictions"]["kind"] == "numeric"
    assert sum(values["predictions"]["shares"]) == pytest.approx(1)


def _numeric_contract() -> DataContract:
    return infer_contract(pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0.5, 1.5, 2.5]}), "y")


def test_reservoir_bounded_seeded_and_json_clean(frame: pd.DataFrame, baseline: dict) -> None:
    records = baseline["reservoir"]["records"]
    assert len(records) == baseline["reservoir"]["size"] == 100
    assert set(records[0]) == {"x", "flag", "const", "color", "label"}
    assert any(r["x"] is None for r in records)  # NaN becomes null
    again = build_baseline(frame, infer_contract(frame, "label"), reservoir=100, seed=7)
    assert again["reservoir"] == baseline["reservoir"]
    other = build_baseline(frame, infer_contract(frame, "label"), reservoir=100, seed=8)
    assert other["reservoir"] != baseline["reservoir"]
    small = build_baseline(frame.head(30), infer_contract(frame, "label"), reservoir=100, seed=7)
    assert len(small["reservoir"]["records"]) == 30


def test_bin_convention_is_right_closed_with_open_ends() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    assert bin_counts(edges, [-5.0, 0.0, 1.0, 1.5, 2.0, 3.0, 99.0, np.nan]) == [3, 2, 2]
    assert bin_counts([4.0], [1.0, 4.0, 9.0]) == [3]


def test_many_categories_are_capped_into_other() -> None:
    values = [f"c{i}" for i in range(150)] * 2 + ["top"] * 10
    out = categorical_summary(values, max_categories=100)
    assert len(out["counts"]) == 101
    assert out["counts"]["top"] == 10
    assert out["counts"][OTHER] == 2 * 51
    assert sum(out["shares"].values()) == pytest.approx(1.0)


def test_all_missing_numeric() -> None:
    out = numeric_summary(np.array([np.nan, np.nan]), 10)
    assert out["edges"] == []
    assert out["shares"] == []
    assert out["missing_share"] == 1.0
    json.dumps(out, allow_nan=False)


def _chunks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i:i + size] for i in range(0, len(frame), size)]


def test_streamed_baseline_equals_the_whole_frame_while_every_row_fits_the_sample(frame: pd.DataFrame) -> None:
    contract = infer_contract(frame, "label")
    summary = StreamedBaseline(contract, reservoir=100, seed=7, sample=len(frame))
    for chunk in _chunks(frame, 700):
        summary.update(chunk)
    predictions = frame["label"].to_numpy()
    assert summary.result(predictions=predictions) == build_baseline(
        frame, contract, predictions=predictions, reservoir=100, seed=7)


def test_streamed_baseline_beyond_its_sample_keeps_counts_and_moments_exact(frame: pd.DataFrame) -> None:
    contract = infer_contract(frame, "label")
    big = pd.concat([frame] * 8, ignore_index=True)  # 20,000 rows through a sample of 3,000
    whole = build_baseline(big, contract, reservoir=500)
    summary = StreamedBaseline(contract, reservoir=500, sample=3000)
    for chunk in _chunks(big, 1500):
        summary.update(chunk)
    streamed = summary.result()
    json.dumps(streamed, allow_nan=False)
    assert streamed["rows"] == 20_000
    assert streamed["reservoir"]["size"] == len(streamed["reservoir"]["records"]) == 500
    for name in ("x", "flag", "const"):
        got, want = streamed["features"][name], whole["features"][name]
        for key in ("missing_share", "mean", "std", "min", "max"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (name, key)
        assert got["edges"][0] == want["edges"][0]
        assert got["edges"][-1] == want["edges"][-1]
        assert len(got["edges"]) == len(want["edges"])
        assert sum(got["counts"]) <= 3000  # bins from the sample
        assert got["shares"] == pytest.approx(want["shares"], abs=0.03)
    assert streamed["features"]["color"] == whole["features"]["color"]  # category counts: every row


def test_streamed_baseline_sample_is_uniform_over_the_stream() -> None:
    contract = infer_contract(pd.DataFrame({"i": [1.0, 2.0, 3.0], "y": ["a", "b", "a"]}), "y")
    summary = StreamedBaseline(contract, reservoir=2000, sample=2000, seed=5)
    for chunk in _chunks(pd.DataFrame({"i": np.arange(100_000, dtype=float), "y": "a"}), 10_000):
        summary.update(chunk)
    picked = np.array([r["i"] for r in summary.result()["reservoir"]["records"]])
    assert len(np.unique(picked)) == 2000
    assert list(picked) == sorted(picked)  # in the stream's order
    # as many from each tenth of the stream, up to noise (a later chunk has no less chance to enter)
    per_tenth = np.bincount((picked // 10_000).astype(int), minlength=10)
    assert per_tenth.min() > 150
    assert per_tenth.max() < 250

"""Drift statistics: false alarms stay rare at any n, designed drifts are found, tiny shifts at huge n are not
called drift, concept drift shows in feedback, and the numbers agree with scipy."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops.core.config import DriftConfig
from mlops.data.baseline import build_baseline
from mlops.data.inference import infer_contract
from mlops.data.schema import DataContract
from mlops.drift.check import hour_prefixes, metric_points
from mlops.drift.retraining import retrain_decision
from mlops.drift.statistics import (
    INSUFFICIENT,
    WindowDrift,
    benjamini_hochberg,
    chi2_homogeneity,
    chi2_sf,
    js_distance,
    ks_pvalue,
    wilson_interval,
)

CFG = DriftConfig()
CATS = np.array(["red", "green", "blue"])
MIX = np.array([0.5, 0.3, 0.2])


@pytest.fixture(scope="module")
def contract() -> DataContract:
    """Inferred once from a small frame of the columns every test uses (inferring on 1M rows is slow)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200), "c": rng.normal(size=200),
                          "color": rng.choice(CATS, 200), "label": rng.integers(0, 2, 200)})
    return infer_contract(frame, "label")


def draw(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0,
         mix: np.ndarray = MIX, cats: np.ndarray = CATS) -> dict[str, Any]:
    return {"a": rng.normal(shift, 1.0, n), "b": rng.normal(0.0, scale, n), "c": rng.normal(0.0, 1.0, n),
            "color": cats[rng.choice(len(cats), n, p=mix)]}


def baseline_of(columns: dict[str, Any], contract: DataContract, *, reservoir: int = 1000,
                predictions: Any = None) -> dict[str, Any]:
    return build_baseline(pd.DataFrame(columns), contract, reservoir=reservoir, predictions=predictions)


def check(baseline: dict[str, Any], columns: dict[str, Any], *, chunks: int = 1, cfg: DriftConfig = CFG) -> Any:
    window = WindowDrift(baseline, cfg)
    n = len(columns["a"])
    for part in np.array_split(np.arange(n), chunks):
        window.update({k: (v[part] if k != "color" else v[part].tolist()) for k, v in columns.items()}, len(part))
    return window.result(with_concept=False)


@pytest.mark.parametrize(("n", "repeats"), [(1_000, 80), (10_000, 40), (100_000, 10), (1_000_000, 3)])
def test_same_distribution_rarely_alarms(contract: DataContract, n: int, repeats: int) -> None:
    rng = np.random.default_rng(n)
    alarms = 0
    for _ in range(repeats):
        result = check(baseline_of(draw(rng, n), contract), draw(rng, n))
        assert result.status != INSUFFICIENT
        alarms += bool(result.drifted_features)
    assert alarms / repeats <= 0.05, f"{alarms} false alarms in {repeats} draws at n={n}"


@pytest.fixture(scope="module")
def designed(contract: DataContract) -> dict[str, Any]:
    rng = np.random.default_rng(42)
    n = 20_000
    return {"baseline": baseline_of(draw(rng, n), contract, reservoir=n), "rng": rng, "n": n}


def _drifted(designed: dict[str, Any], **kwargs: Any) -> set[str]:
    return set(check(designed["baseline"], draw(designed["rng"], designed["n"], **kwargs), chunks=3).drifted_features)


def test_designed_drifts_are_found_and_only_them(designed: dict[str, Any]) -> None:
    assert _drifted(designed) == set()
    assert _drifted(designed, shift=0.5) == {"a"}  # mean shift of 0.5 sigma
    assert _drifted(designed, scale=np.sqrt(1.3)) == {"b"}  # variance x1.3
    assert _drifted(designed, mix=np.array([0.4, 0.4, 0.2])) == {"color"}  # 10 points move between categories


def test_a_new_category_is_found_and_named(designed: dict[str, Any]) -> None:
    cats = np.array([*CATS, "purple"])
    columns = draw(designed["rng"], designed["n"], mix=np.array([0.45, 0.27, 0.18, 0.1]), cats=cats)
    result = check(designed["baseline"], columns)
    color = next(f for f in result.features if f.feature == "color")
    assert result.drifted_features == ["color"]
    assert color.unseen == {"purple": pytest.approx(2000, rel=0.1)}
    assert "purple" in color.labels


def test_tiny_shift_at_a_million_rows_is_not_drift_though_bare_ks_flags_it(contract: DataContract) -> None:
    rng = np.random.default_rng(7)
    n = 1_000_000
    reference, current = draw(rng, n), draw(rng, n, shift=0.02)
    baseline = baseline_of({k: v for k, v in reference.items()}, contract, reservoir=20_000)
    result = check(baseline, current, chunks=5)
    a = next(f for f in result.features if f.feature == "a")
    assert stats.ks_2samp(reference["a"], current["a"]).pvalue < 1e-6  # significance alone would call it drift
    assert a.effect_size is not None
    assert a.effect_size < CFG.wasserstein_threshold
    assert result.drifted_features == []
    assert result.status == "no_drift"


def test_below_the_minimum_sample_the_answer_is_insufficient_data(designed: dict[str, Any]) -> None:
    result = check(designed["baseline"], draw(designed["rng"], 50, shift=3.0))
    assert result.status == INSUFFICIENT
    assert {f.status for f in result.features} == {INSUFFICIENT}
    assert result.drifted_features == []


def test_chunked_equals_whole(designed: dict[str, Any]) -> None:
    columns = draw(np.random.default_rng(3), 5000, shift=0.2)
    whole, parts = check(designed["baseline"], columns), check(designed["baseline"], columns, chunks=7)
    for f, g in zip(whole.features, parts.features, strict=True):
        assert (f.statistic, f.effect_size, f.psi) == pytest.approx((g.statistic, g.effect_size, g.psi))


def test_missing_values_are_counted_not_tested(designed: dict[str, Any]) -> None:
    columns = draw(np.random.default_rng(4), 1000)
    columns["a"][:300] = np.nan
    a = next(f for f in check(designed["baseline"], columns).features if f.feature == "a")
    assert a.n == 700
    assert a.missing_share == pytest.approx(0.3)


# -- agreement with scipy --------------------------------------------------------------------------------
def test_ks_and_wasserstein_agree_with_scipy(contract: DataContract) -> None:
    rng = np.random.default_rng(11)
    reference = draw(rng, 3000)
    baseline = baseline_of(reference, contract, reservoir=3000)
    current = draw(rng, 20_000, shift=0.05)
    a = next(f for f in check(baseline, current, chunks=4).features if f.feature == "a")
    ref = np.array([r["a"] for r in baseline["reservoir"]["records"]])
    expected = stats.ks_2samp(ref, current["a"], method="asymp")
    assert a.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert a.raw_p_value == pytest.approx(expected.pvalue, rel=0.05)
    scale = baseline["features"]["a"]["std"]
    assert a.effect_size == pytest.approx(stats.wasserstein_distance(ref, current["a"]) / scale, rel=1e-3)


def test_ks_statistic_exact_with_ties() -> None:
    rng = np.random.default_rng(12)
    ref = rng.integers(0, 5, 400).astype(float)
    cur = rng.integers(0, 6, 900).astype(float)
    summary = {"kind": "numeric", "edges": [0.0, 2.0, 4.0], "counts": [1, 1], "std": 1.0}
    from mlops.drift.statistics import NumericAccumulator

    acc = NumericAccumulator("x", summary, ref)
    acc.update(cur)
    result = acc.result(DriftConfig(min_samples=10))
    assert result.statistic == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=1e-12)
    assert result.effect_size == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)


@pytest.mark.parametrize(("n", "m", "d"), [(200, 300, 0.1), (1000, 1000, 0.05), (5000, 100_000, 0.02),
                                           (50, 80, 0.3)])
def test_ks_pvalue_close_to_scipy(n: int, m: int, d: float) -> None:
    en = round(n * m / (n + m))
    assert ks_pvalue(d, n, m) == pytest.approx(stats.kstwo.sf(d, en), rel=0.05, abs=1e-4)


def test_chi_square_agrees_with_scipy() -> None:
    base, cur = [120, 300, 80, 0], [90, 310, 120, 15]
    statistic, p, dof = chi2_homogeneity(base, cur)
    expected = stats.chi2_contingency([base, cur], correction=False)
    assert (statistic, p, dof) == pytest.approx((expected.statistic, expected.pvalue, expected.dof), rel=1e-9)
    for x, k in [(0.5, 1), (3.0, 2), (100.0, 50), (1000.0, 900), (30.0, 3), (1e-3, 7)]:
        assert chi2_sf(x, k) == pytest.approx(stats.chi2.sf(x, k), rel=1e-9, abs=1e-300)
    # against fixed expected shares, the homogeneity test's statistic tends to scipy's goodness-of-fit one
    shares = np.array([0.5, 0.3, 0.2])
    observed = np.array([480, 330, 190])
    huge_baseline = (shares * 1e9).tolist()
    gof = stats.chisquare(observed, shares * observed.sum())
    assert chi2_homogeneity(huge_baseline, observed.tolist())[0] == pytest.approx(gof.statistic, rel=1e-5)


def test_benjamini_hochberg_matches_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.001, 0.04, 0.03, 0.2, 0.0001, 0.5, 0.049]
    assert benjamini_hochberg(p) == pytest.approx(list(multipletests(p, method="fdr_bh")[1]))


def test_js_distance_and_wilson() -> None:
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([3, 2], [3, 2]) == 0.0
    expected = stats.binomtest(80, 100).proportion_ci(method="wilson")
    assert wilson_interval(80, 100) == pytest.approx((expected.low, expected.high), rel=1e-6)


# -- prediction and concept drift ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def concept_setup(contract: DataContract) -> dict[str, Any]:
    """A rule model (label = a + b > 0) whose evaluation accuracy was 0.95 (5% label noise)."""
    rng = np.random.default_rng(21)
    reference = draw(rng, 5000)
    predictions = ((reference["a"] + reference["b"]) > 0).astype(int)
    baseline = baseline_of(reference, contract, predictions=predictions.astype(str), reservoir=5000)
    return {"baseline": baseline, "rng": rng}


def _feedback_window(setup: dict[str, Any], *, flip_region: float) -> Any:
    rng = setup["rng"]
    n = 4000
    columns = draw(rng, n)
    predictions = ((columns["a"] + columns["b"]) > 0).astype(int)
    labels = predictions.copy()
    noise = rng.random(n) < 0.05
    region = columns["a"] > 0  # half of the feature space
    flipped = region & (rng.random(n) < flip_region)
    labels[noise ^ flipped] = 1 - labels[noise ^ flipped]
    window = WindowDrift(setup["baseline"], CFG, classification=True)
    window.update({k: (v if k != "color" else v.tolist()) for k, v in columns.items()}, n)
    window.update_predictions(predictions.astype(str).tolist())
    window.concept.update(predictions.astype(str).tolist(), labels.astype(str).tolist())
    return window.result({"accuracy": 0.95})


def test_concept_drift_from_flipped_labels_in_a_region(concept_setup: dict[str, Any]) -> None:
    result = _feedback_window(concept_setup, flip_region=0.2)
    assert result.concept is not None
    assert result.concept.drifted
    assert result.concept.interval is not None
    assert result.concept.interval[1] < 0.95
    assert result.drifted_features == []  # P(X) did not move, only P(y|X)
    assert result.prediction is not None
    assert not result.prediction.drifted
    assert result.status == "drifted"


def test_no_concept_drift_without_flips(concept_setup: dict[str, Any]) -> None:
    result = _feedback_window(concept_setup, flip_region=0.0)
    assert result.concept is not None
    assert not result.concept.drifted
    assert result.status == "no_drift"


def test_too_little_feedback_is_insufficient(concept_setup: dict[str, Any]) -> None:
    window = WindowDrift(concept_setup["baseline"], CFG, classification=True)
    window.concept.update(["1"] * 20, ["0"] * 20)
    assert window.concept.result(CFG, {"accuracy": 0.95}).status == INSUFFICIENT


def test_prediction_drift_is_found(concept_setup: dict[str, Any]) -> None:
    window = WindowDrift(concept_setup["baseline"], CFG, classification=True)
    window.update_predictions(["1"] * 800 + ["0"] * 200)
    result = window.result(with_concept=False)
    assert result.prediction is not None
    assert result.prediction.drifted


# -- monitoring decisions --------------------------------------------------------------------------------
def _windows(flags: list[bool], labels: int = 100) -> list[dict[str, Any]]:
    return [{"window_end": f"2026-01-01T{h:02d}:00:00+00:00", "drifted": d, "labelled_rows": labels}
            for h, d in enumerate(flags)]


def test_retrain_needs_n_of_m_windows_labels_and_cooldown() -> None:
    from datetime import UTC, datetime

    cfg = DriftConfig(retrain_windows=2, retrain_window_of=3, retrain_min_labels=150, retrain_cooldown_hours=6)
    at = datetime(2026, 1, 1, 5, tzinfo=UTC)
    assert not retrain_decision(_windows([True]), last_request=None, at=at, cfg=cfg)[0]
    assert not retrain_decision(_windows([True, False, False, True]), last_request=None, at=at, cfg=cfg)[0]
    ok, reason, _ = retrain_decision(_windows([False, True, False, True]), last_request=None, at=at, cfg=cfg)
    assert ok, reason
    assert "labelled" in retrain_decision(_windows([True, True], labels=10), last_request=None, at=at, cfg=cfg)[1]
    # only windows after the last request count, and the cooldown holds
    assert not retrain_decision(_windows([True, True, True]), last_request="2026-01-01T01:00:00+00:00", at=at,
                                cfg=cfg)[0]
    later = datetime(2026, 1, 1, 23, tzinfo=UTC)
    ok, reason, _ = retrain_decision(_windows([True] * 5), last_request="2026-01-01T00:00:00+00:00", at=at, cfg=cfg)
    assert not ok
    assert reason.startswith("cooldown")
    assert retrain_decision(_windows([True] * 5), last_request="2026-01-01T00:00:00+00:00", at=later, cfg=cfg)[0]
    assert not retrain_decision(_windows([True] * 5), last_request=None, at=at,
                                cfg=DriftConfig(retrain=False))[0]


def test_window_reads_only_its_hour_partitions() -> None:
    from datetime import UTC, datetime

    prefixes = hour_prefixes(datetime(2026, 1, 1, 22, 30, tzinfo=UTC), datetime(2026, 1, 2, 0, 30, tzinfo=UTC))
    assert prefixes == ["captures/2026/01/01/22/", "captures/2026/01/01/23/", "captures/2026/01/02/00/"]


def test_metric_points_name_every_feature() -> None:
    summary = {"status": "drifted", "drifted_features": ["a"], "rows": 500, "features": {"a": 0.4, "b": 0.01},
               "retrain": {"requested": False}, "prediction_effect": 0.02,
               "concept": {"metric": "accuracy", "value": 0.81, "n": 300}}
    points = {(name, tuple(sorted(dims.items()))): value for name, value, dims in metric_points(summary)}
    assert points[("FeatureDriftScore", (("feature", "a"),))] == 0.4
    assert points[("DriftedFeatures", ())] == 1
    assert points[("ConceptMetric", (("metric", "accuracy"),))] == 0.81
    assert metric_points({"status": "skipped"}) == []


def test_drift_config_is_per_model_with_defaults() -> None:
    from mlops.core.config import ModelConfig

    model = ModelConfig(name="m1", target="y", drift={"alpha": 0.01, "js_threshold": 0.1})
    assert model.drift.alpha == 0.01
    assert model.drift.wasserstein_threshold == CFG.wasserstein_threshold
    assert ModelConfig(name="m2", target="y").drift == CFG
    with pytest.raises(ValueError, match="retrain_windows"):
        DriftConfig(retrain_windows=5, retrain_window_of=3)
    with pytest.raises(ValueError, match=r"alpah"):
        ModelConfig(name="m3", target="y", drift={"alpah": 0.01})


def test_bins_follow_the_baseline_convention() -> None:
    from mlops.data.baseline import bin_counts
    from mlops.drift.statistics import NumericAccumulator

    edges = [0.0, 1.0, 2.0, 3.0]
    values = np.array([-1.0, 0.0, 0.5, 1.0, 1.0000001, 2.0, np.nan, 2.5, 3.0, 4.0, 1.0])
    acc = NumericAccumulator("x", {"edges": edges, "counts": [1, 1, 1]})
    acc.update(values[:5])
    acc.update(values[5:])
    assert acc.bins.tolist() == bin_counts(edges, values)
    assert (acc.n, acc.missing) == (10, 1)


def test_retraining_data_is_curated_rows_plus_labelled_rows_since_the_last_request() -> None:
    from moto import mock_aws

    from mlops import aws
    from mlops.aws.storage import ObjectStore
    from mlops.data.frames import put_parquet
    from mlops.drift.retraining import retraining_csv

    contract = {"target": "y", "columns": [{"name": "x", "kind": "numeric"}, {"name": "flag", "kind": "boolean"},
                                           {"name": "y", "kind": "integer"}]}
    with mock_aws():
        aws.client.cache_clear()
        aws.client("s3").create_bucket(Bucket="data")
        data = ObjectStore(aws.client("s3"), "data")
        put_parquet(data, "curated/m/abc/data.parquet",
                    pd.DataFrame({"x": [1.5, 2.5], "flag": [1.0, 0.0], "y": [0, 1]}))
        data.put_json("curated/m/abc/manifest.json", {"created_at": "2026-01-01T00:00:00+00:00",
                                                      "data_uri": "s3://data/curated/m/abc/data.parquet"})
        for stamp, x in (("20260105T010000Z", 10.0), ("20260105T020000Z", 20.0), ("20260105T030000Z", 30.0)):
            data.put_bytes(f"labelled/m/{stamp}.jsonl", (json.dumps({"x": x, "flag": 1.0, "y": "1"}) + "\n").encode())
        body, curated, captured, duplicates = retraining_csv("m", data=data, contract=contract,
                                                             since="20260105T020000Z")
    aws.client.cache_clear()
    frame = pd.read_csv(io.BytesIO(body), dtype=str)
    assert (curated, captured, duplicates) == (2, 1, 0)
    assert frame.to_dict("list") == {"x": ["1.5", "2.5", "30.0"], "flag": ["true", "false", "true"],
                                     "y": ["0", "1", "1"]}


def test_retraining_data_holds_each_distinct_row_once_so_ingest_keeps_it() -> None:
    """Live traffic repeats the curated rows: as repeats, ingest would quarantine them as duplicates and, past
    max_bad_row_fraction, reject the whole retraining file (seen in `make demo`: 48% of the rows were repeats)."""
    from moto import mock_aws

    from mlops import aws
    from mlops.aws.storage import ObjectStore
    from mlops.data.frames import put_parquet
    from mlops.data.reading import read_csv
    from mlops.data.schema import DataContract
    from mlops.data.validation import validate
    from mlops.drift.retraining import retraining_csv

    contract = {"target": "y", "columns": [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "integer"}]}
    with mock_aws():
        aws.client.cache_clear()
        aws.client("s3").create_bucket(Bucket="data")
        data = ObjectStore(aws.client("s3"), "data")
        put_parquet(data, "curated/m/abc/data.parquet", pd.DataFrame({"x": [1.5, 2.5, 3.5], "y": [0, 1, 1]}))
        data.put_json("curated/m/abc/manifest.json", {"created_at": "2026-01-01T00:00:00+00:00",
                                                      "data_uri": "s3://data/curated/m/abc/data.parquet"})
        seen = [{"x": 1.5, "y": "0"}, {"x": 2.5, "y": "1"}, {"x": 2.5, "y": "1"}, {"x": 9.5, "y": "0"}] * 3
        data.put_bytes("labelled/m/20260105T010000Z.jsonl", "".join(json.dumps(r) + "\n" for r in seen).encode())
        body, curated, captured, duplicates = retraining_csv("m", data=data, contract=contract, since=None)
    aws.client.cache_clear()
    assert (curated, captured, duplicates) == (3, 12, 11)
    result = validate(read_csv(body, max_bytes=len(body)), DataContract.model_validate({**contract, "version": 1}),
                      max_bad_row_fraction=0.5)
    assert (len(result.good), len(result.bad)) == (4, 0)


def test_regression_outputs_and_error_drift(contract: DataContract) -> None:
    rng = np.random.default_rng(31)
    reference = draw(rng, 5000)
    baseline = baseline_of(reference, contract, predictions=reference["a"] * 2.0)
    assert baseline["predictions"]["kind"] == "numeric"
    window = WindowDrift(baseline, CFG, classification=False)
    predicted = rng.normal(1.0, 2.0, 3000)  # outputs moved by half a standard deviation
    window.update_predictions(predicted.tolist())
    window.concept.update(predicted.tolist(), (predicted + rng.normal(0, 1.0, 3000)).tolist())
    result = window.result({"mae": 0.5})
    assert result.prediction is not None
    assert (result.prediction.method, result.prediction.effect_name, result.prediction.drifted) == ("chi2", "psi", True)
    assert result.concept is not None
    assert result.concept.metric == "mae"
    assert result.concept.drifted  # MAE about 0.8 against 0.5 at evaluation
    assert not window.concept.result(CFG, {"mae": 0.9}).drifted
    assert window.concept.result(CFG, {}).status == INSUFFICIENT  # nothing to compare with: cannot tell

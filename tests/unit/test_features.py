"""The feature store's offline computation: every training row sees its entity's history up to its own time and
never after it (checked against a brute-force reference and against the naive join that leaks), windows, ties,
the derived contract, the declaration's checks and the online snapshot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import FeatureStoreConfig, ModelConfig
from mlops.core.errors import InvalidDataset
from mlops.data.schema import ColumnKind, ColumnSpec, DataContract
from mlops.features.offline import compute, feature_contract, latest, training_set
from mlops.features.online import definitions_sha256, entity_text


def definitions(**overrides: Any) -> FeatureStoreConfig:
    return FeatureStoreConfig.model_validate({
        "entity_key": "customer", "timestamp": "at",
        "columns": [{"name": "amount"},
                    {"name": "mean_amount", "source": "amount", "aggregate": "mean"},
                    {"name": "purchases", "source": "amount", "aggregate": "count"},
                    {"name": "spent_2d", "source": "amount", "aggregate": "sum", "window": "2d"},
                    {"name": "largest", "source": "amount", "aggregate": "max"},
                    {"name": "channel"}],
        **overrides})


def history(n_entities: int = 30, per_entity: int = 12, seed: int = 0) -> pd.DataFrame:
    """Purchases in shuffled file order; the label says whether the customer's NEXT purchase is large: exactly the
    kind of target a join that sees the future would predict perfectly."""
    rng = np.random.default_rng(seed)
    rows = []
    for entity in range(n_entities):
        days = np.sort(rng.choice(60, size=per_entity, replace=False))
        amounts = rng.gamma(2.0, 50.0, size=per_entity).round(2)
        for i, (day, amount) in enumerate(zip(days, amounts, strict=True)):
            nxt = amounts[i + 1] if i + 1 < per_entity else 0.0
            rows.append({"customer": float(entity), "at": (pd.Timestamp("2026-01-01") + pd.Timedelta(days=int(day)))
                         .strftime("%Y-%m-%dT%H:%M:%SZ"), "amount": amount, "channel": rng.choice(["web", "shop"]),
                         "label": int(nxt > 150)})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def contract() -> DataContract:
    return DataContract(target="label", columns=[
        ColumnSpec(name="customer", kind=ColumnKind.INTEGER),
        ColumnSpec(name="at", kind=ColumnKind.CATEGORICAL),
        ColumnSpec(name="amount", kind=ColumnKind.NUMERIC, min=0.0),
        ColumnSpec(name="channel", kind=ColumnKind.CATEGORICAL, categories=["shop", "web"]),
        ColumnSpec(name="label", kind=ColumnKind.INTEGER)])


def test_each_training_row_sees_exactly_its_entitys_past_and_the_naive_join_would_leak() -> None:
    frame = history()
    features = compute(frame, definitions())
    times = pd.to_datetime(frame["at"], utc=True)
    for i in range(0, len(frame), 7):  # brute force, row by row
        past = frame[(frame["customer"] == frame.at[i, "customer"]) & (times <= times[i])]
        recent = past[times[past.index] > times[i] - pd.Timedelta(days=2)]
        assert features.at[i, "mean_amount"] == pytest.approx(past["amount"].mean())
        assert features.at[i, "purchases"] == len(past)
        assert features.at[i, "largest"] == pytest.approx(past["amount"].max())
        assert features.at[i, "spent_2d"] == pytest.approx(recent["amount"].sum())
        assert features.at[i, "amount"] == frame.at[i, "amount"]
    naive = frame.groupby("customer")["amount"].transform("mean")  # the entity's mean over all time, future included
    assert (naive - features["mean_amount"]).abs().max() > 1.0
    # the naive largest purchase includes the next one, which is the label: it flags every positive row; the
    # point-in-time one knows only the past and cannot
    positive = frame["label"] == 1
    naive_largest = frame.groupby("customer")["amount"].transform("max")
    assert (naive_largest[positive] > 150).all()
    assert (features.loc[positive, "largest"] <= 150).sum() > 0


def test_changing_the_future_changes_nothing_in_the_past() -> None:
    frame = history()
    times = pd.to_datetime(frame["at"], utc=True)
    cutoff = times.quantile(0.5)
    altered = frame.copy()
    altered.loc[times > cutoff, "amount"] *= 10  # every purchase after the cutoff
    before, after = compute(frame, definitions()), compute(altered, definitions())
    past = times <= cutoff
    pd.testing.assert_frame_equal(before[past], after[past])
    assert not before[~past].equals(after[~past])


def test_rows_at_the_same_time_are_one_moment() -> None:
    frame = pd.DataFrame({"customer": [1, 1, 1], "at": ["2026-01-02", "2026-01-01", "2026-01-02"],
                          "amount": [20.0, 10.0, 30.0], "channel": ["web", "shop", "shop"], "label": [0, 1, 0]})
    features = compute(frame, definitions())
    assert features["purchases"].tolist() == [3, 1, 3]
    assert features["mean_amount"].tolist() == [20.0, 10.0, 20.0]
    assert features["amount"].tolist() == [30.0, 10.0, 30.0]  # the moment's last value in file order


def test_without_a_timestamp_file_order_is_time_order() -> None:
    plain = FeatureStoreConfig.model_validate({"entity_key": "customer", "columns": [
        {"name": "mean_amount", "source": "amount", "aggregate": "mean"}]})
    frame = pd.DataFrame({"customer": ["a", "b", "a", "a"], "amount": [1.0, 5.0, 3.0, 5.0]})
    assert compute(frame, plain)["mean_amount"].tolist() == [1.0, 5.0, 2.0, 3.0]


def test_the_training_set_holds_the_features_and_the_label_under_a_derived_contract() -> None:
    frame = history(n_entities=3, per_entity=4)
    table, derived = training_set(frame, contract(), definitions())
    assert list(table.columns) == ["amount", "mean_amount", "purchases", "spent_2d", "largest", "channel", "label"]
    assert len(table) == len(frame)
    kinds = {c.name: (c.kind, c.min, c.categories) for c in derived.columns}
    assert kinds["amount"] == (ColumnKind.NUMERIC, 0.0, None)
    assert kinds["mean_amount"] == (ColumnKind.NUMERIC, 0.0, None)
    assert kinds["purchases"] == (ColumnKind.INTEGER, 0.0, None)
    assert kinds["spent_2d"] == (ColumnKind.NUMERIC, None, None)
    assert kinds["channel"] == (ColumnKind.CATEGORICAL, None, ["shop", "web"])
    assert derived.target == "label"


@pytest.mark.parametrize(("columns", "message"), [
    ([{"name": "m", "source": "channel", "aggregate": "mean"}], "categorical column 'channel'"),
    ([{"name": "m", "source": "nowhere"}], "no column 'nowhere'"),
])
def test_a_definition_the_data_cannot_give_is_refused_by_name(columns: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidDataset, match=message):
        feature_contract(contract(), definitions(columns=columns))


def test_a_timestamp_that_is_not_a_time_is_refused_with_the_first_bad_value() -> None:
    frame = history(n_entities=2, per_entity=3)
    frame.loc[4, "at"] = "yesterday"
    with pytest.raises(InvalidDataset, match=r"1 row\(s\) have a 'at' that is not a time \(first: 'yesterday'\)"):
        compute(frame, definitions())


def test_rows_without_an_entity_are_refused() -> None:
    frame = history(n_entities=2, per_entity=3)
    frame.loc[0, "customer"] = np.nan
    with pytest.raises(InvalidDataset, match="1 row\\(s\\) have no 'customer'"):
        compute(frame, definitions())


@pytest.mark.parametrize(("declared", "message"), [
    ({"entity_key": "c", "columns": [{"name": "x", "window": "7d"}]}, "needs a `timestamp`"),
    ({"entity_key": "c", "columns": [{"name": "x"}, {"name": "x"}]}, "declared twice"),
    ({"entity_key": "c", "columns": [{"name": "y", "source": "c"}]}, "entity key and the timestamp cannot"),
    ({"entity_key": "c", "columns": [{"name": "x", "window": "a week"}]}, "should match pattern"),
])
def test_the_declaration_is_checked(declared: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureStoreConfig.model_validate(declared)


def test_a_model_cannot_learn_from_its_own_label() -> None:
    with pytest.raises(ValueError, match="trained on its own label"):
        ModelConfig.model_validate({"name": "m1", "target": "label", "features": {
            "entity_key": "c", "columns": [{"name": "l", "source": "label", "aggregate": "mean"}]}})


def test_the_online_snapshot_is_each_entitys_newest_moment() -> None:
    frame = history(n_entities=4, per_entity=5)
    snapshot = {entity: (as_of, values) for entity, as_of, values in latest(frame, definitions())}
    assert set(snapshot) == {"0", "1", "2", "3"}
    features = compute(frame, definitions())
    times = pd.to_datetime(frame["at"], utc=True)
    for entity, (as_of, values) in snapshot.items():
        rows = frame.index[frame["customer"] == float(entity)]
        newest = times[rows].idxmax()
        assert pd.Timestamp(as_of) == times[newest]
        assert values == pytest.approx({k: v for k, v in features.loc[newest].items() if k != "channel"}
                                       | {"channel": features.at[newest, "channel"]})
        assert values["purchases"] == len(rows)


def test_entity_ids_have_one_spelling_and_definitions_one_hash() -> None:
    assert entity_text(17.0) == entity_text(17) == entity_text("17") == "17"
    assert entity_text(" ab ") == "ab"
    assert definitions_sha256(definitions()) == definitions_sha256(definitions())
    assert definitions_sha256(definitions()) != definitions_sha256(definitions(timestamp=None, columns=[
        {"name": "amount"}]))


def test_the_cli_writes_a_files_training_set(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from mlops.cli.main import main

    config = tmp_path / "mlops.toml"
    config.write_text('[[model]]\nname = "shop"\ntarget = "label"\n[model.features]\nentity_key = "customer"\n'
                      'timestamp = "at"\ncolumns = [{ name = "mean_amount", source = "amount", aggregate = "mean" }]\n')
    frame = history(n_entities=3, per_entity=4)
    frame.to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "train.parquet"
    assert main(["features", "training-set", "shop", "--data", str(tmp_path / "data.csv"), "--out", str(out),
                 "--config", str(config)]) == 0
    assert "12 rows, features ['mean_amount']" in capsys.readouterr().out
    table = pd.read_parquet(out)
    assert table["mean_amount"].tolist() == pytest.approx(compute(frame, FeatureStoreConfig.model_validate(
        {"entity_key": "customer", "timestamp": "at",
         "columns": [{"name": "mean_amount", "source": "amount", "aggregate": "mean"}]}))["mean_amount"].tolist())
    assert main(["features", "training-set", "shop", "--data", str(tmp_path / "none.csv"), "--out", str(out),
                 "--config", str(config)]) == 2

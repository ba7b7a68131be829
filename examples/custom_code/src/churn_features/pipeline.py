"""The build function mlops.toml names: family = "churn_features.pipeline:build"."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn_features.ratios import Ratios

# what our customers pay per month of tenure, and per support call: the ratios our analysts found to matter
RATIOS = (("monthly_charges", "tenure_months"), ("monthly_charges", "support_calls"))


def build(numeric: list[str], categorical: list[str], params: dict[str, Any], seed: int) -> Pipeline:
    """The whole model, our feature engineering inside: the platform passes the contract's columns by name."""
    pairs = tuple((numeric.index(a), numeric.index(b)) for a, b in RATIOS if a in numeric and b in numeric)
    numbers = Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("ratios", Ratios(pairs)),
        ("scale", StandardScaler()),
    ])
    features = ColumnTransformer([
        ("numbers", numbers, numeric),
        ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
    ], sparse_threshold=0.0)
    return Pipeline([("features", features),
                     ("model", LogisticRegression(C=float(params.get("C", 1.0)), max_iter=1000, random_state=seed))])

"""A team's own feature engineering for a churn model, trained and served by serverless-mlops
(family = "churn_features.pipeline:build" in this example's mlops.toml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlops.core.config import load_config
from mlops.core.errors import ConfigError, UnknownModel
from mlops.core.tasks import Task


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlops.toml"
    path.write_text(text)
    return path


def test_shipped_configuration_declares_a_working_example_model() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "mlops.toml")
    [model] = config.models
    assert model.name == "breast-cancer"
    assert model.task is Task.BINARY
    assert model.incoming_prefix == "incoming/breast-cancer/"


def test_unknown_model_names_the_known_ones(config_file: Path) -> None:
    with pytest.raises(UnknownModel, match="breast-cancer"):
        load_config(config_file).model("nope")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[model]]\nname = "m1"\ntarget = "y"\nfamily = "deep_net"\n', "unknown model family 'deep_net'"),
        ('[[model]]\nname = "m1"\ntarget = "y"\nthresholds = { r2 = 0.5 }\n', "does not apply to a binary model"),
        ('[[model]]\nname = "Bad Name"\ntarget = "y"\n', "name"),
        ('[[model]]\nname = "m1"\ntarget = "y"\n[[model]]\nname = "m1"\ntarget = "z"\n', "declared twice"),
        ('[[model]]\nname = "m1"\ntarget = "y"\ncanary_weight = 1.5\n', "canary_weight"),
        ("[[model]\n", "not valid TOML"),
        # throttled receives count: a queue behind Lambda needs at least 5 (AWS's advice)
        ('[[model]]\nname = "m1"\ntarget = "y"\npush_max_receives = 3\n',
         r"push_max_receives = 3 is too low: set it to at least 5 .*throttled"),
        # the rollout's first look with feedback would already be past its maximum duration
        ('[[model]]\nname = "m1"\ntarget = "y"\nrollout_interval_seconds = 90000\nrollout_max_hours = 24\n',
         r"rollout_interval_seconds = 90000 is longer than rollout_max_hours = 24.0 \(86400 s\)"),
        # drift_check reads the champion's captured sample: none at all leaves it nothing to check
        ('[[model]]\nname = "m1"\ntarget = "y"\ncapture_sample_rate = 0\n',
         r"capture_sample_rate = 0.0 must be more than 0 and at most 1"),
        ('[[model]]\nname = "m1"\ntarget = "y"\ncapture_sample_rate = 1.5\n', r"capture_sample_rate = 1.5 must be"),
        # a wait no Step Functions execution outlives
        ('[[model]]\nname = "m1"\ntarget = "y"\nrollout_interval_seconds = 20000000\nrollout_max_hours = 10000\n',
         r"rollout_interval_seconds = 20000000 is longer than 15768000 s .*execution times out after a year"),
    ],
)
def test_invalid_configuration_says_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, body))


def test_every_prediction_is_captured_unless_a_model_says_otherwise(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[[model]]\nname = "m1"\ntarget = "y"\n'
                                          '[[model]]\nname = "m2"\ntarget = "y"\ncapture_sample_rate = 0.01\n'))
    assert [m.capture_sample_rate for m in config.models] == [1.0, 0.01]


def test_missing_configuration_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MLOPS_CONFIG"):
        load_config(tmp_path / "absent.toml")


def test_push_queues_allow_five_receives_by_default(tmp_path: Path) -> None:
    [model] = load_config(_write(tmp_path, '[[model]]\nname = "m1"\ntarget = "y"\n')).models
    assert model.push_max_receives == 5
    [model] = load_config(_write(tmp_path, '[[model]]\nname = "m1"\ntarget = "y"\npush_max_receives = 5\n')).models
    assert model.push_max_receives == 5


# -- batch runs --------------------------------------------------------------------------------------------------------
def _model(extra: str) -> str:
    return f'[[model]]\nname = "m1"\ntarget = "y"\n{extra}\n'


def test_a_model_declares_where_its_batch_runs_may_read_and_how_many_objects_at_once(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, _model('batch_inputs = ["s3://partner-exports/scoring/", '
                                                 '"s3://partner-exports/2026/q4/"]\nbatch_max_concurrency = 3')))
    [model] = config.models
    assert model.batch_inputs == ("s3://partner-exports/scoring/", "s3://partner-exports/2026/q4/")
    assert model.batch_max_concurrency == 3
    [default] = load_config(_write(tmp_path, _model(""))).models
    assert (default.batch_inputs, default.batch_max_concurrency) == ((), 5)


@pytest.mark.parametrize(("value", "message"), [
    ('"s3://partner-exports/scoring"', "is not an s3://bucket/prefix/ URI of a folder"),  # not a folder
    ('"s3://partner-exports/"', "A whole bucket"),
    ('"partner-exports/scoring/"', "is not an s3://bucket/prefix/ URI"),
    ('"s3://Partner_Exports/scoring/"', "is not an s3://bucket/prefix/ URI"),  # not a bucket name
    ('"s3://partner-exports/scor*/"', "IAM wildcards"),
    ('"s3://partner-exports/${aws:username}/"', "IAM wildcards and variables"),
    ('"s3://partner-exports/a//b/"', "empty"),
    ('"s3://partner-exports/a/../b/"', "'..' segments"),
    ('"s3://mlops-data/curated/"', "starts with curated/, a prefix the platform keeps in its own buckets"),
    ('"s3://mlops-models/models/"', "starts with models/"),
    ('"s3://mlops-data/batch/other-model/"', "starts with batch/"),
    ('"s3://mlops-data/batch-runs/"', "starts with batch-runs/"),
    ('"s3://any-bucket/incoming/x/"', "starts with incoming/"),
    ('"s3://a-bucket/x/", "s3://a-bucket/x/"', "declared twice"),
])
def test_a_batch_input_that_is_no_folder_or_is_the_platforms_is_refused_at_load(tmp_path: Path, value: str,
                                                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        load_config(_write(tmp_path, _model(f"batch_inputs = [{value}]")))
    assert "batch_inputs" in str(raised.value)


@pytest.mark.parametrize("value", [0, 10_001])
def test_batch_max_concurrency_is_a_distributed_maps_concurrency(tmp_path: Path, value: int) -> None:
    # 0 would be no limit at all for a Distributed Map; Step Functions runs at most 10,000 children at once
    with pytest.raises(ConfigError, match="batch_max_concurrency"):
        load_config(_write(tmp_path, _model(f"batch_max_concurrency = {value}")))


def test_a_model_without_a_family_gets_one_that_fits_its_task(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[[model]]\nname = "ozone"\ntarget = "Ozone"\ntask = "regression"\n'
                                          'primary_metric = "r2"\n\n[[model]]\nname = "churn"\ntarget = "y"\n'))
    assert [(m.task, m.family) for m in config.models] == [(Task.REGRESSION, "linear_regression"),
                                                           (Task.BINARY, "logistic_regression")]


def test_a_family_that_cannot_do_the_task_is_refused_at_load(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[model]]\nname = "ozone"\ntarget = "Ozone"\ntask = "regression"\n'
                            'primary_metric = "r2"\nfamily = "logistic_regression"\n')
    with pytest.raises(ConfigError, match=r"'logistic_regression' cannot be trained for a regression model.*"
                                          r"leave family out to get linear_regression"):
        load_config(path)


def test_xgboost_and_lightgbm_models_are_declared_like_any_other(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[[model]]\nname = "churn"\ntarget = "y"\nfamily = "xgboost"\n'
                                          'params = { n_estimators = 50, max_depth = 4 }\n\n'
                                          '[[model]]\nname = "species"\ntarget = "y"\ntask = "multiclass"\n'
                                          'family = "lightgbm"\n\n'
                                          '[[model]]\nname = "price"\ntarget = "y"\ntask = "regression"\n'
                                          'primary_metric = "r2"\nfamily = "xgboost"\n'
                                          'params = { objective = "reg:absoluteerror" }\n'))
    assert [(m.name, m.task, m.family) for m in config.models] == [
        ("churn", Task.BINARY, "xgboost"), ("species", Task.MULTICLASS, "lightgbm"),
        ("price", Task.REGRESSION, "xgboost")]


@pytest.mark.parametrize(
    ("task", "family", "params", "message"),
    [
        # an objective of another task: the model would not be the task's, nor its export
        ("regression", "xgboost", 'objective = "binary:logistic"',
         r"params of this regression xgboost model: objective = 'binary:logistic' is not a regression objective "
         r"xgboost models are exported with; use one of \['reg:squarederror', 'reg:absoluteerror', "
         r"'reg:pseudohubererror'\] \(or leave it out\)"),
        ("multiclass", "lightgbm", 'objective = "binary"',
         r"objective = 'binary' is not a multiclass objective lightgbm models are exported with; use one of "
         r"\['multiclass'\]"),
        # multi:softmax's graph would answer raw margins where predict_proba answers probabilities
        ("multiclass", "xgboost", 'objective = "multi:softmax"', r"use one of \['multi:softprob'\]"),
        ("binary", "xgboost", 'booster = "gblinear"', r"booster = 'gblinear' is not one of \['gbtree'\] for xgboost"),
        ("binary", "lightgbm", 'boosting_type = "rf"', r"boosting_type = 'rf' is not one of \['gbdt'\] for lightgbm"),
    ],
)
def test_an_xgboost_or_lightgbm_model_its_export_cannot_serve_is_refused_at_load(tmp_path: Path, task: str,
                                                                                 family: str, params: str,
                                                                                 message: str) -> None:
    metric = "r2" if task == "regression" else "accuracy"
    path = _write(tmp_path, f'[[model]]\nname = "m1"\ntarget = "y"\ntask = "{task}"\nprimary_metric = "{metric}"\n'
                            f'family = "{family}"\nparams = {{ {params} }}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)

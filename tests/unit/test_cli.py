"""The `mlops` command as a user runs it: a subprocess, its exit code, its stdout and stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _mlops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlops.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def breast_cancer_file(tmp_path_factory: pytest.TempPathFactory, ) -> Path:
    from sklearn.datasets import load_breast_cancer

    path = tmp_path_factory.mktemp("data") / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    return path


def test_train_json_reports_metrics_parity_latency_and_lineage(breast_cancer_file: Path, tmp_path: Path) -> None:
    done = _mlops("train", "--data", str(breast_cancer_file), "--target", "target", "--json", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["metrics"]["accuracy"] >= 0.93
    assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(result["metrics"])
    assert result["parity_max_abs_diff"] <= 1e-5
    assert result["latency_ms"]["p50"] > 0
    assert result["latency_ms"]["p95"] >= result["latency_ms"]["p50"]
    manifest = result["manifest"]
    for key in ("dataset_sha256", "code_version", "params", "seed", "libraries"):
        assert manifest[key] not in (None, "", {}), key
    import hashlib

    assert manifest["dataset_sha256"] == hashlib.sha256(breast_cancer_file.read_bytes()).hexdigest()
    assert (tmp_path / "model.onnx").stat().st_size > 0
    assert json.loads((tmp_path / "manifest.json").read_text())["onnx"]["sha256"]


def test_experiment_compares_families_on_one_split(breast_cancer_file: Path) -> None:
    done = _mlops("experiment", "--data", str(breast_cancer_file), "--target", "target",
                  "--families", "logistic_regression,random_forest", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["family"] for r in rows] == ["logistic_regression", "random_forest"]
    assert all(r["metrics"]["accuracy"] > 0.9 for r in rows)
    table = _mlops("experiment", "--data", str(breast_cancer_file), "--target", "target",
                   "--families", "logistic_regression")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:2] == ["family", "accuracy"]


@pytest.fixture(scope="module")
def airquality_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shaped like R's airquality: `Ozone` is numeric with many distinct values (a regression target),
    some of them missing."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    n = 150
    df = pd.DataFrame({"Solar.R": rng.uniform(0, 330, n).round(), "Wind": rng.uniform(2, 20, n).round(1),
                       "Temp": rng.integers(56, 97, n), "Month": rng.integers(5, 10, n)})
    df["Ozone"] = (0.05 * df["Solar.R"] - 3 * df["Wind"] + 1.8 * df["Temp"] - 70 + rng.normal(0, 10, n)).round()
    df.loc[::15, "Ozone"] = np.nan
    path = tmp_path_factory.mktemp("data") / "airquality.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("dataset", "target", "task", "family"),
    [("airquality_file", "Ozone", "regression", "linear_regression"),
     ("breast_cancer_file", "target", "binary", "logistic_regression")],
)
def test_train_without_a_family_trains_one_that_fits_the_task(request: pytest.FixtureRequest, dataset: str,
                                                              target: str, task: str, family: str) -> None:
    path = request.getfixturevalue(dataset)
    done = _mlops("train", "--data", str(path), "--target", target, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["task"], result["family"], result["family_auto"]) == (task, family, True)
    summary = _mlops("train", "--data", str(path), "--target", target)
    assert summary.returncode == 0, summary.stderr
    assert f"model        {family} ({task}, the default for the task" in summary.stdout
    named = _mlops("train", "--data", str(path), "--target", target, "--model-family", "random_forest",
                   "--params", '{"n_estimators": 5}', "--json")
    assert named.returncode == 0, named.stderr
    given = json.loads(named.stdout)
    assert (given["family"], given["family_auto"]) == ("random_forest", False)


def test_help_states_how_the_family_is_chosen() -> None:
    from mlops.core.families import DEFAULT_FAMILIES, FAMILIES
    from mlops.core.tasks import Task

    done = _mlops("train", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps the help to the terminal's width
    # the help spells the rule out (see mlops.cli.train): it must say what mlops.core.families does
    assert DEFAULT_FAMILIES[Task.MULTICLASS] == DEFAULT_FAMILIES[Task.BINARY]
    assert f"(default: chosen for the task: {DEFAULT_FAMILIES[Task.BINARY]} for a binary or multiclass target, " \
           f"{DEFAULT_FAMILIES[Task.REGRESSION]} for a regression target)" in text
    # every family of a task with a target (what `mlops train` trains: a clustering trains through the pipeline),
    # named in the help as in the catalog (argparse may cut a line after "|")
    named = {name.strip() for name in text.split("--model-family MODEL_FAMILY ")[1].split(" (default:")[0].split("|")}
    assert named == {name for name, family in FAMILIES.items() if any(task.has_labels for task in family.tasks)}


@pytest.mark.parametrize(
    ("command", "choice"),
    [("train", "--model-family"), ("experiment", "--families")],
)
def test_a_named_family_that_cannot_do_the_task_exits_2_with_one_line(airquality_file: Path, command: str,
                                                                     choice: str) -> None:
    done = _mlops(command, "--data", str(airquality_file), "--target", "Ozone", choice, "logistic_regression",
                  "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"mlops {command}: error: model family 'logistic_regression' cannot be trained for a "
                           "regression target (inferred from 'Ozone', a numeric column with more than 20 distinct")
    assert ("families for regression: ['hist_gradient_boosting', 'lightgbm', 'linear_regression', 'random_forest', "
            "'xgboost']") in line


def test_experiment_marks_the_family_train_picks_by_default(airquality_file: Path) -> None:
    args = ("experiment", "--data", str(airquality_file), "--target", "Ozone", "--families",
            "random_forest,linear_regression")
    done = _mlops(*args, "--json")
    assert done.returncode == 0, done.stderr
    assert {r["family"]: r["default_for_task"] for r in json.loads(done.stdout)} == {
        "random_forest": False, "linear_regression": True}
    table = _mlops(*args).stdout.splitlines()
    assert [row.split()[0] for row in table[1:3]] == ["random_forest", "linear_regression*"]
    assert table[3] == "* what `mlops train` trains when --model-family is not given"


@pytest.mark.parametrize(
    ("content", "target", "message"),
    [
        (None, "target", "does not exist"),
        (b"", "y", "empty"),
        (b"a,b\n1,2\n3,4\n", "y", "target column 'y'"),
        (bytes(range(256)) * 20, "y", "binary"),
        (b"a,y\nx,1\ny,0\n", "y", "at least 20"),
    ],
    ids=["missing-file", "empty-file", "missing-target", "garbage", "too-few-rows"],
)
def test_bad_input_exits_2_with_one_clear_message(tmp_path: Path, content: bytes | None, target: str,
                                                  message: str) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    done = _mlops("train", "--data", str(path), "--target", target, "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("mlops train: error: ")
    assert message in line


@pytest.mark.parametrize(("baseline", "mde", "alpha", "power"), [(0.8, 0.02, 0.05, 0.8), (0.3, -0.05, 0.01, 0.9)])
def test_ab_plan_agrees_with_statsmodels(baseline: float, mde: float, alpha: float, power: float) -> None:
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    done = _mlops("ab", "plan", "--baseline", str(baseline), "--mde", str(mde), "--alpha", str(alpha),
                  "--power", str(power), "--json")
    assert done.returncode == 0, done.stderr
    expected = NormalIndPower().solve_power(effect_size=proportion_effectsize(baseline + mde, baseline),
                                            alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    assert abs(json.loads(done.stdout)["n_per_arm"] - expected) / expected < 0.01


def test_ab_plan_says_how_many_days_the_test_takes_at_a_traffic() -> None:
    done = _mlops("ab", "plan", "--baseline", "0.8", "--mde", "0.02", "--weight", "0.1", "--daily-requests", "20000",
                  "--feedback-rate", "0.1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    schedule = result["schedule"]
    # 2,000 labels a day, 10% of them the challenger's: the challenger's arm sets the pace
    assert (schedule["daily_feedback_control"], schedule["daily_feedback_challenger"]) == pytest.approx((1800, 200))
    assert schedule["fixed_horizon_days"] == pytest.approx(
        max(result["n_treatment"] / 200, result["n_control"] / 1800), rel=1e-9)
    assert schedule["sequential_worst_case_days"] == pytest.approx(result["max_samples_per_arm"] / 200, rel=0.01)
    # if the planned effect is real the sequential test stops, in the median, around the fixed horizon and well
    # before its own worst case
    assert 0.5 * schedule["fixed_horizon_days"] < schedule["sequential_expected_days"] \
        < 0.8 * schedule["sequential_worst_case_days"]
    assert schedule["sequential_expected_days"] <= schedule["sequential_p90_days"] \
        <= schedule["sequential_worst_case_days"]
    text = _mlops("ab", "plan", "--baseline", "0.8", "--mde", "0.02", "--daily-requests", "20000")
    assert "fixed horizon:" in text.stdout
    assert "worst case:" in text.stdout


def test_ab_plan_refuses_a_feedback_rate_without_traffic_or_outside_0_1() -> None:
    alone = _mlops("ab", "plan", "--baseline", "0.8", "--mde", "0.02", "--feedback-rate", "0.1")
    assert alone.returncode == 2
    assert "--feedback-rate needs --daily-requests" in alone.stderr
    above = _mlops("ab", "plan", "--baseline", "0.8", "--mde", "0.02", "--daily-requests", "100",
                   "--feedback-rate", "2")
    assert above.returncode == 2
    assert "in (0, 1], got 2.0" in above.stderr


def test_ab_plan_rejects_impossible_rates() -> None:
    done = _mlops("ab", "plan", "--baseline", "0.99", "--mde", "0.02")
    assert done.returncode == 2
    assert "between 0 and 1" in done.stderr


def test_openapi_documents_every_route_and_its_errors(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    done = _mlops("openapi", "--out", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert set(document["paths"]) == {"/health", "/models/{name}", "/models/{name}/predict",
                                      "/models/{name}/feedback",
                                      "/models/{name}/batch", "/models/{name}/batch/{batch_id}"}  # mlops.batch.start
    predict = document["paths"]["/models/{name}/predict"]["post"]
    assert {"400", "404", "413", "422", "503"} <= set(predict["responses"])

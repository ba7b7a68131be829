"""`mlops drift` on two files: the JSON contract, the HTML report, clear errors; `mlops drift report` from S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.cli.main import main

EVIL_FEATURE = '<b onmouseover="x">f</b>'
EVIL_CATEGORY = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(9)
    n = 5000
    folder = tmp_path_factory.mktemp("drift")
    reference = pd.DataFrame({
        "shifted": rng.normal(10, 2, n), "stable": rng.normal(0, 1, n), EVIL_FEATURE: rng.normal(0, 1, n),
        "color": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]), "label": rng.integers(0, 2, n)})
    current = pd.DataFrame({
        "shifted": rng.normal(11, 2, n), "stable": rng.normal(0, 1, n), EVIL_FEATURE: rng.normal(0, 1, n),
        "color": rng.choice(["red", "green", "blue", EVIL_CATEGORY], n, p=[0.45, 0.27, 0.18, 0.1]),
        "only_here": 1})
    paths = {"reference": folder / "reference.csv", "current": folder / "current.csv",
             "same": folder / "same.csv", "other": folder / "other.csv", "html": folder / "report.html"}
    reference.to_csv(paths["reference"], index=False)
    current.to_csv(paths["current"], index=False)
    reference.sample(frac=1.0, random_state=1).iloc[:3000].to_csv(paths["same"], index=False)
    pd.DataFrame({"unrelated": [1, 2, 3]}).to_csv(paths["other"], index=False)
    return paths


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_json_contract_and_verdicts(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _json(capsys, ["drift", "--reference", str(files["reference"]), "--current",
                                  str(files["current"]), "--json", "--html", str(files["html"])])
    assert code == 1
    assert sorted(report["drifted_features"]) == ["color", "shifted"]
    by_name = {f["feature"]: f for f in report["features"]}
    assert set(by_name) == {"shifted", "stable", EVIL_FEATURE, "color"}  # the label-only and current-only columns
    for f in report["features"]:
        assert {"feature", "method", "statistic", "p_value", "effect_size", "drifted"} <= set(f)
    assert by_name["shifted"]["method"] == "ks"
    assert by_name["color"]["method"] == "chi2"
    assert by_name["stable"]["drifted"] is False
    assert by_name["stable"]["p_value"] >= by_name["stable"]["raw_p_value"]
    assert by_name["color"]["unseen"] == {EVIL_CATEGORY: pytest.approx(500, rel=0.15)}
    assert "only_here" in report["ignored_columns"]


def test_html_report_plots_each_drifted_feature_and_escapes(files: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    main(["drift", "--reference", str(files["reference"]), "--current", str(files["current"]),
          "--html", str(files["html"])])
    capsys.readouterr()
    html = files["html"].read_text()
    assert html.count("<svg") == 2  # shifted and color drifted; stable and the evil-named one did not
    assert EVIL_CATEGORY not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert EVIL_FEATURE not in html
    assert "&lt;b onmouseover=" in html


def test_no_drift_between_samples_of_one_file(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _json(capsys, ["drift", "--reference", str(files["reference"]), "--current",
                                  str(files["same"]), "--json"])
    assert (code, report["status"], report["drifted_features"]) == (0, "no_drift", [])


def test_human_table(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "--reference", str(files["reference"]), "--current", str(files["current"])]) == 1
    out = capsys.readouterr().out
    assert "DRIFT" in out
    assert "2 of 4 features drifted" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--reference", "missing.csv", "--current", "{current}"], "no such file"),
    (["--reference", "{reference}", "--current", "{other}"], "no column in common"),
    (["--reference", "{reference}"], "give both"),
    (["report"], "model's name"),
])
def test_clear_errors_exit_2(files: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str],
                             message: str) -> None:
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    assert main(["drift", *args]) == 2
    assert message in capsys.readouterr().err


def test_the_installed_command_prints_the_same_contract(files: dict[str, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "drift", "--reference", str(files["reference"]), "--current",
         str(files["current"]), "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert sorted(json.loads(done.stdout)["drifted_features"]) == ["color", "shifted"]


def test_report_of_a_deployed_model_from_s3(files: dict[str, Path], config_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    from mlops import aws
    from mlops.aws.storage import ObjectStore
    from mlops.cli.drift import compare_files
    from mlops.drift.report import ReportStore

    report = compare_files(files["reference"], files["current"])
    with mock_aws():
        aws.client.cache_clear()
        aws.client("s3").create_bucket(Bucket="mlops-models")
        monkeypatch.setenv("MLOPS_CONFIG", str(config_file))
        assert main(["drift", "report", "wine"]) == 2
        assert "no drift report yet" in capsys.readouterr().err
        ReportStore(ObjectStore(aws.client("s3"), "mlops-models")).put(
            "wine", "20260101T000000Z", {**report, "model": "wine"})
        out = tmp_path / "latest.html"
        assert main(["drift", "report", "wine", "--json", "--html", str(out)]) == 0
        assert json.loads(capsys.readouterr().out)["drifted_features"] == report["drifted_features"]
        assert out.read_text().count("<svg") == 2
        opened: list[str] = []
        monkeypatch.setattr("mlops.cli.drift.webbrowser.open", opened.append)
        assert main(["drift", "report", "wine", "--open"]) == 0
        assert "wine: drifted" in capsys.readouterr().out
        [url] = opened
        assert Path(url.removeprefix("file://")).read_text().count("<svg") == 2
    aws.client.cache_clear()

"""`mlops demo` reports an error answer of the API as one sentence with its status and message, and exits non-zero:
never a traceback, never a KeyError from reading a prediction out of an error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops.cli import demo
from mlops.cli.main import main

REFUSED = {"error": "InvalidInput", "message": "features: missing feature(s) ['mean radius']",
           "field": "features.mean radius"}


class RefusingCloud:
    """A local cloud whose API answers every request with the error it is given."""

    def __init__(self, status: int, answer: Any) -> None:
        self.status, self.answer = status, answer
        self.deployment = SimpleNamespace(infer_function=lambda model: f"mlops-infer-{model}")

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.status, self.answer


@pytest.mark.parametrize(("status", "answer", "said"), [
    (422, REFUSED, "POST /models/breast-cancer/predict answered 422: features: missing feature(s) ['mean radius']"),
    (502, {"message": "Internal server error"}, "POST /models/breast-cancer/predict answered 502: Internal server "
                                                "error"),
    (500, None, "POST /models/breast-cancer/predict answered 500: null"),
])
def test_the_demo_says_what_the_api_answered_in_one_sentence_and_exits_non_zero(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, status: int,
        answer: Any, said: str) -> None:
    def run_demo(**_: Any) -> dict[str, Any]:
        # the demo's first prediction, as run_demo makes it once the champion is registered
        return demo._serve_and_canary(RefusingCloud(status, answer), "breast-cancer", "target", 2, lambda _: None,
                                      tmp_path)

    monkeypatch.setattr(demo, "run_demo", run_demo)
    code = main(["demo", "--config", str(tmp_path / "mlops.toml"), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [f"mlops demo: {said}"]
    assert "Traceback" not in out + err



def test_a_pipeline_that_does_not_finish_is_said_in_one_sentence_too(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    said = "3 pipeline execution(s) did not finish within 180s; 2 started; function errors: none"

    def run_demo(**_: Any) -> dict[str, Any]:
        raise TimeoutError(said)  # what EmbeddedCloud.wait_for_executions raises

    monkeypatch.setattr(demo, "run_demo", run_demo)
    code = main(["demo", "--config", str(tmp_path / "mlops.toml"), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [f"mlops demo: {said}"]
    assert "Traceback" not in out + err

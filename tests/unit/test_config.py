from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import Task, load_config
from mlops.errors import ConfigError, UnknownModel


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
    ],
)
def test_invalid_configuration_says_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, body))


def test_missing_configuration_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MLOPS_CONFIG"):
        load_config(tmp_path / "absent.toml")

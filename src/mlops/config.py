"""The project's configuration: every model (use case) is declared once in ``mlops.toml``.

The same file is read by the handlers (bundled next to them), the CLI, the local cloud and the CDK app,
so a model's name, target and thresholds cannot differ between them.
"""

from __future__ import annotations

import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.errors import ConfigError, UnknownModel

CONFIG_ENV = "MLOPS_CONFIG"
CONFIG_FILE = "mlops.toml"

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("r2", "neg_rmse", "neg_mae")


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not Task.REGRESSION


class ModelConfig(BaseModel):
    """One model: what it predicts, how it is trained and when a candidate is good enough."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
    target: str = Field(min_length=1)
    task: Task = Task.BINARY
    family: str = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)
    # metric -> minimum value a candidate must reach (absolute gate)
    thresholds: dict[str, float] = Field(default_factory=dict)
    # the metric compared against the champion; a candidate may be at most `champion_margin` worse
    primary_metric: str = "accuracy"
    champion_margin: float = Field(default=0.01, ge=0.0)
    canary_weight: float = Field(default=0.1, gt=0.0, lt=1.0)
    # the canary's sequential test on feedback accuracy: smallest change worth detecting, error rates,
    # how often to look, and when to give up (keep the champion)
    rollout_mde: float = Field(default=0.05, gt=0.0, lt=1.0)
    rollout_alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    rollout_power: float = Field(default=0.8, gt=0.5, lt=1.0)
    rollout_interval_seconds: int = Field(default=300, ge=1)
    rollout_max_hours: float = Field(default=72.0, gt=0.0)
    # a declared data contract (see mlops.contract.DataContract); inferred from the first file when absent
    contract: dict[str, Any] | None = None
    # files larger than this are rejected whole by ingest (one Lambda holds the file in memory)
    max_file_mb: int = Field(default=256, gt=0)
    # a file with more bad rows than this share is rejected whole rather than half-curated
    max_bad_row_fraction: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        from mlops.families import FAMILIES

        if value not in FAMILIES:
            raise ValueError(f"unknown model family {value!r}; choose one of {sorted(FAMILIES)}")
        return value

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> ModelConfig:
        known = CLASSIFICATION_METRICS if self.task.is_classification else REGRESSION_METRICS
        for metric in [*self.thresholds, self.primary_metric]:
            if metric not in known:
                raise ValueError(f"metric {metric!r} does not apply to a {self.task} model; use one of {known}")
        return self

    @property
    def incoming_prefix(self) -> str:
        return f"incoming/{self.name}/"


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = "mlops"
    models: list[ModelConfig]

    @model_validator(mode="after")
    def _unique_names(self) -> ProjectConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; declared twice: {dupes}")
        return self

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise UnknownModel(f"no model named {name!r} is declared; known: {[m.name for m in self.models]}")


def config_path() -> Path:
    """``$MLOPS_CONFIG``, else ``mlops.toml`` next to the handler (Lambda), else in the working directory."""
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    for candidate in (Path(os.environ.get("LAMBDA_TASK_ROOT", "/var/task")) / CONFIG_FILE, Path.cwd() / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return Path(__file__).resolve().parents[2] / CONFIG_FILE


def load_config(path: Path | str | None = None) -> ProjectConfig:
    path = Path(path) if path else config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} not found; set {CONFIG_ENV} or create {CONFIG_FILE}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return ProjectConfig.model_validate({"models": raw.get("model", []), **raw.get("project", {})})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'models'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc

"""The platform provisioned into embedded moto, with the in-process Lambda runtime executing the real
handlers and moto's Step Functions engine executing the real ASL file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.local.embedded import EmbeddedCloud, embedded_cloud


@pytest.fixture
def cloud(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedCloud]:
    monkeypatch.setenv("MLOPS_CONFIG", str(config_file))
    with embedded_cloud(config_file) as embedded:
        yield embedded

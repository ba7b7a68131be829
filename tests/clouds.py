"""A local cloud with models served: what most integration test modules start from, built once per module."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlops.local.embedded import EmbeddedCloud, embedded_cloud


@contextmanager
def served_cloud(config_file: Path, uploads: Mapping[str, bytes], *, config_text: str | None = None,
                 **options: Any) -> Iterator[EmbeddedCloud]:
    """An embedded cloud of this configuration (written to ``config_file`` first when ``config_text`` is given), each
    model of ``uploads`` trained by the real pipeline from its CSV and deployed behind its `live` alias. ``options``
    go to ``embedded_cloud`` (``buffered_captures``, ``handler_output``)."""
    if config_text is not None:
        config_file.write_text(config_text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(config_file))
        with embedded_cloud(config_file, **options) as cloud:
            for model, body in uploads.items():
                cloud.upload(model, "data.csv", body)
            executions = cloud.wait_for_executions(len(uploads))
            failed = [e for e in executions if e["status"] != "SUCCEEDED"]
            assert not failed, [cloud.history(e["executionArn"])[-3:] for e in failed]
            yield cloud

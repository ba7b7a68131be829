"""The feature store's online path: predict from ``{"entity_id": ...}`` (a DynamoDB lookup, then the model) against
predict with the same features given, through the same infer handler in the same run.

The lookup goes to moto's DynamoDB in this process: the ratio bounds what the lookup adds on this machine, not
a DynamoDB round trip on AWS (single-digit milliseconds in the same region).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.bench_infer import QUIET, _call, _event, deployed_handler
from bench.harness import Result, percentiles, timed
from mlops.cli.demo import FEATURE_MODEL as MODEL
from mlops.cli.demo import FEATURE_MODEL_TOML

CONFIG = f"""
[project]
project = "mlops"
{FEATURE_MODEL_TOML}"""


@contextlib.contextmanager
def _served(workdir: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(infer handler module, the online features of one entity) on the embedded local cloud."""
    import os

    from mlops.aws.platform import infer_function_name
    from mlops.cli.demo import purchases_dataset
    from mlops.features.online import OnlineStore
    from mlops.local.embedded import embedded_cloud

    config_file = workdir / "mlops.toml"
    config_file.write_text(CONFIG)
    with embedded_cloud(config_file, handler_output=QUIET) as cloud:
        cloud.upload(MODEL, "bench.csv", purchases_dataset().to_csv(index=False).encode())
        cloud.wait_for_executions(1)
        if not cloud.registry.versions(MODEL):
            raise RuntimeError("the pipeline registered no version of the feature-store model")
        handler = deployed_handler(cloud, infer_function_name("mlops", MODEL), workdir)
        found = OnlineStore(cloud.client("dynamodb"), cloud.deployment.names["features"]).get(MODEL, "1000")
        assert found is not None
        try:
            yield handler, found.values
        finally:
            os.environ.pop_layer()  # type: ignore[attr-defined]


def run(quick: bool) -> list[Result]:
    repeat = 200 if quick else 2000
    with tempfile.TemporaryDirectory() as tmp, _served(Path(tmp)) as (handler, values):
        by_entity, by_features = _event({"entity_id": "1000"}), _event({"features": values})
        for event in (by_entity, by_features):
            event["path"] = f"/models/{MODEL}/predict"
        with contextlib.redirect_stdout(QUIET):
            _call(handler, by_features)  # loads the model
            handler.server.capture.stream = None  # the same for both: measured in bench_infer
            lookup = timed(lambda: _call(handler, by_entity), repeat=repeat)
            given = timed(lambda: _call(handler, by_features), repeat=repeat)
    p_lookup, p_given = percentiles(lookup), percentiles(given)
    return [Result("predict from an entity id (online lookup on moto + predict), p50", p_lookup["p50"],
                   "predict with the same features given, p50", p_given["p50"], "ms", "informational", True,
                   {"lookup": {k: round(v, 4) for k, v in p_lookup.items()},
                    "given": {k: round(v, 4) for k, v in p_given.items()}})]

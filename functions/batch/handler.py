"""batch: one step of a batch run (infra/batch.asl.json): plan the objects, score one object, or write the manifest."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.observability import instrumented, powertools
from mlops.batch.run import CHUNK_ROWS, run_step
from mlops.batch.start import BatchEvent
from mlops.registry.store import Registry
from mlops.serving.cache import ModelCache

logger, tracer, metrics = powertools()
# one model per run, loaded once per execution environment and reused by the objects it scores next
cache = ModelCache.for_environment(aws.client("s3"))


@instrumented(logger, tracer, metrics, step=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = BatchEvent.model_validate({"event": event}).event
    result = run_step(step, s3=aws.client("s3"), registry=Registry(aws.client("dynamodb"), resources.registry_table),
                      cache=cache, chunk_rows=int(os.environ.get("BATCH_CHUNK_ROWS", str(CHUNK_ROWS))))
    if "rows_in" in result:
        for name in ("rows_in", "rows_out", "rows_failed"):
            metrics.add_metric(name="Batch" + name.title().replace("_", ""), unit=MetricUnit.Count, value=result[name])
    logger.info("batch step", extra={"step": step.step, "batch_id": step.batch.batch_id, "result": result})
    return result

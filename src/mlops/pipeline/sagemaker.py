"""The train step as a SageMaker training job: ``python -m mlops.pipeline.sagemaker``, which the image's entrypoint runs
when SageMaker starts it as ``docker run <image> train`` (infra/Dockerfile).

The state machine's TrainOnSageMaker state hands over the pipeline input as the hyperparameter ``pipeline_input``
(JSON) and MODELS_BUCKET in the environment; this runs the very ``train_step`` of the train function, which leaves
its result in the candidate's ``train.json``, where the next state reads it. SageMaker's own output (``/opt/ml/model``)
stays empty: the artefacts go where the Lambda path puts them.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from mlops import aws
from mlops.aws.environment import resources
from mlops.aws.storage import ObjectStore
from mlops.core.config import load_config
from mlops.pipeline.inputs import PipelineInput
from mlops.pipeline.steps import train_step

HYPERPARAMETERS = Path("/opt/ml/input/config/hyperparameters.json")
# SageMaker reports this file's text as the job's FailureReason (at most 1,024 characters), which Step Functions
# passes on to RecordFailure as the error's cause
FAILURE = Path("/opt/ml/output/failure")
PIPELINE_INPUT = "pipeline_input"

logger = logging.getLogger("mlops.pipeline.sagemaker")


def read_input(hyperparameters: Path = HYPERPARAMETERS) -> PipelineInput:
    return PipelineInput.model_validate_json(json.loads(hyperparameters.read_text())[PIPELINE_INPUT])


def main(hyperparameters: Path = HYPERPARAMETERS, *, s3: Any = None) -> dict[str, Any]:
    state = read_input(hyperparameters)
    s3 = s3 or aws.client("s3")
    result = train_step(state, config=load_config(), s3=s3, models=ObjectStore(s3, resources.models_bucket))
    logger.info("trained %s run %s: %s", state.model, state.run_id, json.dumps(result))
    return result


def run(hyperparameters: Path = HYPERPARAMETERS, failure: Path = FAILURE) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    try:
        main(hyperparameters)
    except Exception as exc:
        logger.exception("training failed")
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{type(exc).__name__}: {exc}"[:1024] + "\n" + traceback.format_exc()[-2048:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())

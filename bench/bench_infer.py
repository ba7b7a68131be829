"""The serving path: the infer handler in-process (one API Gateway event -> response, single row) against a
bare ``InferenceSession.run`` on the same row and model, and against the same handler answering with the
scikit-learn pipeline's ``predict_proba``; then cold starts (a new process: imports, model load, first
answer) of the ONNX handler and of an equivalent scikit-learn/pandas one.

The model is the project's example (``mlops.toml``: breast-cancer, a 100-tree random forest), trained by
the real pipeline on the embedded local cloud; the scikit-learn pipeline is fitted from the same rows,
configuration and seed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Result, percentiles, timed

ROOT = Path(__file__).resolve().parents[1]
MODEL = "breast-cancer"
# Handlers' logs and metrics; open for the whole process, because loggers of one service outlive a cloud.
QUIET = open(os.devnull, "w")  # noqa: SIM115


class SklearnModel:
    """The OnnxModel interface answered by the scikit-learn pipeline: the 'same handler doing sklearn'."""

    def __init__(self, pipeline: Any, columns: list[str]) -> None:
        self.pipeline = pipeline
        self.columns = columns

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> Any:
        import pandas as pd

        from mlops.serving.onnx_model import Prediction

        frame = pd.DataFrame.from_records(list(records), columns=self.columns)
        proba = self.pipeline.predict_proba(frame)
        classes = [str(c) for c in self.pipeline.classes_]
        return Prediction(labels=np.asarray(classes)[proba.argmax(axis=1)], probabilities=proba, classes=classes)


def _event(body: dict[str, Any]) -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "apigw_predict.json").read_text())
    event["body"] = json.dumps(body)
    return event


def _load_handler(root: Path, env: dict[str, str]) -> Any:
    assert hasattr(os.environ, "push"), "the in-process runtime must be installed"
    os.environ.push(env)  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location(f"bench_infer_{uuid.uuid4().hex}", root / "handler.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {root / 'handler.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deployed_handler(cloud: Any, name: str, workdir: Path) -> Any:
    """The infer handler module of a deployed function's version 1, loaded in this process with its environment
    (pop it with ``os.environ.pop_layer()``)."""
    fn = cloud.client("lambda").get_function(FunctionName=name, Qualifier="1")
    env = {**fn["Configuration"]["Environment"]["Variables"], "AWS_LAMBDA_FUNCTION_NAME": name,
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING",
           "MODEL_CACHE_DIR": str(workdir / "models")}
    with contextlib.redirect_stdout(QUIET):
        return _load_handler(ROOT / "functions" / "infer", env)


@contextlib.contextmanager
def _served_model(workdir: Path) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """(infer handler module, the fitted sklearn pipeline, one feature row) on the embedded local cloud."""
    from mlops.aws.platform import infer_function_name
    from mlops.cli.demo import demo_dataset
    from mlops.core.config import load_config
    from mlops.local.embedded import embedded_cloud

    config_file = workdir / "mlops.toml"
    config_file.write_text((ROOT / "mlops.toml").read_text().replace("rollout_interval_seconds = 300",
                                                                       "rollout_interval_seconds = 86400"))
    config = load_config(config_file)
    model_cfg = config.model(MODEL)
    with embedded_cloud(config_file, handler_output=QUIET) as cloud:
        body = demo_dataset(model_cfg.target)
        cloud.upload(MODEL, "bench.csv", body)
        cloud.wait_for_executions(1)
        if not cloud.registry.versions(MODEL):
            raise RuntimeError("the pipeline registered no version; run `make demo` to see why")
        handler = deployed_handler(cloud, infer_function_name(config.project, MODEL), workdir)
        pipeline, row = _sklearn_pipeline(workdir, body, model_cfg)
        try:
            yield handler, pipeline, row
        finally:
            os.environ.pop_layer()  # type: ignore[attr-defined]


def _sklearn_pipeline(workdir: Path, body: bytes, model_cfg: Any) -> tuple[Any, dict[str, Any]]:
    from mlops.training.offline import load_dataset
    from mlops.training.train import train

    path = workdir / "data.csv"
    path.write_bytes(body)
    ds = load_dataset(path, model_cfg.target, model_cfg.task, None)
    result = train(ds.frame, ds.contract, model_cfg)
    row = {k: (float(v) if isinstance(v, int | float | np.floating) else v)
           for k, v in result.test_df.drop(columns=[model_cfg.target]).iloc[0].items()}
    return result.pipeline, row


def _call(handler: Any, event: dict[str, Any]) -> dict[str, Any]:
    from mlops.local.lambda_runtime import LambdaContext

    context = LambdaContext("bench-infer", "1", "arn:aws:lambda:us-east-1:123456789012:function:bench-infer",
                            1024, 30)
    answer: dict[str, Any] = handler.handler(event, context)
    if answer["statusCode"] != 200:
        raise RuntimeError(f"the handler answered {answer['statusCode']}: {answer['body']}")
    return answer


def warm_path(quick: bool) -> list[Result]:
    repeat = 300 if quick else 3000
    with tempfile.TemporaryDirectory() as tmp, _served_model(Path(tmp)) as (handler, pipeline, row):
        event = _event({"features": row})
        with contextlib.redirect_stdout(QUIET):
            _call(handler, event)  # loads the model: the warm path is measured below
            loaded = handler.server.loaded()
            feeds = loaded.model.feeds([row])
            session = loaded.model.session
            bare = timed(lambda: session.run(None, feeds), repeat=repeat)
            with_capture = timed(lambda: _call(handler, event), repeat=repeat)
            stream = handler.server.capture.stream
            handler.server.capture.stream = None
            without_capture = timed(lambda: _call(handler, event), repeat=repeat)
            onnx_model = loaded.model
            loaded.model = SklearnModel(pipeline, list(row))
            sklearn = timed(lambda: _call(handler, event), repeat=max(100, repeat // 10))
            loaded.model, handler.server.capture.stream = onnx_model, stream
    p_bare, p_cap, p_nocap, p_sk = (percentiles(s) for s in (bare, with_capture, without_capture, sklearn))
    rounded = {k: {m: round(v, 4) for m, v in p.items()} for k, p in
               (("handler", p_nocap), ("handler_with_capture", p_cap), ("bare_run", p_bare), ("sklearn", p_sk))}
    return [
        Result("infer handler p50 (ONNX, one row, capture off)", p_nocap["p50"], "bare InferenceSession.run p50",
               p_bare["p50"], "ms", "ratio <= 5", p_nocap["p50"] <= 5 * p_bare["p50"], rounded),
        Result("infer handler p50 (ONNX, one row, capture to Firehose on moto)", p_cap["p50"],
               "bare InferenceSession.run p50", p_bare["p50"], "ms", "informational", True,
               {"note": "the capture is a synchronous PutRecordBatch; on moto it also writes an S3 object"}),
        Result("infer handler p50 (ONNX)", p_nocap["p50"], "same handler with sklearn predict_proba p50",
               p_sk["p50"], "ms", "ratio <= 1/20", p_nocap["p50"] * 20 <= p_sk["p50"]),
    ]


# Cold start: a new interpreter that imports what the handler imports, loads the model from a file and
# answers one row. The ONNX side runs the real handler modules; the sklearn side the equivalent stack.
ONNX_COLD = """
import time, json, sys
t0 = time.perf_counter()
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools import Logger, Metrics, Tracer
import mlops.serving.server  # what the handler imports
from mlops.serving.requests import validate_row, schema_from_contract
from mlops.serving.onnx_model import OnnxModel
model = OnnxModel(open(sys.argv[1], "rb").read())
schema = schema_from_contract(json.load(open(sys.argv[2])))
row = json.loads(sys.argv[3])
model.predict_records([validate_row(row, schema, "features")])
print(time.perf_counter() - t0)
"""

SKLEARN_COLD = """
import time, json, sys
t0 = time.perf_counter()
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools import Logger, Metrics, Tracer
import pandas as pd
import joblib
pipeline = joblib.load(sys.argv[1])
row = json.loads(sys.argv[3])
pipeline.predict_proba(pd.DataFrame.from_records([row]))
print(time.perf_counter() - t0)
"""


def _cold(script: str, args: list[str], runs: int) -> list[float]:
    """Seconds from interpreter start to the first answer (interpreter start measured outside)."""
    out = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True,  # noqa: S603
                              text=True, check=True, env={**os.environ, "POWERTOOLS_TRACE_DISABLED": "true"})
        out.append(float(proc.stdout.strip().splitlines()[-1]))
    return out


def cold_start(quick: bool) -> list[Result]:
    import joblib

    runs = 3 if quick else 7
    with tempfile.TemporaryDirectory() as tmp, _served_model(Path(tmp)) as (handler, pipeline, row):
        with contextlib.redirect_stdout(QUIET):
            _call(handler, _event({"features": row}))
        version = handler.server.loaded().version
        folder = Path(tmp) / "models" / MODEL / f"v{version.version}"
        joblib.dump(pipeline, Path(tmp) / "pipeline.joblib")
        row_json = json.dumps(row)
        onnx = _cold(ONNX_COLD, [str(folder / "model.onnx"), str(folder / "contract.json"), row_json], runs)
        sk = _cold(SKLEARN_COLD, [str(Path(tmp) / "pipeline.joblib"), "-", row_json], runs)
    onnx_s, sk_s = float(np.median(onnx)), float(np.median(sk))
    return [Result("cold start, ONNX handler stack (median)", onnx_s, "scikit-learn/pandas handler stack",
                   sk_s, "s", "ratio <= 1/3", onnx_s * 3 <= sk_s,
                   {"onnx_runs_s": [round(x, 3) for x in onnx], "sklearn_runs_s": [round(x, 3) for x in sk]})]


def run(quick: bool) -> list[Result]:
    return [*warm_path(quick), *cold_start(quick)]

"""``mlops openapi``: the model API's OpenAPI document, generated from the infer handler's routes (no cloud needed).

    mlops openapi [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_openapi_command(sub: Any) -> None:
    openapi = sub.add_parser("openapi", help="write the OpenAPI document of the model API")
    openapi.add_argument("--out", help="file to write (default: stdout)")
    openapi.set_defaults(func=run_openapi)


def run_openapi(args: argparse.Namespace) -> int:
    import runpy

    from mlops import __version__
    from mlops.aws import environment, platform

    os.environ.setdefault(environment.MODEL_NAME, "model")
    os.environ.setdefault(environment.REGISTRY_TABLE, "unused-for-openapi")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    handler = runpy.run_path(str(platform.FUNCTIONS_DIR / "infer" / "handler.py"))
    document = handler["app"].get_openapi_json_schema(
        title="serverless-mlops model API", version=__version__,
        description="Predictions, feedback and model status of every model; AWS_IAM (SigV4) authorization.")
    if args.out:
        Path(args.out).write_text(document + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(document)
    return 0

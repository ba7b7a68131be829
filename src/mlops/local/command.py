"""The ``mlops local`` command line: parsing only; the local cloud itself is imported when it runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mlops.local.worker import DEFAULT_MAX_ENVIRONMENTS

UP_DESCRIPTION = """\
Start the whole platform on this machine, no AWS account and no Docker: moto's server (S3, DynamoDB,
Lambda, Step Functions, SNS, Firehose) on 127.0.0.1, every function's execution environments as processes of
their own (as many side by side as invocations come at once), a local API gateway in front of each model's `live`
alias, and the platform's schedules.

When ready, one line of JSON goes to stdout: aws_endpoint_url, api_url, status_url (every model on one
page), region, data_bucket, models_bucket, models (name, target, incoming_prefix, predict_url) and env
(what to export for clients without AWS configuration). Requests and pipeline steps are logged on stderr
until SIGINT/SIGTERM.

  aws --endpoint-url http://127.0.0.1:4566 s3 cp data.csv s3://mlops-data/incoming/<model>/
  curl -s http://127.0.0.1:8080/models/<model>
  AWS_ENDPOINT_URL=http://127.0.0.1:4566 mlops models list <model>

Exit codes: 0 after a clean stop, 2 when a port is taken or the configuration is invalid.
See docs/local.md."""


def _cmd_up(args: argparse.Namespace) -> int:
    from mlops.core.config import config_path
    from mlops.core.errors import ConfigError
    from mlops.local.server import Options, run

    scale = args.schedule_scale
    if scale is None:
        try:
            scale = float(os.environ.get("MLOPS_SCHEDULE_SCALE") or 1)
        except ValueError as exc:
            raise ConfigError(f"MLOPS_SCHEDULE_SCALE must be a number, e.g. 60, not "
                              f"{os.environ['MLOPS_SCHEDULE_SCALE']!r}") from exc
    return run(Options(config=Path(args.config) if args.config else config_path(), port=args.port,
                       api_port=args.api_port, state=Path(args.state) if args.state else None,
                       schedule_scale=scale, verbose=args.verbose, in_process=args.in_process,
                       max_environments=args.max_environments))


def register(sub: Any) -> None:
    """Add ``mlops local up`` to the ``mlops`` command's subparsers."""
    local = sub.add_parser("local", help="run the platform on this machine (moto + a local Lambda runtime)")
    commands = local.add_subparsers(dest="local_command", required=True)
    up = commands.add_parser("up", help="start the local cloud and serve until Ctrl-C",
                             description=UP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--port", type=int, default=4566, help="AWS endpoint port (default 4566; 0 picks a free one)")
    up.add_argument("--api-port", type=int, default=8080, help="model API port (default 8080; 0 picks a free one)")
    up.add_argument("--state", help="keep data, models and deployments in this directory across restarts "
                                    "(default: start clean, keep nothing)")
    up.add_argument("--config", help="project configuration (default: $MLOPS_CONFIG or ./mlops.toml)")
    up.add_argument("--schedule-scale", type=float, default=None,
                    help="run schedules this many times faster, e.g. 60 makes rate(1 hour) fire every minute "
                         "(default: $MLOPS_SCHEDULE_SCALE or 1)")
    up.add_argument("--max-environments", type=int, default=DEFAULT_MAX_ENVIRONMENTS,
                    help="execution environments (worker processes) alive at once, all functions together "
                         f"(default {DEFAULT_MAX_ENVIRONMENTS})")
    up.add_argument("--in-process", action="store_true",
                    help="run every handler in this process, one invocation at a time (e.g. to debug a handler)")
    up.add_argument("--verbose", action="store_true",
                    help="also log the functions' own JSON logs and every AWS API request")
    up.set_defaults(func=_cmd_up)

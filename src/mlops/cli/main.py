"""The ``mlops`` command: builds the parser from each group of subcommands (one module each) and runs the one asked
for.

Exit codes: 0 success, 1 the work ran but its outcome is negative (no model registered), 2 bad input or
configuration (one clear message on stderr, no traceback).

Every module imported here is light (argparse and the standard library): each subcommand imports what it needs when
it runs, so `mlops --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops.cli.batch import add_batch_command
from mlops.cli.common import add_config_option, config_file
from mlops.cli.drift import add_drift_commands
from mlops.cli.features import add_feature_commands
from mlops.cli.models import add_model_commands
from mlops.cli.openapi import add_openapi_command
from mlops.cli.train import add_train_commands
from mlops.core.errors import MlopsError


def _run_demo(args: argparse.Namespace) -> int:
    # the demo's story imports the local cloud: only when it runs
    from mlops.cli.demo import main as demo_main

    return demo_main(config_file(args), Path(args.out), verbose=args.verbose)


def _add_demo_command(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run the training pipeline on an embedded local cloud with a bundled dataset")
    add_config_option(demo)
    demo.add_argument("--out", default="demo-out", help="where to copy the registered artefacts")
    demo.add_argument("--verbose", action="store_true", help="also show the functions' JSON logs and metrics")
    demo.set_defaults(func=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    from mlops.local.command import register as add_local_commands

    parser = argparse.ArgumentParser(prog="mlops", description="serverless-mlops: the ML loop on AWS serverless parts")
    sub = parser.add_subparsers(dest="command", required=True)
    # in the order `mlops --help` lists them
    for add in (add_train_commands, add_model_commands, add_openapi_command, _add_demo_command, add_drift_commands,
                add_batch_command, add_feature_commands, add_local_commands):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except MlopsError as exc:
        print(f"mlops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlops {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error of ours; silence the flush at exit too
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

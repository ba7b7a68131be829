"""``mlops batch``: start a batch run (the same core as ``POST /models/<name>/batch``), and with ``--wait`` follow
it to its manifest.

    mlops batch <name> s3://bucket/prefix/ [--version N] [--wait] [--json]

The input is under s3://<data bucket>/batch/<name>/ or a prefix the model declares (batch_inputs); the run writes
under a prefix the platform chooses for it (docs/batch.md). Against AWS (the stack's `Environment` output exported:
REGISTRY_TABLE, DATA_BUCKET, BATCH_STATE_MACHINE_ARN) or, with AWS_ENDPOINT_URL, the local cloud (names derived
from the project, as ``mlops models`` does).

Exit codes: 0 started (without --wait), or done with every row scored; 1 done, but some rows or objects failed (the
manifest says which and why); 2 bad input or configuration (one message, nothing started); 3 the run itself failed
(its error and cause are printed); 4 done, but there was nothing to score (no CSV or Parquet object under the input).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from mlops.cli.common import add_config_option, batch_state_machine_arn, load_project, progress, resource_name

POLL_SECONDS = 1.0
EXIT_ROWS_FAILED, EXIT_RUN_FAILED, EXIT_NOTHING_SCORED = 1, 3, 4


def add_batch_command(sub: Any) -> None:
    batch = sub.add_parser(
        "batch", help="score every CSV and Parquet object under an S3 prefix with a model (a batch run)",
        description="Starts the batch state machine; predictions go next to the input rows, with a manifest, under "
                    "s3://<data bucket>/batch-runs/<name>/<batch id>/ (docs/batch.md). Exit codes: 0 all rows scored "
                    "(or started, without --wait), 1 some rows or objects failed, 2 bad input, 3 the run failed, "
                    "4 nothing to score.")
    batch.add_argument("name", help="the model's name (as declared in mlops.toml)")
    batch.add_argument("input", help="s3://bucket/prefix/ under s3://<data bucket>/batch/<name>/ or a prefix the model "
                                     "declares (batch_inputs): every CSV and Parquet object under it is scored")
    batch.add_argument("--version", type=int, help="the model version (default: the champion)")
    batch.add_argument("--wait", action="store_true", help="follow the run and end with its manifest's summary")
    batch.add_argument("--json", action="store_true", help="print the run (and its summary) as one JSON object")
    add_config_option(batch)
    batch.set_defaults(func=run_batch)


def _current_state(sfn: Any, execution_arn: str) -> str | None:
    events = sfn.get_execution_history(executionArn=execution_arn, reverseOrder=True, maxResults=20)["events"]
    for event in events:
        details = event.get("stateEnteredEventDetails")
        if details:
            return str(details["name"])
    return None


def _follow(sfn: Any, started: dict[str, Any], machine: str) -> dict[str, Any]:
    from mlops.batch import start as batch

    began, shown = time.monotonic(), None
    while True:
        answer = batch.status(started["model"], started["batch_id"], sfn=sfn, state_machine_arn=machine)
        if answer["status"] != "running":
            return answer
        state = _current_state(sfn, started["execution_arn"])
        if state != shown:
            progress(f"{state or 'starting'} ({time.monotonic() - began:.0f} s)")
            shown = state
        time.sleep(POLL_SECONDS)


def _print_summary(done: dict[str, Any]) -> None:
    if done["status"] == "failed":
        print(f"batch {done['batch_id']} failed: {done['error']}: {done['cause']}")
        return
    s = done["summary"]
    print(f"batch {done['batch_id']}: {s['status']}, model {s['model']} v{s['model_version']}, {s['seconds']} s")
    print(f"  rows: {s['rows_in']} in, {s['rows_out']} scored, {s['rows_failed']} failed")
    print(f"  objects: {s['objects_total']} read ({s['objects_failed']} with failures), "
          f"{s['objects_skipped']} skipped (not CSV or Parquet)")
    print(f"  output: {s['output']}")
    print(f"  manifest: {s['manifest']}" + (" (rows failed and objects skipped, with reasons)"
                                            if s["rows_failed"] or s["objects_skipped"] else ""))


def exit_code(done: dict[str, Any]) -> int:
    if done["status"] == "failed":
        return EXIT_RUN_FAILED
    summary = done["summary"]
    if summary["rows_failed"] or summary["objects_failed"]:
        return EXIT_ROWS_FAILED
    if not summary["objects_total"]:
        return EXIT_NOTHING_SCORED
    return 0


def run_batch(args: argparse.Namespace) -> int:
    from mlops import aws
    from mlops.batch import start as batch
    from mlops.registry.store import Registry

    config = load_project(args)
    config.model(args.name)
    table = resource_name("registry", config.project)
    data_bucket = resource_name("data", config.project)
    machine = batch_state_machine_arn(config.project)
    body = {"input": args.input, **({"version": args.version} if args.version is not None else {})}
    sfn = aws.client("stepfunctions")
    started = batch.start(args.name, body, registry=Registry(aws.client("dynamodb"), table), sfn=sfn,
                          state_machine_arn=machine, config=config, data_bucket=data_bucket)
    progress(f"started batch {started['batch_id']}: {args.name} v{started['model_version']}, {started['input']} -> "
             f"{started['output']}")
    if not args.wait:
        print(json.dumps(started, indent=2) if args.json else
              f"batch {started['batch_id']} started; its manifest will be {started['manifest']}")
        return 0
    done = _follow(sfn, started, machine)
    if args.json:
        print(json.dumps(done, indent=2))
    else:
        _print_summary(done)
    return exit_code(done)

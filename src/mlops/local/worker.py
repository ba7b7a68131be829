"""One Lambda execution environment as a process of its own: ``python -P -m mlops.local.worker``, started by
mlops.local.processes in the function's extracted code folder, with the function version's environment variables and
its own /tmp (TMPDIR).

The process imports the handler once (Lambda's init phase), then answers invocations one at a time, as a Lambda
environment does, for as long as the runtime keeps it warm:

- stdin: the control channel. The first line is the environment's set-up (``handler``: module.function, ``code``: the
  extracted folder, ``policy``: its role's statements, checked by the IAM guard in this process, or null); then one
  line per invocation, ``{"event": ..., "context": {...}}``.
- the file descriptor named by RESULTS_FD: one line per answer, ``{"result": ..., "errored": bool}``; the first line
  says the handler is ready (``{"ready": true}``) or why it could not be imported (``{"init_error": {...}}``, after
  which the process exits).
- stdout: the handler's own output, which the runtime ships like Lambda ships a function's output to its log group
  (its metrics and capture lines included), each invocation's ended by END_OF_INVOCATION so that its answer can
  wait for its output; stderr goes to the server's own.
- the file descriptor named by LIFELINE_FD: never written; its end (the server died) ends this process at once, even
  in the middle of an invocation.

A handler that exits or crashes the interpreter ends this process: the runtime answers that invocation with Lambda's
``Runtime.ExitError`` and starts another environment for the next one.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from typing import Any

from mlops.local.context import LambdaContext, error_answer

# How many worker processes `mlops local up` keeps alive at once, all functions together (mlops.local.processes);
# declared in this moto-free module so that parsing a command line imports no moto
DEFAULT_MAX_ENVIRONMENTS = 32
RESULTS_FD = "MLOPS_WORKER_RESULTS_FD"
LIFELINE_FD = "MLOPS_WORKER_LIFELINE_FD"
# The line that ends an invocation's output on stdout (after the handler's last line, ended or not)
END_OF_INVOCATION = "\x00mlops:end-of-invocation\n"


def _hold_on(fd: int) -> None:
    """End this process when the server does: its end of the lifeline closes with it."""
    def watch() -> None:
        while os.read(fd, 1):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _answer(results: Any, answer: dict[str, Any]) -> None:
    try:
        text = json.dumps(answer, default=str)
    except (TypeError, ValueError) as exc:  # what Lambda answers for a result it cannot serialise
        text = json.dumps({"errored": True, "result": {"errorType": "Runtime.MarshalError",
                                                       "errorMessage": f"Unable to marshal response: {exc}"}})
    results.write(text + "\n")
    results.flush()


def main() -> int:
    results = os.fdopen(int(os.environ.pop(RESULTS_FD)), "w", encoding="utf-8")
    _hold_on(int(os.environ.pop(LIFELINE_FD)))
    setup = json.loads(sys.stdin.readline())
    if setup.get("policy") is not None:
        from mlops.local.iam.guard import Guard

        Guard({os.environ["AWS_LAMBDA_FUNCTION_NAME"]: setup["policy"]}, account=setup["account"]).install()
    module_name, _, attribute = str(setup["handler"]).rpartition(".")
    sys.path.insert(0, setup["code"])  # /var/task comes first on Lambda's sys.path
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # Lambda's init error: the invocation fails with it, the environment is discarded
        error = error_answer(exc)
        if isinstance(exc, ImportError):  # what the Python runtime says of a handler module it cannot import
            error.update(errorType="Runtime.ImportModuleError",
                         errorMessage=f"Unable to import module '{module_name}': {exc}")
        sys.stdout.flush()
        _answer(results, {"init_error": error})
        return 1
    _answer(results, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"result": handler(request["event"], LambdaContext(**request["context"])), "errored": False}
        except Exception as exc:  # the function's error answer, as in Lambda; the environment stays warm
            answer = {"result": error_answer(exc), "errored": True}
        sys.stdout.write(END_OF_INVOCATION)  # the invocation's output is in the pipe before its answer
        sys.stdout.flush()
        sys.stderr.flush()
        _answer(results, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``mlops local up``: the platform on this machine, reachable by real clients (AWS CLI, boto3, curl).

One process holds all of it:

- moto's server on 127.0.0.1 (every AWS API the platform uses; Step Functions executions really run), with
  every handler's calls checked against its function's role (``mlops.local.iam``) and Lambda resource policies
  enforced where AWS enforces them (``mlops.local.permissions``);
- the in-process Lambda runtime (``mlops.local.lambda_runtime``), so handlers run here, one environment
  per function version; S3 notifications delivered asynchronously (``mlops.local.dispatch``), the handlers'
  capture lines delivered by their log groups' subscriptions (``mlops.local.metrics``) to Firehose, writing to S3
  in buffers (``mlops.local.firehose``), as on AWS;
- the resources provisioned from ``mlops.aws.platform`` by ``mlops.local.cloud.provision``, as in the
  embedded cloud;
- a local API gateway (``mlops.local.gateway``) in front of each model's ``live`` alias;
- a scheduler for the platform's schedules (``mlops.local.scheduler``);
- with ``--state DIR``, durable state and a re-drive of interrupted work (``mlops.local.state``,
  ``mlops.local.recovery``).

When everything is up it prints one line of JSON on stdout (endpoints, buckets, models), then logs to
stderr until SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mlops import aws
from mlops.aws import platform
from mlops.core.config import load_config
from mlops.core.errors import MlopsError
from mlops.local import permissions
from mlops.local.alarms import alarm_watcher
from mlops.local.cloud import ACCOUNT, Deployment, provision
from mlops.local.dispatch import AsyncNotifications
from mlops.local.firehose import BufferedFirehose
from mlops.local.gateway import ApiGateway, LambdaService, serve
from mlops.local.iam.guard import Guard
from mlops.local.iam.policies import platform_policies
from mlops.local.lambda_runtime import InProcessRuntime, Invocation
from mlops.local.metrics import EmfBridge, LogSubscriptions, moto_publisher, percentiles_in_moto
from mlops.local.processes import ProcessRuntime
from mlops.local.queues import QueuePoller
from mlops.local.recovery import Recovery
from mlops.local.scheduler import Scheduler, declared_jobs, lambda_invoker
from mlops.local.state import GroupCommit, StateDir
from mlops.local.worker import DEFAULT_MAX_ENVIRONMENTS

HOST = "127.0.0.1"
REGION = "us-east-1"  # the deployment's ARNs name it; clients must use it too
# moto accepts any credentials; these are what the ready line tells clients to use when they have none
CLIENT_ENV = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": REGION}


class PortInUse(MlopsError):
    """A port the local cloud needs is taken."""


@dataclass(frozen=True)
class Options:
    config: Path
    port: int = 4566
    api_port: int = 8080
    state: Path | None = None
    schedule_scale: float = 1.0
    verbose: bool = False
    in_process: bool = False  # every handler in this process (mlops.local.lambda_runtime), not one per environment
    max_environments: int = DEFAULT_MAX_ENVIRONMENTS


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _summary(record: Invocation) -> str:
    """One readable line per function invocation: the pipeline's progress as it happens."""
    result = record.result if isinstance(record.result, dict) else {}
    if record.errored:
        detail = f"FAILED {result.get('errorType')}: {str(result.get('errorMessage'))[:200]}"
    elif "statusCode" in result:  # an API answer; the gateway logs the request itself
        detail = f"HTTP {result['statusCode']}"
    else:
        inner = (result.get("results") or [result])[0] if isinstance(result.get("results"), list) else result
        inner = inner if isinstance(inner, dict) else {}
        detail = str(inner.get("message") or " ".join(
            f"{k}={inner[k]}" for k in ("status", "model", "run_id", "action", "version", "reason", "rows_curated",
                                        "family", "onnx_bytes", "meets_thresholds", "beats_champion")
            if inner.get(k) not in (None, "")))[:200]
    return f"[lambda] {record.function}:{record.version} {record.seconds:.2f}s {detail}"


def _moto_request_handler(verbose: bool) -> Any:
    """moto's request handler, without werkzeug's line per request unless asked (handlers make hundreds)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class Handler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            if verbose:
                super().log_request(*args, **kwargs)

    return Handler


class LocalCloud:
    def __init__(self, options: Options, log: Any = _log) -> None:
        self.options = options
        self.log = log
        self.commit: GroupCommit | None = None
        self.runtime: InProcessRuntime | None = None
        self.notifications: AsyncNotifications | None = None
        self.firehose: BufferedFirehose | None = None
        # the log groups' subscriptions: capture lines from the handlers' output to Firehose (mlops.local.metrics)
        self.subscriptions: LogSubscriptions | None = None
        self.scheduler: Scheduler | None = None
        self.queues: QueuePoller | None = None  # the push queues' event source mappings (mlops.local.queues)
        self._servers: list[Any] = []
        self._patches = contextlib.ExitStack()
        self.deployment: Deployment | None = None
        self.state: StateDir | None = None
        self.gateway = ApiGateway(None, {}, log)  # routes nothing until the functions exist
        self.guard: Guard | None = None  # every handler's AWS calls, checked against its role (mlops.local.iam)

    # -- start -------------------------------------------------------------------------------------------
    def _bind(self) -> tuple[Any, Any]:
        """Both listening sockets first: a taken port is reported before anything else starts."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        app: Any = DomainDispatcherApplication(create_backend_app)
        if self.options.state is not None:
            self.commit = GroupCommit(lambda services: self.state.save(services) if self.state else None)
            app = self.commit.middleware(app)
        # werkzeug exits the process on a taken port: bind here, where the error can be said properly
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((HOST, self.options.port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise PortInUse(f"cannot listen on {HOST}:{self.options.port} for the AWS endpoint ({exc.strerror}); "
                            "pick another with --port (0 picks a free one)") from exc
        with listener:  # werkzeug serves a duplicate of it
            moto_server = make_server(HOST, listener.getsockname()[1], app, threaded=True,
                                      request_handler=_moto_request_handler(self.options.verbose),
                                      fd=listener.fileno())
        try:
            gateway_server = serve(self.gateway, HOST, self.options.api_port)
        except OSError as exc:
            moto_server.server_close()
            raise PortInUse(f"cannot listen on {HOST}:{self.options.api_port} for the API ({exc.strerror}); "
                            "pick another with --api-port (0 picks a free one)") from exc
        return moto_server, gateway_server

    def _serve(self, server: Any, name: str) -> None:
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
        self._servers.append(server)

    def start(self) -> dict[str, Any]:
        """Bind, provision (and restore), serve; returns the ready line's content."""
        config_file = self.options.config.resolve()
        config = load_config(config_file)
        moto_server, gateway_server = self._bind()
        endpoint = f"http://{HOST}:{moto_server.server_address[1]}"
        self._client_environment(endpoint, config_file)
        self._serve(moto_server, "moto-server")
        self._install_runtime()
        deployment = self.deployment = provision(aws.client, config_file=config_file, region=REGION)
        # what each function's role allows, as the platform declares it (the CDK app grants the same)
        self.guard = Guard(platform_policies(deployment.local_names(), config), account=ACCOUNT)
        self.guard.install()
        if isinstance(self.runtime, ProcessRuntime):  # each environment checks its own calls (mlops.local.worker)
            self.runtime.policy_of = self.guard.statements_of
        assert self.runtime is not None
        self.runtime.listeners.append(alarm_watcher(deployment, aws.client))
        restored = self._restore(deployment)
        if self.notifications:
            self.notifications.muted = False

        self.gateway.lam = LambdaService(REGION)  # API Gateway calls Lambda as a service, not through the SDK
        self.gateway.status_page = lambda: _status_page(deployment, config)
        self.gateway.functions = {m: deployment.infer_function(m) for m in deployment.models}
        self._serve(gateway_server, "api-gateway")
        self.scheduler = Scheduler(declared_jobs(deployment, config, self.options.schedule_scale, self.log),
                                   lambda_invoker(_invoke_client(), self.log), self.log)
        self.scheduler.start()
        for job in self.scheduler.jobs:
            self.log(f"[schedule] {job.name}: every {job.every_s:.1f}s")
        self.queues = QueuePoller(aws.client("sqs"), _invoke_client(), region=REGION, log=self.log)
        self.queues.start()
        if restored:
            recovery = Recovery(deployment=deployment, config=config, client=aws.client, log=self.log)
            threading.Thread(target=recovery.run, name="recovery", daemon=True).start()

        api_url = f"http://{HOST}:{gateway_server.server_address[1]}"
        status_url = f"{api_url}/status"  # every model at once (mlops status), as a page
        push_queues = {q.model: q.queue for q in platform.push_queues(config)}  # docs/push.md
        return {
            "aws_endpoint_url": endpoint,
            "api_url": api_url,
            "status_url": status_url,
            "region": REGION,
            "data_bucket": deployment.data_bucket,
            "models_bucket": deployment.models_bucket,
            "state_dir": str(self.options.state) if self.options.state else None,
            "restored": restored,
            "models": [{"name": m.name, "target": m.target,
                        "incoming_prefix": f"s3://{deployment.data_bucket}/{m.incoming_prefix}",
                        "predict_url": f"{api_url}/models/{m.name}/predict",
                        "push_queue": push_queues[m.name]} for m in config.models],
            "env": {**CLIENT_ENV, "AWS_ENDPOINT_URL": endpoint},
        }

    @staticmethod
    def _client_environment(endpoint: str, config_file: Path) -> None:
        """This process is a client of its own endpoint (handlers; Step Functions tasks find it through
        MOTO_PORT), and must never reach a real account, whatever the shell holds."""
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(variable, None)
        os.environ.update({**CLIENT_ENV, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint,
                           "MOTO_PORT": endpoint.rsplit(":", 1)[1], "MLOPS_CONFIG": str(config_file)})
        aws.client.cache_clear()

    def _install_runtime(self) -> None:
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.set_config({"stepfunctions": {"execute_state_machine": True}})
        # an idempotent replay has no metric to publish: Powertools warns on every such invocation
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        quiet = None if self.options.verbose else open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        # handlers' metrics (EMF on stdout) reach CloudWatch, with percentiles: the rollout's guardrails read them;
        # their capture lines reach the capture stream through their log groups' subscriptions, as on AWS
        self._patches.enter_context(percentiles_in_moto())
        self.subscriptions = LogSubscriptions(REGION, log=self.log)
        output = EmfBridge(moto_publisher(REGION), quiet, self.subscriptions)
        self.runtime = (InProcessRuntime(handler_output=output) if self.options.in_process else
                        ProcessRuntime(handler_output=output, max_environments=self.options.max_environments,
                                       account=ACCOUNT))
        self.runtime.install()
        permissions.install()  # Lambda resource policies, enforced where AWS enforces them
        self.runtime.listeners.append(lambda record: self.log(_summary(record)))
        self.notifications = AsyncNotifications()
        self.notifications.muted = True  # until provisioned (and restored): those objects were delivered before
        self.notifications.install()
        self.firehose = BufferedFirehose(after_flush=self._captures_written)
        self.firehose.install()
        self.subscriptions.start()

    def _restore(self, deployment: Deployment) -> bool:
        """With --state: put the saved state back (if any), then start saving. True when state was restored."""
        if self.options.state is None:
            return False
        assert self.commit is not None
        self.state = StateDir(self.options.state, deployment, aws.client("lambda"))
        restored = self.state.exists()
        if restored:
            counts = self.state.restore()
            self.log(f"[state] restored from {self.options.state}: {counts['objects']} objects, "
                     f"{counts['items']} items, {counts['function_versions']} function versions")
        self.commit.start()
        self.commit.flush()
        return restored

    def _captures_written(self) -> None:
        if self.commit and self.commit.started:
            self.commit.mark(["s3"])  # no one waits: the records were answered when they were buffered

    # -- stop --------------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.scheduler:
            self.scheduler.stop()
        if self.queues:
            self.queues.stop()
        if self.subscriptions:
            self.subscriptions.stop()  # what the handlers logged last goes to Firehose...
        if self.firehose:
            self.firehose.uninstall()  # ...and what is still buffered to S3 (and into the last snapshot)
        if self.commit:
            # every answered write is saved already; this catches what moto did on its own since (executions)
            self.commit.flush()
        for server in reversed(self._servers):
            server.shutdown()
            server.server_close()
        if self.commit:
            self.commit.stop()
        if self.notifications:
            self.notifications.uninstall()
        if self.guard:
            self.guard.uninstall()
        if self.runtime:
            self.runtime.uninstall()
            permissions.uninstall()
        self._patches.close()
        aws.client.cache_clear()


def _status_page(deployment: Deployment, config: Any) -> str:
    """What `mlops status --html` writes, for this local cloud."""
    from mlops.registry.store import Registry
    from mlops.release.deploy import ServingDeployer
    from mlops.release.guardrails import ServingMetrics
    from mlops.release.overview import overview, render_html

    deployer = ServingDeployer(aws.client("lambda"))
    return render_html(overview(config.models, registry=Registry(aws.client("dynamodb"), deployment.names["registry"]),
                                split_of=lambda model: deployer.split(deployment.infer_function(model)),
                                metrics=ServingMetrics(aws.client("cloudwatch"), config.project)))


def _invoke_client() -> Any:
    """A Lambda client for invocations: no retries (a retried predict would run twice) and Lambda's longest
    timeout (an invocation may wait for a long training step to leave the runtime)."""
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", region_name=REGION, config=Config(retries={"total_max_attempts": 1},
                                                                    read_timeout=900, connect_timeout=5))


def print_ready(info: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(info) + "\n")
    out.flush()


def run(options: Options) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cloud = LocalCloud(options)
    try:
        info = cloud.start()
    except PortInUse as exc:
        print(f"mlops local up: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except BaseException:
        cloud.stop()
        raise
    print_ready(info, sys.stdout)
    _log(f"local cloud up: AWS endpoint {info['aws_endpoint_url']}, API {info['api_url']}; clients without AWS "
         f"configuration: export {' '.join(f'{k}={v}' for k, v in info['env'].items())}; Ctrl-C stops")
    stop.wait()
    _log("stopping the local cloud" + (f"; state saved in {options.state}" if options.state else ""))
    cloud.stop()
    return 0

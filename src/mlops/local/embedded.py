"""The platform on embedded moto in this process: what ``mlops demo`` and the integration tests run on."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops import aws
from mlops.aws.storage import ObjectStore
from mlops.core.config import ProjectConfig, load_config
from mlops.local import permissions
from mlops.local.alarms import alarm_watcher
from mlops.local.cloud import ACCOUNT, Deployment, provision
from mlops.local.firehose import BufferedFirehose
from mlops.local.iam.guard import Guard
from mlops.local.iam.policies import LocalNames, platform_policies
from mlops.local.lambda_runtime import InProcessRuntime
from mlops.local.metrics import EmfBridge, LogSubscriptions, moto_publisher, percentiles_in_moto
from mlops.local.queues import QueuePoller
from mlops.registry.store import Registry
from mlops.release.deploy import LIVE_ALIAS

# Where a cloud's IAM policies come from: the platform's declaration by default; the tests pass the synthesized
# template's (tests/template_iam.py), so that what is deployed is what the local cloud enforces.
PolicySource = Callable[[LocalNames, ProjectConfig, Path], Mapping[str, Sequence[Mapping[str, Any]]]]


def declared_policies(names: LocalNames, config: ProjectConfig, config_file: Path) -> dict[str, list[dict[str, Any]]]:
    return platform_policies(names, config)


@dataclass
class EmbeddedCloud:
    deployment: Deployment
    runtime: InProcessRuntime
    firehose: BufferedFirehose | None = None
    queues: QueuePoller | None = None  # delivers the push queues to the push functions (mlops.local.queues)
    guard: Guard | None = None  # every handler's AWS calls, checked against its role (mlops.local.iam)
    # the log groups' subscriptions: capture lines on their way to the capture stream (mlops.local.metrics)
    subscriptions: LogSubscriptions | None = None

    def flush_captures(self) -> None:
        """Deliver the captures on their way now (they would within a second): the capture lines the log groups'
        subscriptions hold, then what Firehose holds in its buffer."""
        if self.subscriptions is not None:
            self.subscriptions.flush()
        if self.firehose is not None:
            self.firehose.flush()

    def client(self, service: str) -> Any:
        return aws.client(service)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request to the models' API, routed as `mlops local up` routes it (the local gateway, the model's
        `live` alias): (status, the decoded JSON answer)."""
        from mlops.local.gateway import ApiGateway

        functions = {model: self.deployment.infer_function(model) for model in self.deployment.models}
        data = json.dumps(body).encode() if body is not None else b""
        status, _headers, answer = ApiGateway(self.client("lambda"), functions, log=lambda _line: None).handle(
            method, path, [("Content-Type", "application/json")], data, "127.0.0.1")
        return status, json.loads(answer) if answer else None

    def predict(self, model: str, features: Any) -> tuple[int, Any]:
        """``POST /models/<model>/predict`` with one row of features, through the local gateway."""
        return self.api("POST", f"/models/{model}/predict", {"features": features})

    def function(self, name: str) -> str:
        """The local physical name of a platform function (``ingest``) or of a model's infer function
        (``infer:<model>``), as the deployment names them."""
        if name.startswith("infer:"):
            return self.deployment.infer_function(name.removeprefix("infer:"))
        return self.deployment.function_arns[name].rsplit(":", 1)[-1]

    def live_alias(self, model: str) -> dict[str, Any]:
        """The model's `live` alias as Lambda describes it: the version it routes to and its weights."""
        alias: dict[str, Any] = self.client("lambda").get_alias(FunctionName=self.deployment.infer_function(model),
                                                                Name=LIVE_ALIAS)
        return alias

    @property
    def data(self) -> ObjectStore:
        return ObjectStore(aws.client("s3"), self.deployment.data_bucket)

    @property
    def models(self) -> ObjectStore:
        return ObjectStore(aws.client("s3"), self.deployment.models_bucket)

    @property
    def registry(self) -> Registry:
        return Registry(aws.client("dynamodb"), self.deployment.names["registry"])

    def upload(self, model: str, name: str, body: bytes) -> str:
        key = f"incoming/{model}/{name}"
        aws.client("s3").put_object(Bucket=self.deployment.data_bucket, Key=key, Body=body)
        return key

    def executions(self, state_machine_arn: str | None = None) -> list[dict[str, Any]]:
        sfn = aws.client("stepfunctions")
        arn = state_machine_arn or self.deployment.state_machine_arn
        return list(sfn.list_executions(stateMachineArn=arn)["executions"])

    def wait_for_executions(self, count: int, timeout: float = 180.0,
                            state_machine_arn: str | None = None) -> list[dict[str, Any]]:
        """Wait until at least `count` executions exist and none is running; returns their descriptions."""
        sfn = aws.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            executions = self.executions(state_machine_arn)
            if len(executions) >= count and all(e["status"] != "RUNNING" for e in executions):
                return [sfn.describe_execution(executionArn=e["executionArn"]) for e in executions]
            time.sleep(0.2)
        failures = [f"{i.function}: {i.result.get('errorType')}: {i.result.get('errorMessage')}"
                    for i in self.runtime.invocations if i.errored]
        raise TimeoutError(f"{count} pipeline execution(s) did not finish within {timeout:.0f}s; "
                           f"{len(self.executions())} started; function errors: {failures or 'none'}")

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        return list(aws.client("stepfunctions").get_execution_history(executionArn=execution_arn)["events"])


@contextmanager
def embedded_cloud(config_file: Path, *, handler_output: Any = None, buffered_captures: bool = False,
                   policies: PolicySource | None = None) -> Iterator[EmbeddedCloud]:
    """``buffered_captures``: Firehose writes one S3 object per buffer, as on AWS, instead of one per delivery of the
    log groups' subscriptions; readers of the captures (rollout, drift_check) then stay fast under thousands of
    predictions. Either way captures reach S3 the way they do on AWS, a second or less after the handler wrote them:
    ``EmbeddedCloud.flush_captures`` delivers them at once. ``policies``: where each function's role policy comes from
    (default: the platform's declaration)."""
    from moto import mock_aws

    # Handlers print their metrics (EMF) and their capture lines: the bridge plays CloudWatch Logs' part, publishes the
    # metrics and hands the lines to the log groups' subscriptions, which deliver the capture lines to Firehose.
    subscriptions = LogSubscriptions(aws.region())
    output = EmfBridge(moto_publisher(aws.region()), handler_output, subscriptions)
    with (mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), percentiles_in_moto(),
          InProcessRuntime(handler_output=output) as runtime):
        aws.client.cache_clear()
        permissions.install()
        firehose = BufferedFirehose(interval_s=0.5) if buffered_captures else BufferedFirehose(max_bytes=0)
        firehose.install()
        deployment = provision(aws.client, config_file=config_file)
        subscriptions.start()
        source = policies or default_policies
        guard = Guard(source(deployment.local_names(), load_config(config_file), config_file), account=ACCOUNT)
        guard.install()
        cloud = EmbeddedCloud(deployment, runtime, firehose, guard=guard, subscriptions=subscriptions)
        runtime.listeners.append(alarm_watcher(cloud.deployment, aws.client))
        cloud.queues = QueuePoller(aws.client("sqs"), aws.client("lambda"), region=aws.region())
        cloud.queues.start()
        try:
            yield cloud
        finally:
            cloud.queues.stop()
            subscriptions.stop()  # what the handlers logged last goes to Firehose, then to S3
            firehose.uninstall()
            # Executions run on moto's threads: let them end inside this mock, not in the next one. A rollout
            # waits for traffic that will not come any more: stop it rather than wait for its decision.
            sfn = aws.client("stepfunctions")
            for execution in cloud.executions(cloud.deployment.rollout_arn):
                if execution["status"] == "RUNNING":
                    with contextlib.suppress(sfn.exceptions.ExecutionDoesNotExist):
                        sfn.stop_execution(executionArn=execution["executionArn"], cause="the local cloud stops")
            for arn in (cloud.deployment.ingest_arn, cloud.deployment.state_machine_arn, cloud.deployment.rollout_arn,
                        cloud.deployment.batch_arn):
                with contextlib.suppress(TimeoutError):
                    cloud.wait_for_executions(0, timeout=60, state_machine_arn=arn)
            guard.uninstall()
            permissions.uninstall()
            aws.client.cache_clear()


# the tests replace it with the synthesized template's policies (tests/conftest.py)
default_policies: PolicySource = declared_policies

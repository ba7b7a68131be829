"""Push mode in the template: each model's queue with its dead-letter queue after push_max_receives receives, the
push function behind an event source mapping that reports batch item failures, its topic, and a role that may touch
its own queues, topic and model only."""

from __future__ import annotations

from typing import Any

from test_stack import Synthesized, as_list, ssl_only

from infra.app import CONFIG_CONTEXT, cdk_json_context
from mlops.aws import environment, platform
from mlops.aws.access import push_access
from mlops.core.config import load_config

CONFIG = load_config(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])


def _queues(synthesized: Synthesized) -> list[platform.PushQueue]:
    return platform.push_queues(CONFIG.model_copy(update={"project": synthesized.stack.name_prefix}))


def _statements(synthesized: Synthesized, model: str) -> list[dict[str, Any]]:
    role = synthesized.logical_id(synthesized.stack.push.functions[model].role)
    return [s for policy in synthesized.of_type("AWS::IAM::Policy").values() if {"Ref": role} in policy["Properties"]
            ["Roles"] for s in policy["Properties"]["PolicyDocument"]["Statement"]]


def test_each_model_has_an_encrypted_queue_with_a_dead_letter_queue_after_its_max_receives(
    synthesized: Synthesized,
) -> None:
    key = {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.storage.key), "Arn"]}
    queues = _queues(synthesized)
    assert {q.model for q in queues} == {m.name for m in CONFIG.models}
    for spec in queues:
        queue = synthesized.logical_id(synthesized.stack.push.queues[spec.model])
        dlq = synthesized.logical_id(synthesized.stack.push.dead_letter_queues[spec.model])
        props = synthesized.resources[queue]["Properties"]
        assert props["QueueName"] == spec.queue
        assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
                                          "maxReceiveCount": CONFIG.model(spec.model).push_max_receives}
        assert props["VisibilityTimeout"] >= 6 * platform.PUSH.timeout_s  # a batch is never redelivered mid-flight
        dead = synthesized.resources[dlq]["Properties"]
        assert dead["QueueName"] == spec.dead_letter_queue
        assert dead["MessageRetentionPeriod"] == 14 * 24 * 3600
        for lid in (queue, dlq):
            assert synthesized.resources[lid]["Properties"]["KmsMasterKeyId"] == key
            assert ssl_only(synthesized, "AWS::SQS::QueuePolicy", "Queues", lid)


def test_the_push_function_consumes_its_queue_reporting_batch_item_failures(synthesized: Synthesized) -> None:
    mappings = list(synthesized.of_type("AWS::Lambda::EventSourceMapping").values())
    for spec in _queues(synthesized):
        function, props = synthesized.push()[spec.model]
        queue = synthesized.logical_id(synthesized.stack.push.queues[spec.model])
        [mapping] = [m["Properties"] for m in mappings if m["Properties"]["FunctionName"] == {"Ref": function}]
        assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["BatchSize"] == platform.PUSH_BATCH_SIZE
        assert props["Properties"]["FunctionName"] == spec.function
        variables = props["Properties"]["Environment"]["Variables"]
        assert variables["MODEL_NAME"] == spec.model
        assert variables[environment.PUSH_OUTPUT] == spec.output
        dlq = synthesized.logical_id(synthesized.stack.push.dead_letter_queues[spec.model])
        assert variables[environment.DEAD_LETTER_QUEUE_URL] == {"Ref": dlq}


def test_the_push_role_touches_its_own_queues_topic_and_model_only(synthesized: Synthesized) -> None:
    push = synthesized.stack.push
    for spec in _queues(synthesized):
        statements = _statements(synthesized, spec.model)
        by_action: dict[str, list[Any]] = {}
        for statement in statements:
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                by_action.setdefault(action, []).extend(as_list(statement["Resource"]))
        queue = {"Fn::GetAtt": [synthesized.logical_id(push.queues[spec.model]), "Arn"]}
        dlq = {"Fn::GetAtt": [synthesized.logical_id(push.dead_letter_queues[spec.model]), "Arn"]}
        assert by_action["sqs:ReceiveMessage"] == by_action["sqs:DeleteMessage"] == [queue]
        assert by_action["sqs:SendMessage"] == [dlq], "poison messages go to its own dead-letter queue only"
        if spec.output == "sns":
            assert by_action["sns:Publish"] == [{"Ref": synthesized.logical_id(push.topics[spec.model])}]
            assert "s3:PutObject" not in by_action
        assert by_action["s3:GetObject"] == [{"Fn::Join": ["", [
            {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.storage.buckets["models"]), "Arn"]},
            f"/models/{spec.model}/*"]]}], "its own model's artefacts only"
        assert not any(a.startswith(("lambda:", "states:", "dynamodb:Put", "dynamodb:Update")) for a in by_action)
        assert not any("*" in a for a in by_action if a.startswith(("sqs:", "sns:", "s3:", "kms:")))


def test_s3_output_may_write_under_its_own_predictions_prefix_only() -> None:
    [spec] = platform.push_queues(CONFIG.model_copy(update={"models": [
        CONFIG.models[0].model_copy(update={"push_output": "s3"})]}))
    assert spec.topic is None
    assert spec.output_variable == environment.DATA_BUCKET
    access = push_access(spec)
    assert access.write == {"data": (f"predictions/{spec.model}/",)}
    assert access.read == {"models": (f"models/{spec.model}/",)}

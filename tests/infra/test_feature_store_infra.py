"""The feature store in the CDK app: the online table, who reads it (every model's infer function) and who writes
it (ingest, after curating a file), and nothing else."""

from __future__ import annotations

from typing import Any

from test_stack import Synthesized, as_list, role_statements

from mlops.aws import environment, platform


def _actions_on(synthesized: Synthesized, function: str, table_id: str) -> set[str]:
    def on_table(resource: Any) -> bool:
        return isinstance(resource, dict) and resource.get("Fn::GetAtt", [""])[0] == table_id

    return {action for statement in role_statements(synthesized, function)
            if any(on_table(r) for r in as_list(statement["Resource"])) for action in as_list(statement["Action"])}


def test_the_online_store_is_a_keyed_encrypted_table(synthesized: Synthesized) -> None:
    table = synthesized.stack.storage.tables["features"]
    props: dict[str, Any] = synthesized.resources[synthesized.logical_id(table)]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_infer_functions_read_it_and_ingest_writes_it(synthesized: Synthesized) -> None:
    table = synthesized.stack.storage.tables["features"]
    table_id = synthesized.logical_id(table)
    for model, (_lid, resource) in synthesized.serving().items():
        assert resource["Properties"]["Environment"]["Variables"][environment.FEATURES_TABLE] == {"Ref": table_id}
        actions = _actions_on(synthesized, f"infer:{model}", table_id)
        assert "dynamodb:GetItem" in actions
        assert not actions & {"dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem"}, model
    _lid, ingest = synthesized.functions()["ingest"]
    assert ingest["Properties"]["Environment"]["Variables"][environment.FEATURES_TABLE] == {"Ref": table_id}
    assert {"dynamodb:BatchWriteItem", "dynamodb:PutItem"} <= _actions_on(synthesized, "ingest", table_id)
    # nobody else touches it
    for spec in platform.FUNCTIONS:
        if spec.name != "ingest":
            assert not _actions_on(synthesized, spec.name, table_id), spec.name

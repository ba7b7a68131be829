"""Hostile input to the model API: schemathesis generates thousands of requests, valid and invalid, from the
document `mlops openapi` prints, and sends them to `mlops local up` serving a trained model. No answer may be a
server error, and every answer must be one the document declares for its route, with the declared schema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

# thousands of requests through the local gateway (a minute or two): with the load tests, in make load and CI
pytestmark = [pytest.mark.slow, pytest.mark.load]

MODEL = "e2e"
# Per route; hypothesis stops earlier on a route with few distinct inputs (GET /health has none).
EXAMPLES_PER_ROUTE = 3000
ROUTES = [("GET", "/models/{name}"), ("POST", "/models/{name}/predict"), ("POST", "/models/{name}/feedback"),
          ("POST", "/models/{name}/batch"), ("GET", "/models/{name}/batch/{batch_id}"), ("GET", "/health")]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ANSWERS: Counter[tuple[str, int]] = Counter()  # (route, status) of every generated case, for the summary


@pytest.fixture(scope="module")
def server(start_local_up: Callable[..., LocalUp], world: Callable[..., list[dict[str, Any]]],
           csv_of: Callable[..., bytes]) -> LocalUp:
    server = start_local_up()
    [model] = [m for m in server.info["models"] if m["name"] == MODEL]
    server.serve(model, "world_a.csv", csv_of(world("a", 600, seed=1)))
    return server


def aimed_at(document: dict[str, Any], model: str, features: list[dict[str, Any]]) -> dict[str, Any]:
    """The document narrowed to the served model: its name in the path, its numeric features (as its description
    lists them) in the rows. Requests generated from it get past "no such model" and "missing feature" to the
    model itself; the answers stay checked against the responses the document declares, left as they are."""
    narrowed = copy.deepcopy(document)
    for item in narrowed["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": [model]}
    assert {f["kind"] for f in features} == {"numeric"}, features
    row = {"type": "object", "required": [f["name"] for f in features], "additionalProperties": False,
           "properties": {f["name"]: {"type": "number"} for f in features}}
    predict = narrowed["paths"]["/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]
    branches = {branch["required"][0]: branch["properties"] for branch in predict["schema"]["oneOf"]}
    branches["features"]["features"] = row
    branches["instances"]["instances"]["items"] = row
    return narrowed


@pytest.fixture(scope="module")
def api_schemas(server: LocalUp) -> tuple[Any, Any]:
    """The document as `mlops openapi` prints it, and aimed at the served model."""
    done = subprocess.run([sys.executable, "-m", "mlops.cli", "openapi"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    described = server.describe(MODEL)
    assert described is not None
    config = schemathesis.Config.from_dict({"base-url": server.info["api_url"]})
    return (schemathesis.openapi.from_dict(document, config=config),
            schemathesis.openapi.from_dict(aimed_at(document, MODEL, described["features"]), config=config))


@pytest.mark.parametrize("route", ROUTES)
def test_no_generated_request_gets_an_undeclared_answer_or_a_server_error(
        route: tuple[str, str], api_schemas: tuple[Any, Any], server: LocalUp) -> None:
    method, path = route
    # Valid and invalid requests alike, as a hostile client sends them; half of them aimed at the served model.
    cases = st.one_of(*(schema[path][method].as_strategy(mode) for schema in api_schemas
                        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

    @settings(max_examples=EXAMPLES_PER_ROUTE, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink])
    @given(case=cases)
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(base_url=server.info["api_url"], checks=CHECKS, timeout=60)
        ANSWERS[(f"{method} {path}", response.status_code)] += 1

    fuzz()


def test_the_generated_requests_reached_the_model() -> None:
    # Not vacuous: the fuzzing above got predictions and feedback accepted, and not only errors.
    summary = sorted(ANSWERS.items())
    print("\nfuzzed answers (route, status): count\n" + "\n".join(f"  {k}: {v}" for k, v in summary))
    assert sum(ANSWERS.values()) >= 3 * EXAMPLES_PER_ROUTE, summary
    assert ANSWERS[("POST /models/{name}/predict", 200)] > 0, summary
    assert ANSWERS[("POST /models/{name}/feedback", 200)] > 0, summary
    assert ANSWERS[("POST /models/{name}/predict", 422)] > 0, summary

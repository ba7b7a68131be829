"""Never a 5xx for what a client sent: bodies well outside the schema, sent through the real infer handler (an API
Gateway proxy event, as the local gateway builds it, to the model's `live` alias) and through the real push
function (an SQS event), against a model the real pipeline trained. Every answer is a 4xx naming the field, or a
success; every push message is answered or dead-lettered, never failed."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clouds import served_cloud
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from project_configs import one_model_config

from mlops.aws import platform
from mlops.core.config import load_config
from mlops.local.embedded import EmbeddedCloud
from mlops.local.gateway import proxy_event

EVENTS = Path(__file__).resolve().parents[2] / "events"
MODEL = "hostile"
CONFIG = one_model_config(MODEL)
SITES = ("north", "south", "east")
ERROR_KEYS = {"error", "message", "field"}
# what each route may answer for a client's body: its success and the 4xx the document declares for it
ANSWERS = {"predict": {200, 400, 404, 409, 413, 422}, "feedback": {200, 400, 404, 413, 422},
           "batch": {202, 400, 403, 404, 413, 422}}
EXAMPLES = 300


def _frame() -> Any:
    """breast-cancer with a categorical feature, so that strings and categories are sent too."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "site", [SITES[i % 3] for i in range(len(frame))])
    return frame


ROW: dict[str, Any] = _frame().drop(columns="target").iloc[0].to_dict()
FEATURES = list(ROW)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedCloud, platform.PushQueue]]:
    """The model trained by the real pipeline and served behind its `live` alias; its push queue."""
    config_file = tmp_path_factory.mktemp("hostile") / "mlops.toml"
    with served_cloud(config_file, {MODEL: _frame().to_csv(index=False).encode()}, config_text=CONFIG) as cloud:
        [queue] = [q for q in platform.push_queues(load_config(config_file)) if q.model == MODEL]
        yield cloud, queue


@pytest.fixture
def cloud(served: tuple[EmbeddedCloud, platform.PushQueue]) -> EmbeddedCloud:
    return served[0]


def _call(cloud: EmbeddedCloud, route: str, body: str | bytes) -> tuple[int, Any]:
    """The infer handler's answer to a POST of these bytes, through the function's `live` alias."""
    path = f"/models/{MODEL}/{route}"
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    event = proxy_event(method="POST", raw_path=path, headers=[("Content-Type", "application/json")], body=data,
                        resource=path, source_ip="127.0.0.1", request_id="hostile")
    response = cloud.client("lambda").invoke(FunctionName=f"{cloud.deployment.infer_function(MODEL)}:live",
                                             Payload=json.dumps(event).encode())
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return int(payload["statusCode"]), json.loads(payload["body"])


def _answered_well(route: str, status: int, answer: Any, body: str | bytes) -> None:
    shown = repr(body[:300])
    assert status in ANSWERS[route], f"{route} answered {status} {answer} to {shown}"
    if status >= 400:
        assert set(answer) == ERROR_KEYS, answer
        assert isinstance(answer["message"], str)
        assert 0 < len(answer["message"]) <= 2000, answer  # short: never the client's whole value echoed back
        assert answer["field"] is None or isinstance(answer["field"], str)


def _push(served: tuple[EmbeddedCloud, platform.PushQueue], body: str) -> dict[str, Any]:
    """The push function's answer to one SQS message with this body."""
    cloud, queue = served
    event = copy.deepcopy(json.loads((EVENTS / "sqs_push.json").read_text()))
    event["Records"] = event["Records"][:1]
    event["Records"][0]["body"] = body
    response = cloud.client("lambda").invoke(FunctionName=queue.function, Payload=json.dumps(event).encode())
    payload: dict[str, Any] = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload


# -- what a hostile client writes: raw JSON text, so that literals no encoder writes can be sent ---------------------
def _raw(value: Any) -> str:
    return json.dumps(value)


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)).map(_raw)
TREES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3),
                     max_leaves=8).map(_raw)
EXTREMES = st.one_of(
    st.integers(300, 6000).map(lambda n: "9" * n),  # beyond a float; beyond 4300 digits Python refuses to read it
    st.integers(300, 6000).map(lambda n: "-1" + "0" * n),
    st.sampled_from(["1e999", "-1e999", "1e-999", "-0", "1E400", "123456789012345678901234567890", "NaN",
                     "Infinity", "-Infinity", "0.1e-400", "170141183460469231731687303715884105728"]),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),  # nesting the parser gives up on, or nearly
    st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(300, 70_000).map(lambda n: _raw("x" * n)),  # long strings
    st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"\\n\\t\\u001b"', '""', '" "', '"\\u2028"']),
)
VALUES = st.one_of(LEAVES, TREES, EXTREMES)
KEYS = st.one_of(st.sampled_from(FEATURES), st.text(max_size=12), st.sampled_from(['\\ud800', '\\u0000', "x" * 3000]))


@st.composite
def rows(draw: st.DrawFn) -> str:
    """A row: the model's features, some values hostile, some features missing, extra or given twice."""
    pairs = [(_raw(k), _raw(v)) for k, v in ROW.items()]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(pairs) - 1))
        pairs[i] = (pairs[i][0], draw(VALUES))
    if draw(st.booleans()):
        pairs.append((f'"{draw(KEYS)}"' if draw(st.booleans()) else _raw(draw(KEYS)), draw(VALUES)))
    if draw(st.integers(0, 9)) == 0 and pairs:
        pairs.pop(draw(st.integers(0, len(pairs) - 1)))
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}"


INVALID_UTF8 = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda b: b'{"features": "' + b + b'\xff"}'),
    st.sampled_from([b"\xff\xfe", b'{"request_id": "\xc3\x28", "label": "1"}', b'{"input": "s3://b/\xed\xa0\x80/"}',
                     b"\x80" * 10]),
)
ANYTHING = st.one_of(VALUES, st.text(max_size=50), EXTREMES)
PREDICT = st.one_of(
    rows().map(lambda row: _object([("features", row)])),
    st.lists(rows(), min_size=1, max_size=3).map(lambda rs: _object([("instances", "[" + ",".join(rs) + "]")])),
    st.tuples(rows(), VALUES).map(lambda t: "{" + f'"features":{t[0]},"features":{t[1]}' + "}"),  # a duplicate key
    VALUES.map(lambda v: _object([("entity_id", v)])),
    VALUES.map(lambda v: _object([("instances", v)])),
    ANYTHING,
    INVALID_UTF8,
)
REQUEST_IDS = st.one_of(st.just(_raw("r-1")), VALUES)
LABELS = st.one_of(st.sampled_from(["0", "1", '"0"', '"1"', "true", "1.0", '"yes"', "7", "-1"]), VALUES)
FEEDBACK = st.one_of(
    st.tuples(REQUEST_IDS, LABELS).map(lambda t: _object([("request_id", t[0]), ("label", t[1])])),
    st.tuples(REQUEST_IDS, VALUES).map(lambda t: _object([("request_id", t[0]), ("reward", t[1])])),
    st.tuples(REQUEST_IDS, LABELS, VALUES).map(lambda t: _object([("request_id", t[0]), ("label", t[1]),
                                                                 ("reward", t[2])])),
    ANYTHING,
    INVALID_UTF8,
)
# the one valid input prefix is empty: a run started from it plans nothing and ends at once
URIS = st.one_of(st.sampled_from(['"s3://mlops-data/batch/hostile/in/"', '"s3://mlops-data/hostile/out/"', '"s3://"',
                                  '"s3:///x/"', '"file:///etc/"']), VALUES)
BATCH = st.one_of(
    st.tuples(URIS, st.one_of(st.none(), URIS), st.one_of(st.none(), VALUES, st.sampled_from(["1", "2", "0"])))
    .map(lambda t: _object([("input", t[0]), *([("output", t[1])] if t[1] else []),
                            *([("version", t[2])] if t[2] else [])])),
    ANYTHING,
    INVALID_UTF8,
)
HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.large_base_example])


@pytest.mark.parametrize(("route", "bodies"), [("predict", PREDICT), ("feedback", FEEDBACK), ("batch", BATCH)])
def test_no_body_gets_a_server_error(cloud: EmbeddedCloud, route: str, bodies: Any) -> None:
    @HYPOTHESIS
    @given(body=bodies)
    def send(body: str | bytes) -> None:
        status, answer = _call(cloud, route, body)
        _answered_well(route, status, answer, body)

    send()


@HYPOTHESIS
@given(body=st.one_of(PREDICT.filter(lambda b: isinstance(b, str)),
                      st.tuples(PREDICT.filter(lambda b: isinstance(b, str)), VALUES).map(
                          lambda t: t[0][:-1] + f',"request_id":{t[1]}' + "}" if t[0].startswith("{") else t[0])))
def test_no_push_message_fails(served: tuple[EmbeddedCloud, platform.PushQueue], body: str) -> None:
    # a message is answered or dead-lettered with its reason; only what may succeed later is left to SQS' retries
    assert _push(served, body) == {"batchItemFailures": []}


# -- the classes of input seen crashing the handler, one example each ------------------------------------------------
def _features(**changes: str) -> str:
    return _object([("features", "{" + ",".join(f"{_raw(k)}:{changes.get(k, _raw(v))}" for k, v in ROW.items())
                     + "}")])


SEEN: list[tuple[Any, ...]] = [  # route, body, status, field[, what the message says]
    ("predict", "[" * 100_000 + "]" * 100_000, 400, "body"),
    ("predict", _object([("features", '{"a":' * 20_000 + "1" + "}" * 20_000)]), 400, "body"),
    ("predict", _features(**{"mean radius": "9" * 5000}), 400, "body"),
    ("predict", _features(**{"mean radius": "9" * 400}), 422, "features.mean radius"),
    ("predict", _features(**{"mean radius": "-" + "9" * 400}), 422, "features.mean radius"),
    ("predict", _features(site="9" * 4000), 422, "features.site"),
    ("predict", _features(site=_raw("north" * 10_000)), 422, "features.site"),
    ("predict", _features(site='"\\ud800"'), 422, "features.site", "unpaired surrogate"),
    ("predict", _features()[:-2] + ',"\\ud800\\u0000":1}}', 422, "features.\\ud800\\x00", "unexpected feature"),
    ("predict", _object([("entity_id", "9" * 4000)]), 422, "entity_id", "at most 256 characters"),
    ("predict", _object([("entity_id", _raw("e" * 5000))]), 422, "entity_id", "at most 256"),
    ("predict", b'{"features": {"site": "\xff"}}', 400, "body", "not UTF-8"),
    ("feedback", _object([("request_id", '"r-1"'), ("reward", "9" * 400)]), 422, "reward"),
    ("feedback", _object([("request_id", '"r-1"'), ("reward", "-" + "9" * 400)]), 422, "reward"),
    ("feedback", _object([("request_id", '"r-1"'), ("label", "9" * 4000)]), 422, "label"),
    ("feedback", _object([("request_id", '"r-1"'), ("label", '"7"')]), 422, "label"),
    ("feedback", _object([("request_id", '"r-1"'), ("label", _raw("1" * 5000))]), 422, "label"),
    ("feedback", _object([("request_id", _raw("r" * 5000)), ("label", '"1"')]), 422, "request_id"),
    ("feedback", _object([("request_id", '"r\\u0000"'), ("label", '"1"')]), 422, "request_id"),
    ("feedback", _object([("request_id", '"\\ud800"'), ("label", '"1"')]), 422, "request_id"),
    ("feedback", "[" * 100_000 + "]" * 100_000, 400, "body"),
    ("feedback", b'{"request_id": "\xc3\x28", "label": "1"}', 400, "body", "not UTF-8"),
    ("batch", _object([("input", '"s3://mlops-data/batch/hostile/in/"'), ("version", "9" * 5000)]), 400, "body"),
    ("batch", "[" * 100_000 + "]" * 100_000, 400, "body"),
    ("batch", _object([("input", _raw("s3:/" + "x" * 50_000))]), 422, "input"),
    ("batch", b'{"input": "s3://b/\xed\xa0\x80/"}', 400, "body", "not UTF-8"),
]


@pytest.mark.parametrize("case", SEEN, ids=[f"{case[0]}-{i}" for i, case in enumerate(SEEN)])
def test_each_class_of_hostile_input_gets_its_4xx_and_names_the_field(cloud: EmbeddedCloud, case: Any) -> None:
    route, body, status, field, *says = case
    got, answer = _call(cloud, route, body)
    assert (got, answer["field"]) == (status, field), answer
    assert all(words in answer["message"] for words in says), answer
    _answered_well(route, got, answer, body)


def test_a_label_is_one_of_the_served_models_classes(cloud: EmbeddedCloud) -> None:
    for label in ("0", "1", 0, 1, 1.0):
        status, answer = _call(cloud, "feedback", _raw({"request_id": "r-1", "label": label}))
        assert status == 200, (label, answer)
    status, answer = _call(cloud, "feedback", _raw({"request_id": "r-1", "label": "2"}))
    assert (status, answer["field"]) == (422, "label")
    assert "0, 1" in answer["message"], "the message says which labels the model knows"


def test_a_body_that_is_not_utf8_is_a_400_through_the_local_gateway(cloud: EmbeddedCloud) -> None:
    from mlops.local.gateway import ApiGateway

    gateway = ApiGateway(cloud.client("lambda"), {MODEL: cloud.deployment.infer_function(MODEL)}, log=lambda _: None)
    status, _headers, data = gateway.handle("POST", f"/models/{MODEL}/predict", [], b'{"features": "\xff"}',
                                            "127.0.0.1")
    answer = json.loads(data)
    assert (status, answer.get("field")) == (400, "body"), answer
    assert "UTF-8" in answer["message"]


def test_push_dead_letters_hostile_messages_with_their_reason(served: tuple[EmbeddedCloud, platform.PushQueue]) -> None:
    cloud, queue = served
    sqs = cloud.client("sqs")
    dead_letters = sqs.get_queue_url(QueueName=queue.dead_letter_queue)["QueueUrl"]
    sqs.purge_queue(QueueUrl=dead_letters)  # of what the property test above sent there
    bodies = {"[" * 100_000 + "]" * 100_000: "body", _features(**{"mean radius": "9" * 5000}): "body",
              _features(**{"mean radius": "9" * 400}): "features.mean radius",
              _features()[:-2] + ',"\\u0000\\ud800":1}}': "features.\\x00\\ud800",
              _features()[:-1] + ',"request_id":"a\\u0000b"}': "request_id",
              _features()[:-1] + ',"request_id":"\\ud800"}': "request_id"}
    for body, field in bodies.items():
        assert _push(served, body) == {"batchItemFailures": []}
        [message] = sqs.receive_message(QueueUrl=dead_letters, MessageAttributeNames=["All"],
                                        MaxNumberOfMessages=10).get("Messages", [])
        sqs.delete_message(QueueUrl=dead_letters, ReceiptHandle=message["ReceiptHandle"])
        assert message["Body"] == body, "the body unchanged"
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["field"] == field, attributes
        assert all(c.isprintable() for value in attributes.values() for c in value), attributes

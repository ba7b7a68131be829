"""An ONNX model made outside the platform (mlops.training.external): what fits a contract is made servable, and
what does not is refused before anything is recorded, each mismatch named with what the platform expects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper

from mlops.core.errors import MlopsError
from mlops.data.schema import DataContract
from mlops.pipeline.external import contract_problems, declared_metrics, read_request
from mlops.serving.onnx_model import OnnxModel
from mlops.training.external import ModelRefused, adopt, synthetic_rows

NUMERIC = ("x1", "x2", "x3")
COLUMNS = [*NUMERIC, "color"]


def _contract(*extra: dict[str, Any], drop: Sequence[str] = ()) -> DataContract:
    columns = [{"name": "x1", "kind": "numeric"}, {"name": "x2", "kind": "numeric"}, {"name": "x3", "kind": "integer"},
               {"name": "color", "kind": "categorical", "categories": ["blue", "red"]}, *extra,
               {"name": "label", "kind": "integer"}]
    return DataContract(target="label", columns=[c for c in columns if c["name"] not in drop])


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(300, 3)), columns=list(NUMERIC))
    frame["x3"] = frame["x3"].round()
    frame["color"] = rng.choice(["red", "blue"], size=len(frame))
    label = ((frame.x1 + (frame.color == "red")) > 0.5).astype(int)
    return frame, label


@pytest.fixture(scope="module")
def rows(data: tuple[pd.DataFrame, pd.Series]) -> list[dict[str, Any]]:
    return data[0].head(120).to_dict("records")


def _sklearn_onnx(data: tuple[pd.DataFrame, pd.Series], number_type: Any, *, zipmap: bool = False,
                  regression: bool = False) -> tuple[bytes, Any]:
    """A scikit-learn pipeline trained anywhere, converted by skl2onnx with one input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, label = data
    estimator = LinearRegression() if regression else LogisticRegression()
    pipeline = make_pipeline(ColumnTransformer([("num", StandardScaler(), list(NUMERIC)),
                                                ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])]), estimator)
    pipeline.fit(frame, frame.x1 * 2 + 1 if regression else label)
    types = [(c, number_type([None, 1])) for c in NUMERIC] + [("color", StringTensorType([None, 1]))]
    model = convert_sklearn(pipeline, initial_types=types,
                            options={} if regression else {id(estimator): {"zipmap": zipmap}})
    return model.SerializeToString(), pipeline


def _tiny_classifier(inputs: Sequence[tuple[str, int, Sequence[Any]]], *, label: str = "predicted",
                     probabilities: str = "p", label_first: bool = True, classes: str | None = None,
                     columns: int = 1) -> bytes:
    """A hand-made classifier: its numeric inputs, as float [N, 1], summed into p(class 1) = sigmoid(sum); string
    inputs are taken and left unused. ``label``, ``probabilities``: its outputs' names; ``columns``: what each input
    is reshaped to inside ([-1, columns])."""
    nodes, numbers = [], []
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, columns])
    for name, elem, _dims in inputs:
        if elem != TensorProto.STRING:
            nodes += [helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT),
                      helper.make_node("Reshape", [f"{name}_f", "shape"], [f"{name}_r"])]
            numbers.append(f"{name}_r")
    nodes += [helper.make_node("Sum", numbers, ["z"]), helper.make_node("Sigmoid", ["z"], ["p1"]),
              helper.make_node("Sub", ["one", "p1"], ["p0"]),
              helper.make_node("Concat", ["p0", "p1"], [probabilities], axis=1),
              helper.make_node("ArgMax", [probabilities], [label], axis=1, keepdims=0)]
    declared = {label: helper.make_tensor_value_info(label, TensorProto.INT64, ["N"]),
                probabilities: helper.make_tensor_value_info(probabilities, TensorProto.FLOAT, ["N", 2])}
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(n, e, list(d)) for n, e, d in inputs],
        [declared[label], declared[probabilities]][:: 1 if label_first else -1],
        initializer=[shape, helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny")
    model.ir_version = 8
    if classes is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "classes", classes
    return model.SerializeToString()


GOOD_INPUTS = [("x1", TensorProto.DOUBLE, ["N", 1]), ("x2", TensorProto.FLOAT, [None, 1]),
               ("x3", TensorProto.DOUBLE, ["batch", 1]), ("color", TensorProto.STRING, ["N", 1])]


def _refusal(onnx_bytes: bytes, rows: list[dict[str, Any]], contract: DataContract | None = None,
             task: str = "binary") -> ModelRefused:
    with pytest.raises(ModelRefused) as refused:
        adopt(onnx_bytes, contract or _contract(), task, rows=rows)
    return refused.value


def test_a_float32_sklearn_model_that_fits_the_contract_is_served_as_it_predicts(
        data: tuple[pd.DataFrame, pd.Series], rows: list[dict[str, Any]]) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    onnx_bytes, pipeline = _sklearn_onnx(data, FloatTensorType)
    adopted = adopt(onnx_bytes, _contract(), "binary", rows=rows)
    assert adopted.classes == ["0", "1"]
    assert adopted.classes_from == "classifier node"
    assert adopted.changes[0].startswith("inputs x1, x2, x3 declared double, each cast to float")
    served = OnnxModel(adopted.onnx_bytes)
    # as serving reads it: numbers fed as float64, the label first, the probabilities where it looks for them
    assert [(i.name, i.onnx_type) for i in served.inputs] == [
        ("x1", "tensor(double)"), ("x2", "tensor(double)"), ("x3", "tensor(double)"), ("color", "tensor(string)")]
    assert served.output_names == ["label", "probabilities"]
    assert (served.task, served.target, served.classes) == ("binary", "label", ["0", "1"])
    assert served.metadata["source"] == "external"
    assert served.metadata["original_sha256"] == adopted.sha256 != adopted.stored_sha256
    frame = data[0].head(120)
    prediction = served.predict_records(frame.to_dict("records"))
    assert prediction.probabilities is not None
    assert np.abs(prediction.probabilities - pipeline.predict_proba(frame)).max() < 1e-5  # float32 arithmetic
    assert (prediction.labels == pipeline.predict(frame).astype(str)).mean() > 0.99


def test_classes_a_double_model_does_not_name_are_read_off_its_answers(
        data: tuple[pd.DataFrame, pd.Series], rows: list[dict[str, Any]]) -> None:
    from skl2onnx.common.data_types import DoubleTensorType

    onnx_bytes, _pipeline = _sklearn_onnx(data, DoubleTensorType)  # its classes are a tensor, not an attribute
    adopted = adopt(onnx_bytes, _contract(), "binary", rows=rows)
    assert (adopted.classes, adopted.classes_from) == (["0", "1"], "rows")
    # the model served is the stored copy, whose classes were learnt after the rows were scored
    assert (adopted.served().model_bytes, adopted.served().classes) == (adopted.onnx_bytes, ["0", "1"])
    assert not any("declared double" in change for change in adopted.changes)


def test_a_regression_gives_one_number_per_row(data: tuple[pd.DataFrame, pd.Series],
                                               rows: list[dict[str, Any]]) -> None:
    from skl2onnx.common.data_types import DoubleTensorType

    onnx_bytes, pipeline = _sklearn_onnx(data, DoubleTensorType, regression=True)
    adopted = adopt(onnx_bytes, _contract(), "regression", rows=rows)
    served = OnnxModel(adopted.onnx_bytes)
    assert not served.is_classifier
    assert (adopted.classes, adopted.classes_from) == ([], None)
    np.testing.assert_allclose(served.predict_records(rows).values, pipeline.predict(data[0].head(120)), atol=1e-9)
    # a classifier is no regression
    refused = _refusal(_sklearn_onnx(data, DoubleTensorType)[0], rows, task="regression")
    assert "a regression gives one output" in str(refused)


@pytest.mark.parametrize(("inputs", "contract", "problems"), [
    pytest.param(GOOD_INPUTS, _contract({"name": "x4", "kind": "numeric"}), [
        "missing input 'x4': the contract's numeric column 'x4' is fed as an input of its name, a float or double "
        "tensor [N, 1]"], id="a missing input is named with what the platform feeds"),
    pytest.param([*GOOD_INPUTS, ("x9", TensorProto.DOUBLE, ["N", 1]), ("label", TensorProto.DOUBLE, ["N", 1])], None, [
        "extra input 'x9' (tensor(double) [N, 1]): not a column of the contract, whose feature columns are x1, x2, "
        "x3, color",
        "extra input 'label' (tensor(double) [N, 1]): it is the target, which the model predicts; the platform feeds "
        "only the feature columns"], id="an extra input is named and the target is no input"),
    pytest.param([("x1", TensorProto.INT64, ["N", 1]), GOOD_INPUTS[1], GOOD_INPUTS[2],
                  ("color", TensorProto.FLOAT, ["N", 1])], None, [
        "input 'x1' is tensor(int64) [N, 1]; the contract's numeric column 'x1' is fed as a float or double tensor "
        "[N, 1]",
        "input 'color' is tensor(float) [N, 1]; the contract's categorical column 'color' is fed as a string tensor "
        "[N, 1]"], id="a wrong type is named with the type the platform feeds"),
])
def test_an_input_that_does_not_fit_the_contract_is_named_with_what_the_platform_feeds(
        rows: list[dict[str, Any]], inputs: list[tuple[str, int, list[Any]]], contract: DataContract | None,
        problems: list[str]) -> None:
    assert _refusal(_tiny_classifier(inputs), rows, contract).problems == problems


def test_shapes_other_than_n_by_1_are_refused(rows: list[dict[str, Any]]) -> None:
    inputs = [("x1", TensorProto.DOUBLE, [1, 1]), ("x2", TensorProto.DOUBLE, ["N"]),
              ("x3", TensorProto.DOUBLE, ["N", 3]), GOOD_INPUTS[3]]
    problems = _refusal(_tiny_classifier(inputs), rows).problems
    assert [p.split(";")[0].split(" (")[0] for p in problems] == [
        "input 'x1' takes a fixed 1 row(s)", "input 'x2' has shape tensor(double) [N]", "input 'x3' has 3 columns"]


def test_inputs_named_as_identifiers_take_their_columns_names(rows: list[dict[str, Any]]) -> None:
    contract = DataContract(target="label", columns=[
        {"name": "mean radius", "kind": "numeric"}, {"name": "x-2", "kind": "numeric"},
        {"name": "label", "kind": "integer"}])
    inputs = [("mean_radius", TensorProto.DOUBLE, ["N", 1]), ("x_2", TensorProto.FLOAT, ["N", 1])]
    rows = [{"mean radius": r["x1"], "x-2": r["x2"]} for r in rows]
    adopted = adopt(_tiny_classifier(inputs), contract, "binary", rows=rows)
    assert [i.name for i in OnnxModel(adopted.onnx_bytes).inputs] == ["mean radius", "x-2"]
    assert adopted.changes[:2] == ["inputs named after their columns: mean_radius -> mean radius, x_2 -> x-2",
                                   "inputs x-2 declared double, each cast to float in the graph (serving feeds every "
                                   "number as float64)"]
    # where two columns could be meant, nothing is guessed
    ambiguous = DataContract(target="label", columns=[
        {"name": "mean radius", "kind": "numeric"}, {"name": "mean-radius", "kind": "numeric"},
        {"name": "label", "kind": "integer"}])
    refused = _refusal(_tiny_classifier(inputs[:1]), rows, ambiguous)
    assert [p.split(":")[0] for p in refused.problems] == [
        "missing input 'mean radius'", "missing input 'mean-radius'",
        "extra input 'mean_radius' (tensor(double) [N, 1])"]


def test_every_mismatch_is_in_one_message(rows: list[dict[str, Any]]) -> None:
    inputs = [("x1", TensorProto.INT32, ["N", 1]), GOOD_INPUTS[1], GOOD_INPUTS[3], ("extra", TensorProto.FLOAT,
                                                                                      ["N", 1])]
    refused = _refusal(_tiny_classifier(inputs), rows)
    message = str(refused)
    assert message.startswith("the model cannot be imported:\n  - ")
    assert len(refused.problems) == 3
    for part in ("input 'x1' is tensor(int32)", "missing input 'x3'", "extra input 'extra'"):
        assert part in message


def test_a_file_that_is_not_onnx_is_refused(rows: list[dict[str, Any]]) -> None:
    refused = _refusal(b"label,x1\n1,0.5\n", rows)
    assert refused.problems[0].startswith("it is not an ONNX model onnxruntime can load (")


def test_probabilities_as_maps_are_refused_with_how_to_convert(data: tuple[pd.DataFrame, pd.Series],
                                                              rows: list[dict[str, Any]]) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    refused = _refusal(_sklearn_onnx(data, FloatTensorType, zipmap=True)[0], rows)
    [problem] = refused.problems
    assert "one float or double tensor [N, classes]; none is among its outputs" in problem
    assert "{'zipmap': False}" in problem


def test_outputs_are_laid_out_as_serving_reads_them(rows: list[dict[str, Any]]) -> None:
    # the probabilities first, under another name: served second, as `probabilities`
    adopted = adopt(_tiny_classifier(GOOD_INPUTS, label="output_label", probabilities="output_probability",
                                     label_first=False), _contract(), "binary", rows=rows)
    assert OnnxModel(adopted.onnx_bytes).output_names == ["output_label", "probabilities"]
    assert "output 'output_probability' served as 'probabilities'" in adopted.changes
    assert "outputs reordered (the label first)" in adopted.changes


def test_declared_classes_are_checked_against_the_answers(rows: list[dict[str, Any]]) -> None:
    adopted = adopt(_tiny_classifier(GOOD_INPUTS, classes='["0", "1"]'), _contract(), "binary", rows=rows)
    assert (adopted.classes, adopted.classes_from) == (["0", "1"], "metadata_props")
    assert (adopted.served().model_bytes, adopted.served().classes) == (adopted.onnx_bytes, ["0", "1"])
    refused = _refusal(_tiny_classifier(GOOD_INPUTS, classes='["1", "0"]'), rows)
    assert "its label differs from the class of its highest probability" in refused.problems[0]


def test_a_model_that_fails_on_the_rows_is_refused(rows: list[dict[str, Any]]) -> None:
    # declared [N, 1], but it reads its inputs two values a row: it loads, and fails on an odd number of rows
    refused = _refusal(_tiny_classifier(GOOD_INPUTS, columns=2), rows[:3])
    assert refused.problems[0].startswith("scored as the platform scores (one [N, 1] tensor per column, numbers as "
                                          "float64) on 3 rows, it fails: ")


def test_synthetic_rows_keep_to_the_contract() -> None:
    contract = _contract({"name": "n", "kind": "numeric", "min": 2.0, "max": 3.0},
                         {"name": "i", "kind": "integer", "min": 0.5}, {"name": "b", "kind": "boolean"})
    rows = synthetic_rows(contract, n=200, seed=1)
    assert len(rows) == 200
    assert set(rows[0]) == {"x1", "x2", "x3", "color", "n", "i", "b"}
    assert all(2.0 <= r["n"] <= 3.0 and r["i"] >= 1 and float(r["i"]).is_integer() for r in rows)
    assert {r["color"] for r in rows} == {"blue", "red"}
    assert {r["b"] for r in rows} == {0.0, 1.0}


def test_the_contract_given_must_agree_with_the_models_own() -> None:
    from mlops.core.config import ModelConfig

    cfg = ModelConfig(name="mm", target="label", task="binary", family="logistic_regression")
    assert contract_problems(_contract(), "mm", cfg, _contract()) == []
    assert contract_problems(_contract(), "mm", cfg, None) == []
    own = _contract({"name": "x4", "kind": "numeric"}, drop=["x1"])
    given = _contract(drop=["x2"]).model_copy(update={"version": 3})
    assert contract_problems(given, "mm", cfg.model_copy(update={"target": "y"}), own) == [
        "its target is 'label'; mm predicts 'y' (mlops.toml)",
        "it lacks the numeric column 'x2' of mm's contract v1",
        "it lacks the numeric column 'x4' of mm's contract v1",
        "its column 'x1' is not in mm's contract v1"]


def test_declared_metrics_are_the_finite_numbers_of_the_file() -> None:
    assert declared_metrics({"accuracy": 0.9, "f1": 1, "note": "x", "auc": float("nan"), "ok": True}) == {
        "accuracy": 0.9, "f1": 1.0}
    # as `mlops train --json` writes them
    assert declared_metrics({"metrics": {"accuracy": 0.8}, "latency_ms": {"p50": 1}}) == {"accuracy": 0.8}


# -- one input holding every feature, no label output (onnxmltools, tf2onnx, torch) ----------------------------------
def _matrix_classifier(data: tuple[pd.DataFrame, pd.Series], number_type: Any) -> tuple[bytes, Any]:
    """A classifier fitted on the numeric columns as one matrix and converted with one input [N, 3], as onnxmltools,
    tf2onnx and torch export a model."""
    from skl2onnx import convert_sklearn
    from sklearn.linear_model import LogisticRegression

    frame, label = data
    classifier = LogisticRegression().fit(frame[list(NUMERIC)].to_numpy(), label)
    model = convert_sklearn(classifier, initial_types=[("float_input", number_type([None, len(NUMERIC)]))],
                            options={id(classifier): {"zipmap": False}})
    return model.SerializeToString(), classifier


@pytest.mark.parametrize("number_type", ["FloatTensorType", "DoubleTensorType"])
def test_one_input_holding_the_numeric_columns_is_fed_one_input_per_column(
        data: tuple[pd.DataFrame, pd.Series], rows: list[dict[str, Any]], number_type: str) -> None:
    from skl2onnx.common import data_types

    onnx_bytes, classifier = _matrix_classifier(data, getattr(data_types, number_type))
    contract = _contract(drop=["color"])
    adopted = adopt(onnx_bytes, contract, "binary", rows=rows)
    served = OnnxModel(adopted.onnx_bytes)
    assert [(i.name, i.onnx_type) for i in served.inputs] == [(c, "tensor(double)") for c in NUMERIC]
    cast = ", then cast to float" if number_type == "FloatTensorType" else ""
    shown = "float" if number_type == "FloatTensorType" else "double"
    assert adopted.changes[0] == (f"input 'float_input' (tensor({shown}) [N, 3]) fed from one double input [N, 1] per "
                                  f"feature column, concatenated in the contract's order (x1, x2, x3){cast}")
    frame = data[0].head(120)
    prediction = served.predict_records(frame.to_dict("records"))
    assert prediction.probabilities is not None
    expected = classifier.predict_proba(frame[list(NUMERIC)].to_numpy())
    assert np.abs(prediction.probabilities - expected).max() < 1e-5


def test_one_input_of_the_wrong_width_says_what_was_found_and_how_to_re_export(
        data: tuple[pd.DataFrame, pd.Series], rows: list[dict[str, Any]]) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    onnx_bytes, _classifier = _matrix_classifier(data, FloatTensorType)
    refused = _refusal(onnx_bytes, rows, _contract({"name": "x4", "kind": "numeric"}, drop=["color"]))
    assert refused.problems == [
        "it has one input, 'float_input' (tensor(float) [N, 3]), where the platform feeds one input per feature "
        "column; it holds 3 features, the contract has 4 feature columns: re-export it with one input per feature "
        "column, named after the column (a float or double tensor [N, 1], a string tensor [N, 1] for a categorical "
        "one), in this order: [\"x1\", \"x2\", \"x3\", \"x4\"], or one float or double input [N, 4] holding the "
        "columns in that order"]
    # a categorical column cannot ride in a number tensor: only the per-column export is offered
    [problem] = _refusal(onnx_bytes, rows).problems
    assert problem.startswith("it has one input, 'float_input' (tensor(float) [N, 3]), where the platform feeds one "
                              "input per feature column; the contract's categorical columns color cannot be fed in one "
                              "number tensor: re-export it with one input per feature column")
    assert problem.endswith('in this order: ["x1", "x2", "x3", "color"]')


def _probabilities_only(inputs: Sequence[tuple[str, int, Sequence[Any]]], classes: str | None) -> bytes:
    """_tiny_classifier without its label output (a torch export of a softmax, say)."""
    import onnx

    model = onnx.load_from_string(_tiny_classifier(inputs, classes=classes))
    kept = [o for o in model.graph.output if o.name != "predicted"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model.SerializeToString()


def test_a_classifier_without_a_label_output_gets_one_when_its_classes_are_named(rows: list[dict[str, Any]]) -> None:
    adopted = adopt(_probabilities_only(GOOD_INPUTS, '["no", "yes"]'), _contract(), "binary", rows=rows)
    served = OnnxModel(adopted.onnx_bytes)
    assert served.output_names == ["label", "probabilities"]
    assert "label output 'label' added: the class of each row's highest probability, of no, yes" in adopted.changes
    prediction = served.predict_records(rows)
    assert prediction.probabilities is not None
    assert list(prediction.labels) == [["no", "yes"][i] for i in prediction.probabilities.argmax(axis=1)]
    assert (adopted.classes, adopted.classes_from) == (["no", "yes"], "metadata_props")


def test_a_classifier_without_a_label_output_or_named_classes_is_told_how_to_fix_it(
        rows: list[dict[str, Any]]) -> None:
    assert _refusal(_probabilities_only(GOOD_INPUTS, None), rows).problems == [
        "it gives probabilities (p tensor(float) [N, 2]) but no predicted class, and its classes are not named: name "
        "them in the order of the probability columns in the file's metadata_props, key 'classes', as a JSON list "
        "(e.g. [\"0\", \"1\"]), and the label is derived as the class of the highest probability; or export the "
        "predicted class too, as an int or string output [N]"]


# -- the metrics file ---------------------------------------------------------------------------------------------
def _request_with_metrics(folder: Any, content: str) -> Any:
    (folder / "model.onnx").write_bytes(b"not read here")
    (folder / "contract.json").write_text(_contract().to_json())
    (folder / "m.json").write_text(content)
    return read_request("mm", onnx_path=str(folder / "model.onnx"), contract_path=str(folder / "contract.json"),
                        metrics_path=str(folder / "m.json"), who="me")


@pytest.mark.parametrize(("content", "problem"), [
    ('{"metrics": {"accuracy": "0.95", "f1": 0.9}}',
     'metrics.accuracy is "0.95", not a finite number (write the number itself, without quotes)'),
    ('{"metrics": [1]}', 'its "metrics" is [1], not an object of metric names and numbers: {"accuracy": 0.95, ...}, '
                         'or {"metrics": {"accuracy": 0.95, ...}} as `mlops train --json` writes it'),
    ('{"metrics": {"accuracy": null}}', "metrics.accuracy is null, not a finite number"),
    ('{"accuracy": "0.95", "evaluated_on": "our own split"}',
     'accuracy is "0.95", not a finite number (write the number itself, without quotes)'),
    ('{"accuracy": NaN}', "accuracy is NaN, not a finite number"),
    ("[0.95]", 'it holds [0.95], not a JSON object: {"accuracy": 0.95, ...}, or {"metrics": {"accuracy": 0.95, ...}} '
               "as `mlops train --json` writes it"),
])
def test_a_malformed_metrics_file_names_the_key_whose_value_is_not_a_number(
        tmp_path: Any, content: str, problem: str) -> None:
    with pytest.raises(MlopsError) as refused:
        _request_with_metrics(tmp_path, content)
    assert str(refused.value) == f"--metrics {tmp_path / 'm.json'}: {problem}"


def test_a_metrics_file_may_hold_notes_beside_its_numbers(tmp_path: Any) -> None:
    request = _request_with_metrics(tmp_path, '{"accuracy": 0.9, "evaluated_on": "our split", "calibrated": true}')
    assert declared_metrics(request.declared) == {"accuracy": 0.9}
    request = _request_with_metrics(tmp_path, '{"metrics": {"accuracy": 0.8}, "trained_on": "a laptop"}')
    assert declared_metrics(request.declared) == {"accuracy": 0.8}


# -- how the CLI finds the platform's state machines and functions --------------------------------------------------
def test_a_state_machine_is_the_deployed_stacks_else_the_local_clouds(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    from mlops import aws
    from mlops.aws import environment, platform
    from mlops.cli.common import batch_state_machine_arn, state_machine_arn

    monkeypatch.setenv(environment.ROLLOUT_STATE_MACHINE_ARN, "arn:aws:states:eu-west-1:1:stateMachine:deployed")
    assert state_machine_arn("p", environment.ROLLOUT_STATE_MACHINE_ARN, platform.ROLLOUT_STATE_MACHINE) == \
        "arn:aws:states:eu-west-1:1:stateMachine:deployed"
    monkeypatch.delenv(environment.ROLLOUT_STATE_MACHINE_ARN)
    monkeypatch.delenv(environment.BATCH_STATE_MACHINE_ARN, raising=False)
    with mock_aws():
        aws.client.cache_clear()
        try:
            account = aws.client("sts").get_caller_identity()["Account"]
            assert state_machine_arn("p", environment.ROLLOUT_STATE_MACHINE_ARN, platform.ROLLOUT_STATE_MACHINE) == \
                f"arn:aws:states:{aws.region()}:{account}:stateMachine:p-rollout"
            assert batch_state_machine_arn("p") == f"arn:aws:states:{aws.region()}:{account}:stateMachine:p-batch"
        finally:
            aws.client.cache_clear()


def test_the_register_function_is_the_deployed_stacks_else_the_local_clouds(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    from mlops.cli.common import invoke_platform_function

    monkeypatch.delenv("REGISTER_FUNCTION", raising=False)
    with mock_aws():
        with pytest.raises(MlopsError) as missing:
            invoke_platform_function("p", "register", {})
        assert str(missing.value) == ("no function p-register: against AWS, export REGISTER_FUNCTION as the deployed "
                                      "stack's register function (its name or ARN)")
        monkeypatch.setenv("REGISTER_FUNCTION", "p-dev-PipelineRegister0A1B2C")
        with pytest.raises(MlopsError) as named:
            invoke_platform_function("p", "register", {})
        assert str(named.value).startswith("no function p-dev-PipelineRegister0A1B2C: ")

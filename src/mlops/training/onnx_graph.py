"""Reading and editing an ONNX graph in place: its inputs and outputs as declared, and the edits that make a model
made elsewhere servable as the platform serves its own (:mod:`mlops.training.external` says which and why).

onnx is imported where it is used: this module is imported with the rest of ``mlops.training``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.serving.onnx_model import META_CLASSES, META_FEATURES, META_OPSET, META_TARGET, META_TASK

if TYPE_CHECKING:
    from mlops.core.tasks import Task
    from mlops.data.schema import DataContract


class NameTaken(ValueError):
    """An edit needs a name the graph already gives another value."""


@dataclass(frozen=True)
class Port:
    """An input or output as the graph declares it. ``shape`` None: not declared; a dimension None or a str: free."""

    name: str
    type: str
    shape: tuple[int | str | None, ...] | None

    @property
    def shown(self) -> str:
        if self.shape is None:
            return self.type
        dims = ["N" if free_dim(d) else str(d) for d in self.shape]
        return f"{self.type} [{', '.join(dims)}]"


def free_dim(dim: int | str | None) -> bool:
    return dim is None or isinstance(dim, str) or dim <= 0


def _elem(code: int) -> str:
    from onnx import TensorProto

    return str(TensorProto.DataType.Name(code)).lower()


def _type_text(value_type: Any) -> str:
    kind = value_type.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_elem(value_type.tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({_type_text(value_type.sequence_type.elem_type)})"
    if kind == "map_type":
        return f"map({_elem(value_type.map_type.key_type)},{_type_text(value_type.map_type.value_type)})"
    return str(kind or "unknown")


def _port(value_info: Any) -> Port:
    shape = None
    tensor = value_info.type.tensor_type if value_info.type.WhichOneof("value") == "tensor_type" else None
    if tensor is not None and tensor.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    return Port(value_info.name, _type_text(value_info.type), shape)


def ports(model: Any) -> tuple[list[Port], list[Port]]:
    """The graph's inputs (initializers left out: they are weights) and outputs."""
    weights = {i.name for i in model.graph.initializer}
    return ([_port(i) for i in model.graph.input if i.name not in weights], [_port(o) for o in model.graph.output])


def value_names(graph: Any) -> set[str]:
    return ({o for n in graph.node for o in n.output} | {i.name for i in graph.input}
            | {i.name for i in graph.initializer})


def rename_uses(graph: Any, renamed: Mapping[str, str]) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        for attribute in node.attribute:  # a subgraph (If, Loop, Scan) may read the outer graph's values
            if attribute.HasField("g"):
                rename_uses(attribute.g, renamed)
            for subgraph in attribute.graphs:
                rename_uses(subgraph, renamed)


def _fresh(name: str, taken: set[str]) -> str:
    """``name``, or it with underscores appended, unused in the graph (and now taken)."""
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _prepend(graph: Any, nodes: Sequence[Any]) -> None:
    """``nodes`` run before the graph's own (which read what they write)."""
    ordered = [*nodes, *graph.node]
    del graph.node[:]
    graph.node.extend(ordered)


def feed_as_double(graph: Any, names: Sequence[str]) -> None:
    """Declare the float inputs ``names`` double, each cast to float before anything reads it."""
    from onnx import TensorProto, helper

    taken = value_names(graph)
    renamed = {name: _fresh(f"{name}__as_float", taken) for name in names}
    rename_uses(graph, renamed)
    for value in graph.input:
        if value.name in renamed:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    _prepend(graph, [helper.make_node("Cast", [name], [inner], to=TensorProto.FLOAT, name=f"mlops_cast_{name}")
                     for name, inner in renamed.items()])


def feed_columns(graph: Any, matrix: str, columns: Sequence[str]) -> None:
    """Replace the input ``matrix`` ([N, F], float or double) by one double input [N, 1] per column, named after it,
    concatenated in the order of ``columns`` into what the graph read (cast back to float for a float matrix)."""
    from onnx import TensorProto, helper

    taken = value_names(graph)
    clash = sorted(set(columns) & (taken - {matrix}))
    if clash:
        raise NameTaken(f"its input {matrix!r} cannot be fed from inputs named after the columns {clash}: the graph "
                        "gives those names to other values")
    [value] = [v for v in graph.input if v.name == matrix]
    elem = value.type.tensor_type.elem_type
    inner = _fresh(f"{matrix}__columns", taken)  # what the graph reads instead of the matrix
    rename_uses(graph, {matrix: inner})
    stacked = inner if elem == TensorProto.DOUBLE else _fresh(f"{inner}_double", taken)
    nodes = [helper.make_node("Concat", list(columns), [stacked], axis=1, name="mlops_columns")]
    if elem != TensorProto.DOUBLE:
        nodes.append(helper.make_node("Cast", [stacked], [inner], to=elem, name="mlops_cast_columns"))
    inputs = []
    for value in graph.input:
        if value.name != matrix:
            inputs.append(value)
            continue
        inputs += [helper.make_tensor_value_info(column, TensorProto.DOUBLE, ["N", 1]) for column in columns]
    del graph.input[:]
    graph.input.extend(inputs)
    _prepend(graph, nodes)


def derive_label(graph: Any, probabilities: str, classes: Sequence[str]) -> str:
    """Add a label output: each row's class of its highest probability (``classes``, in the order of the probability
    columns), a string tensor [N]; its name."""
    from onnx import TensorProto, helper

    taken = value_names(graph) | {o.name for o in graph.output}
    label, index, table = (_fresh(name, taken) for name in ("label", "label__column", "label__classes"))
    names: Any = [str(c).encode() for c in classes]  # a string tensor's values are bytes (onnx types them as numbers)
    graph.initializer.append(helper.make_tensor(table, TensorProto.STRING, [len(classes)], names))
    graph.node.extend([
        helper.make_node("ArgMax", [probabilities], [index], axis=1, keepdims=0, name="mlops_label_column"),
        helper.make_node("Gather", [table, index], [label], axis=0, name="mlops_label"),
    ])
    graph.output.append(helper.make_tensor_value_info(label, TensorProto.STRING, ["N"]))
    return label


def expose_outputs(graph: Any, plan: Sequence[tuple[str, str]]) -> list[str]:
    """Make the graph's outputs exactly ``plan`` ((current name, served name), in order); the changes made."""
    from onnx import ValueInfoProto, helper

    taken = value_names(graph)
    current = {o.name: o for o in graph.output}
    kept, changes = [], []
    for name, served in plan:
        value = ValueInfoProto()
        value.CopyFrom(current[name])
        if served != name:
            if served in taken:
                raise NameTaken(f"output {name!r} is served as {served!r}, a name the graph already gives another "
                                "value: rename that value")
            graph.node.append(helper.make_node("Identity", [name], [served], name=f"mlops_output_{served}"))
            value.name = served
            changes.append(f"output {name!r} served as {served!r}")
        kept.append(value)
    dropped = [o.name for o in graph.output if o.name not in dict(plan)]
    if dropped:
        changes.append(f"outputs {', '.join(dropped)} dropped (not served)")
    elif [o.name for o in graph.output] != [name for name, _ in plan]:
        changes.append("outputs reordered (the label first)")
    del graph.output[:]
    graph.output.extend(kept)
    return changes


def write_metadata(model: Any, contract: DataContract, task: Task, classes: Sequence[str],
                   extra: Mapping[str, str] | None = None, *, keep: bool = False) -> None:
    """Set the metadata_props serving reads (:mod:`mlops.serving.onnx_model`): ``classes``, ``task``, ``target``,
    ``features`` and ``onnx_opset``, then ``extra``; the model's other props are kept when ``keep``, else dropped."""
    features = [{"name": n, "kind": "numeric", "type": "tensor(double)"} for n in contract.numeric_features] + [
        {"name": n, "kind": "categorical", "type": "tensor(string)"} for n in contract.categorical_features]
    props = {p.key: p.value for p in model.metadata_props} if keep else {}
    props.update({
        META_CLASSES: json.dumps(list(classes)), META_TASK: task.value, META_TARGET: contract.target or "",
        META_FEATURES: json.dumps(features),
        # what the graph imports (skl2onnx lowers the main opset to the highest one a node needs)
        META_OPSET: json.dumps({(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}),
        **(extra or {}),
    })
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def declared_classes(model: Any) -> tuple[list[str] | None, str | None]:
    """The classes the file names, and where: its metadata_props, else its ``ai.onnx.ml`` classifier node(s)."""
    meta = {p.key: p.value for p in model.metadata_props}
    if META_CLASSES in meta:
        try:
            classes = json.loads(meta[META_CLASSES])
        except ValueError:
            classes = None
        if isinstance(classes, list) and classes:
            return [str(c) for c in classes], "metadata_props"
    found = set()
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.domain == "ai.onnx.ml" and attribute.name in ("classlabels_strings", "classlabels_int64s",
                                                                   "classlabels_ints"):
                values = attribute.strings or attribute.ints
                found.add(tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values))
    found.discard(())
    return (list(found.pop()), "classifier node") if len(found) == 1 else (None, None)


def rename_inputs(graph: Any, renamed: Mapping[str, str]) -> None:
    """Give the inputs ``renamed`` (old -> new) their new names, where they are read too."""
    clash = sorted(set(renamed.values()) & value_names(graph))
    if clash:
        raise NameTaken(f"its inputs cannot take their columns' names {clash}: the graph gives them to other values")
    rename_uses(graph, renamed)
    for value in graph.input:
        value.name = renamed.get(value.name, value.name)

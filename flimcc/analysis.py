"""Structural checks of a compilation stage."""

from __future__ import annotations

import onnx
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from .errors import FlimccError

#: Ops whose outputs are integer levels whatever their inputs.
QUANTIZERS = ("Quant", "MultiThreshold")
NON_NUMERIC = (onnx.TensorProto.INT64, onnx.TensorProto.BOOL, onnx.TensorProto.INT32)


def datatype_annotations(graph: onnx.GraphProto) -> dict[str, str]:
    """tensor name -> its qonnx DataType name (`finn_datatype` annotations of this graph)."""
    out = {}
    for qa in graph.quantization_annotation:
        for entry in qa.quant_parameter_tensor_names:
            if entry.key == "finn_datatype":
                out[qa.tensor_name] = entry.value
    return out


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(graph.input) + list(graph.value_info) + list(graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def integer_violations(model: ModelWrapper) -> list[str]:
    """Tensors of an integer stage that are not annotated with an integer DataType.

    Allowed to stay float: the graph's inputs and what is computed from them alone before
    a quantizer (the input edge), the graph's outputs, and shape/index tensors. Inside a
    loop body nothing may be float: every tensor there must be annotated integer."""
    problems: list[str] = []
    graph = model.graph
    ann, elem = datatype_annotations(graph), _elem_types(graph)
    float_edge = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    consts = {t.name for t in graph.initializer}
    for node in graph.node:
        dynamic = [i for i in node.input if i and i not in consts]
        if node.op_type not in QUANTIZERS and dynamic and all(i in float_edge for i in dynamic):
            float_edge.update(node.output)
            continue
        for out in node.output:
            if out in outputs or elem.get(out) in NON_NUMERIC or node.op_type in ("Shape",):
                continue
            dt = ann.get(out)
            if dt is None or not DataType[dt].is_integer():
                problems.append(f"tensor '{out}' (from {node.op_type} '{node.name}') is {dt or 'FLOAT32'}")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                problems += _body_violations(attr.g, node.name)
    return problems


def _body_violations(body: onnx.GraphProto, owner: str) -> list[str]:
    ann = datatype_annotations(body)
    problems = []
    names = [i.name for i in body.input] + [o for n in body.node for o in n.output]
    for name in names:
        dt = ann.get(name)
        if dt is None or not DataType[dt].is_integer():
            problems.append(f"loop body of '{owner}': tensor '{name}' is {dt or 'FLOAT32'}")
    return problems


def check_integer_graph(model: ModelWrapper) -> None:
    """Raise naming the first offending tensors if the stage is not integer-only."""
    problems = integer_violations(model)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise FlimccError("not an integer graph: " + "; ".join(problems[:3]) + more)

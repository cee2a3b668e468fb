"""Tensor layouts of flimcc's hardware graphs, and re-batching them.

A compiled graph is written for one hardware frame of P pixels. Its streams are FINN's
4-D NHWC ``(1, T, P, C)`` for sequences (step-major, the P pixels of a step interleaved)
and 2-D ``(P, C)`` for states and loop bodies: layouts FINN's Python execution handles
exactly (3-D tensors trip its threshold code). In both, the pixel axis is the last
vector axis, i.e. the last entry of a FINN node's ``numInputVectors`` and the second-last
axis of its shapes, which is what :func:`rebatch` rewrites.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.infer_shapes import InferShapes

FINN_HW_DOMAINS = ("finn.custom_op.fpgadataflow.hls", "finn.custom_op.fpgadataflow.rtl")
FINN_ABSTRACT_DOMAIN = "finn.custom_op.fpgadataflow"
LOOP_DOMAIN = "flimcc.hw"


def is_finn_hw(node: onnx.NodeProto) -> bool:
    return node.domain in FINN_HW_DOMAINS


def hw_nodes(model: ModelWrapper) -> Iterator[tuple[onnx.NodeProto, object]]:
    """(node, op instance) for every specialised FINN node of the graph, in order."""
    for node in model.graph.node:
        if is_finn_hw(node):
            yield node, getCustomOp(node)


def loop_nodes(model: ModelWrapper) -> Iterator[tuple[onnx.NodeProto, object]]:
    for node in model.graph.node:
        if node.domain == LOOP_DOMAIN and node.op_type == "RecurrentLoop":
            yield node, getCustomOp(node)


def _set_batch(shape: list[int], axis: int, n: int) -> list[int]:
    shape = list(shape)
    if len(shape) >= -axis:
        shape[axis] = n
    return shape


def _rebatch_node(node: onnx.NodeProto, n: int) -> None:
    if node.domain not in FINN_HW_DOMAINS + (FINN_ABSTRACT_DOMAIN,):
        return
    inst = getCustomOp(node)
    types = inst.get_nodeattr_types()
    if "numInputVectors" in types:
        niv = list(inst.get_nodeattr("numInputVectors"))
        inst.set_nodeattr("numInputVectors", _set_batch(niv, -1, n))
    for side in ("lhs", "rhs"):
        if f"{side}_shape" in types and inst.get_nodeattr(f"{side}_style") == "input":
            inst.set_nodeattr(f"{side}_shape", _set_batch(inst.get_nodeattr(f"{side}_shape"), -2, n))
    if "out_shape" in types:
        inst.set_nodeattr("out_shape", _set_batch(inst.get_nodeattr("out_shape"), -2, n))
    if "normal_shape" in types:  # StreamingFIFO: normal (.., P, C), folded (.., P, C/PE, PE)
        inst.set_nodeattr("normal_shape", _set_batch(inst.get_nodeattr("normal_shape"), -2, n))
        inst.set_nodeattr("folded_shape", _set_batch(inst.get_nodeattr("folded_shape"), -3, n))


#: Pixel axis of a hardware stream by rank: (P, C) states and bodies, (1, T, P, C) sequences.
PIXEL_AXIS = {2: 0, 4: 2}


def _reshape_tensors(graph: onnx.GraphProto, n: int) -> None:
    """Hardware tensors get the new batch on their pixel axis (FINN's shape functions
    check their inputs against it); the others are cleared for ONNX to re-infer."""
    hw = set()
    inits = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.domain in FINN_HW_DOMAINS + (FINN_ABSTRACT_DOMAIN, LOOP_DOMAIN):
            hw.update(node.input)
            hw.update(node.output)
    for vi in list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if vi.name in inits:
            continue
        if vi.name in hw and tt.HasField("shape") and len(tt.shape.dim) in PIXEL_AXIS:
            dim = tt.shape.dim[PIXEL_AXIS[len(tt.shape.dim)]]
            dim.ClearField("dim_param")
            dim.dim_value = n
        else:
            tt.ClearField("shape")


def rebatch_graph(model: ModelWrapper, n: int, input_axis: dict[str, int] | None = None) -> ModelWrapper:
    """Set the pixel batch of `model` (modified in place, returned re-inferred) to n."""
    from flimcc.hw.recurrent_loop import body_model

    graph = model.graph
    inits = {t.name for t in graph.initializer}
    for vi in graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        axis = (input_axis or {}).get(vi.name, 0)
        dims[axis].ClearField("dim_param")
        dims[axis].dim_value = n
    for node in graph.node:
        _rebatch_node(node, n)
        if node.domain == LOOP_DOMAIN:
            loop = getCustomOp(node)
            body = body_model(loop.get_nodeattr("body"))
            body = rebatch_graph(body, n)
            loop.set_nodeattr("body", body.model.graph)
    _reshape_tensors(graph, n)
    return model.transform(InferShapes(), cleanup=False)


def rebatch(model: ModelWrapper, n: int) -> ModelWrapper:
    """A copy of `model` whose graph (and loop bodies) process a batch of n pixels. Used to
    execute a compiled P-pixel graph on any number of pixels at once, and by
    ``batch-pixels`` to set P; the hardware attributes (PE, SIMD, P, ...) are unchanged."""
    return rebatch_graph(ModelWrapper(copy.deepcopy(model.model)), n)

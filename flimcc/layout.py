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
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from flimcc.ir import wrap

FINN_HW_DOMAINS = ("finn.custom_op.fpgadataflow.hls", "finn.custom_op.fpgadataflow.rtl")
FINN_ABSTRACT_DOMAIN = "finn.custom_op.fpgadataflow"
LOOP_DOMAIN = "flimcc.hw"


def body_model(graph: onnx.GraphProto, opset: int = 17) -> ModelWrapper:
    """A standalone model of a body graph (a copy), so FINN analyses can run on it."""
    g = onnx.GraphProto()
    g.CopyFrom(graph)
    # flimcc.ir.wrap: qonnx's constructor with its value-info fix in linear time (fold builds
    # body models thousands of times; the constructor's own check dominated the compile)
    return wrap(qonnx_make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


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


def for_each_graph(model: ModelWrapper, edit) -> None:
    """Apply `edit(graph_model)` to the top graph and to every RecurrentLoop body (writing
    the edited bodies back): placements and implementation choices reach inside loops."""
    edit(model)
    for _, loop in loop_nodes(model):
        body = loop.body()
        edit(body)
        loop.set_nodeattr("body", body.model.graph)


def all_node_names(model: ModelWrapper) -> list[str]:
    """Every node name of the model, loop bodies included, in order (top node, then its body)."""
    names = []
    for node in model.graph.node:
        names.append(node.name)
        if node.domain == LOOP_DOMAIN and node.op_type == "RecurrentLoop":
            names += [n.name for n in getCustomOp(node).get_nodeattr("body").node]
    return names


def give_unique_names(model: ModelWrapper) -> None:
    """Name every node `<op_type>_<k>`, k counting per op type across the whole model: the
    top graph first (its names are what qonnx's GiveUniqueNodeNames gives), then each loop
    body in loop order, continuing the count (in place).

    Why: FINN names each node's generated HDL module and IP after the node, and a stitched
    design holds the loop bodies' nodes beside the top graph's, so a name must be unique
    model-wide; GiveUniqueNodeNames numbers each graph on its own (a body's `MVAU_rtl_0`
    would clash with the top graph's)."""
    counts: dict[str, int] = {}

    def name(node: onnx.NodeProto) -> None:
        k = counts.get(node.op_type, 0)
        counts[node.op_type] = k + 1
        node.name = f"{node.op_type}_{k}"

    for node in model.graph.node:
        name(node)
    for _, loop in loop_nodes(model):
        for bnode in loop.get_nodeattr("body").node:  # the attribute itself, edited in place
            name(bnode)


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


#: Software ops at a hardware graph's edges, and where they move the pixel axis.
_SAME_AXIS = {"Mul", "Add", "Sub", "Div", "Quant", "IntQuant", "MultiThreshold", "Identity", "Relu", "Clip", "Cast"}


def _edge_axis(node: onnx.NodeProto, axis: int, rank: int, graph_model: ModelWrapper) -> int | None:
    """The pixel axis of `node`'s output given its input's, or None if not tracked."""
    if node.op_type in _SAME_AXIS:
        return axis
    if node.op_type == "Transpose":
        perm = next(list(a.ints) for a in node.attribute if a.name == "perm")
        return perm.index(axis)
    if node.op_type in ("Unsqueeze", "Squeeze") and len(node.input) > 1:
        axes = graph_model.get_initializer(node.input[1])
        if axes is None:
            return None
        if node.op_type == "Squeeze":
            axes = sorted(int(a) % rank for a in axes.ravel())
            return None if axis in axes else axis - sum(a < axis for a in axes)
        out_rank = rank + axes.size
        kept = [d for d in range(out_rank) if d not in {int(a) % out_rank for a in axes.ravel()}]
        return kept[axis]
    return None


def _set_dim(vi: onnx.ValueInfoProto, axis: int, n: int) -> None:
    dim = vi.type.tensor_type.shape.dim[axis]
    dim.ClearField("dim_param")
    dim.dim_value = n


def _reshape_tensors(graph_model: ModelWrapper, n: int) -> bool:
    """Every tensor's pixel axis set to n without re-running shape inference: hardware
    tensors by layout (PIXEL_AXIS), software tensors at the edges by following the axis
    from the graph inputs (axis 0) through their ops. False if some tensor could not be
    followed (the caller then re-infers shapes)."""
    graph = graph_model.graph
    inits = {t.name for t in graph.initializer}
    infos = {vi.name: vi for vi in list(graph.value_info) + list(graph.output)}
    axis: dict[str, int] = {i.name: 0 for i in graph.input if i.name not in inits}
    for node in graph.node:
        hw = node.domain in FINN_HW_DOMAINS + (FINN_ABSTRACT_DOMAIN, LOOP_DOMAIN)
        src = next((t for t in node.input if t in axis), None)
        for out in node.output:
            vi = infos.get(out)
            if vi is None or not vi.type.tensor_type.HasField("shape"):
                continue
            rank = len(vi.type.tensor_type.shape.dim)
            if hw:
                if rank not in PIXEL_AXIS:
                    return False
                axis[out] = PIXEL_AXIS[rank]
            else:
                if src is None:
                    continue  # computed from constants only
                in_rank = len(graph_model.get_tensor_shape(src) or [])
                a = _edge_axis(node, axis[src], in_rank, graph_model)
                if a is None:
                    return False
                axis[out] = a
            _set_dim(vi, axis[out], n)
    return True


def rebatch_graph(model: ModelWrapper, n: int, input_axis: dict[str, int] | None = None) -> ModelWrapper:
    """Set the pixel batch of `model` (modified in place, returned) to n."""
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
    if _reshape_tensors(model, n):
        return model
    # fall back: software tensors re-inferred by ONNX; hardware ones keep their layout
    # rule (FINN's shape functions check their inputs against it)
    hw_out = {o for node in graph.node if node.domain in FINN_HW_DOMAINS + (FINN_ABSTRACT_DOMAIN, LOOP_DOMAIN)
              for o in node.output}
    for vi in list(graph.value_info) + list(graph.output):
        shape = vi.type.tensor_type.shape
        if vi.name in inits:
            continue
        if vi.name in hw_out and len(shape.dim) in PIXEL_AXIS:
            _set_dim(vi, PIXEL_AXIS[len(shape.dim)], n)
        else:
            vi.type.tensor_type.ClearField("shape")
    return model.transform(InferShapes(), cleanup=False)


def rebatch(model: ModelWrapper, n: int) -> ModelWrapper:
    """A copy of `model` whose graph (and loop bodies) process a batch of n pixels. Used to
    execute a compiled P-pixel graph on any number of pixels at once, and by
    ``batch-pixels`` to set P; the hardware attributes (PE, SIMD, P, ...) are unchanged."""
    return rebatch_graph(ModelWrapper(copy.deepcopy(model.model)), n)

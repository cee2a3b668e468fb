"""lower-finn: the integer graph becomes FINN hardware ops plus flimcc's RecurrentLoop.

Input: the output of ``streamline`` (integer tensors between a float head and tail, time
loops as ``Scan``). Output: the graph FINN's builder continues from after its
``step_specialize_layers``: float head and tail as plain ONNX at the graph's edges (one
dataflow partition in between), and in between only specialised FINN nodes
(``MVAU_rtl/_hls``, ``Thresholding_rtl``, ``Elementwise*_hls``, ``DuplicateStreams_hls``)
and ``flimcc.hw.RecurrentLoop`` nodes whose bodies hold the same.

The conversions are FINN's own transformations (``InferQuantizedMatrixVectorActivation``,
``InferElementwiseBinaryOperation``, ``InferThresholdingLayer``,
``InferDuplicateStreamsLayer``, ``MinimizeAccumulatorWidth``, ``SpecializeLayers``), run
on the top graph and on each loop body. flimcc adds what they lack:

* the time loop: each ``Scan`` becomes a RecurrentLoop; a zero initial state (the GRU
  default, written by ``unroll-gru`` as ``Where(false, .., 0)``) becomes the loop's
  ``zero_init`` flag instead of an input, and a constant per-step input whose steps are all equal (the decoder's
  folded zero-input projection) moves into the body as a constant operand;
* layouts FINN executes: sequences ``(T, B, C)`` become 4-D ``(1, T, B, C)`` streams and
  states/bodies stay 2-D (see :mod:`flimcc.layout`);
* the hardware region is made contiguous: chains of shape ops that add and drop unit axes
  are bypassed, and a transpose feeding per-vector work (matrix products and elementwise
  ops with per-channel constants) moves past it to the tail, where it stays in software.

Anything left in the middle that is not hardware (a float op, an unknown op) stops the
pass with an error naming the node, because FINN's builder takes exactly one dataflow
partition. Contract: exact (integer arithmetic is unchanged; checked bit for bit).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import onnx
from onnx import helper
import qonnx.core.data_layout as DataLayout
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes

from flimcc.analysis import check_integer_graph
from flimcc.errors import FlimccError, UnsupportedError
from flimcc.hw import DOMAIN as LOOP_DOMAIN
from flimcc.layout import FINN_ABSTRACT_DOMAIN, FINN_HW_DOMAINS, body_model, give_unique_names
from flimcc.passbase import Contract, Option, Pass, register

#: Requantizations to this many output bits or more become FINN Requant (multiply-add)
#: instead of Thresholding (2^bits - 1 comparisons) when exactly equal (thresholds_to_requant).
REQUANT_MIN_BITS = 10

#: Shape ops that only add or drop unit axes: a chain of them between equal shapes is a no-op.
_UNIT_AXIS_OPS = {"Unsqueeze", "Squeeze", "Identity", "Gather", "Reshape"}
#: Per-vector ops a transpose that keeps the last axis commutes with.
_PER_VECTOR_OPS = {"MatMul", "Mul", "Add", "Sub"}


def finn_settings() -> None:
    """Some FINN code reads its settings at import or run time; set harmless defaults."""
    from finn.util.settings import initialize_dummy_settings

    initialize_dummy_settings()


@contextlib.contextmanager
def quiet_finn():
    """FINN logs every datatype it narrows and every layout it guesses as warnings; flimcc
    reports what matters itself, so FINN's logger speaks only on errors meanwhile."""
    logger = logging.getLogger("finn_logger")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# -- graph preparation (still standard ONNX + qonnx ops) -------------------------------------
def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if name in n.input]


def _producer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    for n in graph.node:
        if name in n.output:
            return n
    return None


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def _is_unit_axis_op(model: ModelWrapper, node: onnx.NodeProto) -> bool:
    if node.op_type not in _UNIT_AXIS_OPS or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Gather":
        index = model.get_initializer(node.input[1])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        shape = model.get_tensor_shape(node.input[0])
        return index is not None and index.size == 1 and shape is not None and shape[axis] == 1
    return True


def bypass_unit_axis_chains(model: ModelWrapper) -> int:
    """Chains of ops that only add or drop unit axes and end in the shape they started with
    are identities (element order is unchanged): their consumers read the chain's input."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    bypassed = 0
    for node in list(graph.node):
        if not _is_unit_axis_op(model, node) or node.output[0] in outputs:
            continue
        end = node.output[0]
        src = node.input[0]
        while True:
            shape = model.get_tensor_shape(src)
            if shape and shape == model.get_tensor_shape(end) and src != end:
                _rename_input(graph, end, src)
                bypassed += 1
                break
            prev = _producer(graph, src)
            if prev is None or not _is_unit_axis_op(model, prev) or len(_consumers(graph, src)) != 1:
                break
            src = prev.input[0]
    return bypassed


def slices_of_concats(model: ModelWrapper) -> int:
    """A Slice that cuts exactly one input back out of a Concat along the same axis reads
    that input directly (exporters stack the layers' final states, then unstack them for
    the decoder layers)."""
    graph = model.graph
    replaced = 0
    for node in list(graph.node):
        if node.op_type != "Slice" or len(node.input) < 4:
            continue
        prod = _producer(graph, node.input[0])
        if prod is None or prod.op_type != "Concat":
            continue
        consts = [model.get_initializer(n) for n in node.input[1:4]]
        steps = model.get_initializer(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if any(c is None or c.size != 1 for c in consts) or (steps is not None and int(steps.ravel()[0]) != 1):
            continue
        start, end, axis = (int(c.ravel()[0]) for c in consts)
        rank = len(model.get_tensor_shape(prod.output[0]) or [])
        axis = axis % rank if rank else axis
        if axis != _attr(prod, "axis", 0) % max(rank, 1):
            continue
        offset = 0
        for src in prod.input:
            size = (model.get_tensor_shape(src) or [None] * rank)[axis]
            if size is None:
                break
            if (start, min(end, offset + size)) == (offset, offset + size):
                _rename_input(graph, node.output[0], src)
                replaced += 1
                break
            offset += size
    return replaced


def _per_channel_const(model: ModelWrapper, node: onnx.NodeProto, stream: str) -> bool:
    """`node` applies the same operation to every vector of `stream` (MatMul with constant
    weights, or an elementwise op whose constant varies at most along the last axis)."""
    if node.op_type not in _PER_VECTOR_OPS:
        return False
    others = [i for i in node.input if i != stream]
    if len(others) != 1 or node.input[0] != stream:
        return False
    const = model.get_initializer(others[0])
    if const is None:
        return False
    if node.op_type == "MatMul":
        return const.ndim == 2
    return all(d == 1 for d in const.shape[:-1])


def split_products(model: ModelWrapper) -> int:
    """A Split along the last axis of a per-channel computation, Add(MatMul(x, W), b),
    becomes one product per part with W's columns and b's entries for that part: the same
    sums, and no stream split in hardware (exporters project all gates at once, then split)."""
    graph = model.graph
    done = 0
    for node in list(graph.node):
        if node.op_type != "Split":
            continue
        rank = len(model.get_tensor_shape(node.input[0]) or [])
        axis = _attr(node, "axis", 0)
        if not rank or axis % rank != rank - 1:
            continue
        add = _producer(graph, node.input[0])
        if add is None or add.op_type != "Add" or len(_consumers(graph, add.output[0])) != 1:
            continue
        mm_out, bias_name = (add.input[0], add.input[1]) if model.get_initializer(add.input[1]) is not None \
            else (add.input[1], add.input[0])
        bias = model.get_initializer(bias_name)
        mm = _producer(graph, mm_out)
        if bias is None or mm is None or mm.op_type != "MatMul" or len(_consumers(graph, mm_out)) != 1:
            continue
        weight = model.get_initializer(mm.input[1])
        if weight is None or weight.ndim != 2 or bias.shape[-1] != weight.shape[1]:
            continue
        sizes = [model.get_tensor_shape(o)[-1] for o in node.output]
        at = list(graph.node).index(mm)
        start = 0
        new_nodes = []
        for k, (out, size) in enumerate(zip(node.output, sizes)):
            w_k, b_k, p_k = f"{mm.input[1]}/part{k}", f"{bias_name}/part{k}", f"{mm_out}/part{k}"
            model.set_initializer(w_k, np.ascontiguousarray(weight[:, start:start + size]))
            model.set_initializer(b_k, np.ascontiguousarray(bias[..., start:start + size]))
            for t in (w_k, b_k):
                model.set_tensor_datatype(t, model.get_tensor_datatype(mm.input[1] if t == w_k else bias_name))
            model.set_tensor_datatype(p_k, model.get_tensor_datatype(mm_out))
            new_nodes += [helper.make_node("MatMul", [mm.input[0], w_k], [p_k], name=f"{mm.name}/part{k}"),
                          helper.make_node("Add", [p_k, b_k], [out], name=f"{add.name}/part{k}")]
            start += size
        for old in (node, add, mm):
            del graph.node[list(graph.node).index(old)]
        for k, n in enumerate(new_nodes):
            graph.node.insert(at + k, n)
        done += 1
    return done


def hoist_transposes(model: ModelWrapper) -> int:
    """Move a Transpose that keeps the last axis up past per-vector work (matrix products
    and elementwise ops with per-channel constants) towards the graph input, where it stays
    software (an exporter's batch-major projection reordered to time-major for the loop)."""
    graph = model.graph
    moved = 0
    # only towards the input: what a loop computes goes to the tail (sink_transposes)
    after_loops: set[str] = set()
    for n in graph.node:
        if n.op_type == "Scan" or n.domain == LOOP_DOMAIN or any(i in after_loops for i in n.input):
            after_loops.update(n.output)
    changed = True
    while changed:
        changed = False
        for node in list(graph.node):
            if node.op_type != "Transpose" or node.input[0] in after_loops:
                continue
            perm = list(_attr(node, "perm"))
            if perm[-1] != len(perm) - 1:
                continue
            prod = _producer(graph, node.input[0])
            if prod is None or len(_consumers(graph, node.input[0])) != 1 \
                    or not _per_channel_const(model, prod, prod.input[0]):
                continue
            # a -> U -> u -> T -> t    becomes    a -> T -> a' -> U -> t
            a, u, t = prod.input[0], prod.output[0], node.output[0]
            a_t = f"{a}/transposed{moved}"
            node.input[0], node.output[0] = a, a_t
            prod.input[0], prod.output[0] = a_t, t
            idx_prod = list(graph.node).index(prod)
            del graph.node[list(graph.node).index(node)]
            graph.node.insert(idx_prod, node)
            model.set_tensor_datatype(a_t, model.get_tensor_datatype(a))
            for vi in list(graph.value_info):
                if vi.name == u:
                    graph.value_info.remove(vi)
            moved += 1
            changed = True
    _merge_equal_transposes(graph)
    return moved


def _merge_equal_transposes(graph: onnx.GraphProto) -> None:
    """Transposes of one tensor by one permutation compute the same: keep the first."""
    seen: dict[tuple, str] = {}
    for node in list(graph.node):
        if node.op_type != "Transpose":
            continue
        key = (node.input[0], tuple(_attr(node, "perm")))
        if key in seen:
            _rename_input(graph, node.output[0], seen[key])
        else:
            seen[key] = node.output[0]


def sink_transposes(model: ModelWrapper) -> int:
    """Move a Transpose that keeps the last axis past per-vector work to the graph's tail:
    the hardware streams in the loop's time-major order and software reorders at the end."""
    graph = model.graph
    moved = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.node):
            if node.op_type != "Transpose":
                continue
            perm = list(next(a.ints for a in node.attribute if a.name == "perm"))
            if perm[-1] != len(perm) - 1:
                continue
            users = _consumers(graph, node.output[0])
            if len(users) != 1 or node.output[0] in {o.name for o in graph.output}:
                continue
            user = users[0]
            if not _per_channel_const(model, user, node.output[0]):
                continue
            # a -> T -> t ; (t, c) -> U -> u    becomes    (a, c) -> U -> u' ; u' -> T -> u
            a, t, u = node.input[0], node.output[0], user.output[0]
            u_tm = f"{u}/time_major"
            inverse = list(np.argsort(perm))
            u_shape = model.get_tensor_shape(u)
            user.input[list(user.input).index(t)] = a
            user.output[0] = u_tm
            node.input[0], node.output[0] = u_tm, u
            graph.node.remove(node)
            graph.node.insert(list(graph.node).index(user) + 1, node)
            model.set_tensor_datatype(u_tm, model.get_tensor_datatype(u))
            if u_shape:
                model.set_tensor_shape(u_tm, [u_shape[i] for i in inverse])
            moved += 1
            changed = True
    return moved


def remove_dead_nodes(graph: onnx.GraphProto) -> int:
    """Drop nodes none of whose outputs is read (by a node, a subgraph or the graph)."""
    removed = 0
    while True:
        read = {o.name for o in graph.output}
        for n in graph.node:
            read.update(n.input)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    read.update(i for sub in a.g.node for i in sub.input)
        dead = [n for n in graph.node if not any(o in read for o in n.output if o)]
        if not dead:
            return removed
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)


def _zero_init(model: ModelWrapper, name: str) -> bool:
    """`name` is a constant zero state: `Where(false, .., 0)` or an all-zero initializer."""
    init = model.get_initializer(name)
    if init is not None:
        return not np.any(init)
    prod = model.find_producer(name)
    if prod is None or prod.op_type != "Where":
        return False
    cond, zero = model.get_initializer(prod.input[0]), model.get_initializer(prod.input[2])
    return cond is not None and zero is not None and not np.any(cond) and not np.any(zero)


# -- Scan -> RecurrentLoop --------------------------------------------------------------------
def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _check_scan(node: onnx.NodeProto) -> None:
    n_scan_in = _attr(node, "num_scan_inputs")
    for key in ("scan_input_directions", "scan_output_directions"):
        if any(_attr(node, key, [])):
            raise UnsupportedError(f"node '{node.name}': reverse scans are not lowered yet (attribute {key})")
    for key in ("scan_input_axes", "scan_output_axes"):
        if any(_attr(node, key, [])):
            raise UnsupportedError(f"node '{node.name}': scans along an axis other than 0 are not lowered (attribute {key})")
    if n_scan_in is None:
        raise UnsupportedError(f"node '{node.name}': Scan without num_scan_inputs")


def _lower_body(body: ModelWrapper, fpgapart: str, loop_name: str) -> ModelWrapper:
    """FINN's conversions on one time step (2-D tensors)."""
    for node in body.graph.node:
        if node.op_type == "MultiThreshold":
            getCustomOp(node).set_nodeattr("data_layout", "NC")
    for vi in body.graph.input:
        if len(vi.type.tensor_type.shape.dim) != 2:
            raise UnsupportedError(
                f"loop '{loop_name}': body tensor '{vi.name}' is not 2-D (pixels, channels); "
                "only per-pixel vector states are lowered")
    del body.graph.value_info[:]
    for vi in body.graph.output:
        vi.type.tensor_type.ClearField("shape")
    body = body.transform(InferShapes())
    # a per-step input that became a constant may leave all-constant work behind
    from qonnx.transformation.fold_constants import FoldConstants

    body = body.transform(FoldConstants(), cleanup=False)
    for node in body.graph.node:
        if node.op_type == "MultiThreshold":  # FINN checks the MT's layout against its tensors'
            body.set_tensor_layout(node.input[0], DataLayout.NC)
            body.set_tensor_layout(node.output[0], DataLayout.NC)
    body = _convert(body, fpgapart, where=f"loop '{loop_name}' body", requant=True)
    # y_t = Identity(h_new): after duplication the Identity's input is its own stream.
    outputs = {o.name for o in body.graph.output}
    for node in list(body.graph.node):
        if node.op_type == "Identity" and node.output[0] in outputs and len(_consumers(body.graph, node.input[0])) == 1 \
                and node.input[0] not in outputs:
            prod = _producer(body.graph, node.input[0])
            prod.output[list(prod.output).index(node.input[0])] = node.output[0]
            body.graph.node.remove(node)
    use_flimcc_rtl(body)
    # The loop's RTL is built from its body's hardware nodes only: anything else that
    # survived FINN's conversions is named here, not found by a later pass.
    for node in body.graph.node:
        if node.domain not in FINN_HW_DOMAINS:
            raise UnsupportedError(
                f"loop '{loop_name}': body node '{node.name}' ({node.op_type}) has no FINN hardware equivalent; "
                "flimcc lowers integer MatMul, Add, Sub, Mul, Split, MultiThreshold (and a Clip or constant Add "
                "in front of one) inside loops")
    return body


#: FINN HLS ops in loop bodies that flimcc has an RTL equivalent of (same semantics and
#: attributes; FINN's own RTL versions serve other types or devices): HLS -> flimcc RTL.
FLIMCC_RTL_OF = {"ElementwiseAdd_hls": "IntElementwiseAdd_rtl", "ElementwiseSub_hls": "IntElementwiseSub_rtl",
                 "ElementwiseMul_hls": "IntElementwiseMul_rtl", "Requant_hls": "IntRequant_rtl"}


def use_flimcc_rtl(body: ModelWrapper) -> int:
    """Retype a loop body's integer HLS elementwise and (dyadic) Requant nodes to flimcc's
    RTL ones (in place),
    so the body can be simulated and stitched as RTL; returns how many. Why only in loop
    bodies: the loop's hardware is generated and simulated by flimcc; the top graph's nodes
    go through FINN's own flow unchanged."""
    import flimcc.hw  # noqa: F401 - registers flimcc's RTL ops in FINN's RTL domain

    from flimcc.hw.requant_int_rtl import dyadic

    count = 0
    for node in body.graph.node:
        target = FLIMCC_RTL_OF.get(node.op_type)
        if target is None:
            continue
        inst = getCustomOp(node)
        if node.op_type == "Requant_hls":
            if not dyadic(inst.get_scale(body), inst.get_bias(body)):
                continue
        elif not (inst.get_input_datatype(0).is_integer() and inst.get_input_datatype(1).is_integer()):
            continue
        node.op_type = target
        node.domain = "finn.custom_op.fpgadataflow.rtl"
        count += 1
    return count


def _requant_of(thresholds: np.ndarray, qmin: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, bias) per channel such that FINN's Requant, clip(floor(x * scale + bias +
    0.5)) in float32, equals the MultiThreshold qmin + #{k : x >= T[c, k]} for every
    integer x the accumulator can take; None if no uniform grid reproduces it.

    Checked exhaustively over [lo, hi] narrowed to the thresholds' own span: streamline
    builds them over the accumulator's proven range, marking levels reached by every value
    with the range's lowest value and levels never reached with its highest plus one, so
    values beyond that span cannot occur (the tensor's datatype is rounded up to whole
    bits and is wider)."""
    scales, biases = [], []
    for row in np.atleast_2d(thresholds):
        row = np.sort(row)
        diffs = np.diff(row)
        positive = diffs[diffs > 0]
        if positive.size == 0:
            return None
        values, counts = np.unique(positive, return_counts=True)
        step = float(values[np.argmax(counts)])
        # A sentinel end (lowest value: always counted; highest plus one: never) bounds the
        # accumulator; a grid end is a real threshold, beyond which both functions saturate
        # (each is monotone and clipped), so one value past it completes the check.
        first = row[0] - 1 if diffs[0] == step else row[0]
        last = row[-1] if diffs[-1] == step else row[-1] - 1
        x = np.arange(max(lo, int(first)), min(hi, int(last)) + 1, dtype=np.float64)
        bases, bcounts = np.unique(row - step * np.arange(row.size), return_counts=True)
        base = float(bases[np.argmax(bcounts)])
        scale = np.float32(1.0 / step)
        bias = np.float32(qmin + 0.5 - base / step)
        expect = qmin + np.searchsorted(np.sort(row), x, side="right")
        got = np.floor(x.astype(np.float32) * scale + bias + np.float32(0.5))
        got = np.clip(got, qmin, qmin + row.size)
        if not np.array_equal(got, expect):
            return None
        scales.append(scale)
        biases.append(bias)
    return np.asarray(scales, np.float32), np.asarray(biases, np.float32)


def thresholds_to_requant(model: ModelWrapper, min_bits: int = REQUANT_MIN_BITS, max_points: int = 1 << 25) -> int:
    """Wide MultiThresholds whose thresholds lie on a uniform grid (a power-of-two
    requantization rounding half up) become FINN ``Requant`` nodes: one multiply-add per
    element instead of 2^bits - 1 comparisons and their memory. FINN's own
    ``InferRequantLayer`` tests uniformity to 1% and also converts every Quant; this one
    converts only what it proves equal on every input value."""
    converted = 0
    for node in list(model.graph.node):
        if node.op_type != "MultiThreshold":
            continue
        odt = model.get_tensor_datatype(node.output[0])
        idt = model.get_tensor_datatype(node.input[0])
        thr = model.get_initializer(node.input[1])
        inst = getCustomOp(node)
        if odt.bitwidth() < min_bits or thr is None or not idt.is_integer() or inst.get_nodeattr("out_scale") != 1.0:
            continue
        qmin = int(inst.get_nodeattr("out_bias"))
        if qmin != int(odt.min()) or qmin + thr.shape[-1] != int(odt.max()):
            continue
        if (int(idt.max()) - int(idt.min()) + 1) * thr.shape[0] > max_points:
            continue
        found = _requant_of(thr, qmin, int(idt.min()), int(idt.max()))
        if found is None:
            continue
        scale, bias = found
        shape = model.get_tensor_shape(node.input[0])
        s_name, b_name = f"{node.name}/requant_scale", f"{node.name}/requant_bias"
        model.set_initializer(s_name, scale)
        model.set_initializer(b_name, bias)
        req = helper.make_node(
            "Requant", [node.input[0], s_name, b_name], [node.output[0]], name=f"Requant_{node.name}",
            domain=FINN_ABSTRACT_DOMAIN, backend="fpgadataflow", NumChannels=int(shape[-1]), PE=1,
            inputDataType=idt.name, outputDataType=odt.name, numInputVectors=[int(d) for d in shape[:-1]], narrow=0,
            # FINN's RTL Requant handles unsigned outputs only
            preferred_impl_style="hls" if odt.signed() else "")
        idx = list(model.graph.node).index(node)
        del model.graph.node[idx]
        model.graph.node.insert(idx, req)
        converted += 1
    return converted


def absorb_into_thresholds(model: ModelWrapper) -> int:
    """Clip(x, lo, hi) -> MultiThreshold, and Add(x, const) -> MultiThreshold, become one
    MultiThreshold on x with rewritten thresholds (flimcc.thresholds.absorb_clip/absorb_add).

    Why: a hard sigmoid streamlines to Add(bias) -> Clip(0, 1) -> MultiThreshold, and FINN
    has no Clip hardware op; comparing the unclipped (unshifted) integer against adjusted
    thresholds gives the same count for every integer input, so the result is bit-exact.
    Only a Clip/Add whose one consumer is the MultiThreshold, with constant bounds/addend
    (scalar, or one per channel), is absorbed; an Add right after a MatMul is kept (see
    below). Returns the number of nodes absorbed."""
    from flimcc.thresholds import absorb_add, absorb_clip

    graph = model.graph
    absorbed = 0
    changed = True
    while changed:
        changed = False
        for mt in list(graph.node):
            if mt.op_type != "MultiThreshold":
                continue
            prod = _producer(graph, mt.input[0])
            if prod is None or len(_consumers(graph, prod.output[0])) != 1 or prod.output[0] in \
                    {o.name for o in graph.output}:
                continue
            t = model.get_initializer(mt.input[1])
            if t is None:
                continue
            if prod.op_type == "Clip":
                bounds = [model.get_initializer(i) if i else None for i in list(prod.input[1:3])]
                if any(i and b is None for i, b in zip(prod.input[1:3], bounds)):
                    continue  # dynamic bound
                dt = model.get_tensor_datatype(prod.input[0])
                if not dt.is_integer():
                    continue
                lo = float(bounds[0]) if len(bounds) > 0 and bounds[0] is not None else -np.inf
                hi = float(bounds[1]) if len(bounds) > 1 and bounds[1] is not None else np.inf
                new = absorb_clip(t, lo, hi, dt.min(), dt.max())
            elif prod.op_type == "Add":
                const = [model.get_initializer(i) for i in prod.input]
                k = next((j for j, c in enumerate(const) if c is not None), None)
                if k is None or const[1 - k] is not None:
                    continue
                b = np.asarray(const[k])
                channels = model.get_tensor_shape(mt.input[0])[-1]
                if b.size not in (1, channels) or (b.ndim and b.shape[-1] != b.size) or \
                        not np.array_equal(b, np.round(b)) or \
                        not model.get_tensor_datatype(prod.input[1 - k]).is_integer():
                    continue
                prod_in = prod.input[1 - k]
                src = _producer(graph, prod_in)
                if src is not None and src.op_type == "MatMul":
                    # FINN would fuse MatMul -> MultiThreshold into one MVAU with thresholds,
                    # which only its HLS variant implements: keep the MVAU_rtl + add.
                    continue
                new = absorb_add(t, b)
            else:
                continue
            name = f"{mt.input[1]}/absorbed_{prod.op_type.lower()}"
            model.set_initializer(name, new.astype(np.float32))
            mt.input[1] = name
            mt.input[0] = prod.input[0] if prod.op_type == "Clip" else prod_in
            graph.node.remove(prod)
            absorbed += 1
            changed = True
    return absorbed


def _integer_node(model: ModelWrapper, node: onnx.NodeProto) -> bool:
    names = [n for n in list(node.input) + list(node.output) if n]
    return all(model.get_tensor_datatype(n).is_integer() for n in names)


def _explicit_split_sizes(model: ModelWrapper) -> None:
    """FINN's InferSplitLayer reads the split sizes from the second input; an equal split
    may leave it out (and carry num_outputs): write the sizes the outputs have."""
    for node in model.graph.node:
        if node.op_type != "Split" or (len(node.input) > 1 and node.input[1]):
            continue
        sizes = [model.get_tensor_shape(o)[-1] for o in node.output]
        name = f"{node.name}/sizes"
        model.set_initializer(name, np.asarray(sizes, dtype=np.int64))
        if len(node.input) > 1:
            node.input[1] = name
        else:
            node.input.append(name)
        keep = [a for a in node.attribute if a.name != "num_outputs"]
        del node.attribute[:]
        node.attribute.extend(keep)


def _convert(model: ModelWrapper, fpgapart: str, where: str, requant: bool = False) -> ModelWrapper:
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import InferDuplicateStreamsLayer
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.split import InferSplitLayer
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    with quiet_finn():
        if requant:  # first: FINN's conversions widen datatypes until MinimizeAccumulatorWidth
            thresholds_to_requant(model)
        # after the Requant conversion: a wide requantization stays a Requant (a few LUTs)
        # rather than absorbing the add before it into 65,535 thresholds per channel
        absorb_into_thresholds(model)
        model = model.transform(InferQuantizedMatrixVectorActivation())
        # only integer arithmetic becomes hardware: the float head and tail stay software
        model = model.transform(InferElementwiseBinaryOperation(lambda m, n: _integer_node(m, n)))
        # wide requantizations (uniform thresholds, e.g. the reset-after accumulators at
        # acc-bits=16) as FINN's multiply-add Requant: 65,535 thresholds would not fit;
        # narrow ones stay thresholds, which FINN implements more cheaply
        model = model.transform(InferThresholdingLayer())
        _explicit_split_sizes(model)
        model = model.transform(InferSplitLayer())  # a fused gate product split into gates
        model = model.transform(InferDuplicateStreamsLayer())
        model = model.transform(MinimizeAccumulatorWidth())
        single_fold_matrices_to_hls(model)
        rtl_weight_types(model, fpgapart)
        model = model.transform(SpecializeLayers(fpgapart))
    return model


def rtl_weight_types(model: ModelWrapper, fpgapart: str) -> list[str]:
    """Widen the weight type of each MVAU whose weights FINN's RTL matrix unit would refuse
    as typed, so that it stays RTL: `streamline` types weights by their actual range (codes
    -4..3 of a 4-bit QAT model's recurrent matrix become INT3), while SpecializeLayers wants
    weights of at least 4 bits and, on a DSP48E1 (7-series), narrow-range ones (never the
    type's minimum). Refused, the matrix falls back to the HLS unit, which has no RTL here,
    and the loop holding it could not be simulated or checked. The codes are unchanged;
    the cost is a bit or two per weight in the weight memory. Returns the nodes widened."""
    from finn.util.basic import get_dsp_block

    narrow_only = get_dsp_block(fpgapart) == "DSP48E1"
    widened = []
    for node in model.graph.node:
        if node.op_type != "MVAU":
            continue
        inst = getCustomOp(node)
        wdt, weights = inst.get_input_datatype(1), model.get_initializer(node.input[1])
        if (inst.get_nodeattr("preferred_impl_style") == "hls" or weights is None
                or not wdt.name.startswith("INT") or inst.get_nodeattr("noActivation") == 0
                or inst.get_nodeattr("binaryXnorMode") == 1):
            continue  # HLS whatever the weights (the RTL unit has no thresholds, no XNOR)
        bits = max(4, wdt.bitwidth() + int(narrow_only and weights.min() == wdt.min()))
        if bits != wdt.bitwidth():
            inst.set_nodeattr("weightDataType", f"INT{bits}")
            model.set_tensor_datatype(node.input[1], DataType[f"INT{bits}"])
            widened.append(node.name)
    return widened


def single_fold_matrices_to_hls(model: ModelWrapper) -> int:
    """An MVAU whose input vector is one element (MW = 1: the projections of a one-channel
    decay) takes FINN's HLS variant. FINN's RTL matrix unit overflows its output queue
    under output backpressure when a vector is one beat (SIMD = MW; the assertion in
    finn-rtllib's mvu_vvu_axi.sv fires in Verilator simulation at 50% stalls, data would be
    lost), and a projection ahead of a recurrent loop is backpressured by the loop all the
    time. Loop-body MVAUs (MW >= 2) stay RTL: `fold` never gives them SIMD = MW. Returns
    how many were switched."""
    n = 0
    for node in model.graph.node:
        if node.op_type == "MVAU" and getCustomOp(node).get_nodeattr("MW") == 1:
            getCustomOp(node).set_nodeattr("preferred_impl_style", "hls")
            n += 1
    return n


def scan_to_loop(model: ModelWrapper, node: onnx.NodeProto, fpgapart: str) -> list[onnx.NodeProto]:
    """The nodes that replace one Scan: its RecurrentLoop (body lowered) between the
    Unsqueeze/Squeeze that turn its sequences into 4-D streams."""
    graph = model.graph
    _check_scan(node)
    body_graph = next(a.g for a in node.attribute if a.name == "body")
    n_scan_in = _attr(node, "num_scan_inputs")
    n_state = len(node.input) - n_scan_in
    body = body_model(body_graph, opset=model.model.opset_import[0].version)  # keeps the body's annotations
    b_inputs = [vi.name for vi in body.graph.input]
    loop_inputs, zero_init = [], []
    for i, name in enumerate(node.input):
        if i < n_state:
            zero_init.append(int(_zero_init(model, name)))
            if not zero_init[-1]:
                loop_inputs.append(name)
            continue
        const = model.get_initializer(name)
        if const is not None and np.all(const == const[:1, :1]):
            # the same vector every step and pixel: a constant operand inside the body
            vec = np.ascontiguousarray(const[0, :1]).astype(np.float32)
            x_t = b_inputs[i]
            body.set_initializer(x_t, vec)
            body.set_tensor_datatype(x_t, model.get_tensor_datatype(name))
            _remove_by_name(body.graph.input, x_t)
            continue
        loop_inputs.append(name)
    T = None
    for name in node.input[n_state:]:
        shape = model.get_tensor_shape(name)
        if shape:
            T = shape[0]
    if T is None:
        raise UnsupportedError(f"node '{node.name}': cannot tell the number of steps")
    outputs = {o.name for o in graph.output}
    loop_outputs = []
    for k, o in enumerate(node.output):
        if o in outputs or _consumers(graph, o) or k < n_state:
            loop_outputs.append(o)  # a final state is built even when unused: it goes round the loop
        else:  # an unused per-step output is not built at all
            _remove_by_name(body.graph.output, body_graph.output[k].name)
    remove_dead_nodes(body.graph)
    body = _lower_body(body, fpgapart, node.name)
    # sequences enter and leave as 4-D streams (1, T, B, C); the rest of the graph still
    # sees (T, B, C) until lift_sequences, which cancels these pairs
    before, after = [], []
    n_state_in = n_state - sum(zero_init)
    for k in range(n_state_in, len(loop_inputs)):
        name = loop_inputs[k]
        loop_inputs[k] = _unsqueeze(model, name, before)
    for k in range(n_state, len(loop_outputs)):
        name = loop_outputs[k]
        loop_outputs[k] = f"{name}/stream"
        axes = f"{name}/stream/axes"
        model.set_initializer(axes, np.array([0], np.int64))
        after.append(helper.make_node("Squeeze", [loop_outputs[k], axes], [name], name=f"{name}/from_stream"))
    loop = helper.make_node(
        "RecurrentLoop", loop_inputs, loop_outputs, name=node.name, domain=LOOP_DOMAIN,
        backend="fpgadataflow", iterations=int(T), num_state=n_state, zero_init=zero_init, pixels=1,
        body=body.model.graph)
    return before + [loop] + after


def _remove_by_name(values, name: str) -> None:
    """Remove a ValueInfo by name (protobuf element references go stale after edits)."""
    idx = next(i for i, v in enumerate(values) if v.name == name)
    del values[idx]


def _unsqueeze(model: ModelWrapper, name: str, nodes: list) -> str:
    out, axes = f"{name}/stream", f"{name}/stream/axes"
    model.set_initializer(axes, np.array([0], np.int64))
    nodes.append(helper.make_node("Unsqueeze", [name, axes], [out], name=f"{name}/to_stream"))
    return out


# -- 3-D sequences -> 4-D streams ---------------------------------------------------------------
def _hw_candidate(model: ModelWrapper, node: onnx.NodeProto) -> bool:
    if node.domain == LOOP_DOMAIN:
        return True
    if node.op_type in ("MatMul", "Add", "Sub", "Mul", "MultiThreshold"):
        return _integer_node(model, node)
    return False


def lift_sequences(model: ModelWrapper) -> int:
    """(T, B, C) tensors of the hardware region become (1, T, B, C): Unsqueeze where one
    enters from software, Squeeze where one leaves."""
    graph = model.graph
    hw = [n for n in graph.node if _hw_candidate(model, n)]
    hw_ids = {n.name for n in hw}
    lifted = 0
    tensors = []
    for n in hw:
        for t in list(n.input) + list(n.output):
            if t and model.get_initializer(t) is None and t not in tensors:
                shape = model.get_tensor_shape(t)
                if shape is not None and len(shape) == 3:
                    tensors.append(t)
    graph_outputs = {o.name for o in graph.output}
    for t in tensors:
        prod = _producer(graph, t)
        users = _consumers(graph, t)
        shape = model.get_tensor_shape(t)
        if prod is None or prod.name not in hw_ids:
            # enters the hardware region: t4 = Unsqueeze(t) for hardware users
            t4 = f"{t}/to_hw"
            axes = f"{t}/to_hw/axes"
            model.set_initializer(axes, np.array([0], np.int64))
            idx = list(graph.node).index(prod) + 1 if prod is not None else 0
            graph.node.insert(idx, helper.make_node("Unsqueeze", [t, axes], [t4], name=f"{t}/to_stream"))
            for u in users:
                if u.name in hw_ids:
                    u.input[list(u.input).index(t)] = t4
            model.set_tensor_shape(t4, [1] + list(shape))
            model.set_tensor_datatype(t4, model.get_tensor_datatype(t))
        else:
            soft_users = [u for u in users if u.name not in hw_ids]
            if soft_users or t in graph_outputs:
                t3 = f"{t}/from_hw"
                axes = f"{t}/from_hw/axes"
                model.set_initializer(axes, np.array([0], np.int64))
                for u in soft_users:
                    u.input[list(u.input).index(t)] = t3
                graph.node.insert(list(graph.node).index(prod) + 1,
                                  helper.make_node("Squeeze", [t, axes], [t3], name=f"{t}/from_stream"))
                if t in graph_outputs:
                    raise UnsupportedError(f"tensor '{t}': a hardware sequence is a graph output")
                model.set_tensor_datatype(t3, model.get_tensor_datatype(t))
                model.set_tensor_shape(t3, list(shape))
            model.set_tensor_shape(t, [1] + list(shape))
        lifted += 1
    return lifted


def _check_integer_loops(model: ModelWrapper) -> None:
    """Every loop body integer, and at least one quantizer: a float graph passes the edge
    rule of check_integer_graph (all of it is computed from the float input)."""
    from flimcc.analysis import _body_violations  # noqa: PLC2701 - the same rule, one place

    problems = []
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                problems += _body_violations(attr.g, node.name)
    if problems:
        raise FlimccError("not an integer graph: " + "; ".join(problems[:3]) + " (run quantize and streamline first)")
    if not any(n.op_type in ("Quant", "MultiThreshold") for n in model.graph.node) and \
            not any(n.op_type == "Scan" for n in model.graph.node):
        raise FlimccError("not an integer graph: no quantizer and no loop (run quantize and streamline first)")


def _declare_domains(model: ModelWrapper) -> None:
    """Opset imports for the custom domains now in use (the ONNX checker needs them)."""
    have = {o.domain for o in model.model.opset_import}
    for domain in FINN_HW_DOMAINS + (LOOP_DOMAIN,):
        if domain not in have:
            model.model.opset_import.append(helper.make_opsetid(domain, 1))


def _reinfer(model: ModelWrapper) -> ModelWrapper:
    """Shapes from scratch (edits above leave stale or rank-0 value_info behind)."""
    del model.graph.value_info[:]
    for vi in model.graph.output:
        vi.type.tensor_type.ClearField("shape")
    return model.transform(InferShapes())


def _check_one_partition(model: ModelWrapper) -> None:
    """Software may only sit before or after the hardware (one dataflow partition)."""
    graph = model.graph
    hw = {n.name for n in graph.node if n.domain in FINN_HW_DOMAINS + (LOOP_DOMAIN,)}
    if not hw:
        raise UnsupportedError("nothing to lower: no integer matrix products, thresholds or loops")
    reach_from_hw: set[str] = set()
    for n in graph.node:  # graph is topologically sorted
        if n.name in hw or any(i in reach_from_hw for i in n.input):
            reach_from_hw.update(n.output)
            if n.name not in hw:
                feeds_hw = any(u.name in hw for o in n.output for u in _consumers(graph, o))
                downstream_hw = _reaches_hw(graph, n, hw)
                if feeds_hw or downstream_hw:
                    raise UnsupportedError(
                        f"node '{n.name}' ({n.op_type}) sits between hardware nodes and has no FINN "
                        "hardware equivalent; flimcc lowers integer MatMul, Add, Sub, Mul, MultiThreshold "
                        "and GRU loops (run streamline first)")
    for n in graph.node:
        if n.domain == FINN_ABSTRACT_DOMAIN:
            raise UnsupportedError(f"node '{n.name}' ({n.op_type}) was not specialised for the target")


def _reaches_hw(graph: onnx.GraphProto, node: onnx.NodeProto, hw: set[str]) -> bool:
    frontier = list(node.output)
    seen = set()
    while frontier:
        t = frontier.pop()
        if t in seen:
            continue
        seen.add(t)
        for u in _consumers(graph, t):
            if u.name in hw:
                return True
            frontier += list(u.output)
    return False


@register
class LowerFinn(Pass):
    """Integer ops -> FINN hardware ops (FINN's own conversions), Scan -> RecurrentLoop."""

    name = "lower-finn"
    summary = "integer graph -> FINN hardware ops (MVAU, Thresholding, Elementwise*, DuplicateStreams) + RecurrentLoop"
    contract = Contract.EXACT
    options = (Option("target", str, "pynq-z2", "board whose FPGA part FINN specialises for"),)

    def apply(self, model: ModelWrapper):
        from flimcc.targets import get_target

        finn_settings()
        target = get_target(self.target)
        if not target.fpga_part:
            raise FlimccError(f"pass 'lower-finn': target '{self.target}' is not an FPGA board")
        if any(n.domain in FINN_HW_DOMAINS + (LOOP_DOMAIN,) for n in model.graph.node):
            return model, False
        check_integer_graph(model)
        _check_integer_loops(model)
        graph = model.graph
        loops = 0
        while True:  # in graph order; shapes re-inferred so the next loop sees its inputs'
            node = next((n for n in model.graph.node if n.op_type == "Scan"), None)
            if node is None:
                break
            graph = model.graph
            at = list(graph.node).index(node)
            replacement = scan_to_loop(model, node, target.fpga_part)
            del graph.node[at]
            for k, new in enumerate(replacement):
                graph.node.insert(at + k, new)
            loops += 1
            remove_dead_nodes(graph)
            model = _reinfer(model)
        graph = model.graph
        remove_dead_nodes(graph)
        model = _reinfer(model)
        unstacked = slices_of_concats(model)
        remove_dead_nodes(model.graph)
        bypassed = bypass_unit_axis_chains(model)
        remove_dead_nodes(model.graph)
        moved = sink_transposes(model)
        split = split_products(model)
        moved += hoist_transposes(model)
        remove_dead_nodes(model.graph)
        model = _reinfer(model)
        lifted = lift_sequences(model)
        while True:  # a bypass can leave a dead branch that hid the next chain
            remove_dead_nodes(model.graph)
            n = bypass_unit_axis_chains(model)
            bypassed += n
            if not n:
                break
        model = _reinfer(model)
        model = model.transform(InferDataTypes())
        model = _convert(model, target.fpga_part, where="top graph")
        give_unique_names(model)
        _check_one_partition(model)
        _declare_domains(model)
        hw_count = sum(1 for n in model.graph.node if n.domain in FINN_HW_DOMAINS)
        body_count = sum(len(getCustomOp(n).get_nodeattr("body").node)
                         for n in model.graph.node if n.domain == LOOP_DOMAIN)
        self.metrics = {"recurrent_loops": loops, "finn_nodes": hw_count, "finn_nodes_in_loops": body_count,
                        "transposes_moved": moved, "unit_axis_chains_bypassed": bypassed, "concat_slices_bypassed": unstacked, "splits_into_products": split,
                        "sequences_lifted_to_4d": lifted, "fpga_part": target.fpga_part}
        return model, False

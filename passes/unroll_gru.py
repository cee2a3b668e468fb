"""`unroll-gru`: rewrite ONNX `GRU` nodes into the arithmetic of their gates.

FINN, hls4ml's ONNX front end and qonnx stop at a `GRU` node; after this pass every later
pass (quantization, folding, hardware lowering) sees matrix products, sigmoids, tanhs and
elementwise ops instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from flimcc.errors import UnsupportedError
from flimcc.ir import opset as model_opset
from flimcc.passbase import Contract, Option, Pass, register

#: Scan-9 (scan axes and directions), Where-9 and integer Less-9 are the oldest forms used.
MIN_OPSET = 9
KNOWN_ATTRIBUTES = (
    "activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "layout",
    "linear_before_reset",
)
DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}
DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh")  # f (update and reset gates), g (hidden gate)
GATES = ("z", "r", "h")  # the gate order of W, R and B in ONNX
ONNX_DOMAINS = ("", "ai.onnx")

#: Which of (alpha, beta) each activation of the ONNX RNN spec takes.
ACTIVATION_PARAMS: dict[str, tuple[bool, bool]] = {
    "relu": (False, False), "tanh": (False, False), "sigmoid": (False, False), "affine": (True, True),
    "leakyrelu": (True, False), "thresholdedrelu": (True, False), "scaledtanh": (True, True),
    "hardsigmoid": (True, True), "elu": (True, False), "softsign": (False, False), "softplus": (False, False),
}
#: Defaults that the ONNX operators and onnxruntime's GRU agree on. For the other
#: parameters the spec's default ("as the ONNX operator") and onnxruntime's (0.0) differ,
#: so the pass asks for an explicit value instead of guessing which one the model meant.
ACTIVATION_DEFAULTS: dict[str, tuple[float | None, float | None]] = {
    "leakyrelu": (0.01, None), "hardsigmoid": (0.2, 0.5), "elu": (1.0, None),
}
#: Activations that are one standard ONNX op with the same alpha/beta meaning.
ACTIVATION_OPS = {
    "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softsign": "Softsign", "softplus": "Softplus",
    "leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu", "elu": "Elu", "hardsigmoid": "HardSigmoid",
}


@dataclasses.dataclass(frozen=True)
class Activation:
    name: str  # lower case, a key of ACTIVATION_PARAMS
    alpha: float | None = None
    beta: float | None = None


@dataclasses.dataclass
class GRUSpec:
    """One GRU node, validated: its tensors by name, its weights as arrays."""

    node: onnx.NodeProto
    prefix: str  # everything built for this node is named f"{prefix}/..."
    x: str
    sequence_lens: str | None
    initial_h: str | None
    y: str | None
    y_h: str | None
    w: np.ndarray  # (directions, 3H, I)
    r: np.ndarray  # (directions, 3H, H)
    b: np.ndarray  # (directions, 6H) = [Wb | Rb]; zeros when B is absent
    reverse: tuple[bool, ...]  # per direction
    layout: int
    linear_before_reset: bool
    clip: float | None
    activations: tuple[tuple[Activation, Activation], ...]  # per direction: (f, g)
    steps: int | None  # T, where the shape of X says it

    @property
    def hidden(self) -> int:
        return self.r.shape[2]

    @property
    def time_axis(self) -> int:
        return 1 if self.layout else 0

    @property
    def dtype(self) -> np.dtype:
        return self.w.dtype


@dataclasses.dataclass
class GraphBuilder:
    """Collects the nodes and initializers of one graph (the main graph or a Scan body).

    A node, its output and its constants are named f"{prefix}/{label}"; `scoped` gives a
    builder that appends to the same graph under a longer prefix. Constants are never shared
    between nodes: qonnx's cleanup would copy a shared one under a random name. The ops
    whose form changed between opsets (Unsqueeze, Clip) are built in the form of the
    model's opset."""

    prefix: str
    opset: int
    dtype: np.dtype
    nodes: list[onnx.NodeProto] = dataclasses.field(default_factory=list)
    initializers: list[onnx.TensorProto] = dataclasses.field(default_factory=list)

    def scoped(self, label: str) -> GraphBuilder:
        return dataclasses.replace(self, prefix=self.name(label))  # shares the lists

    def name(self, label: str) -> str:
        return f"{self.prefix}/{label}"

    def const(self, label: str, value, dtype=None) -> str:
        array = np.asarray(value, dtype=dtype or self.dtype)
        self.initializers.append(numpy_helper.from_array(array, self.name(label)))
        return self.name(label)

    def node(self, op: str, inputs: list[str], label: str, output: str | None = None, **attrs) -> str:
        out = output or self.name(label)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(label), **attrs))
        return out

    def unsqueeze(self, x: str, axes: list[int], label: str, output: str | None = None) -> str:
        if self.opset >= 13:
            return self.node("Unsqueeze", [x, self.const(f"{label}_axes", axes, np.int64)], label, output)
        return self.node("Unsqueeze", [x], label, output, axes=axes)

    def clip(self, x: str, bound: float, label: str) -> str:
        if self.opset >= 11:
            low, high = self.const(f"{label}_min", -bound), self.const(f"{label}_max", bound)
            return self.node("Clip", [x, low, high], label)
        return self.node("Clip", [x], label, min=-bound, max=bound)


# ---------------------------------------------------------------------------------------
# Reading and validating a GRU node


def _error(node: onnx.NodeProto, what: str) -> UnsupportedError:
    return UnsupportedError(f"unroll-gru: node '{node.name}': {what}")


def _input(node: onnx.NodeProto, index: int) -> str | None:
    return node.input[index] if index < len(node.input) and node.input[index] else None


def _output(node: onnx.NodeProto, index: int) -> str | None:
    return node.output[index] if index < len(node.output) and node.output[index] else None


def _weight(model: ModelWrapper, node: onnx.NodeProto, index: int, label: str) -> np.ndarray | None:
    name = _input(node, index)
    if name is None:
        return None
    value = model.get_initializer(name)
    if value is None:
        raise _error(node, f"input {label} ('{name}') is not an initializer; the pass needs constant weights "
                           "(fold the nodes that compute them first, e.g. with fold-constants)")
    return value


def _activations(node: onnx.NodeProto, attrs: dict, directions: int, opset: int):
    """The (f, g) activations of each direction, with alpha/beta consumed in list order by
    the functions that take them (as the spec and onnxruntime do)."""
    given = attrs.get("activations", DEFAULT_ACTIVATIONS * directions)
    names = [a.decode() if isinstance(a, bytes) else a for a in given]
    if len(names) != 2 * directions:
        raise _error(node, f"attribute 'activations' lists {len(names)} functions; a GRU with {directions} "
                           f"direction(s) takes {2 * directions} (f and g per direction)")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    parsed = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATION_PARAMS:
            raise _error(node, f"attribute 'activations': '{name}' is not an activation of the GRU spec "
                               f"({', '.join(sorted(ACTIVATION_PARAMS))})")
        if key == "thresholdedrelu" and opset < 10:
            raise _error(node, "attribute 'activations': ThresholdedRelu needs opset 10 or newer")
        params = []
        for takes, values, default, attr in zip(ACTIVATION_PARAMS[key], (alphas, betas),
                                                ACTIVATION_DEFAULTS.get(key, (None, None)),
                                                ("activation_alpha", "activation_beta")):
            if not takes:
                params.append(None)
            elif values:
                params.append(float(values.pop(0)))
            elif default is not None:
                params.append(default)
            else:
                raise _error(node, f"attribute '{attr}': activation '{name}' needs an explicit value "
                                   "(the ONNX spec and onnxruntime disagree on its default)")
        parsed.append(Activation(key, *params))
    for leftover, attr in ((alphas, "activation_alpha"), (betas, "activation_beta")):
        if leftover:
            raise _error(node, f"attribute '{attr}' has {len(leftover)} value(s) that no activation takes")
    return tuple((parsed[2 * d], parsed[2 * d + 1]) for d in range(directions))


def _static_steps(model: ModelWrapper, x: str, time_axis: int) -> int | None:
    shape = model.get_tensor_shape(x)  # qonnx gives 0 for a dimension without a value
    return shape[time_axis] if shape is not None and len(shape) == 3 and shape[time_axis] > 0 else None


def _read_weights(model: ModelWrapper, node: onnx.NodeProto, directions: int) -> tuple[np.ndarray, ...]:
    """W (D, 3H, I), R (D, 3H, H) and B (D, 6H; zeros when absent), checked against each
    other, the direction count and the hidden_size attribute."""
    w, r, b = (_weight(model, node, k, label) for k, label in ((1, "W"), (2, "R"), (3, "B")))
    if w is None or r is None:
        raise _error(node, "inputs W and R are required")
    if w.ndim != 3 or r.ndim != 3 or r.shape[1] != 3 * r.shape[2] or w.shape[:2] != r.shape[:2]:
        raise _error(node, f"weights W {list(w.shape)} and R {list(r.shape)} are not [directions, 3*hidden, "
                           "input] and [directions, 3*hidden, hidden]")
    hidden = r.shape[2]
    if w.shape[0] != directions:
        raise _error(node, f"attribute 'direction' asks for {directions} direction(s) but W holds {w.shape[0]}")
    declared = next((a.i for a in node.attribute if a.name == "hidden_size"), hidden)
    if declared != hidden:
        raise _error(node, f"attribute 'hidden_size' is {declared} but the weights have hidden size {hidden} "
                           f"(R is {list(r.shape)})")
    if b is None:
        b = np.zeros((directions, 6 * hidden), w.dtype)
    elif b.shape != (directions, 6 * hidden):
        raise _error(node, f"input B is {list(b.shape)}, expected {[directions, 6 * hidden]}")
    x_shape = model.get_tensor_shape(node.input[0])
    if x_shape is not None and len(x_shape) == 3 and x_shape[2] not in (0, w.shape[2]):
        raise _error(node, f"input X has {x_shape[2]} features but W expects {w.shape[2]}")
    return w, r, b.astype(w.dtype)


def _effective_inputs(model: ModelWrapper, node: onnx.NodeProto, steps: int | None) -> tuple[str | None, str | None]:
    """(sequence_lens, initial_h), without constant ones that change nothing: sequence
    lengths that all equal T, and an all-zero initial state (PyTorch exports one with a
    fixed batch size, which would pin the batch of the unrolled graph)."""
    sequence_lens, initial_h = _input(node, 4), _input(node, 5)
    lens = model.get_initializer(sequence_lens) if sequence_lens else None
    if lens is not None and steps is not None and np.all(lens == steps):
        sequence_lens = None
    h0 = model.get_initializer(initial_h) if initial_h else None
    if h0 is not None and not np.any(h0):
        initial_h = None
    return sequence_lens, initial_h


def read_gru(model: ModelWrapper, node: onnx.NodeProto, prefix: str, opset: int) -> GRUSpec:
    """Validate a GRU node against the spec; raise `UnsupportedError` naming what is wrong."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for name in attrs:
        if name not in KNOWN_ATTRIBUTES:
            raise _error(node, f"unknown attribute '{name}' (a GRU takes {', '.join(KNOWN_ATTRIBUTES)})")
    direction = attrs.get("direction", b"forward").decode()
    if direction not in DIRECTIONS:
        raise _error(node, f"attribute 'direction' is '{direction}'; it must be one of {', '.join(DIRECTIONS)}")
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise _error(node, f"attribute 'layout' is {layout}; it must be 0 or 1")
    clip = attrs.get("clip")
    if clip is not None and not clip > 0:
        raise _error(node, f"attribute 'clip' is {clip}; it must be positive")
    reverse = DIRECTIONS[direction]
    w, r, b = _read_weights(model, node, len(reverse))
    steps = _static_steps(model, node.input[0], 1 if layout else 0)
    sequence_lens, initial_h = _effective_inputs(model, node, steps)
    return GRUSpec(
        node=node, prefix=prefix, x=node.input[0], sequence_lens=sequence_lens, initial_h=initial_h,
        y=_output(node, 0), y_h=_output(node, 1), w=w, r=r, b=b, reverse=reverse, layout=layout,
        linear_before_reset=bool(attrs.get("linear_before_reset", 0)), clip=clip,
        activations=_activations(node, attrs, len(reverse), opset), steps=steps,
    )


# ---------------------------------------------------------------------------------------
# Building the gate arithmetic


@dataclasses.dataclass(frozen=True)
class StepWeights:
    """Names of what one time step reads besides the state and the inputs."""

    r_z: str  # (H, H) = Rz^T, so that the product is h @ r_z
    r_r: str
    r_h: str
    rb_h: str | None  # Rbh, inside the reset product when linear_before_reset
    zero: str | None  # 0, for the output of a step past a sequence's end


def _step_weights(g: GraphBuilder, spec: GRUSpec, d: int, masked: bool) -> StepWeights:
    hid = spec.hidden
    r = [np.ascontiguousarray(spec.r[d, k * hid:(k + 1) * hid].T) for k in range(3)]
    rb_h = spec.b[d, 5 * hid:] if spec.linear_before_reset else None
    return StepWeights(
        *(g.const(f"R{gate}", m) for gate, m in zip(GATES, r)),
        rb_h=g.const("Rbh", rb_h) if rb_h is not None else None,
        zero=g.const("zero", 0.0) if masked else None,
    )


def _input_projection(g: GraphBuilder, spec: GRUSpec, d: int) -> list[str]:
    """x_t @ W^T + biases for all T steps, one MatMul over the whole sequence per gate (no
    multi-output Split: qonnx's FoldConstants keeps only a node's first output, and the
    decoder's constant input makes this part foldable). Every bias that is not inside the
    reset product joins here, so the loop adds none of them."""
    hid = spec.hidden
    wb, rb = spec.b[d, :3 * hid], spec.b[d, 3 * hid:]
    bias = wb + (np.concatenate([rb[:2 * hid], np.zeros(hid, rb.dtype)]) if spec.linear_before_reset else rb)
    projections = []
    for k, gate in enumerate(GATES):
        rows = slice(k * hid, (k + 1) * hid)
        w = g.const(f"W{gate}", np.ascontiguousarray(spec.w[d, rows].T))  # (I, H): x @ w
        proj = g.node("MatMul", [spec.x, w], f"x_{gate}_proj")
        projections.append(g.node("Add", [proj, g.const(f"x_{gate}_bias", bias[rows])], f"x_{gate}"))
    return projections


def _activate(g: GraphBuilder, x: str, act: Activation, label: str) -> str:
    if act.name in ACTIVATION_OPS:
        params = {k: v for k, v in (("alpha", act.alpha), ("beta", act.beta)) if v is not None}
        return g.node(ACTIVATION_OPS[act.name], [x], label, **params)
    if act.name == "affine":
        scaled = g.node("Mul", [x, g.const(f"{label}_alpha", act.alpha)], f"{label}_scaled")
        return g.node("Add", [scaled, g.const(f"{label}_beta", act.beta)], label)
    # scaledtanh: alpha * tanh(beta * x)
    inner = g.node("Mul", [x, g.const(f"{label}_beta", act.beta)], f"{label}_inner")
    return g.node("Mul", [g.node("Tanh", [inner], f"{label}_tanh"), g.const(f"{label}_alpha", act.alpha)], label)


def _gate(g: GraphBuilder, spec: GRUSpec, pre: str, act: Activation, gate: str) -> str:
    if spec.clip is not None:
        pre = g.clip(pre, spec.clip, f"{gate}_clipped")
    return _activate(g, pre, act, f"{gate}_gate")


def _step(g: GraphBuilder, spec: GRUSpec, d: int, h: str, xs: list[str], mask: str | None,
          w: StepWeights) -> tuple[str, str]:
    """One time step; returns (next state, output). The input projection `xs` enters each
    recurrent product as Gemm's C, which saves an Add per gate."""
    f, act_g = spec.activations[d]
    x_z, x_r, x_h = xs
    z = _gate(g, spec, g.node("Gemm", [h, w.r_z, x_z], "z_pre"), f, "z")
    r = _gate(g, spec, g.node("Gemm", [h, w.r_r, x_r], "r_pre"), f, "r")
    if spec.linear_before_reset:
        h_rec = g.node("Gemm", [h, w.r_h, w.rb_h], "h_rec")
        h_pre = g.node("Add", [x_h, g.node("Mul", [r, h_rec], "r_h_rec")], "h_pre")
    else:
        h_pre = g.node("Gemm", [g.node("Mul", [r, h], "r_h"), w.r_h, x_h], "h_pre")
    cand = _gate(g, spec, h_pre, act_g, "h")
    # (1 - z) * cand + z * h, written as cand + z * (h - cand): three ops instead of four.
    blend = g.node("Mul", [z, g.node("Sub", [h, cand], "h_minus_cand")], "z_blend")
    h_new = g.node("Add", [cand, blend], "h_new")
    if mask is None:
        return h_new, h_new
    # Past a sequence's end the state holds and the output is zero (the spec; onnxruntime).
    return g.node("Where", [mask, h_new, h], "h_next"), g.node("Where", [mask, h_new, w.zero], "y_t")


def _zero_state(g: GraphBuilder, spec: GRUSpec, x_z: str) -> str:
    """Zeros of shape (batch, hidden): Where(false, x_z[t=0], 0). Shaped by the input at run
    time, it keeps any batch size; unlike Shape -> ConstantOfShape its shape is static under
    ONNX shape inference at every opset, and unlike x * 0 it is zero for inf and NaN too."""
    first = g.node("Gather", [x_z, g.const("first_step", 0, np.int64)], "x_z_first", axis=spec.time_axis)
    never = g.const("false", [[False]], np.bool_)
    return g.node("Where", [never, first, g.const("zero", 0.0)], "zero_state")


def _sequence_mask(g: GraphBuilder, spec: GRUSpec) -> str:
    """mask[t, b] = t < sequence_lens[b], shaped like X with one feature."""
    steps = spec.steps
    if spec.layout:
        arange, axes = np.arange(steps, dtype=np.int32).reshape(1, steps, 1), [1, 2]
    else:
        arange, axes = np.arange(steps, dtype=np.int32).reshape(steps, 1, 1), [1]
    lens = g.unsqueeze(spec.sequence_lens, axes, "sequence_lens_bcast")
    return g.node("Less", [g.const("time_index", arange, np.int32), lens], "step_valid")


def _scan(g: GraphBuilder, spec: GRUSpec, d: int, h0: str, xs: list[str],
          mask: str | None) -> tuple[str | None, str]:
    """One direction as a Scan whose body is one time step; returns (Y part, final state)."""
    body = GraphBuilder(g.name("step"), g.opset, g.dtype)
    elem = helper.np_dtype_to_tensor_dtype(spec.dtype)
    h = body.name("h_prev")
    xs_t = [body.name(f"x_{gate}_t") for gate in GATES]
    mask_t = body.name("valid_t") if mask else None
    h_next, y = _step(body, spec, d, h, xs_t, mask_t, _step_weights(body, spec, d, mask is not None))
    results = [h_next]
    if spec.y is not None:
        # A graph output cannot be listed twice: the per-step output gets its own name.
        results.append(y if y != h_next else body.node("Identity", [h_next], "y_t"))
    # Axis 0 is the batch, left unknown (shape inference fills in the model's).
    inputs = [helper.make_tensor_value_info(n, elem, [None, spec.hidden]) for n in [h, *xs_t]]
    if mask_t:
        inputs.append(helper.make_tensor_value_info(mask_t, onnx.TensorProto.BOOL, [None, 1]))
    outputs = [helper.make_tensor_value_info(n, elem, [None, spec.hidden]) for n in results]
    graph = helper.make_graph(body.nodes, body.prefix, inputs, outputs, body.initializers)
    scan_inputs = xs + ([mask] if mask else [])
    k, direction, axis = len(scan_inputs), int(spec.reverse[d]), spec.time_axis
    attrs = dict(body=graph, num_scan_inputs=k, scan_input_axes=[axis] * k, scan_input_directions=[direction] * k)
    outs = [g.name("h_last")]
    if spec.y is not None:
        attrs.update(scan_output_axes=[axis], scan_output_directions=[direction])
        outs.append(g.name("y"))
    g.nodes.append(helper.make_node("Scan", [h0, *scan_inputs], outs, name=g.name("scan"), **attrs))
    return (outs[1] if spec.y is not None else None), outs[0]


def _unrolled(g: GraphBuilder, spec: GRUSpec, d: int, h0: str, xs: list[str],
              mask: str | None) -> tuple[str | None, str]:
    """One direction as T copies of the time step; returns (Y part, final state)."""
    axis, steps = spec.time_axis, spec.steps
    h, ys = h0, {}
    for t in (range(steps - 1, -1, -1) if spec.reverse[d] else range(steps)):
        s = g.scoped(f"t{t}")
        # Each step gets its own copy of the weights, as each becomes its own hardware op.
        weights = _step_weights(s, spec, d, mask is not None)
        index = s.const("index", t, np.int64)
        xs_t = [s.node("Gather", [x, index], f"x_{gate}", axis=axis) for x, gate in zip(xs, GATES)]
        mask_t = s.node("Gather", [mask, index], "valid", axis=axis) if mask else None
        h, ys[t] = _step(s, spec, d, h, xs_t, mask_t, weights)
    if spec.y is None:
        return None, h
    # Concatenating the (B, H) steps along the time axis and reshaping gives (T, B, H)
    # (layout 0) or (B, T, H) (layout 1) without fixing B: -1 and 0 stand for it.
    stacked = g.node("Concat", [ys[t] for t in range(steps)], "y_steps", axis=axis)
    shape = [0, steps, spec.hidden] if spec.layout else [steps, -1, spec.hidden]
    return g.node("Reshape", [stacked, g.const("y_shape", shape, np.int64)], "y"), h


def _stack_directions(g: GraphBuilder, parts: list[str], axis: int, output: str, label: str) -> None:
    if len(parts) == 1:
        g.unsqueeze(parts[0], [axis], label, output)
        return
    expanded = [g.unsqueeze(p, [axis], f"{label}_{k}") for k, p in enumerate(parts)]
    g.node("Concat", expanded, label, output, axis=axis)


def lower_gru(spec: GRUSpec, mode: str, opset: int) -> GraphBuilder:
    """The nodes and initializers that compute the GRU's outputs."""
    g = GraphBuilder(spec.prefix, opset, spec.dtype)
    mask = _sequence_mask(g, spec) if spec.sequence_lens else None
    ys, states = [], []
    for d, reverse in enumerate(spec.reverse):
        gd = g.scoped("reverse" if reverse else "forward")
        xs = _input_projection(gd, spec, d)
        if spec.initial_h is None:
            h0 = _zero_state(gd, spec, xs[0])
        else:
            h0 = gd.node("Gather", [spec.initial_h, gd.const("direction", d, np.int64)], "initial_h", axis=spec.layout)
        y, h_last = (_scan if mode == "scan" else _unrolled)(gd, spec, d, h0, xs, mask)
        ys.append(y)
        states.append(h_last)
    # Y is (T, D, B, H) or (B, T, D, H); Y_h is (D, B, H) or (B, D, H).
    if spec.y is not None:
        _stack_directions(g, ys, spec.time_axis + 1, spec.y, "Y")
    if spec.y_h is not None:
        _stack_directions(g, states, spec.layout, spec.y_h, "Y_h")
    return g


def _nested_grus(graph: onnx.GraphProto, owner: str | None = None) -> list[tuple[str, str]]:
    found = []
    for node in graph.node:
        if owner is not None and node.op_type == "GRU" and node.domain in ONNX_DOMAINS:
            found.append((node.name, owner))
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                found += _nested_grus(sub, node.name)
    return found


@register
class UnrollGRU(Pass):
    """Rewrites every ONNX `GRU` node into standard ONNX ops, so that passes and tools that
    do not know GRU (qonnx, FINN, hls4ml) see its matrix products and activations.

    - The input projection x_t @ W^T plus all biases outside the reset product does not
      depend on the state: it becomes one MatMul over the whole sequence, outside the loop.
    - mode=scan (default): each direction becomes one `Scan` whose body is one time step:
      three Gemms with the recurrent weights ((H, H) each, so that the product is h @ R^T
      and the projected input enters as Gemm's C; per gate rather than one (H, 3H) product
      because that saves a Split per step and ran fastest on onnxruntime), the gate
      activations, and the blend of candidate and state. The body holds its weights as its
      own initializers: qonnx's cleanup after every pass deletes main-graph initializers
      that no main-graph node reads, so outer-scope references would not survive it.
    - mode=full: each direction becomes T copies of that step, a DAG (refused above
      max-steps, since the graph grows with T).

    The whole ONNX GRU spec is honoured (directions, both layouts, linear_before_reset,
    B, sequence_lens, initial_h, clip, the spec's activation functions with their alpha and
    beta, any subset of the outputs); what cannot be honoured is refused with an
    `UnsupportedError` naming the node and attribute. No batch size is written into the
    graph, so it runs on any batch like the GRU did.
    """

    name = "unroll-gru"
    summary = "rewrite GRU nodes into gate arithmetic (a Scan over time, or fully unrolled)"
    contract = Contract.FLOAT
    options = (
        Option("mode", str, "scan", "scan: one Scan per direction; full: T copies of the time step",
               choices=("scan", "full")),
        Option("max-steps", int, 512, "refuse mode=full above this T"),
    )

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        nested = _nested_grus(model.graph)
        if nested:
            raise UnsupportedError(f"unroll-gru: node '{nested[0][0]}' is a GRU inside the subgraph of node "
                                   f"'{nested[0][1]}'; only GRUs in the main graph are rewritten")
        grus = [n for n in model.graph.node if n.op_type == "GRU" and n.domain in ONNX_DOMAINS]
        if not grus:
            return model, False
        opset = model_opset(model)
        if opset is None or opset < MIN_OPSET:
            raise _error(grus[0], f"the model imports opset {opset}; unroll-gru needs opset {MIN_OPSET} or "
                                  "newer (Scan, Where)")
        for position, node in enumerate(grus):
            spec = read_gru(model, node, node.name or f"GRU_{position}", opset)
            self._check_steps(spec)
            built = lower_gru(spec, self.mode, opset)
            index = list(model.graph.node).index(node)
            model.graph.node.remove(node)
            for offset, new in enumerate(built.nodes):
                model.graph.node.insert(index + offset, new)
            model.graph.initializer.extend(built.initializers)
        # Assigned rather than wrapped anew: ModelWrapper's constructor checks every tensor's
        # shape in quadratic time, which dominates for fully unrolled long sequences.
        model.model = onnx.shape_inference.infer_shapes(model.model)
        return model, False

    def _check_steps(self, spec: GRUSpec) -> None:
        needs_steps = self.mode == "full" or spec.sequence_lens is not None
        if needs_steps and spec.steps is None:
            why = "mode=full" if self.mode == "full" else "input sequence_lens"
            raise _error(spec.node, f"{why} needs a static sequence length, but the shape of X "
                                    f"('{spec.x}') does not give one; load the model with flimcc (--dim T=...)")
        if self.mode == "full" and spec.steps > self.max_steps:
            raise _error(spec.node, f"T={spec.steps} is above max-steps={self.max_steps} for mode=full "
                                    "(raise max-steps or use mode=scan)")

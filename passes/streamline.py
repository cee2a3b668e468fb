"""`streamline`: lower a quantized graph (Quant nodes, pow2 scales) to integer operations.

Every numeric tensor is tracked as a fixed-point value `scale * q`, q an integer tensor
with a known range, and each node is rewritten to compute q:

- a `Quant` of an activation (Sigmoid, Tanh, HardSigmoid) or of an integer tensor becomes
  a `MultiThreshold` whose thresholds are found in the integer domain (flimcc.thresholds),
  with the activation evaluated by onnxruntime exactly as the float stage did, so ties
  round the same way;
- MatMul by an integer-valued weight keeps the weight and multiplies the scales; a Mul by
  a constant only changes the scale; two-stream Mul multiplies integers and scales;
- Add/Sub align their operands' scales by integer factors (shifts in hardware); float
  constants (biases) are dyadic, so they join the integer domain at their own scale;
- shape ops pass the value through; a `Scan` body is lowered with its loop-carried state
  at the scale its body produces (iterated to a fixed point);
- the float input edge becomes Mul(1/s) + Quant(scale 1), the float output edge a Mul.

Contract `exact`: with power-of-two scales every float value of the stage before is an
exact dyadic number, so the integer graph computes the same values bit for bit. The pass
checks the condition it relies on (integers within float32's 24-bit exact range) and
refuses, naming the node, where it does not hold. A join of operands whose scales differ by
a non-integer ratio (not power-of-two related) cannot be exact: there the coarser operand
is rounded to the finer grid by a MultiThreshold, the pass reports each such join with its
bound (half a step of the finer scale) and runs under the `approximate` contract.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from flimcc.errors import UnsupportedError
from flimcc.execute import _run_standard_node, run_ort
from flimcc.ir import canonicalize
from flimcc.passbase import Contract, Pass, register
from flimcc.thresholds import ROUNDING, QuantSpec, activation_thresholds

QONNX_DOMAIN = "qonnx.custom_op.general"
#: Largest integer magnitude whose float32 arithmetic (qonnx/FINN Python execution, and
#: the float stage being replaced) is exact.
EXACT_LIMIT = 2**24
ACTIVATIONS = ("Sigmoid", "Tanh", "HardSigmoid")
PASS_THROUGH = ("Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity", "Gather", "Slice", "Expand",
                "Split")
LAYOUTS = {2: "NC", 3: "NWC", 4: "NHWC"}  # channels last, as every tensor here is


@dataclasses.dataclass(frozen=True)
class Fixed:
    """value = scale * q, q integer in [lo, hi]; `zero` marks a tensor known to be 0."""

    scale: float
    lo: int
    hi: int
    zero: bool = False

    def dtype(self) -> DataType:
        return int_dtype(self.lo, self.hi)


def int_dtype(lo: int, hi: int) -> DataType:
    """The smallest INTk/UINTk holding [lo, hi]."""
    if lo >= 0:
        return DataType[f"UINT{max(1, int(hi).bit_length())}"]
    bits = max(int(hi).bit_length(), int(-lo - 1).bit_length()) + 1
    return DataType[f"INT{bits}"]


def dyadic(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Write float32 constants as integers times one power of two (always possible)."""
    values = np.asarray(values, dtype=np.float64)
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return np.zeros_like(values), 1.0
    _, exps = np.frexp(nonzero)
    # 24 significant bits at most (float32): the finest bit of each value is exps - 24.
    finest = int(np.min(exps)) - 24
    ints = values * 2.0**-finest
    # Drop trailing zero bits common to all values so integers stay small.
    while np.all(np.mod(ints, 2) == 0) and np.any(ints != 0):
        ints, finest = ints / 2, finest + 1
    return ints, 2.0**finest


class _Lowering:
    """Rewrites one graph (the top level or a Scan body); `types` holds Fixed for numeric
    tensors defined so far, `consts` the constant values visible in this scope."""

    def __init__(self, graph: onnx.GraphProto, opsets, types: dict, consts: dict, top: bool,
                 requants: list | None = None):
        self.graph, self.opsets, self.types, self.top = graph, opsets, dict(types), top
        self.consts = dict(consts)
        self.consts.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}  # an original tensor now carried by another name
        self.rank: dict[str, int] = {}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            if vi.type.tensor_type.HasField("shape"):
                self.rank[vi.name] = len(vi.type.tensor_type.shape.dim)
        self.consumers: dict[str, int] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.producer = {o: n for n in graph.node for o in n.output}
        self.count = 0
        #: joins whose operand scales differ by a non-integer ratio, requantized (inexact)
        self.requants: list[dict] = requants if requants is not None else []

    # -- helpers -------------------------------------------------------------------------

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}/int{self.count}"

    def const(self, base: str, value) -> str:
        name = self.name(base)
        self.inits[name] = np.asarray(value, dtype=np.float32)
        return name

    def src(self, name: str) -> str:
        return self.alias.get(name, name)

    def fixed(self, name: str, node: onnx.NodeProto) -> Fixed:
        if name in self.types:
            return self.types[name]
        if name in self.consts:
            ints, scale = dyadic(self.consts[name])
            self.check_range(int(ints.min()), int(ints.max()), node)
            fx = Fixed(scale, int(ints.min()), int(ints.max()), zero=not np.any(ints))
            new = self.const(name, ints)
            self.alias[name] = new
            self.types[name] = self.types[new] = fx
            return fx
        raise UnsupportedError(f"node '{node.name}': input '{name}' is a float tensor without a quantizer "
                               f"before it; run `quantize` (or give the model QONNX quantizers) first")

    def check_range(self, lo: int, hi: int, node: onnx.NodeProto) -> None:
        if max(abs(lo), abs(hi)) >= EXACT_LIMIT:
            raise UnsupportedError(
                f"node '{node.name}': its integers reach {max(abs(lo), abs(hi)):.3g}, beyond float32's exact "
                f"range 2^24; quantize biases and activations to fewer bits")

    def emit(self, op: str, inputs, outputs, domain: str = "", **attrs) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=outputs[0], domain=domain, **attrs))

    def scaled(self, name: str, fx: Fixed, factor: float, node) -> str:
        """Multiply the integer tensor by an integer factor (a shift when it is a pow2)."""
        k = round(factor)
        if k == 1:
            return self.src(name)
        if k != factor or k < 1:
            raise UnsupportedError(
                f"node '{node.name}': operand scales differ by {factor:g}, not an integer: the join needs a "
                f"requantization (non-power-of-two scales)")
        target = Fixed(fx.scale / k, fx.lo * k, fx.hi * k, fx.zero)
        self.check_range(target.lo, target.hi, node)
        if self.src(name) in self.inits:  # a constant: scale it at compile time
            out = self.const(name, self.inits[self.src(name)] * k)
        else:
            out, shift = self.name(name), self.const(name + "/shift", float(k))
            self.emit("Mul", [self.src(name), shift], [out])
            self.types[shift] = Fixed(1.0, k, k)
        self.types[out] = target
        return out

    # -- node handlers -------------------------------------------------------------------

    def lower(self) -> None:
        for node in self.graph.node:
            inputs = [i for i in node.input if i]
            if inputs and all(i in self.consts for i in inputs) and node.op_type not in ("Quant", "Scan"):
                self.fold(node)  # e.g. the Transpose of a quantized weight in a Brevitas export
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if node.op_type in PASS_THROUGH:
                handler = self.op_pass_through
            if handler is None:
                raise UnsupportedError(f"node '{node.name}': streamline cannot lower a {node.op_type} to integers")
            handler(node)

    def fold(self, node: onnx.NodeProto) -> None:
        """Evaluate a node whose inputs are all constants; its outputs become constants."""
        context = {i: self.consts[i] for i in node.input if i}
        model = ModelWrapper(helper.make_model(helper.make_graph([], "g", [], []), opset_imports=self.opsets))
        _run_standard_node(node, context, model)
        for out in node.output:
            if out:
                self.consts[out] = np.asarray(context[out])

    def op_Clip(self, node):
        """Clip with constant bounds on the integer grid (a hard sigmoid's clip(0.5x + 0.5, 0, 1))."""
        x = node.input[0]
        fx = self.fixed(x, node)
        bounds = []
        for k, default in ((1, -np.inf), (2, np.inf)):
            name = node.input[k] if len(node.input) > k and node.input[k] else None
            if name is not None and name not in self.consts:
                raise UnsupportedError(f"node '{node.name}': Clip with a dynamic bound is not lowered")
            value = float(self.consts[name]) if name is not None else default
            level = value / fx.scale
            if np.isfinite(level) and level != round(level):
                raise UnsupportedError(f"node '{node.name}': Clip bound {value:g} is not on the input's grid")
            bounds.append(level)
        lo, hi = max(fx.lo, bounds[0]), min(fx.hi, bounds[1])
        names = [self.const(node.output[0] + "/min", bounds[0]) if np.isfinite(bounds[0]) else "",
                 self.const(node.output[0] + "/max", bounds[1]) if np.isfinite(bounds[1]) else ""]
        self.emit("Clip", [self.src(x)] + names, [node.output[0]])
        self.set(node, node.output[0], Fixed(fx.scale, int(lo), int(hi), fx.zero))

    def op_Concat(self, node):
        fxs = [self.fixed(i, node) for i in node.input]
        scale = min(f.scale for f in fxs)
        parts = [self.scaled(i, f, f.scale / scale, node) for i, f in zip(node.input, fxs)]
        self._copy(node, parts)
        lo = min(f.lo * round(f.scale / scale) for f in fxs)
        hi = max(f.hi * round(f.scale / scale) for f in fxs)
        self.set(node, node.output[0], Fixed(scale, lo, hi, all(f.zero for f in fxs)))

    def _copy(self, node: onnx.NodeProto, inputs: list[str]) -> onnx.NodeProto:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(inputs)
        self.nodes.append(new)
        return new

    def op_pass_through(self, node):
        data = node.input[0]
        if data not in self.types and data not in self.consts:
            self._copy(node, list(node.input))  # not a numeric tensor of ours (shapes, indices)
            return
        fx = self.fixed(data, node)
        self._copy(node, [self.src(data)] + [self.src(i) if i in self.alias else i for i in node.input[1:]])
        for out in node.output:
            self.types[out] = fx

    def op_Shape(self, node):
        self._copy(node, [self.src(node.input[0])])

    def op_ConstantOfShape(self, node):
        value = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1))
        if np.any(value):
            raise UnsupportedError(f"node '{node.name}': ConstantOfShape of a non-zero value")
        self._copy(node, list(node.input))
        self.types[node.output[0]] = Fixed(1.0, 0, 0, zero=True)

    def op_Where(self, node):
        cond, a, b = node.input
        fa, fb = self.fixed(a, node), self.fixed(b, node)
        if cond in self.consts and np.all(self.consts[cond] == self.consts[cond].flat[0]):
            # A constant condition picks one branch: keep the node (it broadcasts the
            # shape) but carry the chosen branch's zero-ness (a zero loop state).
            chosen = fa if bool(self.consts[cond].flat[0]) else fb
            fa, fb = (fa, dataclasses.replace(fb, zero=True)) if chosen is fa else (dataclasses.replace(fa, zero=True), fb)
        scale = fb.scale if fa.zero else fa.scale if fb.zero else min(fa.scale, fb.scale)
        ia = self.scaled(a, fa, fa.scale / scale, node) if not fa.zero else self.src(a)
        ib = self.scaled(b, fb, fb.scale / scale, node) if not fb.zero else self.src(b)
        self.emit("Where", [self.src(cond), ia, ib], [node.output[0]])
        ra = (fa.lo * round(fa.scale / scale), fa.hi * round(fa.scale / scale)) if not fa.zero else (0, 0)
        rb = (fb.lo * round(fb.scale / scale), fb.hi * round(fb.scale / scale)) if not fb.zero else (0, 0)
        self.types[node.output[0]] = Fixed(scale, min(ra[0], rb[0]), max(ra[1], rb[1]), fa.zero and fb.zero)

    def op_MatMul(self, node):
        a, w = node.input
        if w not in self.consts:
            raise UnsupportedError(f"node '{node.name}': a MatMul of two dynamic tensors is not lowered")
        fa = self.fixed(a, node)
        ints, wscale = dyadic(self.consts[w])
        pos, neg = np.clip(ints, 0, None), np.clip(ints, None, 0)
        hi = int(np.max(pos.sum(axis=0) * fa.hi + neg.sum(axis=0) * fa.lo))
        lo = int(np.min(pos.sum(axis=0) * fa.lo + neg.sum(axis=0) * fa.hi))
        wname = self.const(w, ints)
        self.emit("MatMul", [self.src(a), wname], [node.output[0]])
        self.set(node, node.output[0], Fixed(fa.scale * wscale, lo, hi))
        self.types[wname] = Fixed(wscale, int(ints.min()), int(ints.max()))

    def op_Gemm(self, node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise UnsupportedError(f"node '{node.name}': Gemm with transA/transB/alpha/beta is not lowered")
        product = node.output[0] + "/product"
        self.op_MatMul(helper.make_node("MatMul", node.input[:2], [product], name=node.name))
        if len(node.input) > 2 and node.input[2]:
            self.op_Add(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name))
        else:
            self.alias[node.output[0]], self.types[node.output[0]] = self.src(product), self.types[product]

    def op_Mul(self, node):
        a, b = node.input
        if b in self.consts and a not in self.consts or a in self.consts and b not in self.consts:
            x, c = (a, b) if b in self.consts else (b, a)
            fx = self.fixed(x, node)
            ints, cscale = dyadic(self.consts[c])
            if ints.size == 1 and abs(float(ints.flat[0])) == 1:  # a pure rescale: no node
                sign = float(ints.flat[0])
                if sign > 0:
                    self.alias[node.output[0]] = self.src(x)
                    self.types[node.output[0]] = Fixed(fx.scale * cscale, fx.lo, fx.hi, fx.zero)
                    return
            self.emit("Mul", [self.src(x), self.const(c, ints)], [node.output[0]])
            corners = [fx.lo * ints.min(), fx.lo * ints.max(), fx.hi * ints.min(), fx.hi * ints.max()]
            self.set(node, node.output[0], Fixed(fx.scale * cscale, int(min(corners)), int(max(corners)), fx.zero))
            return
        fa, fb = self.fixed(a, node), self.fixed(b, node)
        self.emit("Mul", [self.src(a), self.src(b)], [node.output[0]])
        corners = [fa.lo * fb.lo, fa.lo * fb.hi, fa.hi * fb.lo, fa.hi * fb.hi]
        self.set(node, node.output[0], Fixed(fa.scale * fb.scale, min(corners), max(corners), fa.zero or fb.zero))

    def _join(self, node, sign: int):
        a, b = node.input
        fa, fb = self.fixed(a, node), self.fixed(b, node)
        if fb.zero or fa.zero:
            keep, fk = (a, fa) if fb.zero else (b, fb)
            if fa.zero and sign < 0:
                self.emit("Neg", [self.src(b)], [node.output[0]])
                self.types[node.output[0]] = Fixed(fb.scale, -fb.hi, -fb.lo, fb.zero)
                return
            self.alias[node.output[0]], self.types[node.output[0]] = self.src(keep), fk
            return
        scale = min(fa.scale, fb.scale)
        ra, rb = fa.scale / scale, fb.scale / scale
        if ra != round(ra):
            a, fa, ra = *self.requantize(a, fa, scale, node), 1.0
        if rb != round(rb):
            b, fb, rb = *self.requantize(b, fb, scale, node), 1.0
        ia, ib = self.scaled(a, fa, ra, node), self.scaled(b, fb, rb, node)
        self.emit(node.op_type, [ia, ib], [node.output[0]])
        ra, rb = round(ra), round(rb)
        if sign > 0:
            lo, hi = fa.lo * ra + fb.lo * rb, fa.hi * ra + fb.hi * rb
        else:
            lo, hi = fa.lo * ra - fb.hi * rb, fa.hi * ra - fb.lo * rb
        self.set(node, node.output[0], Fixed(scale, lo, hi))

    def requantize(self, name: str, fx: Fixed, scale: float, node) -> tuple[str, Fixed]:
        """An operand whose scale is not an integer multiple of the join's: rounded to the
        join's scale by a MultiThreshold (round half to even), the one inexact step of
        streamline. The error it adds is at most scale / 2 per element; recorded."""
        ratio = fx.scale / scale
        lo, hi = int(np.round(fx.lo * ratio)), int(np.round(fx.hi * ratio))
        dtype = int_dtype(min(lo, -1), hi)
        spec = QuantSpec(scale, dtype.bitwidth(), True)
        thresholds = activation_thresholds("identity", spec, (fx.lo, fx.hi), fx.scale, 0.0, dtype=np.float32)
        out = self.name(f"{node.name}/requant")
        qmin = spec.levels[0]
        self.emit("MultiThreshold", [self.src(name), self.const(out + "/thresholds", thresholds)], [out],
                  domain=QONNX_DOMAIN, out_dtype=dtype.name, out_bias=float(qmin),
                  data_layout=LAYOUTS.get(self.rank.get(name, 2), "NC"))
        result = Fixed(scale, lo, hi)
        self.types[out] = result
        self.requants.append({"node": node.name, "operand": name, "scale_ratio": round(ratio, 6),
                              "bound": scale / 2})
        return out, result

    def op_Add(self, node):
        self._join(node, +1)

    def op_Sub(self, node):
        self._join(node, -1)

    def op_Quant(self, node):
        x, scale_name, zero_name, bits_name = node.input
        try:
            scale = float(self.consts[scale_name])
            zero = float(self.consts[zero_name])
            bits = int(self.consts[bits_name])
        except (KeyError, TypeError):
            raise UnsupportedError(f"node '{node.name}': Quant needs constant scalar scale, zero-point and bit width")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rounding = attrs.get("rounding_mode", b"ROUND")
        rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
        if zero != 0 or rounding not in ROUNDING:
            raise UnsupportedError(f"node '{node.name}': only zero-point 0 and rounding_mode "
                                   f"{', '.join(ROUNDING)} are lowered (got {rounding})")
        spec = QuantSpec(scale, bits, bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)), rounding)
        qmin, qmax = spec.levels
        out = node.output[0]
        result = Fixed(scale, qmin, qmax)
        if x in self.consts:  # a quantized constant: fold it
            # A quantized constant is a constant: later ops take it as integers (dyadic).
            self.consts[out] = spec.quantize(self.consts[x].astype(np.float32)) * scale
            return
        producer = self.producer.get(x)
        activation = producer if producer is not None and producer.op_type in ACTIVATIONS else None
        source = activation.input[0] if activation is not None else x
        if source not in self.types:
            if activation is not None or not self.top:
                raise UnsupportedError(f"node '{node.name}': quantizes a float tensor inside the integer graph")
            # The float input edge: x / s is exact for a power-of-two s, then a scale-1 Quant.
            inv = self.const(out + "/inv_scale", 1.0 / scale)
            self.emit("Mul", [x, inv], [out + "/in"])
            self.emit("Quant", [out + "/in", self.const(out + "/one", 1.0), self.const(out + "/zero", 0.0),
                                self.const(out + "/bits", float(bits))], [out], domain=QONNX_DOMAIN,
                      signed=int(spec.signed), narrow=int(spec.narrow), rounding_mode=spec.rounding)
            self.set(node, out, result)
            return
        fx = self.types[source]
        f = _ort_function(activation, tuple(self.opsets)) if activation is not None else None
        thresholds = activation_thresholds(f or "identity", spec, (fx.lo, fx.hi), fx.scale, 0.0, dtype=np.float32)
        rank = self.rank.get(out, self.rank.get(source, 2))
        self.emit("MultiThreshold", [self.src(source), self.const(out + "/thresholds", thresholds)], [out],
                  domain=QONNX_DOMAIN, out_dtype=result.dtype().name, out_bias=float(qmin),
                  data_layout=LAYOUTS.get(rank, "NC"))
        self.set(node, out, result)

    def op_Sigmoid(self, node):
        self._activation(node)

    def op_Tanh(self, node):
        self._activation(node)

    def op_HardSigmoid(self, node):
        self._activation(node)

    def _activation(self, node):
        users = [n for n in self.graph.node if node.output[0] in n.input]
        if len(users) != 1 or users[0].op_type != "Quant" or node.output[0] in {o.name for o in self.graph.output}:
            raise UnsupportedError(f"node '{node.name}': a {node.op_type} must be followed by exactly one Quant "
                                   "to become integer thresholds; run `quantize` first")
        # Lowered together with its Quant (op_Quant), which reads this node's input.

    def op_Scan(self, node):
        lower_scan(self, node)

    def set(self, node, name: str, fx: Fixed) -> None:
        self.check_range(fx.lo, fx.hi, node)
        self.types[name] = fx


@functools.lru_cache(maxsize=32)
def _ort_cached(op: str, attrs: tuple, opsets: tuple):
    node = helper.make_node(op, ["x"], ["y"], **dict(attrs))
    graph = helper.make_graph([node], "act", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])

    def f(x: np.ndarray) -> np.ndarray:
        return run_ort(proto, {"x": np.ascontiguousarray(x, dtype=np.float32)})["y"]

    return f


def _ort_function(node: onnx.NodeProto, opsets: tuple):
    """The activation as onnxruntime computes it: thresholds then agree with the float
    stage bit for bit, ties included."""
    attrs = tuple(sorted((a.name, helper.get_attribute_value(a)) for a in node.attribute))
    return _ort_cached(node.op_type, attrs, tuple((o.domain, o.version) for o in opsets if o.domain in ("", "ai.onnx")))


def lower_scan(outer: _Lowering, node: onnx.NodeProto) -> None:
    body = next(a.g for a in node.attribute if a.name == "body")
    n_scan = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "num_scan_inputs")
    n_state = len(node.input) - n_scan
    init_types = [outer.fixed(i, node) for i in node.input[:n_state]]
    scan_types = [outer.fixed(i, node) for i in node.input[n_state:]]
    # A zero initial state takes the scale of what the body writes back (its quantizer).
    state_types = [_declared(body, o.name) if init.zero else init for init, o in zip(init_types, body.output)]
    for _ in range(4):  # the state's scale and range reach a fixed point in two rounds
        inner = _Lowering(body, outer.opsets, outer.types, outer.consts, top=False, requants=outer.requants)
        inner.alias.update(outer.alias)
        for vi, fx in zip(body.input, state_types + scan_types):
            inner.types[vi.name] = fx
        inner.lower()
        out_types = [inner.types[o.name] for o in body.output]
        new_state = []
        for init, produced in zip(init_types, out_types[:n_state]):
            scale = produced.scale
            lo, hi = produced.lo, produced.hi
            if not init.zero:
                factor = init.scale / scale
                lo, hi = min(lo, init.lo * round(factor)), max(hi, init.hi * round(factor))
            new_state.append(Fixed(scale, lo, hi))
        if new_state == state_types:
            break
        state_types = new_state
    else:
        raise UnsupportedError(f"node '{node.name}': the loop state's fixed-point type does not settle")

    new_inputs = []
    for i, (name, init, state) in enumerate(zip(node.input[:n_state], init_types, state_types)):
        new_inputs.append(outer.src(name) if init.zero else outer.scaled(name, init, init.scale / state.scale, node))
    new_inputs += [outer.src(n) for n in node.input[n_state:]]

    new_body = helper.make_graph(
        inner.nodes, body.name,
        [_untyped_shape(vi) for vi in body.input],
        [_output(vi.name, inner) for vi in body.output],
        [numpy_helper.from_array(v, k) for k, v in inner.inits.items()],
    )
    _annotate(new_body, inner.types)
    scan = onnx.NodeProto()
    scan.CopyFrom(node)
    del scan.input[:]
    scan.input.extend(new_inputs)
    for attr in scan.attribute:
        if attr.name == "body":
            attr.g.CopyFrom(new_body)
    outer.nodes.append(scan)
    for out, fx in zip(node.output, out_types):
        if out:
            outer.check_range(fx.lo, fx.hi, node)
            outer.types[out] = fx


def _declared(body: onnx.GraphProto, name: str) -> Fixed:
    producer = next((n for n in body.node if name in n.output), None)
    while producer is not None and producer.op_type == "Identity":
        producer = next((n for n in body.node if producer.input[0] in n.output), None)
    consts = {t.name: numpy_helper.to_array(t) for t in body.initializer}
    if producer is None or producer.op_type != "Quant" or producer.input[1] not in consts:
        raise UnsupportedError(f"loop state '{name}' starts at zero but is not quantized in the loop body")
    attrs = {a.name: helper.get_attribute_value(a) for a in producer.attribute}
    spec = QuantSpec(float(consts[producer.input[1]]), int(consts[producer.input[3]]),
                     bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
    return Fixed(spec.scale, *spec.levels)


def _untyped_shape(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(vi.name, onnx.TensorProto.FLOAT, None)


def _output(name: str, low: _Lowering) -> onnx.ValueInfoProto:
    src = low.src(name)
    if src != name:  # the body output is carried by another tensor: name it again
        low.emit("Identity", [src], [name])
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def _annotate(graph: onnx.GraphProto, types: dict) -> None:
    """qonnx DataType annotations for every integer tensor the graph holds."""
    del graph.quantization_annotation[:]
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for name in sorted(n for n in types if n in names):
        qa = onnx.TensorAnnotation(tensor_name=name)
        qa.quant_parameter_tensor_names.append(
            onnx.StringStringEntryProto(key="finn_datatype", value=types[name].dtype().name))
        graph.quantization_annotation.append(qa)


@register
class Streamline(Pass):
    """Rewrites a quantized graph (qonnx Quant nodes with power-of-two scales, as
    `quantize`/`fold-weights` or a Brevitas export leave it) into integer operations:
    MultiThreshold for every activation and requantization, integer MatMul/Mul/Add/Sub,
    integer constants, and qonnx DataType annotations on every tensor; only the graph's
    input and output edges stay float. Exact: see the module docstring."""

    name = "streamline"
    summary = "quantized graph -> integer ops and MultiThresholds (bit-exact with pow2 scales)"
    contract = Contract.EXACT

    def apply(self, model: ModelWrapper):
        graph = model.graph
        low = _Lowering(graph, list(model.model.opset_import), {}, {}, top=True)
        low.lower()
        outputs = []
        for out in graph.output:
            fx = low.types.get(out.name)
            if fx is None:
                outputs.append(out)
                continue
            # The float output edge: dequantize the integer result.
            internal = low.src(out.name)
            if internal == out.name:
                internal = out.name + "/int"
                for n in low.nodes:
                    for k, o in enumerate(n.output):
                        if o == out.name:
                            n.output[k] = internal
                    for k, i in enumerate(n.input):
                        if i == out.name:
                            n.input[k] = internal
                low.alias[out.name] = internal
                low.types[internal] = fx
            low.emit("Mul", [internal, low.const(out.name + "/scale", fx.scale)], [out.name])
            outputs.append(out)
        del graph.node[:]
        graph.node.extend(low.nodes)
        used = {i for n in graph.node for i in n.input} | _subgraph_reads(graph)
        kept = [t for t in graph.initializer if t.name in used and t.name not in low.inits]
        del graph.initializer[:]
        graph.initializer.extend(kept + [numpy_helper.from_array(v, k) for k, v in low.inits.items() if k in used])
        graph.ClearField("value_info")
        _annotate(graph, {k: v for k, v in low.types.items() if k not in {o.name for o in graph.output}})
        model = canonicalize(model)
        self.metrics = {"multithresholds": _count(graph, "MultiThreshold")}
        if low.requants:
            # Not exact any more: say so, and give the bound each requantization adds.
            self.contract = Contract.APPROXIMATE
            self.metrics["requantized_joins"] = len(low.requants)
            self.metrics["requantization_bound"] = max(r["bound"] for r in low.requants)
            self.metrics["requantizations"] = [
                f"{r['node']}: '{r['operand']}' x {r['scale_ratio']:g}, error <= {r['bound']:g}" for r in low.requants]
        else:
            self.contract = Contract.EXACT
        return model, False


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    reads = set()
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                reads |= {i for m in a.g.node for i in m.input} | _subgraph_reads(a.g)
    return reads


def _count(graph: onnx.GraphProto, op: str) -> int:
    total = 0
    for n in graph.node:
        total += n.op_type == op
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                total += _count(a.g, op)
    return total

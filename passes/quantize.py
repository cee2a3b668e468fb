"""`quantize`: post-training quantization of a float model into QONNX `Quant` nodes.

The quantizers sit where the quantization-aware GRU of `flimcc.models.quant_gru` has
them, so that a model quantized after training (here) and one trained quantized (QAT,
exported from Brevitas) reach the later passes in the same form. Every scale is a power
of two, which makes the integer lowering that follows (`fold-weights`, thresholds) exact.

This module also holds the small graph helpers that `fold-weights` shares (walking
subgraphs, consumers, unique names, building a `Quant` node).
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from flimcc.errors import FlimccError, UnsupportedError
from flimcc.passbase import Contract, Option, Pass, register

QONNX_DOMAIN = "qonnx.custom_op.general"
#: Every qonnx quantizer op: a model holding any of them is already quantized.
QUANT_OPS = ("Quant", "IntQuant", "BipolarQuant", "FloatQuant", "Trunc")
PRODUCTS = ("MatMul", "Gemm")
SIGMOIDS = ("Sigmoid", "HardSigmoid")
#: Ops a bias may sit behind and still be the bias of a matrix product: x @ W -> (reshape,
#: rescale, requantize) -> + b.
_BIAS_CHAIN = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Mul", "Quant", "Add")
BITS_RANGE = (2, 16)
#: Bias codes stay integers that float32 holds exactly (24-bit significand).
BIAS_BITS_RANGE = (2, 24)

# ---------------------------------------------------------------------------------------
# graph helpers (shared with fold-weights)


def subgraph_attrs(node: onnx.NodeProto) -> list[onnx.AttributeProto]:
    return [a for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


def map_graphs(model: ModelWrapper, fn: Callable[[ModelWrapper, onnx.NodeProto | None], ModelWrapper],
               owner: onnx.NodeProto | None = None) -> ModelWrapper:
    """Apply `fn(graph_model, owner)` to the model and then, recursively, to every subgraph
    (a Scan body, ...). A subgraph is handed over as a ModelWrapper of its own (so qonnx's
    helpers, `set_tensor_datatype` included, work on it: its annotations land in the body
    graph's `quantization_annotation`) and copied back into its node afterwards. `owner`
    is the node whose attribute holds the graph (None for the main graph)."""
    model = fn(model, owner)
    opsets = list(model.model.opset_import)
    for node in model.graph.node:
        for attr in subgraph_attrs(node):
            sub = ModelWrapper(qonnx_make_model(attr.g, opset_imports=opsets))
            sub = map_graphs(sub, fn, node)
            attr.g.CopyFrom(sub.graph)
    return model


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Tensor name -> [(node, input index)]; a node whose subgraph reads the tensor from
    the enclosing scope counts as a consumer with index -1."""
    found: dict[str, list[tuple[onnx.NodeProto, int]]] = collections.defaultdict(list)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name:
                found[name].append((node, k))
        for attr in subgraph_attrs(node):
            for name in free_names(attr.g):
                found[name].append((node, -1))
    return found


def free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from its enclosing scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    free: set[str] = set()
    for node in graph.node:
        reads = [n for n in node.input if n]
        for attr in subgraph_attrs(node):
            reads += list(free_names(attr.g))
        free.update(n for n in reads if n not in defined)
        defined.update(node.output)
    return free


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def all_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name in the graph and its subgraphs (for unique names)."""
    names = {t.name for t in graph.initializer} | {v.name for v in graph.input} | {v.name for v in graph.output}
    names |= {v.name for v in graph.value_info}
    for node in graph.node:
        names.add(node.name)
        names.update(node.input)
        names.update(node.output)
        for attr in subgraph_attrs(node):
            names |= all_names(attr.g)
    return names


class NameScope:
    """Hands out names not yet used in a graph: `base`, else `base_1`, `base_2`, ...
    (`taken`: a set of used names to share and extend instead of the graph's)."""

    def __init__(self, graph: onnx.GraphProto | None = None, taken: set[str] | None = None) -> None:
        self.taken = taken if taken is not None else all_names(graph)

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name


def rename_input(graph: onnx.GraphProto, old: str, new: str, skip: onnx.NodeProto | None = None) -> None:
    """Make every reader of `old` (nodes, graph outputs, subgraphs reading it from this
    scope) read `new` instead; `skip` keeps its input (the node that computes `new`)."""
    _rename_reads(graph, old, new, skip)
    for out in graph.output:
        if out.name == old:
            out.name = new


def _rename_reads(graph: onnx.GraphProto, old: str, new: str, skip: onnx.NodeProto | None = None) -> None:
    for node in graph.node:
        if node is not skip:
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new
        for attr in subgraph_attrs(node):
            if old in free_names(attr.g):
                _rename_reads(attr.g, old, new)


def scalar(value: float, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def make_quant(graph: onnx.GraphProto, names: NameScope, base: str, x: str, scale: float | np.ndarray,
               bits: int, signed: bool, narrow: bool, output: str | None = None,
               rounding: str = "ROUND") -> onnx.NodeProto:
    """A qonnx `Quant` node named `base` (or `base_k`), with its own scale, zero point and
    bit width initializers (never shared: qonnx's cleanup would copy a shared one under a
    random name). The caller places the node."""
    name = names(base)
    out = output or name
    params = [names(f"{name}/scale"), names(f"{name}/zeropt"), names(f"{name}/bitwidth")]
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray(scale, dtype=np.float32), params[0]),
        scalar(0.0, params[1]),
        scalar(float(bits), params[2]),
    ])
    return helper.make_node("Quant", [x, *params], [out], name=name, domain=QONNX_DOMAIN,
                            signed=int(signed), narrow=int(narrow), rounding_mode=rounding)


def pow2_scale(max_abs: float, qmax: int) -> float:
    """The smallest power of two s with max_abs / s <= qmax (no clipping); 1 for zeros."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 1.0
    return float(2.0 ** math.ceil(math.log2(max_abs / qmax)))


def ensure_qonnx_opset(model: ModelWrapper) -> None:
    if not any(o.domain == QONNX_DOMAIN for o in model.model.opset_import):
        model.model.opset_import.append(helper.make_opsetid(QONNX_DOMAIN, 1))


def find_nodes(graph: onnx.GraphProto, pred: Callable[[onnx.NodeProto], bool]) -> Iterable[tuple[onnx.NodeProto, str]]:
    """Nodes matching `pred` in the graph and its subgraphs, with the owner's name."""
    for node in graph.node:
        if pred(node):
            yield node, graph.name
        for attr in subgraph_attrs(node):
            yield from find_nodes(attr.g, pred)


def scan_state_count(node: onnx.NodeProto) -> int | None:
    """How many loop-carried states a Scan has (None for other ops)."""
    if node.op_type != "Scan":
        return None
    k = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
    return len(node.input) - k


# ---------------------------------------------------------------------------------------
# the pass


@register
class Quantize(Pass):
    """Post-training quantization of a float model after `unroll-gru`: inserts qonnx `Quant`
    nodes (per tensor, ROUND, zero point 0, every scale a power of two) where the QAT
    model of `flimcc.models.quant_gru` quantizes:

    - each float graph input: unsigned if its calibrated minimum is >= 0, else signed;
      scale 2^ceil(log2(max|x| / qmax)) from calibration data (peak-normalised decays give
      2^-(b-1) unsigned: 1.0 is representable). `calibration=simulator` draws `samples`
      decays from the FLI simulator for an input shaped (batch, T, 1), `inputs` reads the
      arrays of `calibration-data` (.npy/.npz), `none` assumes the unit range [0, 1];
    - each constant weight of a MatMul / Gemm (main graph and Scan bodies): signed, narrow,
      `bits`, scale from max|W|; one Quant per consumer (FINN refuses weight quantizers
      that fork);
    - each bias (a constant added to a matrix product, Gemm's constant C, a constant scan
      input of a Scan such as a decoder's folded zero-input projection): signed, narrow,
      `bias-bits`, scale from max|b|;
    - Sigmoid / HardSigmoid outputs: unsigned on the 2^-(b-1) grid (1.0 exactly); Tanh
      outputs and products of two streams that feed a matrix product (r * h): signed on
      the 2^-(b-1) grid;
    - every loop-carried state a Scan body returns (the new hidden state): signed 2^-(b-1),
      b = `state-bits` (default: `bits`, as QAT). The state grid dominates the PTQ error of
      a float-trained model (at 8 bits it accrues over the T steps); a wider state
      (state-bits=10..12) recovers most of it, at the cost of wider recurrent-product inputs.

    Graph outputs stay float (the Dense head is an accumulator). Contract `approximate`:
    the pipeline reports the error against the golden float run.
    """

    name = "quantize"
    summary = "post-training quantization: power-of-two QONNX Quant nodes as the QAT GRU has them"
    contract = Contract.APPROXIMATE
    options = (
        Option("bits", int, 8, "bits of weights and activations (2..16)"),
        Option("bias-bits", int, 16, "bits of biases (2..24)"),
        Option("calibration", str, "simulator", "range of the graph inputs: simulated FLI decays, "
               "the arrays of calibration-data, or the unit range [0, 1]", choices=("simulator", "inputs", "none")),
        Option("calibration-data", str, "", ".npy/.npz file of calibration inputs (calibration=inputs)"),
        Option("samples", int, 256, "simulated decays drawn for calibration=simulator"),
        Option("state-bits", int, 0, "bits of the loop-carried state (0: as bits); QAT uses bits"),
        Option("acc-bits", int, 16, "bits of the requantized recurrent accumulator h R_h + Rb_h of a "
               "reset-after GRU body before it is multiplied by r (0: no requantization)"),
    )

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for opt, (low, high) in (("bits", BITS_RANGE), ("bias-bits", BIAS_BITS_RANGE), ("state-bits", BITS_RANGE)):
            value = self.effective_state_bits if opt == "state-bits" else getattr(self, opt.replace("-", "_"))
            if not low <= value <= high:
                raise UnsupportedError(f"pass 'quantize': option '{opt}' is {value}; it must be in {low}..{high}")
        if self.acc_bits and not max(self.bits, BITS_RANGE[0]) <= self.acc_bits <= BIAS_BITS_RANGE[1]:
            raise UnsupportedError(f"pass 'quantize': option 'acc-bits' is {self.acc_bits}; it must be 0 (no "
                                   f"requantization) or in {self.bits}..{BIAS_BITS_RANGE[1]}")
        if self.samples < 1:
            raise UnsupportedError(f"pass 'quantize': option 'samples' is {self.samples}; it must be >= 1")
        if self.calibration == "inputs" and not self.calibration_data:
            raise UnsupportedError("pass 'quantize': calibration=inputs needs calibration-data=FILE (.npy or .npz)")

    @property
    def effective_state_bits(self) -> int:
        return self.state_bits or self.bits

    # -- entry ----------------------------------------------------------------------------

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        self._refuse(model)
        self.counts: collections.Counter = collections.Counter()
        self.input_ranges: dict[str, dict] = {}
        ensure_qonnx_opset(model)
        self._quantize_inputs(model)
        model = map_graphs(model, self._quantize_graph)
        # Shapes of the main graph (qonnx's inference knows Quant); bodies keep theirs.
        model = model.transform(InferShapes(), cleanup=False)
        notes = []
        if not any(True for _ in find_nodes(model.graph, lambda n: n.op_type == "Scan")) and \
                any(True for _ in find_nodes(model.graph, lambda n: n.op_type in (*SIGMOIDS, "Tanh"))):
            notes.append("no Scan: recurrent states are recognised as Scan body outputs only (after "
                         "unroll-gru{mode=full} they stay float)")
        self.metrics = {
            "bits": self.bits,
            "bias_bits": self.bias_bits,
            "state_bits": self.effective_state_bits,
            "acc_bits": self.acc_bits,
            "calibration": self.calibration,
            "inputs": self.input_ranges,
            "quantizers": dict(sorted(self.counts.items())),
            "quantizers_total": sum(self.counts.values()),
            **({"notes": notes} if notes else {}),
        }
        return model, False

    def _refuse(self, model: ModelWrapper) -> None:
        for node, _ in find_nodes(model.graph, lambda n: n.op_type == "GRU"):
            raise UnsupportedError(f"quantize: node '{node.name}' is a GRU; run unroll-gru before quantize")
        for node, _ in find_nodes(model.graph, lambda n: n.op_type in QUANT_OPS and n.domain.startswith("qonnx")):
            raise UnsupportedError(f"quantize: node '{node.name}' is a {node.op_type}: the model is already "
                                   "quantized; quantize takes a float model")

    # -- graph inputs ---------------------------------------------------------------------

    def _calibration_arrays(self, model: ModelWrapper, names: list[str]) -> dict[str, np.ndarray]:
        if self.calibration == "inputs":
            from flimcc.verify import load_inputs

            return load_inputs(self.calibration_data, model)
        if self.calibration == "none":
            return {}
        from flimcc.models.fli_data import SimConfig, simulate

        arrays = {}
        for name in names:
            shape = model.get_tensor_shape(name)
            if shape is not None and len(shape) == 3 and shape[2] == 1 and shape[1] and shape[1] >= 2:
                try:
                    arrays[name] = simulate(self.samples, SimConfig(n_gates=int(shape[1])), seed=0).x
                except ValueError as e:  # a gate count the simulator's defaults do not fit
                    self.input_ranges[name] = {"note": f"simulator: {e}; unit range used"}
        return arrays

    def _quantize_inputs(self, model: ModelWrapper) -> None:
        graph = model.graph
        inits = initializers(graph)
        names = [i.name for i in graph.input if i.name not in inits
                 and i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                      onnx.TensorProto.DOUBLE)]
        data = self._calibration_arrays(model, names)
        scope = NameScope(graph)
        for name in names:
            if name in data:
                x = np.asarray(data[name], np.float64)
                if not np.all(np.isfinite(x)):
                    raise FlimccError(f"quantize: calibration data of input '{name}' is not finite")
                low, high = float(x.min()), float(np.abs(x).max())
                source = self.calibration
            else:
                low, high, source = 0.0, 1.0, "unit range"
            signed = low < 0
            qmax = 2 ** (self.bits - 1) - 1 if signed else 2 ** self.bits - 1
            scale = pow2_scale(high, qmax)
            if high == 0:
                scale = 2.0 ** -(self.bits - 1)
            node = make_quant(graph, scope, f"{name}/quant", name, scale, self.bits, signed, False)
            rename_input(graph, name, node.output[0])
            graph.node.insert(0, node)
            self.counts["input"] += 1
            self.input_ranges[name] = {**self.input_ranges.get(name, {}), "min": low, "max_abs": high,
                                       "signed": signed, "scale": scale, "source": source}

    # -- one graph --------------------------------------------------------------------------

    def _quantize_graph(self, model: ModelWrapper, owner: onnx.NodeProto | None) -> ModelWrapper:
        graph = model.graph
        scope = NameScope(graph)
        self._weights_and_biases(graph, scope)
        self._activations(graph, scope, owner)
        return model

    def _constant(self, graph: onnx.GraphProto, name: str) -> np.ndarray | None:
        t = initializers(graph).get(name)
        if t is None or t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            return None
        return numpy_helper.to_array(t)

    def _weights_and_biases(self, graph: onnx.GraphProto, scope: NameScope) -> None:
        wq = 2 ** (self.bits - 1) - 1
        bq = 2 ** (self.bias_bits - 1) - 1
        prods = producers(graph)
        plan: list[tuple[onnx.NodeProto, int, str]] = []  # (consumer, input index, kind)
        for node in graph.node:
            if node.op_type == "MatMul":
                weight = 1 if self._constant(graph, node.input[1]) is not None else 0
                if self._constant(graph, node.input[weight]) is not None:
                    plan.append((node, weight, "weight"))
            elif node.op_type == "Gemm":
                for k, kind in ((1, "weight"), (0, "weight"), (2, "bias")):
                    if k < len(node.input) and node.input[k] and self._constant(graph, node.input[k]) is not None:
                        if k == 0 and any(p[0] is node and p[2] == "weight" for p in plan):
                            continue  # a constant A next to a constant B: quantize B only
                        plan.append((node, k, kind))
            elif node.op_type == "Add" and len(node.input) == 2:
                const = [k for k in (0, 1) if self._constant(graph, node.input[k]) is not None]
                if len(const) == 1 and _behind_product(node.input[1 - const[0]], prods, graph):
                    plan.append((node, const[0], "bias"))
            elif node.op_type == "Scan":
                for k in range(scan_state_count(node), len(node.input)):
                    if node.input[k] and self._constant(graph, node.input[k]) is not None:
                        plan.append((node, k, "bias"))
        taken: set[str] = set()
        for node, k, kind in plan:
            name = node.input[k]
            value = self._constant(graph, name)
            if name in taken:
                # Each quantizer reads its own copy: qonnx's cleanup would otherwise copy a
                # shared initializer under a random name.
                name = scope(name)
                graph.initializer.append(numpy_helper.from_array(value, name))
            taken.add(name)
            bits, qmax = (self.bits, wq) if kind == "weight" else (self.bias_bits, bq)
            scale = pow2_scale(float(np.max(np.abs(value), initial=0.0)), qmax)
            quant = make_quant(graph, scope, f"{name}/quant", name, scale, bits, True, True)
            node.input[k] = quant.output[0]
            _insert_before(graph, node, quant)
            self.counts[kind] += 1

    def _accumulators(self, graph: onnx.GraphProto, prods: dict[str, onnx.NodeProto], states: set[str],
                      plan: dict[str, tuple[str, bool]]) -> dict[str, float]:
        """The reset-after product r * (h R_h + Rb_h) of a `linear_before_reset` GRU body: a
        two-stream Mul with a Gemm / MatMul (constant weight) on one side. Its accumulator is
        requantized to `acc-bits` (signed, power-of-two scale from the static bound
        max_j sum_i |R[i, j]| * max|h| + max|Rb|, so it never clips), else the product's
        integers exceed float32's exact range. Returns tensor -> scale; adds to `plan`."""
        scales: dict[str, float] = {}
        for node in graph.node:
            if node.op_type != "Mul" or len(node.input) != 2 \
                    or any(self._constant(graph, n) is not None for n in node.input):
                continue
            for tensor in node.input:
                prod = prods.get(tensor)
                if prod is None or prod.op_type not in PRODUCTS or tensor in plan:
                    continue
                bound = self._product_bound(graph, prod, prods, states)
                if bound is None:
                    continue
                scales[tensor] = pow2_scale(bound, 2 ** (self.acc_bits - 1) - 1)
                plan[tensor] = ("accumulator", True)
        return scales

    def _product_bound(self, graph: onnx.GraphProto, prod: onnx.NodeProto, prods: dict[str, onnx.NodeProto],
                       states: set[str]) -> float | None:
        attrs = {a.name: helper.get_attribute_value(a) for a in prod.attribute}
        if attrs.get("transA", 0) or attrs.get("transB", 0):
            return None
        x, w = prod.input[0], prod.input[1]
        weight = _quantized_constant(graph, w, prods)
        if weight is None or weight.ndim != 2:
            return None
        if x in states:
            x_max = 1.0  # a loop-carried state: signed on the 2^-(b-1) grid, |h| <= 1
        elif prods.get(x) is not None and prods[x].op_type == "Quant":
            x_max = _quant_bound(graph, prods[x])
            if x_max is None:
                return None
        else:
            return None
        bound = float(np.max(np.abs(weight).sum(axis=0))) * x_max
        if len(prod.input) > 2 and prod.input[2]:
            bias = _quantized_constant(graph, prod.input[2], prods)
            if bias is None:
                return None
            bound = bound * float(attrs.get("alpha", 1.0)) + float(np.max(np.abs(bias))) * float(attrs.get("beta", 1.0))
        return bound

    def _activations(self, graph: onnx.GraphProto, scope: NameScope, owner: onnx.NodeProto | None) -> None:
        b = self.bits
        readers = consumers(graph)
        top_outputs = {o.name for o in graph.output} if owner is None else set()
        plan: dict[str, tuple[str, bool]] = {}  # tensor -> (kind, signed)
        for node in graph.node:
            out = node.output[0] if node.output else ""
            if not out or out in top_outputs:
                continue
            if node.op_type in SIGMOIDS:
                plan[out] = ("sigmoid", False)
            elif node.op_type == "Tanh":
                plan[out] = ("tanh", True)
            elif node.op_type == "Mul" and len(node.input) == 2 \
                    and all(self._constant(graph, n) is None for n in node.input) \
                    and any(c.op_type in PRODUCTS and k in (0, 1) for c, k in readers.get(out, [])):
                plan[out] = ("product", True)
        states: set[str] = set()
        if owner is not None and owner.op_type == "Scan":
            states = {i.name for i in list(graph.input)[:scan_state_count(owner)]}
            for out in list(graph.output)[:scan_state_count(owner)]:
                plan.setdefault(out.name, ("state", True))
        prods = producers(graph)
        acc_scales = self._accumulators(graph, prods, states, plan) if self.acc_bits else {}
        for tensor, (kind, signed) in plan.items():
            bits = self.effective_state_bits if kind == "state" else self.acc_bits if kind == "accumulator" else b
            scale = acc_scales[tensor] if kind == "accumulator" else 2.0 ** -(bits - 1)
            # The accumulator requantization is flimcc's own choice, so it rounds down (half
            # an LSB of a 16-bit accumulator): a power-of-two requantization is then FINN's
            # multiply-add Requant (floor(x s + b + 1/2), exact for b = -1/2) in hardware
            # instead of 2^acc-bits - 1 thresholds; no bias makes Requant round half to even.
            rounding = "FLOOR" if kind == "accumulator" else "ROUND"
            quant = make_quant(graph, scope, f"{tensor}/quant", tensor, scale, bits, signed, False, rounding=rounding)
            rename_input(graph, tensor, quant.output[0])
            if tensor in prods:
                _insert_after(graph, prods[tensor], quant)
            else:  # a graph input returned as a state
                graph.node.insert(0, quant)
            self.counts[kind] += 1


def _quant_bound(graph: onnx.GraphProto, node: onnx.NodeProto) -> float | None:
    """max |Quant(x)| of a Quant with constant parameters (None otherwise)."""
    inits = initializers(graph)
    try:
        scale, bits = (float(np.max(numpy_helper.to_array(inits[n]))) for n in (node.input[1], node.input[3]))
    except (KeyError, IndexError):
        return None
    signed = next((a.i for a in node.attribute if a.name == "signed"), 1)
    return scale * (2 ** (int(bits) - 1) if signed else 2 ** int(bits) - 1)


def _quantized_constant(graph: onnx.GraphProto, name: str, prods: dict[str, onnx.NodeProto]) -> np.ndarray | None:
    """The dequantized value of a constant behind its Quant (as quantize inserted it)."""
    inits = initializers(graph)
    node = prods.get(name)
    if node is not None and node.op_type == "Quant":
        if not all(n in inits for n in node.input):
            return None
        x, scale, _, bits = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input)
        narrow = next((a.i for a in node.attribute if a.name == "narrow"), 0)
        qmax = 2 ** (int(bits) - 1) - 1
        return np.clip(np.round(x / scale), -qmax + (0 if narrow else -1), qmax) * scale
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float64)
    return None


def _behind_product(name: str, prods: dict[str, onnx.NodeProto], graph: onnx.GraphProto, depth: int = 8) -> bool:
    """Whether `name` is the output of a MatMul / Gemm, directly or through shape ops,
    rescales and requantizers (the other operand of a bias Add)."""
    inits = {t.name for t in graph.initializer}
    for _ in range(depth):
        node = prods.get(name)
        if node is None:
            return False
        if node.op_type in PRODUCTS:
            return True
        if node.op_type not in _BIAS_CHAIN:
            return False
        dynamic = [n for n in node.input if n and n not in inits and prods.get(n) is not None]
        if len(dynamic) != 1:
            return False
        name = dynamic[0]
    return False


def _insert_before(graph: onnx.GraphProto, node: onnx.NodeProto, new: onnx.NodeProto) -> None:
    index = next(i for i, n in enumerate(graph.node) if n is node)
    graph.node.insert(index, new)


def _insert_after(graph: onnx.GraphProto, node: onnx.NodeProto, new: onnx.NodeProto) -> None:
    index = next(i for i, n in enumerate(graph.node) if n is node)
    graph.node.insert(index + 1, new)

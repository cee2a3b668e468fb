"""`fold-weights`: quantized constant weights become integer initializers, the scale moves
behind the matrix product, and constants are propagated (the decoder's zero input
projection disappears). Also `macs_per_sample`, the MAC count other passes and reports use.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.quant import quant as int_quant
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from flimcc.errors import UnsupportedError
from flimcc.execute import run_ort
from flimcc.ir import opset as model_opset
from flimcc.passbase import Contract, Option, Pass, register

from .quantize import (
    QUANT_OPS, NameScope, consumers, free_names, initializers, map_graphs, producers, scan_state_count,
    subgraph_attrs,
)

#: Ops never evaluated at compile time by this pass: quantizers (they are what it lowers),
#: Shape (it would pin the batch size into the graph), ops with subgraphs.
_NO_FOLD = (*QUANT_OPS, "Shape", "Scan", "Loop", "If")
#: Elementwise ops through which a constant that is the same along its leading (batch,
#: time) axes stays so, and which broadcast such a constant back to the full shape.
_ELEMENTWISE = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}
_SHAPE_PRESERVING = (*QUANT_OPS, "Identity", "Cast", "Relu", "Sigmoid", "Tanh", "Neg", "Abs")


# ---------------------------------------------------------------------------------------
# MACs


def macs_per_sample(model: ModelWrapper) -> int:
    """Multiply-accumulates of one sample (one pixel) through the model: for every MatMul
    and Gemm, K * N per output row times its rows per sample; a Scan body counts once per
    step, times the Scan's trip count (the length of its scan inputs along their axis).

    Rows per sample: in the main graph, the product of the output's leading dims divided
    by the batch (axis 0 of the first graph input, flimcc's batch convention); in a Scan
    body, the leading dims after axis 0 (a body's axis 0 is the batch, as unroll-gru writes
    it). Unknown dimensions count as 1. An ONNX GRU / LSTM / RNN node counts what it
    multiplies: T x directions x gates*H x (inputs + H), so unroll-gru keeps the count."""
    names = [i.name for i in model.graph.input if i.name not in initializers(model.graph)]
    batch = 1
    if names:
        shape = model.get_tensor_shape(names[0])
        if shape and isinstance(shape[0], int) and shape[0] > 0:
            batch = shape[0]
    return int(_graph_macs(model, per_sample_divisor=batch, body=False))


def _shape(model: ModelWrapper, name: str) -> list[int] | None:
    """Static shape (0 for an unknown dim); through shape-preserving ops (a weight's Quant)
    where the tensor itself has none recorded."""
    for _ in range(8):
        init = model.get_initializer(name)
        if init is not None:
            return list(init.shape)
        shape = model.get_tensor_shape(name)
        if shape is not None:
            return [d if isinstance(d, int) and d > 0 else 0 for d in shape]
        node = model.find_producer(name)
        if node is None or node.op_type not in _SHAPE_PRESERVING or not node.input:
            return None
        name = node.input[0]
    return None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _graph_macs(model: ModelWrapper, per_sample_divisor: int, body: bool) -> float:
    total = 0.0
    opsets = list(model.model.opset_import)
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            total += _product_macs(model, node, per_sample_divisor, body)
        elif node.op_type in ("GRU", "LSTM", "RNN") and node.domain in ("", "ai.onnx"):
            total += _rnn_macs(model, node)
        for attr in subgraph_attrs(node):
            sub = ModelWrapper(qonnx_make_model(attr.g, opset_imports=opsets))
            total += _graph_macs(sub, 1, body=True) * _trip_count(model, node)
    return total


def _product_macs(model: ModelWrapper, node: onnx.NodeProto, divisor: int, body: bool) -> float:
    a, b = _shape(model, node.input[0]), _shape(model, node.input[1])
    out = _shape(model, node.output[0])
    if node.op_type == "Gemm":
        k = (a[0] if _attr(node, "transA", 0) else a[1]) if a and len(a) == 2 else 0
        n = (b[0] if _attr(node, "transB", 0) else b[1]) if b and len(b) == 2 else 0
        k = k or ((b[1] if _attr(node, "transB", 0) else b[0]) if b and len(b) == 2 else 0)
        rows_shape = out[:-1] if out else ([a[1] if _attr(node, "transA", 0) else a[0]] if a else [])
    else:
        k = (a[-1] if a else 0) or (b[-2] if b and len(b) >= 2 else 0)
        n = b[-1] if b and len(b) >= 2 else (1 if b else 0)
        rows_shape = out[:-1] if out and len(out) >= 1 and b and len(b) >= 2 else (a[:-1] if a else [])
    if body:
        rows_shape = rows_shape[1:]
    rows = math.prod(d if d > 0 else 1 for d in rows_shape)
    if not body:
        rows = rows / divisor
    return rows * k * n


def _rnn_macs(model: ModelWrapper, node: onnx.NodeProto) -> int:
    """An ONNX recurrent node, per sample: every step multiplies the input by W and the
    state by R, for each direction (what unroll-gru turns into MatMuls and a Scan)."""
    x, w, r = (_shape(model, n) for n in node.input[:3])
    if not x or len(x) != 3 or not w or not r:
        raise UnsupportedError(f"MAC count: node '{node.name}': the shapes of X, W and R are unknown")
    steps = x[1] if _attr(node, "layout", 0) else x[0]
    directions, gates, inputs = w
    return steps * directions * gates * (inputs + r[2])


def _trip_count(model: ModelWrapper, node: onnx.NodeProto) -> int:
    if node.op_type == "Scan":
        n_state = scan_state_count(node)
        scans = list(node.input)[n_state:]
        if not scans:
            return 0
        axes = list(_attr(node, "scan_input_axes", [0] * len(scans)))
        shape = _shape(model, scans[0])
        if not shape:
            raise UnsupportedError(f"MAC count: the length of Scan '{node.name}' is unknown (no shape for "
                                   f"'{scans[0]}')")
        return shape[axes[0] % len(shape)]
    if node.op_type == "Loop":
        trip = model.get_initializer(node.input[0]) if node.input and node.input[0] else None
        if trip is None:
            raise UnsupportedError(f"MAC count: the trip count of Loop '{node.name}' is not a constant")
        return int(trip)
    return 1  # If: a branch runs once (both branches counted: an upper bound)


# ---------------------------------------------------------------------------------------
# the pass


@register
class FoldWeights(Pass):
    """Lowers quantized constant weights to integers and propagates constants, in the main
    graph and in every Scan body:

    - a `Quant` on a constant weight consumed by MatMul / Gemm becomes an integer-valued
      float32 initializer annotated with its qonnx DataType (INTb / UINTb), and the scale
      moves after the product: MatMul(a, W_int) -> Mul(scale); Gemm(a, Wq, C) becomes
      MatMul(a, W_int) -> Mul(alpha * scale) -> Add(beta * C) (transA becomes a Transpose,
      transB a transposed initializer). Per-output-channel scales become a vector Mul; a
      scale that varies along K, a zero point or a 1-bit quantizer is folded to float
      instead (listed in the metrics). One quantized weight may feed several products:
      each gets its own integer initializer.
    - a `Quant` on any other constant (biases) becomes its dequantized float constant:
      with power-of-two scales a dyadic number the integer lowering takes as it is.
    - constants propagate: nodes whose inputs are all constant are evaluated (qonnx's
      FoldConstants, quantizers and Shape excluded), and a constant that is the same along
      its leading axes, such as MatMul(zeros, W) + b on a decoder's zero input, folds into
      the Scan input it feeds when the body only broadcasts it (Gemm's C, Add, Sub, Mul):
      a (T, 1, H) constant that takes any batch, and the decoder's input projection is gone.
    - `fuse-gates`: matrix products of a Scan body that share their input and whose integer
      weights share one scale (the z and r gates: also h with linear_before_reset) become
      one product and a Split; products whose scales differ stay apart (in the metrics).

    Contract `float` in general (compile-time folding may round differently from the
    fused kernel). On power-of-two quantized weights (what `quantize` and QAT exports
    produce) it is bit-exact: W_int * 2^e is exactly the dequantized weight, and a power
    of two scales every partial sum exactly. Metrics: MACs per sample before and after.
    """

    name = "fold-weights"
    summary = "quantized weights -> integer initializers + scale after the product; fold constants"
    contract = Contract.FLOAT
    options = (
        Option("fuse-gates", bool, False, "fuse a Scan body's products that share input and weight scale"),
    )

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        macs_before = macs_per_sample(model)
        self.stats: dict = collections.defaultdict(list)
        self.counts: collections.Counter = collections.Counter()
        model = map_graphs(model, self._fold_graph)
        model = _finish(model)
        self.metrics = {
            "macs_per_sample_before": macs_before,
            "macs_per_sample_after": macs_per_sample(model),
            **dict(sorted(self.counts.items())),
            **{k: v for k, v in sorted(self.stats.items())},
        }
        return model, False

    def _fold_graph(self, model: ModelWrapper, owner: onnx.NodeProto | None) -> ModelWrapper:
        model = _fold_constants(model)
        self._fold_broadcast_constants(model)
        remove_dead(model.graph)  # what the folded constants replace
        self._lower_weights(model)
        self._fold_constant_quants(model)
        if self.fuse_gates and owner is not None:
            self._fuse_products(model)
        remove_dead(model.graph)
        return model

    # -- constant propagation -------------------------------------------------------------

    def _fold_broadcast_constants(self, model: ModelWrapper) -> None:
        """Propagate constants through quantizers: evaluate (numpy, qonnx's Quant arithmetic)
        every MatMul / Add / Sub / Mul / Quant whose inputs are constant, where a constant is
        an initializer, a Quant of initializers, or a constant-filled tensor whose shape
        depends on the input (ConstantOfShape of a Shape: the decoder's zeros), held as a
        representative with every leading axis 1. A result that involves no such tensor
        becomes an initializer; one that does folds into the Scan inputs it feeds, when the
        body only broadcasts them, with the scan axis at full length and the others 1."""
        graph = model.graph
        inits = initializers(graph)
        reps: dict[str, np.ndarray] = {}  # constant along the leading axes, shape unknown there
        consts: dict[str, np.ndarray] = {}  # exact values computed here
        quantized: set[str] = set()  # Quant outputs: left for the weight lowering

        def value(name: str):
            if name in reps:
                return reps[name]
            if name in consts:
                return consts[name]
            return numpy_helper.to_array(inits[name]) if name in inits else None

        for node in graph.node:
            if node.op_type == "ConstantOfShape" and node.input and node.input[0] not in inits:
                shape = model.get_tensor_shape(node.output[0])
                if not shape or not isinstance(shape[-1], int) or shape[-1] <= 0:
                    continue
                fill = _attr(node, "value")
                fill = numpy_helper.to_array(fill) if fill is not None else np.zeros(1, np.float32)
                reps[node.output[0]] = np.full([1] * (len(shape) - 1) + [shape[-1]], fill.reshape(-1)[0], fill.dtype)
                continue
            ins = [value(n) for n in node.input]
            if not node.input or any(v is None for v in ins):
                continue
            plain = all(n in inits for n in node.input)
            if plain and not _is_int_quant(node):
                continue  # fold-constants' work (onnxruntime)
            out = _evaluate(node, ins, graph)
            if out is None:
                continue
            if any(n in reps for n in node.input):
                reps[node.output[0]] = out
            else:
                consts[node.output[0]] = out
                if _is_int_quant(node) and plain:
                    quantized.add(node.output[0])
        readers = consumers(graph)
        outputs = {o.name for o in graph.output}
        prods = producers(graph)
        for name, const in consts.items():
            if name in quantized or name in outputs or not readers.get(name):
                continue
            graph.node.remove(prods[name])
            _drop_value_info(graph, name)
            graph.initializer.append(numpy_helper.from_array(np.asarray(const), name))
            self.stats["constants_folded"].append(name)
        for name, rep in reps.items():
            uses = readers.get(name, [])
            if not uses or name in outputs or prods[name].op_type == "ConstantOfShape":
                continue
            shape = model.get_tensor_shape(name)
            targets = [_scan_broadcast_shape(node, k, rep, shape) for node, k in uses]
            if any(t is None for t in targets) or len({tuple(t) for t in targets}) != 1:
                continue
            folded = np.ascontiguousarray(np.broadcast_to(rep, targets[0])).astype(rep.dtype)
            graph.node.remove(prods[name])
            _drop_value_info(graph, name)
            graph.initializer.append(numpy_helper.from_array(folded, name))
            self.stats["broadcast_constants_folded"].append(name)

    # -- weights ----------------------------------------------------------------------------

    def _lower_weights(self, model: ModelWrapper) -> None:
        graph = model.graph
        names = NameScope(graph)
        readers = consumers(graph)
        outputs = {o.name for o in graph.output}
        for quant in [n for n in graph.node if _is_int_quant(n)]:
            params = _constant_quant_params(model, quant)
            if params is None or quant.output[0] in outputs:
                continue
            for node, k in list(readers.get(quant.output[0], [])):
                if k != 1 or node.op_type not in ("MatMul", "Gemm"):
                    continue
                why = self._lower_product(model, names, quant, params, node)
                if why:
                    self.stats["kept_float"].append(f"{node.name}: {why}")
                else:
                    self.counts["integer_weights"] += 1

    def _lower_product(self, model: ModelWrapper, names: NameScope, quant: onnx.NodeProto, params: dict,
                       node: onnx.NodeProto) -> str | None:
        """Rewrite one product of a quantized weight; returns why not, or None."""
        w, scale, zeropt, bits = params["x"], params["scale"], params["zeropt"], params["bits"]
        if np.any(zeropt != 0):
            return "non-zero zero point"
        if bits != int(bits) or bits < 2:
            return f"bit width {bits:g}"
        gemm = node.op_type == "Gemm"
        trans_b = gemm and _attr(node, "transB", 0)
        if w.ndim != 2:
            return f"weight of rank {w.ndim}"
        try:
            scale_full = np.broadcast_to(scale, w.shape)
        except ValueError:
            return "scale does not broadcast to the weight"
        codes = _codes(w, params)
        if trans_b:
            codes, scale_full = codes.T, scale_full.T
        post = scale_full[0]
        if not np.all(scale_full == post[None, :]):
            return "scale varies along the reduction axis"
        post = np.asarray(post[0] if np.all(post == post[0]) else post, np.float32)
        alpha = float(_attr(node, "alpha", 1.0)) if gemm else 1.0
        beta = float(_attr(node, "beta", 1.0)) if gemm else 1.0
        if alpha != 1.0:
            post = np.asarray(post * np.float32(alpha), np.float32)
        dtype = DataType[("INT" if params["signed"] else "UINT") + str(int(bits))]

        base = node.name
        w_int = names(f"{base}/weight_int")
        graph = model.graph
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(codes), w_int))
        model.set_tensor_datatype(w_int, dtype)
        s_name = names(f"{base}/weight_scale")
        graph.initializer.append(numpy_helper.from_array(post, s_name))
        new: list[onnx.NodeProto] = []
        a = node.input[0]
        if gemm and _attr(node, "transA", 0):
            a = names(f"{base}/transpose_a")
            new.append(helper.make_node("Transpose", [node.input[0]], [a], name=a, perm=[1, 0]))
        c = node.input[2] if gemm and len(node.input) > 2 and node.input[2] else None
        out = node.output[0]
        acc = names(f"{base}/int_acc")
        new.append(helper.make_node("MatMul", [a, w_int], [acc], name=base))
        scaled = out if c is None else names(f"{base}/rescaled")
        new.append(helper.make_node("Mul", [acc, s_name], [scaled], name=names(f"{base}/rescale")))
        if c is not None:
            if beta != 1.0:
                c_init = model.get_initializer(c)
                if c_init is not None:
                    c_beta = names(f"{base}/bias_beta")
                    graph.initializer.append(numpy_helper.from_array((c_init * np.float32(beta)).astype(np.float32), c_beta))
                else:
                    c_beta = names(f"{base}/beta_c")
                    beta_name = names(f"{base}/beta")
                    graph.initializer.append(numpy_helper.from_array(np.array(beta, np.float32), beta_name))
                    new.append(helper.make_node("Mul", [c, beta_name], [c_beta], name=c_beta))
                c = c_beta
            new.append(helper.make_node("Add", [scaled, c], [out], name=names(f"{base}/bias")))
        index = next(i for i, n in enumerate(graph.node) if n is node)
        graph.node.remove(node)
        for offset, n in enumerate(new):
            graph.node.insert(index + offset, n)
        _drop_value_info(graph, out)  # same tensor, but keep no stale entry of a Gemm
        return None

    def _fold_constant_quants(self, model: ModelWrapper) -> None:
        """A Quant whose inputs are all constant (a bias, a weight fed to anything but a
        matrix product) becomes its dequantized value, computed as qonnx executes it."""
        graph = model.graph
        readers = consumers(graph)
        outputs = {o.name for o in graph.output}
        for quant in [n for n in graph.node if _is_int_quant(n)]:
            params = _constant_quant_params(model, quant)
            out = quant.output[0]
            if params is None or out in outputs:
                continue
            if readers.get(out):
                value = int_quant(params["x"], params["scale"], params["zeropt"], params["bitwidth"],
                                  params["signed"], params["narrow"], params["rounding_mode"])
                _drop_value_info(graph, out)
                graph.initializer.append(numpy_helper.from_array(np.asarray(value, params["x"].dtype), out))
                self.counts["constant_quants_folded"] += 1
            graph.node.remove(quant)

    # -- gate fusion ------------------------------------------------------------------------

    def _fuse_products(self, model: ModelWrapper) -> None:
        graph = model.graph
        readers = consumers(graph)
        groups: dict[str, list] = collections.defaultdict(list)
        for node in graph.node:
            if node.op_type != "MatMul" or not node.input[1].endswith("/weight_int"):
                continue
            uses = readers.get(node.output[0], [])
            if len(uses) != 1 or uses[0][0].op_type != "Mul":
                continue
            mul = uses[0][0]
            scale = model.get_initializer(mul.input[1])
            w = model.get_initializer(node.input[1])
            if scale is None or scale.ndim != 0 or w is None:
                continue
            groups[node.input[0]].append((node, mul, w, float(scale), model.get_tensor_datatype(node.input[1])))
        names = NameScope(graph)
        for a, members in groups.items():
            if len(members) < 2:
                continue
            scales = {m[3] for m in members}
            labels = [m[0].name for m in members]
            if len(scales) > 1 or len({m[4] for m in members}) > 1:
                self.stats["not_fused"].append({
                    "products": labels,
                    "why": "weight scales differ: " + ", ".join(f"2^{math.log2(s):g}" for s in [m[3] for m in members]),
                })
                continue
            base = "/".join(labels[0].split("/")[:-1] + ["+".join(lb.split("/")[-1] for lb in labels)])
            w_cat = np.concatenate([m[2] for m in members], axis=1)
            w_name = names(f"{base}/weight_int")
            graph.initializer.append(numpy_helper.from_array(w_cat, w_name))
            model.set_tensor_datatype(w_name, members[0][4])
            s_name = names(f"{base}/weight_scale")
            graph.initializer.append(numpy_helper.from_array(np.array(members[0][3], np.float32), s_name))
            acc, scaled = names(f"{base}/int_acc"), names(f"{base}/rescaled")
            sizes = [m[2].shape[1] for m in members]
            split_outputs = [m[1].output[0] for m in members]
            new = [
                helper.make_node("MatMul", [a, w_name], [acc], name=base),
                helper.make_node("Mul", [acc, s_name], [scaled], name=names(f"{base}/rescale")),
            ]
            if (model_opset(model) or 13) >= 13:
                sizes_name = names(f"{base}/split_sizes")
                graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), sizes_name))
                new.append(helper.make_node("Split", [scaled, sizes_name], split_outputs, name=names(f"{base}/split"),
                                            axis=-1))
            else:
                new.append(helper.make_node("Split", [scaled], split_outputs, name=names(f"{base}/split"),
                                            axis=-1, split=sizes))
            index = min(i for i, n in enumerate(graph.node) if any(n is m[0] for m in members))
            for m in members:
                graph.node.remove(m[0])
                graph.node.remove(m[1])
                _drop_value_info(graph, m[0].output[0])
            for offset, n in enumerate(new):
                graph.node.insert(index + offset, n)
            self.stats["fused"].append(labels)
        sort_graph(graph)


# ---------------------------------------------------------------------------------------
# helpers


def _is_int_quant(node: onnx.NodeProto) -> bool:
    return node.op_type in ("Quant", "IntQuant") and node.domain.startswith("qonnx")


def _constant_quant_params(model: ModelWrapper, quant: onnx.NodeProto) -> dict | None:
    values = [model.get_initializer(n) if n else None for n in quant.input[:4]]
    if len(values) < 4 or any(v is None for v in values):
        return None
    x, scale, zeropt, bitwidth = values
    return {
        "x": x, "scale": scale, "zeropt": zeropt, "bitwidth": bitwidth, "bits": float(np.asarray(bitwidth).reshape(-1)[0]),
        "signed": int(_attr(quant, "signed", 1)), "narrow": int(_attr(quant, "narrow", 0)),
        "rounding_mode": _text(_attr(quant, "rounding_mode", "ROUND")),
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _codes(w: np.ndarray, params: dict) -> np.ndarray:
    """The integer codes of a quantized weight, with exactly qonnx's arithmetic: its own
    output divided by the scale (exact for power-of-two scales; rounded to integers)."""
    deq = int_quant(w, params["scale"], params["zeropt"], params["bitwidth"], params["signed"], params["narrow"],
                    params["rounding_mode"])
    return np.round(np.asarray(deq, np.float64) / np.asarray(params["scale"], np.float64)).astype(np.float32)


def _evaluate(node: onnx.NodeProto, ins: list[np.ndarray], graph: onnx.GraphProto) -> np.ndarray | None:
    """Node output on representatives (leading axes 1); None where not evaluated here."""
    with np.errstate(all="ignore"):
        if node.op_type in _ELEMENTWISE and len(ins) == 2:
            return _ELEMENTWISE[node.op_type](ins[0], ins[1]).astype(np.result_type(ins[0], ins[1]))
        if node.op_type == "MatMul" and ins[1].ndim == 2 and ins[0].ndim >= 2:
            return np.matmul(ins[0], ins[1]).astype(ins[0].dtype)
        if _is_int_quant(node) and len(ins) == 4:
            mode = _text(_attr(node, "rounding_mode", "ROUND"))
            return np.asarray(int_quant(ins[0], ins[1], ins[2], ins[3], int(_attr(node, "signed", 1)),
                                        int(_attr(node, "narrow", 0)), mode), ins[0].dtype)
    return None


def _scan_broadcast_shape(node: onnx.NodeProto, k: int, rep: np.ndarray, shape) -> list[int] | None:
    """The shape a representative takes as input k of `node`: the full scan length on the
    scan axis, 1 on the other leading axes; None unless `node` is a Scan taking it as a
    scan input that its body only broadcasts."""
    n_state = scan_state_count(node)
    if n_state is None or k < n_state or not shape or len(shape) != rep.ndim:
        return None
    j = k - n_state
    axes = list(_attr(node, "scan_input_axes", [0] * (len(node.input) - n_state)))
    axis = axes[j] % rep.ndim
    steps = shape[axis]
    if not isinstance(steps, int) or steps <= 0 or axis == rep.ndim - 1 or rep.shape[axis] not in (1, steps):
        return None
    body = _attr(node, "body")
    if not _broadcast_only(body, body.input[k].name):
        return None
    target = list(rep.shape)
    target[axis] = steps
    return target


def _broadcast_only(graph: onnx.GraphProto, name: str) -> bool:
    """Whether every use of `name` in the body broadcasts it to the batch: Gemm's C, an
    elementwise Add/Sub/Mul with a tensor that is not a constant, or a Quant of it whose
    output is used so."""
    if name in {o.name for o in graph.output}:
        return False
    inits = {t.name for t in graph.initializer}
    for node in graph.node:
        for k, inp in enumerate(node.input):
            if inp != name:
                continue
            if node.op_type == "Gemm" and k == 2:
                continue
            if node.op_type in _ELEMENTWISE and any(o not in inits and o != name for o in node.input):
                continue
            if _is_int_quant(node) and k == 0 and _broadcast_only(graph, node.output[0]):
                continue
            return False
        for attr in subgraph_attrs(node):
            if name in free_names(attr.g):
                return False
    return True


def _fold_constants(model: ModelWrapper) -> ModelWrapper:
    """Replace every standard node whose inputs are all initializers by its value, run on
    onnxruntime (qonnx's FoldConstants, but quantizers, Shape and ops with subgraphs are
    kept, and it works on Scan bodies whose inputs have no static batch)."""
    graph = model.graph
    opsets = list(model.model.opset_import)
    changed = True
    while changed:
        changed = False
        inits = initializers(graph)
        for node in list(graph.node):
            if node.op_type in _NO_FOLD or node.domain not in ("", "ai.onnx") or subgraph_attrs(node):
                continue
            if not all(not n or n in inits for n in node.input):
                continue
            feeds = {n: numpy_helper.to_array(inits[n]) for n in node.input if n}
            inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                      for n, v in feeds.items()]
            outputs = [onnx.ValueInfoProto(name=n) for n in node.output if n]
            proto = qonnx_make_model(helper.make_graph([node], "fold", inputs, outputs), opset_imports=opsets)
            values = run_ort(proto, feeds)
            graph.node.remove(node)
            for name in node.output:
                if name:
                    _drop_value_info(graph, name)
                    graph.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))
            changed = True
            break
    return model


def _drop_value_info(graph: onnx.GraphProto, name: str) -> None:
    for vi in list(graph.value_info):
        if vi.name == name:
            graph.value_info.remove(vi)


def remove_dead(graph: onnx.GraphProto) -> None:
    """Remove nodes nothing reads (the graph's outputs are read), then initializers,
    value_info and datatype annotations of tensors that are gone."""
    while True:
        readers = consumers(graph)
        outputs = {o.name for o in graph.output}
        dead = [n for n in graph.node if all(not o or (o not in readers and o not in outputs) for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    readers = consumers(graph)
    outputs = {o.name for o in graph.output}
    live = set(readers) | outputs | {i.name for i in graph.input} | {o for n in graph.node for o in n.output}
    for t in list(graph.initializer):
        if t.name not in readers and t.name not in outputs:
            graph.initializer.remove(t)
            for vi in [i for i in graph.input if i.name == t.name]:  # an IR < 4 style input
                graph.input.remove(vi)
    for vi in list(graph.value_info):
        if vi.name not in live:
            graph.value_info.remove(vi)
    for qa in list(graph.quantization_annotation):
        if qa.tensor_name not in live:
            graph.quantization_annotation.remove(qa)


def sort_graph(graph: onnx.GraphProto) -> None:
    """Topological order, stable (nodes keep their relative order where they may)."""
    produced = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    deps = []
    for i, n in enumerate(graph.node):
        reads = list(n.input)
        for attr in subgraph_attrs(n):
            reads += list(free_names(attr.g))
        deps.append({produced[r] for r in reads if r in produced and produced[r] != i})
    order, done = [], set()
    remaining = list(range(len(graph.node)))
    while remaining:
        ready = [i for i in remaining if deps[i] <= done]
        if not ready:
            raise UnsupportedError(f"graph '{graph.name}' has a cycle")
        i = ready[0]
        order.append(i)
        done.add(i)
        remaining.remove(i)
    nodes = [onnx.NodeProto.FromString(graph.node[i].SerializeToString()) for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _relax_body_batch(graph: onnx.GraphProto) -> None:
    """Axis 0 of a Scan body's tensors is the batch: unknown again after shape inference
    wrote the outer batch into it (so the body takes any batch, as unroll-gru leaves it)."""
    for node in graph.node:
        for attr in subgraph_attrs(node):
            if node.op_type == "Scan":
                for vi in [*attr.g.input, *attr.g.output, *attr.g.value_info]:
                    dims = vi.type.tensor_type.shape.dim
                    if dims:
                        dims[0].Clear()
            _relax_body_batch(attr.g)


def _sort_all(graph: onnx.GraphProto) -> None:
    sort_graph(graph)
    for node in graph.node:
        for attr in subgraph_attrs(node):
            _sort_all(attr.g)


def _finish(model: ModelWrapper) -> ModelWrapper:
    _sort_all(model.graph)
    model = model.transform(InferShapes(), cleanup=False)
    _relax_body_batch(model.graph)
    return model

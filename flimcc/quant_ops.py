"""QONNX Quant nodes as standard ONNX arithmetic, so onnxruntime runs a QONNX graph whole.

Why: the golden run of a QONNX model is qonnx's semantics. Executed node by node (qonnx's
Quant in numpy between onnxruntime calls), Brevitas' unrolled QAT export of Seq2SeqLite
(5,291 nodes, ~1,000 Quant) takes ~45 s; qonnx's own QuantToQCDQ is quadratic in the graph
(over 15 minutes there) and exact only for 2..8-bit ROUND quantizers. Here each Quant
becomes the same float32 operations qonnx's ``int_quant`` performs, in the same order:

    y = x / scale;  y = y + zeropt;  y = clip(y, min_int, max_int);  y = round(y)
    out = (y - zeropt) * scale

Each step is one IEEE float32 operation in both numpy and onnxruntime (division and
multiplication are correctly rounded, Clip and Round/Floor/Ceil are exact, ONNX ``Round``
rounds half to even as ``np.round`` does), so the result is bit-identical for every input,
any scale (not only powers of two) and any bit width: tests/test_quant_ops.py checks it
against qonnx on ties, saturation and random values. A Quant this cannot express (a
dynamic bit width, 1-bit signed, a rounding mode other than ROUND/FLOOR/CEIL) is left as
it is. The rewrite is linear in the graph's size.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.intquant import max_int, min_int
from qonnx.transformation.base import Transformation

QUANT_OPS = ("Quant", "IntQuant")
ROUNDING = {"ROUND": "Round", "FLOOR": "Floor", "CEIL": "Ceil"}


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _expand(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], new_inits: list) -> list[onnx.NodeProto] | None:
    """The standard-op chain equal to one Quant node, or None where it is not expressible."""
    if node.op_type not in QUANT_OPS or not (node.domain.startswith("qonnx") or node.domain == "finn.custom_op.general"):
        return None
    x, scale, zeropt, bits = (list(node.input) + ["", "", "", ""])[:4]
    if bits not in inits:
        return None
    bitwidth = float(numpy_helper.to_array(inits[bits]))
    signed, narrow = int(_attr(node, "signed", 1)), int(_attr(node, "narrow", 0))
    mode = _attr(node, "rounding_mode", "ROUND")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode.upper() not in ROUNDING or (bitwidth == 1 and signed) or bitwidth != int(bitwidth):
        return None
    out, tag = node.output[0], f"{node.output[0]}/std"
    lo, hi = f"{tag}/min", f"{tag}/max"
    new_inits += [numpy_helper.from_array(np.array(min_int(signed, narrow, int(bitwidth)), np.float32), lo),
                  numpy_helper.from_array(np.array(max_int(signed, narrow, int(bitwidth)), np.float32), hi)]
    name = node.name or out
    return [
        helper.make_node("Div", [x, scale], [f"{tag}/div"], name=f"{name}/div"),
        helper.make_node("Add", [f"{tag}/div", zeropt], [f"{tag}/add"], name=f"{name}/add"),
        helper.make_node("Clip", [f"{tag}/add", lo, hi], [f"{tag}/clip"], name=f"{name}/clip"),
        helper.make_node(ROUNDING[mode.upper()], [f"{tag}/clip"], [f"{tag}/int"], name=f"{name}/round"),
        helper.make_node("Sub", [f"{tag}/int", zeropt], [f"{tag}/sub"], name=f"{name}/sub"),
        helper.make_node("Mul", [f"{tag}/sub", scale], [out], name=f"{name}/mul"),
    ]


class QuantToStandardOps(Transformation):
    """Rewrite every expressible QONNX Quant into Div, Add, Clip, Round, Sub, Mul: the exact
    float32 operations of qonnx's ``int_quant`` (see the module docstring). The outputs
    keep their names and datatype annotations; nothing else changes."""

    def apply(self, model: ModelWrapper):
        graph = model.graph
        opset = next((o.version for o in model.model.opset_import if o.domain in ("", "ai.onnx")), 17)
        if opset < 11:  # Clip with bound inputs and Round need opset 11
            return model, False
        inits = {t.name: t for t in graph.initializer}
        new_inits: list[onnx.TensorProto] = []
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            nodes += _expand(node, inits, new_inits) or [node]
        if len(nodes) != len(graph.node):
            del graph.node[:]
            graph.node.extend(nodes)
            graph.initializer.extend(new_inits)
            if not any(o.domain in ("", "ai.onnx") for o in model.model.opset_import):
                model.model.opset_import.append(helper.make_opsetid("", 17))
        return model, False

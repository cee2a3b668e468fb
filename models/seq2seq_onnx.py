"""Seq2Seq / Seq2SeqLite as ONNX graphs built directly (no PyTorch), with given or seeded
random weights: the shape of graph `torch.onnx.export` produces for these models.

x (B, T, 1) batch-first -> Transpose -> encoder GRU stack -> final states start the decoder
GRU stack, whose input is zeros (ConstantOfShape of the input's shape, so the graph takes
any batch) -> Squeeze -> Transpose -> MatMul + Add (Dense(3) at every step) -> y (B, T, 3).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _gru_weights(rng: np.random.Generator, inputs: int, hidden: int) -> dict[str, np.ndarray]:
    # PyTorch's GRU init: U(-1/sqrt(H), 1/sqrt(H)); ONNX layout W (1, 3H, I), R (1, 3H, H), B (1, 6H).
    k = 1.0 / np.sqrt(hidden)
    return {
        "W": rng.uniform(-k, k, (1, 3 * hidden, inputs)).astype(np.float32),
        "R": rng.uniform(-k, k, (1, 3 * hidden, hidden)).astype(np.float32),
        "B": rng.uniform(-k, k, (1, 6 * hidden)).astype(np.float32),
    }


def build_seq2seq(hidden: int = 32, layers: int = 1, steps: int = 135, linear_before_reset: int = 0,
                  seed: int = 0, name: str = "seq2seqlite") -> onnx.ModelProto:
    """Seq2SeqLite is (32, 1, linear_before_reset=0); Seq2Seq is (128, 2, linear_before_reset=1)."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = [
        helper.make_node("Transpose", ["x"], ["x_tbf"], name="/Transpose", perm=[1, 0, 2]),
        helper.make_node("Shape", ["x_tbf"], ["x_shape"], name="/Shape"),
        helper.make_node("ConstantOfShape", ["x_shape"], ["dec_in"], name="/decoder/zeros",
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))

    def gru(prefix: str, inp: str, inputs: int, initial_h: str) -> tuple[str, str]:
        w = _gru_weights(rng, inputs, hidden)
        for key, value in w.items():
            inits.append(numpy_helper.from_array(value, f"{prefix}.{key}"))
        y, y_h = f"{prefix}/Y", f"{prefix}/Y_h"
        nodes.append(helper.make_node(
            "GRU", [inp, f"{prefix}.W", f"{prefix}.R", f"{prefix}.B", "", initial_h], [y, y_h],
            name=f"{prefix}/GRU", hidden_size=hidden, linear_before_reset=linear_before_reset))
        seq = f"{prefix}/Y_seq"
        nodes.append(helper.make_node("Squeeze", [y, "axis1"], [seq], name=f"{prefix}/Squeeze"))
        return seq, y_h

    seq, states = "x_tbf", []
    for layer in range(layers):
        seq, y_h = gru(f"/encoder/gru{layer}", seq, 1 if layer == 0 else hidden, "")
        states.append(y_h)
    seq = "dec_in"
    for layer in range(layers):
        seq, _ = gru(f"/decoder/gru{layer}", seq, 1 if layer == 0 else hidden, states[layer])
    k = 1.0 / np.sqrt(hidden)
    inits.append(numpy_helper.from_array(rng.uniform(-k, k, (hidden, 3)).astype(np.float32), "/dense.weight"))
    inits.append(numpy_helper.from_array(rng.uniform(-k, k, 3).astype(np.float32), "/dense.bias"))
    nodes += [
        helper.make_node("Transpose", [seq], ["dec_bf"], name="/decoder/Transpose", perm=[1, 0, 2]),
        helper.make_node("MatMul", ["dec_bf", "/dense.weight"], ["dense_mm"], name="/dense/MatMul"),
        helper.make_node("Add", ["dense_mm", "/dense.bias"], ["y"], name="/dense/Add"),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", steps, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", steps, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="flimcc")
    onnx.checker.check_model(model)
    return model

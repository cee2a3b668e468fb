"""flimcc.quant_ops: QONNX Quant as standard ONNX ops is bit-identical to qonnx's execution."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.basic import qonnx_make_model

from flimcc.execute import is_standard_graph, run_ort
from flimcc.quant_ops import QuantToStandardOps
from flimcc.verify import golden_model

Q = "qonnx.custom_op.general"


def _quant_model(scale, zeropt, bits, signed, narrow, mode, shape=(64, 4)) -> ModelWrapper:
    node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], name="q", domain=Q, signed=signed, narrow=narrow,
                            rounding_mode=mode)
    inits = [numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
             numpy_helper.from_array(np.asarray(zeropt, np.float32), "z"),
             numpy_helper.from_array(np.asarray(bits, np.float32), "b")]
    g = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], inits)
    return ModelWrapper(qonnx_make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(Q, 1)]))


def _probe(scale, shape=(64, 4), seed=0) -> np.ndarray:
    """Exact ties (k + 1/2 of each channel's grid), random values, and far out of range."""
    rng = np.random.default_rng(seed)
    s = np.broadcast_to(np.asarray(scale, np.float64), (shape[1],))
    x = rng.normal(0, 40, size=shape) * s
    x[:32] = (np.arange(-16, 16) + 0.5)[:, None] * s
    x[-4:] *= 1000
    return x.astype(np.float32)


@pytest.mark.parametrize("scale", [0.125, 0.1, [0.5, 0.03125, 0.3, 2.0]])
@pytest.mark.parametrize("bits,signed,narrow", [(8, 1, 0), (8, 1, 1), (4, 1, 0), (8, 0, 0), (3, 0, 1), (16, 1, 0)])
@pytest.mark.parametrize("mode", ["ROUND", "FLOOR", "CEIL"])
def test_bit_identical_to_qonnx(scale, bits, signed, narrow, mode):
    zeropt = 0.0 if signed else 1.0
    model = _quant_model(scale, zeropt, bits, signed, narrow, mode)
    x = _probe(scale)
    want = execute_onnx(model, {"x": x})["y"]
    std = model.transform(QuantToStandardOps())
    assert is_standard_graph(std.graph)
    got = run_ort(std.model, {"x": x})["y"]
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))  # every bit, signed zeros too


def test_inexpressible_quant_is_left():
    model = _quant_model(0.5, 0.0, 1, 1, 0, "ROUND")  # 1-bit signed: qonnx's bipolar special case
    std = model.transform(QuantToStandardOps())
    assert [n.op_type for n in std.graph.node] == ["Quant"]
    model = _quant_model(0.5, 0.0, 8, 1, 0, "ROUND_TO_ZERO")
    assert [n.op_type for n in model.transform(QuantToStandardOps()).graph.node] == ["Quant"]


def test_zoo_qat_golden_runs_on_onnxruntime_and_equals_qonnx():
    """The 5,000-node unrolled QAT export: whole on onnxruntime, equal to qonnx bit for bit."""
    import flimcc
    from flimcc.execute import execute
    from flimcc.models import zoo

    model = flimcc.load(zoo.path("seq2seqlite-int8"))
    t0 = time.perf_counter()
    gm, how = golden_model(model)
    assert how.startswith("onnxruntime") and is_standard_graph(gm.graph), how
    x = np.random.default_rng(0).random((4, *model.get_tensor_shape(model.graph.input[0].name)[1:]), np.float32)
    name = model.graph.input[0].name
    got = run_ort(gm.model, {name: x})
    seconds = time.perf_counter() - t0
    want = execute(model, {name: x})  # node by node: qonnx's Quant in numpy
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    print(f"golden on onnxruntime: {seconds:.1f} s")

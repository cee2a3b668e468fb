"""The Scan executor agrees with onnxruntime on standard bodies and runs custom-op bodies."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import flimcc
from flimcc.execute import run_ort
from flimcc.scan_executor import run_scan


def _scan_model(quant_body: bool, reverse: int = 0, out_axis: int = 0):
    """state s (B, 4); scan input x (T, B, 4): s' = tanh(s @ W + x_t) [quantised]; outputs s_T and all s."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(np.float32) * 0.5
    body_nodes = [
        helper.make_node("MatMul", ["s_in", "W"], ["sw"]),
        helper.make_node("Add", ["sw", "x_t"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["act"]),
    ]
    if quant_body:
        body_nodes.append(helper.make_node("Quant", ["act", "scale", "zero", "bits"], ["s_out"],
                                           domain="qonnx.custom_op.general", signed=1, narrow=0, rounding_mode="ROUND"))
    else:
        body_nodes.append(helper.make_node("Identity", ["act"], ["s_out"]))
    body_nodes.append(helper.make_node("Identity", ["s_out"], ["y_t"]))
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(np.array(1 / 8, np.float32), "scale"),
         numpy_helper.from_array(np.array(0, np.float32), "zero"),
         numpy_helper.from_array(np.array(4, np.float32), "bits")],
    )
    scan = helper.make_node("Scan", ["s0", "x"], ["s_final", "ys"], name="scan", body=body, num_scan_inputs=1,
                            scan_input_directions=[reverse], scan_output_axes=[out_axis])
    out_shape = [6, 3, 4] if out_axis == 0 else [3, 6, 4]
    g = helper.make_graph([scan], "g",
                          [helper.make_tensor_value_info("s0", TensorProto.FLOAT, [3, 4]),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 3, 4])],
                          [helper.make_tensor_value_info("s_final", TensorProto.FLOAT, [3, 4]),
                           helper.make_tensor_value_info("ys", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(w, "W")])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("qonnx.custom_op.general", 1)] if quant_body else [])
    return helper.make_model(g, opset_imports=opsets), w


@pytest.mark.parametrize("reverse, out_axis", [(0, 0), (1, 0), (0, 1)])
def test_matches_onnxruntime_on_a_standard_body(reverse, out_axis):
    proto, _ = _scan_model(False, reverse, out_axis)
    rng = np.random.default_rng(1)
    feeds = {"s0": rng.standard_normal((3, 4)).astype(np.float32), "x": rng.standard_normal((6, 3, 4)).astype(np.float32)}
    expected = run_ort(proto, feeds)
    model = flimcc.ir.ModelWrapper(proto)
    context = dict(feeds, W=model.get_initializer("W"))
    run_scan(model.graph.node[0], context, model)
    for name in ("s_final", "ys"):
        np.testing.assert_allclose(context[name], expected[name], rtol=1e-6, atol=1e-6)


def test_runs_a_body_with_qonnx_quant_against_numpy():
    proto, w = _scan_model(True)
    model = flimcc.load(proto)
    rng = np.random.default_rng(2)
    s0 = rng.standard_normal((3, 4)).astype(np.float32)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    out = flimcc.execute(model, {"s0": s0, "x": x})
    s, ys = s0, []
    for t in range(6):
        s = np.clip(np.round(np.tanh(s @ w + x[t]) * 8), -8, 7) / 8
        ys.append(s)
    np.testing.assert_allclose(out["s_final"], s, atol=1e-6)
    np.testing.assert_allclose(out["ys"], np.stack(ys), atol=1e-6)

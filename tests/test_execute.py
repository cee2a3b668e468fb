"""flimcc.execute: ORT for standard graphs, node by node for custom ops, pluggable executors."""

import numpy as np
import pytest
from conftest import mlp, quant_mlp
from onnx import TensorProto, helper

import flimcc
from flimcc.errors import UnsupportedError
from flimcc.execute import register_node_executor


def test_standard_graph_any_batch_matches_numpy():
    model = flimcc.load(mlp())
    x = np.random.default_rng(0).standard_normal((7, 8)).astype(np.float32)
    w1, b1, w2 = (model.get_initializer(n) for n in ("w1", "b1", "w2"))
    ref = 1 / (1 + np.exp(-(np.maximum(x @ w1 + b1, 0) @ w2)))
    np.testing.assert_allclose(flimcc.execute(model, x)["y"], ref, rtol=1e-5, atol=1e-6)


def test_return_context_gives_intermediates_on_the_node_path():
    model = flimcc.load(quant_mlp())
    ctx = flimcc.execute(model, np.zeros((2, 8), np.float32), return_context=True)
    assert {"xq", "wq", "acc", "y"} <= set(ctx)


def test_quant_model_runs_custom_ops_in_python():
    model = flimcc.load(quant_mlp(bits=4))
    x = np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)
    y = flimcc.execute(model, x)["y"]
    # 4-bit signed, scale 1/8: every output is a multiple of 1/8 in [-1, 7/8]
    assert np.all(np.isclose(y * 8, np.round(y * 8))) and y.min() >= -1 and y.max() <= 0.875


def test_registered_executor_takes_precedence():
    node = helper.make_node("Double", ["x"], ["y"], name="dbl", domain="flimcc.test")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("flimcc.test", 1)])
    model = flimcc.ir.ModelWrapper(proto)
    with pytest.raises(UnsupportedError, match="node 'dbl': no executor for op flimcc.test.Double"):
        flimcc.execute(model, np.ones((1, 3), np.float32))

    @register_node_executor("Double", domain="flimcc.test")
    def _double(n, context, m):
        context[n.output[0]] = 2 * context[n.input[0]]

    np.testing.assert_array_equal(flimcc.execute(model, np.ones((1, 3), np.float32))["y"], 2)


def test_missing_input_is_named():
    with pytest.raises(flimcc.FlimccError, match=r"missing input\(s\) \['x'\]"):
        flimcc.execute(flimcc.load(mlp()), {"z": np.ones((1, 8), np.float32)})

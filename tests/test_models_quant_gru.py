"""QuantGRU computes the ONNX GRU: exactly with its quantizers off, closely at high bit
width, and on power-of-two grids at the deployed 8 bits."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from flimcc.models.quant_gru import HardSigmoid, QuantGRU, QuantSeq2SeqLite
from gru_models import gru_step

SIGMOIDS = {"logistic": lambda v: 1 / (1 + np.exp(-v)), "hard": lambda v: np.clip(0.5 * v + 0.5, 0, 1)}
TANHS = {"tanh": np.tanh, "hard": lambda v: np.clip(v, -1, 1)}


def onnx_gru_reference(x, W, R, B, h0, linear_before_reset, f, g=np.tanh):
    """The ONNX GRU operator's equations in float64, batch-first x (N, T, I)."""
    x, h = np.asarray(x, np.float64), np.asarray(h0, np.float64)
    states = []
    for t in range(x.shape[1]):
        h = gru_step(x[:, t], h, W, R, B, linear_before_reset, f, g)
        states.append(h)
    return np.stack(states, axis=1)


def _run(gru, x, h0):
    with torch.no_grad():
        y, h_last = gru(torch.from_numpy(x), torch.from_numpy(h0))
    assert torch.equal(y[:, -1], h_last)
    return y.numpy()


def _inputs(seed=0, n=4, steps=9, inputs=3, hidden=5):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, steps, inputs)).astype(np.float32)
    h0 = rng.uniform(-0.9, 0.9, (n, hidden)).astype(np.float32)
    return x, h0


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("sigmoid, tanh", [("logistic", "tanh"), ("hard", "tanh"), ("hard", "hard")])
def test_float_mode_is_the_onnx_gru(lbr, sigmoid, tanh):
    torch.manual_seed(1)
    gru = QuantGRU(3, 5, linear_before_reset=lbr, bits=None, sigmoid=sigmoid, tanh=tanh).eval()
    x, h0 = _inputs()
    x *= 3  # drive the hard activations into their clipped ranges too
    w = {k: v[0].numpy() for k, v in gru.onnx_weights().items()}
    expected = onnx_gru_reference(x, w["W"], w["R"], w["B"], h0, lbr, SIGMOIDS[sigmoid], TANHS[tanh])
    np.testing.assert_allclose(_run(gru, x, h0), expected, atol=2e-6)


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("sigmoid", ["logistic", "hard"])
def test_float_mode_matches_onnxruntimes_gru_node(lbr, sigmoid):
    torch.manual_seed(2)
    gru = QuantGRU(3, 5, linear_before_reset=lbr, bits=None, sigmoid=sigmoid).eval()
    x, h0 = _inputs(seed=1)
    acts = {"activations": ["Sigmoid", "Tanh"]}
    if sigmoid == "hard":  # QKeras' hard sigmoid is ONNX HardSigmoid(alpha=0.5, beta=0.5)
        acts = {"activations": ["HardSigmoid", "Tanh"], "activation_alpha": [0.5], "activation_beta": [0.5]}
    node = helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=5,
                            linear_before_reset=lbr, **acts)
    inits = [numpy_helper.from_array(v.numpy(), k) for k, v in gru.onnx_weights().items()]
    graph = helper.make_graph([node], "gru", [helper.make_tensor_value_info("x", 1, [9, 4, 3]),
                                              helper.make_tensor_value_info("h0", 1, [1, 4, 5])],
                              [helper.make_tensor_value_info("Y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (Y,) = sess.run(["Y"], {"x": x.transpose(1, 0, 2), "h0": h0[None]})  # ONNX is time-major
    np.testing.assert_allclose(_run(gru, x, h0), Y[:, 0].transpose(1, 0, 2), atol=1e-6)


@pytest.mark.parametrize("lbr", [0, 1])
def test_sixteen_bits_is_close_to_float(lbr):
    torch.manual_seed(3)
    quant = QuantGRU(3, 5, linear_before_reset=lbr, bits=16).eval()
    flt = QuantGRU(3, 5, linear_before_reset=lbr, bits=None).eval()
    flt.load_state_dict(quant.state_dict(), strict=False)
    x, h0 = _inputs(seed=2, steps=20)
    np.testing.assert_allclose(_run(quant, x, h0), _run(flt, x, h0), atol=1e-3)


def _is_power_of_two(scale: torch.Tensor) -> bool:
    exponent = torch.log2(scale.detach())
    return bool(torch.all(exponent == torch.round(exponent)))


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_states_and_weights_are_on_power_of_two_grids(bits):
    torch.manual_seed(4)
    gru = QuantGRU(1, 8, bits=bits).eval()
    x, h0 = _inputs(seed=3, inputs=1, hidden=8)
    codes = _run(gru, np.round(x * 64) / 64, h0) * 2 ** (bits - 1)  # the state grid is 2^-(b-1)
    assert np.array_equal(codes, np.round(codes))
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    for layer in (gru.input, gru.recurrent):
        qw = layer.quant_weight()
        assert _is_power_of_two(qw.scale) and int(qw.bit_width) == bits
    assert _is_power_of_two(gru.input.quant_bias().scale)


def test_gates_reach_exactly_one_and_zero():
    # The gate grid holds 1.0: a saturated update gate keeps the state unchanged.
    gru = QuantGRU(1, 4, bits=4, sigmoid="hard").eval()
    with torch.no_grad():
        gates = gru.gate(torch.tensor([-10.0, -0.5, 0.0, 0.5, 10.0]))
    assert gates.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_hard_sigmoid_is_qkeras():
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(HardSigmoid()(x), torch.clamp(0.5 * x + 0.5, 0, 1))


def test_model_quantizes_its_input_on_the_unsigned_grid():
    model = QuantSeq2SeqLite(bits=4).eval()
    q = model.input_quant(torch.tensor([0.0, 0.3, 1.0, 1.2]))
    assert q.tolist() == [0.0, 0.25, 1.0, 1.25]


@pytest.mark.parametrize("kwargs, message", [
    ({"linear_before_reset": 2}, "linear_before_reset"), ({"sigmoid": "relu"}, "sigmoid"), ({"tanh": "relu"}, "tanh"),
    ({"bits": 1}, "bits"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantGRU(1, 4, **kwargs)


def test_a_wider_state_keeps_weights_and_gates_at_bits():
    # 4-bit weights and gates, an 8-bit state: the state lands on the 2^-7 grid (and uses
    # it: codes that the 4-bit grid 2^-3 could not hold), the weights on 4 bits.
    torch.manual_seed(4)
    gru = QuantGRU(1, 8, bits=4, sigmoid="hard", tanh="hard", state_bits=8).eval()
    x, h0 = _inputs(seed=3, inputs=1, hidden=8)
    codes = _run(gru, np.round(x * 64) / 64, h0) * 2 ** 7
    assert np.array_equal(codes, np.round(codes)) and codes.min() >= -128 and codes.max() <= 127
    assert not np.array_equal(codes / 16, np.round(codes / 16))
    assert int(gru.recurrent.quant_weight().bit_width) == 4 and int(gru.state_quant.act_quant.bit_width()) == 8
    assert QuantGRU(1, 8, bits=4).state_bits == 4 and QuantGRU(1, 8, bits=None, state_bits=8).state_bits is None


@pytest.mark.parametrize("state_bits", [3, 17])
def test_state_bits_outside_bits_to_16_are_refused(state_bits):
    with pytest.raises(ValueError, match="state_bits must be in 4..16"):
        QuantGRU(1, 4, bits=4, state_bits=state_bits)


def test_w4a8_keeps_weights_at_4_bits_and_the_rest_at_act_bits():
    # bits=4, act_bits=8: weights on 4 bits; input, gates, candidate and biases on 8; the
    # state follows act_bits unless state_bits says otherwise.
    torch.manual_seed(4)
    model = QuantSeq2SeqLite(bits=4, act_bits=8, sigmoid="hard", tanh="hard").eval()
    gru = model.encoder
    assert (model.act_bits, model.state_bits) == (8, 8)
    assert int(gru.recurrent.quant_weight().bit_width) == 4 and int(model.dense.quant_weight().bit_width) == 4
    assert int(gru.input.quant_bias().bit_width) == 8 and int(model.dense.quant_bias().bit_width) == 8
    with torch.no_grad():
        gates = gru.gate(torch.tensor([0.01, 0.5 + 2 ** -8]))
        assert gates.tolist() == [0.5078125, 0.75]  # the 2^-7 grid, where 4 bits would give 0.5, 0.75
        assert model.input_quant(torch.tensor([0.3])).item() == round(0.3 * 128) / 128
    assert QuantSeq2SeqLite(bits=4).act_bits == 4 and QuantSeq2SeqLite(bits=None, act_bits=8).act_bits is None
    with pytest.raises(ValueError, match="act_bits must be in 4..16"):
        QuantGRU(1, 4, bits=4, act_bits=3)
    with pytest.raises(ValueError, match="state_bits must be in 8..16"):
        QuantGRU(1, 4, bits=4, act_bits=8, state_bits=6)

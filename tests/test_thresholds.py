"""Threshold construction against exhaustive integer inputs, ties included, and against
qonnx's own Quant and MultiThreshold implementations."""

import numpy as np
import pytest
from qonnx.custom_op.general.multithreshold import multithreshold
from qonnx.custom_op.general.quant import quant

from flimcc.errors import UnsupportedError
from flimcc.thresholds import ACTIVATIONS, QuantSpec, activation_thresholds, apply_thresholds, level_range

ACC = (-3000, 3000)
A = np.arange(ACC[0], ACC[1] + 1)


def reference(act, q: QuantSpec, sigma, beta, dtype=np.float64):
    pre = (np.asarray(sigma, dtype)[:, None] * A.astype(dtype) + np.asarray(beta, dtype)[:, None]).astype(dtype)
    return q.quantize(ACTIVATIONS[act](pre).astype(dtype)).astype(np.int64)  # (C, len(A))


CASES = [(act, bits, signed, narrow) for act in ("sigmoid", "tanh") for bits in (4, 8)
         for signed in (False, True) for narrow in (False, True)]


@pytest.mark.parametrize("act, bits, signed, narrow", CASES)
def test_exhaustive_sigmoid_and_tanh(act, bits, signed, narrow):
    # Output scale covering f's range with these levels, as Brevitas would choose it.
    qmin, qmax = level_range(bits, signed, narrow)
    q = QuantSpec(1.0 / max(abs(qmin), qmax), bits, signed, narrow)
    sigma = np.array([2.0**-8, 0.0137, 0.003])  # dyadic and not
    beta = np.array([0.0, -0.41, 1.3])
    thr = activation_thresholds(act, q, ACC, sigma, beta)
    assert thr.shape == (3, qmax - qmin)
    assert np.all(np.diff(thr, axis=1) >= 0)
    got = apply_thresholds(A[None, :].T, thr, qmin).T  # (C, len(A))
    np.testing.assert_array_equal(got, reference(act, q, sigma, beta))


@pytest.mark.parametrize("bits, signed, narrow", [(4, False, False), (8, False, False), (8, True, True), (4, True, False)])
def test_ties_of_clipped_linear_activations_are_exact(bits, signed, narrow):
    """With dyadic sigma, hard sigmoid and hard tanh hit f(x)/s = q - 1/2 exactly, where
    half-to-even and a plain >= differ; the search puts those thresholds right."""
    qmin, qmax = level_range(bits, signed, narrow)
    q = QuantSpec(2.0 ** -(bits - 1 if signed else bits), bits, signed, narrow)
    sigma, beta = np.array([2.0**-9]), np.array([0.0])
    for act in ("hard_sigmoid", "hard_tanh", "identity"):
        pre = sigma[0] * A
        ties = np.sum(np.isclose(np.abs(ACTIVATIONS[act](pre) / q.scale) % 1, 0.5))
        assert ties > 0  # the test really exercises ties
        thr = activation_thresholds(act, q, ACC, sigma, beta)
        np.testing.assert_array_equal(apply_thresholds(A[:, None], thr, qmin).T, reference(act, q, sigma, beta))


def test_matches_qonnx_quant_and_multithreshold():
    q = QuantSpec(1 / 15, 4, False)
    sigma, beta = 0.01, -0.2
    thr = activation_thresholds("sigmoid", q, ACC, sigma, beta).astype(np.float32)
    acc = A.astype(np.float32)[None, :]  # (N=1, C=len(A))? use channel-broadcast: one threshold row
    mt = multithreshold(acc.T, thr)  # (len(A), 1): counts
    pre = (sigma * A + beta)[:, None]
    expected = quant(1 / (1 + np.exp(-pre)), np.array(1 / 15), np.array(0.0), np.array(4.0), 0, 0, "ROUND") * 15
    np.testing.assert_array_equal(mt, np.round(expected))


def test_worked_sigmoid_thresholds_from_the_reference():
    """reference/finn-dialect.md §10.1: sigmoid -> UINT4, s = 1/15, t = -3.3673 ... 3.3673."""
    worked = [-3.3673, -2.1972, -1.6094, -1.1896, -0.8473, -0.5465, -0.2683, 0, 0.2683, 0.5465, 0.8473,
              1.1896, 1.6094, 2.1972, 3.3673]
    sigma = 1e-4
    thr = activation_thresholds("sigmoid", QuantSpec(1 / 15, 4, False), (-100000, 100000), sigma)
    np.testing.assert_allclose(thr[0] * sigma, worked, atol=1e-4)


def test_unreached_levels_are_never_counted_and_float32_option():
    q = QuantSpec(1 / 127, 8, True, True)  # sigmoid > 0, so the negative levels are always reached
    thr = activation_thresholds("sigmoid", q, (-50, 50), 0.01)
    qmin, _ = q.levels
    assert np.all(thr[0, : -qmin] == -50)  # always counted
    assert thr[0, -1] == 51  # level 127 needs sigmoid(0.5) >= 126.5/127: never in range
    f32 = activation_thresholds("sigmoid", q, (-50, 50), 0.01, dtype=np.float32)
    assert f32.shape == thr.shape


def test_negative_scale_is_refused():
    with pytest.raises(UnsupportedError, match="positive"):
        activation_thresholds("tanh", QuantSpec(1 / 7, 4, True, True), ACC, -0.1)


def test_absorb_clip_hand_worked():
    """T = [-3, 0, 2, 5], clip to [-1, 3], inputs in [-8, 7]: -3 <= lo is always passed
    (-> -8, the lowest input), 5 > hi is never passed (-> 8, one past the highest), 0 and 2
    stay."""
    from flimcc.thresholds import absorb_clip

    t = np.array([[-3.0, 0.0, 2.0, 5.0]], np.float32)
    assert absorb_clip(t, -1, 3, -8, 7).tolist() == [[-8.0, 0.0, 2.0, 8.0]]


@pytest.mark.parametrize("lo,hi", [(-1, 3), (0, 127), (-200, 200), (5, 5)])
def test_absorb_clip_is_exact_over_the_input_range(lo, hi):
    from flimcc.thresholds import absorb_clip

    rng = np.random.default_rng(lo + 1000 * hi)
    t = np.sort(rng.integers(-140, 140, size=(3, 9)).astype(np.float32), axis=1)
    x = np.arange(-128, 128, dtype=np.float32)[:, None].repeat(3, axis=1)
    want = apply_thresholds(np.clip(x, lo, hi), t, 0)
    np.testing.assert_array_equal(apply_thresholds(x, absorb_clip(t, lo, hi, -128, 127), 0), want)


def test_absorb_add_per_channel_and_scalar():
    from flimcc.thresholds import absorb_add

    t = np.array([[-2.0, 1.0, 4.0]], np.float32)  # one shared row, two channels' addends
    b = np.array([3.0, -1.0])
    x = np.arange(-10, 11, dtype=np.float32)[:, None].repeat(2, axis=1)
    np.testing.assert_array_equal(apply_thresholds(x, absorb_add(t, b), 0),
                                  apply_thresholds(x + b, np.repeat(t, 2, axis=0), 0))
    assert absorb_add(t, np.array(2.0)).tolist() == [[-4.0, -1.0, 2.0]]

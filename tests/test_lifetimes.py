"""Tests of lifetime extraction and accuracy metrics (flimcc.models.lifetimes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flimcc.models.fli_data import SimConfig, simulate
from flimcc.models.lifetimes import (
    SequenceMetrics,
    evaluate,
    extract_lifetimes,
    lifetime_metrics,
    sequence_metrics,
)


def curves(short: np.ndarray, long: np.ndarray) -> np.ndarray:
    """(N, T, 3) [full, short, long] from (N, T) components."""
    short, long = np.atleast_2d(short), np.atleast_2d(long)
    return np.stack([short + long, short, long], axis=-1)


def test_three_point_trapezoid_by_hand():
    y = curves(np.array([1.0, 0.5, 0.25]), np.array([2.0, 1.0, 0.0]))
    tau1, tau2, f = extract_lifetimes(y, dt=0.1)[0]
    # 0.1 * (1/2 + 0.5 + 0.25/2) / 1 and 0.1 * (2/2 + 1 + 0/2) / 2
    assert tau1 == pytest.approx(0.1125, rel=1e-12)
    assert tau2 == pytest.approx(0.1, rel=1e-12)
    assert f == pytest.approx(1 / 3, rel=1e-12)


def test_mono_exponential_with_a_fine_grid_returns_tau():
    dt = 1e-3
    t = np.arange(20001) * dt  # 20 ns: the tail beyond is e^-20 of the area
    y = curves(0.7 * np.exp(-t / 1.0), 0.3 * np.exp(-t / 0.5))
    tau1, tau2, f = extract_lifetimes(y, dt=dt)[0]
    # Trapezoid error is dt^2 / (12 tau) relative, ~1e-7 here.
    assert tau1 == pytest.approx(1.0, rel=1e-6)
    assert tau2 == pytest.approx(0.5, rel=1e-6)
    assert f == pytest.approx(0.7, rel=1e-12)


@pytest.mark.parametrize(
    "tau, bias_percent",
    [(0.05, 25.6), (0.1, 6.7), (0.2, 1.7), (0.5, 0.3), (1.0, 0.1), (2.0, -0.2), (3.0, -1.8)],
)
def test_bias_on_the_seq2seqlite_grid_matches_the_reference_table(tau, bias_percent):
    # fli-data.md section 4: area/amplitude bias on a noise-free 135 x 90 ps grid.
    t = np.arange(135) * 0.09
    y = curves(np.exp(-t / tau), np.zeros_like(t))
    estimate = extract_lifetimes(y)[0, 0]
    assert 100 * (estimate / tau - 1) == pytest.approx(bias_percent, abs=0.05)


@settings(max_examples=50, deadline=None)
@given(
    tau=st.floats(0.01, 10.0),
    amplitude=st.floats(0.01, 5.0),
    n_gates=st.integers(2, 300),
    dt=st.floats(0.005, 0.5),
)
def test_matches_the_closed_form_geometric_sum(tau, amplitude, n_gates, dt):
    r = math.exp(-dt / tau)
    total = (1 - r**n_gates) / (1 - r)  # sum of r^k, k < T
    expected = dt * (total - 0.5 * (1 + r ** (n_gates - 1)))
    t = np.arange(n_gates) * dt
    y = curves(amplitude * np.exp(-t / tau), np.zeros_like(t))
    assert extract_lifetimes(y, dt=dt)[0, 0] == pytest.approx(expected, rel=1e-9)


def test_guards():
    t = np.arange(5) * 0.1
    decay = np.exp(-t)
    y = np.concatenate(
        [
            curves(0.0 * decay, decay),  # no short component
            curves(1e-6 * decay, decay),  # at the threshold: still treated as absent
            curves(2e-6 * decay, decay),  # above it
            curves(-0.5 * decay, decay),  # a negative decoded amplitude
            curves(0.0 * decay, 0.0 * decay),  # nothing: f falls back to 0.5
            curves(0.5e-6 * decay, 0.5e-6 * decay),  # denominator exactly 1e-6
        ]
    )
    out = extract_lifetimes(y, dt=0.1)
    assert out[0, 0] == 0.0 and out[0, 2] == 0.0 and out[0, 1] > 0
    assert out[1, 0] == 0.0
    assert out[2, 0] == pytest.approx(out[2, 1])
    assert out[3, 0] == 0.0
    np.testing.assert_array_equal(out[4], [0.0, 0.0, 0.5])
    np.testing.assert_array_equal(out[5], [0.0, 0.0, 0.5])


def test_vectorised_over_leading_dimensions():
    y = simulate(24, SimConfig(photon_range=None), seed=1).y
    flat = extract_lifetimes(y)
    stacked = extract_lifetimes(y.reshape(2, 3, 4, *y.shape[1:]))
    assert stacked.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(stacked.reshape(24, 3), flat)
    np.testing.assert_array_equal(extract_lifetimes(y[5]), flat[5])


def test_recovers_the_simulated_labels():
    d = simulate(2000, SimConfig(), seed=2)
    out = extract_lifetimes(d.y, dt=d.config.gate_width)
    bi = (d.frac > 0) & (d.frac < 1)
    np.testing.assert_allclose(out[:, 2], d.frac, rtol=1e-6, atol=1e-7)
    # Within the bias band of the reference table (-1.8 % .. +25.6 %).
    for column, tau in ((0, d.tau1), (1, d.tau2)):
        rel = out[bi, column] / tau[bi] - 1
        assert rel.min() > -0.02 and rel.max() < 0.26
    assert np.all(out[d.frac == 0, 0] == 0.0) and np.all(out[d.frac == 1, 1] == 0.0)


def test_extract_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        extract_lifetimes(np.zeros((4, 10, 2)))
    with pytest.raises(ValueError, match="dt"):
        extract_lifetimes(np.zeros((4, 10, 3)), dt=0.0)


def test_perfect_prediction_scores_perfectly():
    d = simulate(500, SimConfig(mono_prob=0.5), seed=3)
    for channel in range(3):
        assert sequence_metrics(d.y, d.y, channel) == SequenceMetrics(rmse=0.0, r2=1.0, l2=0.0)


def test_sequence_metrics_by_hand():
    target = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 2.0]])
    pred = target + np.array([[0.5], [0.0]])
    m = sequence_metrics(pred[:, :, None], target[:, :, None])
    # Sample 0: SS_res 1, SS_tot 5 -> R^2 0.8; sample 1 is exact -> 1.
    assert m.r2 == pytest.approx(0.9)
    assert m.rmse == pytest.approx(math.sqrt(1 / 8))  # pooled over 8 bins
    assert m.l2 == pytest.approx(0.5)  # (1 + 0) / 2


def test_constant_offset():
    d = simulate(100, SimConfig(photon_range=None), seed=4)
    m = sequence_metrics(d.y + 0.1, d.y)
    n_gates = d.config.n_gates
    assert m.rmse == pytest.approx(0.1, rel=1e-5)
    assert m.l2 == pytest.approx(0.1 * math.sqrt(n_gates), rel=1e-5)
    full = d.y[:, :, 0].astype(np.float64)
    ss_tot = ((full - full.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    assert m.r2 == pytest.approx(np.mean(1 - n_gates * 0.01 / ss_tot), rel=1e-5)


def test_r2_of_a_constant_target():
    target = np.zeros((2, 5, 3))
    pred = target.copy()
    pred[1, :, 1] = 0.1
    assert sequence_metrics(pred, target, channel=1).r2 == pytest.approx(0.5)  # (1 + 0) / 2
    assert sequence_metrics(pred, target, channel=2).r2 == 1.0


def test_sequence_metrics_use_the_requested_channel():
    target = np.zeros((1, 4, 3))
    pred = target.copy()
    pred[:, :, 2] = 2.0
    assert sequence_metrics(pred, target, channel=0).rmse == 0.0
    assert sequence_metrics(pred, target, channel=2).rmse == 2.0
    with pytest.raises(ValueError, match="channel"):
        sequence_metrics(pred, target, channel=3)
    with pytest.raises(ValueError, match="same shape"):
        sequence_metrics(pred, target[:, :3])


def test_lifetime_metrics_by_hand():
    true = np.array([[1.0, 2.0, 0.5], [1.0, 1.0, 1.0], [2.0, 2.0, 0.0]])
    pred = np.array([[1.5, 2.0, 0.5], [0.0, 5.0, 1.0], [2.0, 1.0, 0.25]])
    m = lifetime_metrics(pred, true)
    # tau1 over f > 0 (rows 0, 1); tau2 over f < 1 (rows 0, 2); f over all.
    assert m.tau1_mae == pytest.approx(0.75)
    assert m.tau2_mae == pytest.approx(0.5)
    assert m.frac_mae == pytest.approx(0.25 / 3)
    assert m.tau1_rmse == pytest.approx(math.sqrt(1.25 / 2))
    assert m.tau2_rmse == pytest.approx(math.sqrt(0.5))
    assert m.frac_rmse == pytest.approx(math.sqrt(0.0625 / 3))


def test_lifetime_metrics_without_a_component_is_nan():
    true = np.array([[1.0, 1.0, 1.0]])
    m = lifetime_metrics(true, true)
    assert m.tau1_mae == 0.0 and math.isnan(m.tau2_mae) and math.isnan(m.tau2_rmse)
    with pytest.raises(ValueError, match="N, 3"):
        lifetime_metrics(np.zeros((2, 4)), np.zeros((2, 4)))


def test_evaluate_combines_the_metrics():
    d = simulate(300, SimConfig(), seed=5)
    pred = d.y + np.float32(0.01)
    e = evaluate(pred, d.y, d.labels, dt=d.config.gate_width)
    assert e.full == sequence_metrics(pred, d.y, 0)
    assert e.long == sequence_metrics(pred, d.y, 2)
    assert e.lifetimes == lifetime_metrics(extract_lifetimes(pred), d.labels)
    report = e.as_dict()
    assert set(report) == {"full", "short", "long", "lifetimes"}
    assert report["full"]["rmse"] == pytest.approx(0.01, rel=1e-4)
    # Even perfect components carry the extraction bias, never a zero error.
    assert evaluate(d.y, d.y, d.labels).lifetimes.tau1_mae > 0


def test_a_rising_component_is_capped_at_the_window():
    """Five gates of 0.1 ns: the window is 0.4 ns. A flat component has area 0.4 over its
    initial value (the most a non-increasing curve can have); a tiny start followed by a
    rise reads far more under the rule, and is capped; a hand-worked decay is untouched."""
    flat, rising = np.ones(5), np.array([1e-4, 0.1, 0.2, 0.2, 0.2])
    decay = np.array([1.0, 0.5, 0.25, 0.125, 0.0625])
    out = extract_lifetimes(np.concatenate([curves(flat, decay), curves(rising, decay)]), dt=0.1)
    assert out[0, 0] == pytest.approx(0.4) and out[1, 0] == pytest.approx(0.4)
    # trapezoid: 0.1 * (1 + 0.5 + 0.25 + 0.125 + 0.0625 - (1 + 0.0625) / 2) = 0.140625
    assert out[0, 1] == pytest.approx(0.140625)

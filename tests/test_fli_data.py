"""Tests of the FLI data simulator (flimcc.models.fli_data)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flimcc.models.fli_data import INSTRUMENTS, FLIDataset, SimConfig, describe, simulate, span

NOISE_FREE = SimConfig(photon_range=None, jitter_range=(0.0, 0.0))
DELTA = np.array([1.0])


def test_defaults_follow_the_seq2seqlite_setting():
    cfg = SimConfig()
    assert (cfg.n_gates, cfg.gate_width) == (135, 0.09)
    assert cfg.tau1_range == cfg.tau2_range == (0.05, 3.0)
    assert cfg.frac_range == (0.0, 1.0)
    np.testing.assert_allclose(cfg.time_axis[[0, 1, -1]], [0.0, 0.09, 134 * 0.09])


def test_shapes_and_dtypes():
    d = simulate(64, SimConfig(n_gates=40, gate_width=0.25), seed=1)
    assert len(d) == 64
    assert d.x.shape == (64, 40, 1) and d.x.dtype == np.float32
    assert d.y.shape == (64, 40, 3) and d.y.dtype == np.float32
    for name in ("tau1", "tau2", "frac", "photons", "shift", "x_scale"):
        assert getattr(d, name).shape == (64,)
    assert d.labels.shape == (64, 3)
    np.testing.assert_array_equal(d.labels[:, 1], d.tau2)
    assert d.t.shape == (40,) and d.t[1] == 0.25


@pytest.mark.parametrize("config", [SimConfig(), NOISE_FREE], ids=["noisy", "noise-free"])
def test_inputs_are_peak_normalised(config):
    x = simulate(500, config, seed=2).x[:, :, 0]
    np.testing.assert_array_equal(x.max(axis=1), 1.0)
    assert x.min() >= 0.0


def test_targets_are_the_irf_free_components():
    d = simulate(300, SimConfig(), seed=3)
    np.testing.assert_array_equal(d.y[:, :, 0], d.y[:, :, 1] + d.y[:, :, 2])
    t = d.t
    short = d.frac[:, None] * np.exp(-t / d.tau1[:, None])
    long = (1 - d.frac)[:, None] * np.exp(-t / d.tau2[:, None])
    np.testing.assert_allclose(d.y[:, :, 1], short, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.y[:, :, 2], long, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.y[:, 0, 0], 1.0, rtol=1e-6)


def test_label_ranges_and_mono_exponential_share():
    cfg = SimConfig(tau1_range=(0.2, 0.8), tau2_range=(0.8, 1.5), frac_range=(0.1, 0.6), mono_prob=0.3)
    d = simulate(4000, cfg, seed=4)
    assert np.all(d.tau2 >= d.tau1)
    assert np.all((0.2 <= d.tau1) & (d.tau1 <= 1.5)) and np.all((0.2 <= d.tau2) & (d.tau2 <= 1.5))
    mono = d.tau1 == d.tau2
    # Binomial(4000, 0.3): sd ~ 29, so 1200 +- 150 is a > 5 sd band.
    assert abs(mono.sum() - 1200) < 150
    assert set(np.unique(d.frac[mono])) == {0.0, 1.0}
    # A mono curve's lifetime comes from the range of the component present.
    assert np.all(d.tau1[mono & (d.frac == 1)] <= 0.8)
    assert np.all(d.tau2[mono & (d.frac == 0)] >= 0.8)
    bi = ~mono
    assert np.all((0.1 <= d.frac[bi]) & (d.frac[bi] <= 0.6))
    assert np.all(d.tau1[bi] <= 0.8) and np.all(d.tau2[bi] >= 0.8)


def test_overlapping_tau_ranges_are_ordered():
    d = simulate(2000, SimConfig(mono_prob=0.0), seed=5)
    assert np.all(d.tau2 >= d.tau1)
    assert d.tau1.min() >= 0.05 and d.tau2.max() <= 3.0
    # Ordering, not clipping: both labels still span most of the range.
    assert d.tau1.max() > 2.0 and d.tau2.min() < 1.0


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = simulate(200, seed=7), simulate(200, seed=7), simulate(200, seed=8)
    for name in ("x", "y", "tau1", "tau2", "frac", "photons", "shift", "x_scale"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.x, c.x)
    assert not np.array_equal(a.tau1, c.tau1)


def test_delta_irf_returns_the_decay():
    d = simulate(100, NOISE_FREE, seed=9, irf=DELTA)
    # ch0(0) = 1 is the maximum of the decay, so peak normalisation is a no-op.
    np.testing.assert_allclose(d.x[:, :, 0], d.y[:, :, 0], rtol=1e-6, atol=1e-7)


def test_very_narrow_gaussian_at_zero_is_a_delta():
    cfg = SimConfig(photon_range=None, jitter_range=(0.0, 0.0), irf_fwhm=1e-4, irf_center=0.0)
    d = simulate(50, cfg, seed=10)
    np.testing.assert_allclose(d.x[:, :, 0], d.y[:, :, 0], rtol=1e-6, atol=1e-7)


def test_gaussian_convolution_is_linear_and_truncated():
    cfg = SimConfig(photon_range=None, jitter_range=(0.0, 0.0), tau1_range=(2.5, 3.0),
                    tau2_range=(2.5, 3.0), irf_center=2.0, irf_fwhm=0.3)
    d = simulate(20, cfg, seed=11)
    t = d.t
    sigma = 0.3 / (2 * math.sqrt(2 * math.log(2)))
    irf = np.exp(-0.5 * ((t - 2.0) / sigma) ** 2)
    irf /= irf.sum()
    for i in range(len(d)):
        expected = np.convolve(irf, d.y[i, :, 0].astype(np.float64))[: len(t)]
        np.testing.assert_allclose(d.x[i, :, 0], expected / expected.max(), rtol=1e-5, atol=1e-6)
    # A circular convolution would wrap the long tail onto the gates before
    # the IRF (~0.3 of the peak for tau = 3 ns); linear leaves them at 0.
    assert d.x[:, :10, 0].max() < 1e-6


def test_measured_irf_is_normalised():
    irf = np.array([0.0, 1.0, 3.0, 1.0])
    cfg = SimConfig(photon_range=None, jitter_range=(0.0, 0.0))
    a = simulate(30, cfg, seed=12, irf=irf)
    b = simulate(30, cfg, seed=12, irf=7.0 * irf)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_allclose(a.irf.sum(), 1.0)
    np.testing.assert_allclose(a.x_scale, b.x_scale)


def test_integer_jitter_shifts_the_peak():
    cfg = SimConfig(photon_range=None, jitter_range=(3.0, 3.0))
    d = simulate(40, cfg, seed=13, irf=DELTA)
    np.testing.assert_array_equal(d.shift, 3.0)
    assert np.all(d.x[:, :3, 0] < 1e-9)  # zero up to FFT round-off
    np.testing.assert_allclose(d.x[:, 3:, 0], d.y[:, :-3, 0], rtol=1e-6, atol=1e-7)


def test_gaussian_jitter_moves_the_peak_by_the_shift():
    base = dict(photon_range=None, mono_prob=1.0, tau1_range=(2.0, 3.0), tau2_range=(2.0, 3.0))
    still = simulate(200, SimConfig(jitter_range=(0.0, 0.0), **base), seed=14)
    moved = simulate(200, SimConfig(jitter_range=(-2.0, 2.0), **base), seed=14)
    assert set(np.unique(moved.shift)) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    peak = still.x[:, :, 0].argmax(axis=1)
    np.testing.assert_array_equal(moved.x[:, :, 0].argmax(axis=1), peak + moved.shift.astype(int))


def test_sub_gate_jitter_interpolates():
    cfg = SimConfig(photon_range=None, jitter_range=(0.0, 1.0), jitter_integer=False, mono_prob=1.0)
    d = simulate(100, cfg, seed=15, irf=DELTA)
    assert len(np.unique(d.shift)) == 100 and np.all((d.shift >= 0) & (d.shift <= 1))
    # A delta delayed by s in (0, 1) gates is (1 - s) at gate 0 and s at gate 1.
    counts = d.x[:, :, 0] * d.x_scale[:, None]
    np.testing.assert_allclose(counts[:, 0], 1 - d.shift, atol=1e-6)
    decay = d.y[:, :, 0].astype(np.float64)
    np.testing.assert_allclose(counts[:, 1], (1 - d.shift) * decay[:, 1] + d.shift, atol=1e-6)


def test_per_sample_measured_irf():
    n = 6
    irf = np.zeros((n, 10))
    irf[np.arange(n), np.arange(n)] = 1.0
    d = simulate(n, NOISE_FREE, seed=16, irf=irf)
    np.testing.assert_array_equal(d.x[:, :, 0].argmax(axis=1), np.arange(n))
    assert d.irf.shape == (n, 10)


def test_poisson_statistics_at_the_peak():
    cfg = SimConfig(photon_range=(100.0, 100.0), jitter_range=(0.0, 0.0),
                    tau1_range=(3.0, 3.0), tau2_range=(3.0, 3.0))
    d = simulate(4000, cfg, seed=17, irf=DELTA)
    counts = d.x[:, :, 0].astype(np.float64) * d.x_scale[:, None]
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    first = counts[:, 0]  # expected count exactly 100 (the decay's peak)
    # Poisson: mean = variance = 100. Mean sd ~ 0.16, variance sd ~ 2.3.
    assert abs(first.mean() - 100) < 1.0
    assert abs(first.var() - 100) < 12
    assert np.all(d.photons == 100.0)


def test_background_counts():
    cfg = SimConfig(photon_range=(200.0, 200.0), background=2.0, jitter_range=(0.0, 0.0),
                    tau1_range=(0.05, 0.05), tau2_range=(0.05, 0.05))
    d = simulate(2000, cfg, seed=18, irf=DELTA)
    counts = d.x[:, :, 0].astype(np.float64) * d.x_scale[:, None]
    # The 0.05 ns decay is gone after a few gates: the rest is background.
    assert abs(counts[:, 20:].mean() - 2.0) < 0.05
    assert abs(counts[:, 20:].var() - 2.0) < 0.1


def test_high_counts_approach_the_noise_free_curve():
    noisy = simulate(50, SimConfig(photon_range=(1e7, 1e7)), seed=19)
    clean = simulate(50, SimConfig(photon_range=None), seed=19)
    np.testing.assert_array_equal(noisy.tau1, clean.tau1)
    np.testing.assert_allclose(noisy.x, clean.x, atol=2e-3)


def test_npz_round_trip(tmp_path):
    cfg = SimConfig(n_gates=50, photon_range=(10.0, 20.0), background=0.5)
    d = simulate(25, cfg, seed=20)
    path = d.save(tmp_path / "data")
    assert path.name == "data.npz"
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw["config"]))["n_gates"] == 50
    back = FLIDataset.load(path)
    assert back.config == cfg and back.irf is None
    for name in ("x", "y", "tau1", "tau2", "frac", "photons", "shift", "x_scale"):
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))
        assert getattr(back, name).dtype == getattr(d, name).dtype


def test_npz_round_trip_keeps_the_measured_irf(tmp_path):
    d = simulate(5, NOISE_FREE, seed=21, irf=np.array([1.0, 2.0, 1.0]))
    back = FLIDataset.load(d.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(back.irf, [0.25, 0.5, 0.25])
    assert np.all(np.isinf(back.photons))


def test_config_json_round_trip():
    cfg = SimConfig(photon_range=None, jitter_range=[-1, 1], tau1_range=[0.1, 0.5], tau2_range=[1, 2])
    assert cfg.jitter_range == (-1.0, 1.0)
    assert SimConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown SimConfig fields"):
        SimConfig.from_dict({"n_gate": 10})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tau1_range=(3.0, 0.05)), "tau1_range is inverted"),
        (dict(tau1_range=(0.0, 1.0)), "lifetimes must be > 0"),
        (dict(tau1_range=(0.5, 2.0), tau2_range=(0.1, 3.0)), "reaches above tau2_range"),
        (dict(tau2_range=(0.05, math.nan)), "finite"),
        (dict(frac_range=(0.0, 1.5)), "frac_range must lie within"),
        (dict(mono_prob=-0.1), "mono_prob"),
        (dict(photon_range=(-5.0, 10.0)), "photon_range must lie within"),
        (dict(photon_range=(300.0, 50.0)), "photon_range is inverted"),
        (dict(background=-1.0), "background must be >= 0"),
        (dict(photon_range=None, background=1.0), "background counts need photon_range"),
        (dict(n_gates=1), "n_gates"),
        (dict(n_gates=13.5), "n_gates"),
        (dict(gate_width=0.0), "gate_width"),
        (dict(irf_fwhm=-0.2), "irf_fwhm"),
        (dict(irf_fwhm=(0.0, 0.3)), "irf_fwhm must be > 0"),
        (dict(irf_center=(2.0, 1.0)), "irf_center is inverted"),
        (dict(background=(-1.0, 2.0)), "background must be >= 0"),
        (dict(photon_range=None, background=(0.0, 1.0)), "background counts need photon_range"),
        (dict(jitter_range=(0.2, 0.8)), "no whole-gate shift"),
        (dict(jitter_range=(0.0, 200.0)), "shifts by n_gates"),
        (dict(tau1_range="ab"), "pair"),
    ],
)
def test_bad_config_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(**kwargs)


def test_bad_simulate_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        simulate(0)
    with pytest.raises(ValueError, match="longer"):
        simulate(3, irf=np.ones(136))
    with pytest.raises(ValueError, match="one row per sample"):
        simulate(3, irf=np.ones((2, 5)))
    with pytest.raises(ValueError, match=">= 0"):
        simulate(3, irf=np.array([1.0, -0.5]))
    with pytest.raises(ValueError, match="positive sum"):
        simulate(3, irf=np.zeros(4))
    with pytest.raises(ValueError, match="outside the gate window"):
        simulate(3, SimConfig(irf_center=0.1, jitter_range=(-3.0, 0.0)))
    with pytest.raises(ValueError, match="out of the gate window"):
        simulate(3, SimConfig(n_gates=10, jitter_range=(-9.0, -9.0)), irf=np.array([1.0, 1.0]))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    n_gates=st.integers(8, 80),
    mono_prob=st.floats(0.0, 1.0),
    jitter_integer=st.booleans(),
    noisy=st.booleans(),
)
def test_invariants_hold_for_any_config(seed, n, n_gates, mono_prob, jitter_integer, noisy):
    cfg = SimConfig(
        n_gates=n_gates,
        mono_prob=mono_prob,
        irf_center=0.3,
        jitter_range=(-1.0, 2.0),
        jitter_integer=jitter_integer,
        photon_range=(5.0, 50.0) if noisy else None,
    )
    d = simulate(n, cfg, seed=seed)
    assert d.x.shape == (n, n_gates, 1) and d.y.shape == (n, n_gates, 3)
    assert np.all(np.isfinite(d.x)) and np.all(np.isfinite(d.y))
    peaks = d.x[:, :, 0].max(axis=1)
    # Only an all-zero histogram (possible at a few counts) may miss peak 1.
    assert np.all((peaks == 1.0) | ((peaks == 0.0) & (d.x_scale == 0.0)))
    np.testing.assert_array_equal(d.y[:, :, 0], d.y[:, :, 1] + d.y[:, :, 2])
    assert np.all(d.tau2 >= d.tau1) and np.all((d.frac >= 0) & (d.frac <= 1))


def test_an_instrument_range_is_drawn_per_decay():
    # Very short lifetimes and a narrow IRF: each curve peaks at its IRF's centre.
    cfg = SimConfig(photon_range=None, jitter_range=(0.0, 0.0), tau1_range=(0.05, 0.05), tau2_range=(0.05, 0.05),
                    irf_center=(1.0, 3.0), irf_fwhm=(0.1, 0.5))
    d = simulate(400, cfg, seed=3)
    peak_ns = d.x[:, :, 0].argmax(axis=1) * cfg.gate_width
    assert peak_ns.min() >= 1.0 - 0.1 and peak_ns.max() <= 3.0 + 0.1
    assert peak_ns.min() < 1.2 and peak_ns.max() > 2.8  # the range is used, end to end
    # the width varies too: the number of gates above half the peak spans 0.1-0.5 ns worth
    above = (d.x[:, :, 0] >= 0.5).sum(axis=1)
    assert above.min() <= 2 and above.max() >= 5


def test_a_degenerate_range_is_the_fixed_instrument_and_draws_nothing():
    assert SimConfig(irf_center=(0.9, 0.9), background=[0, 0]) == SimConfig()
    a, b = simulate(50, SimConfig(background=2.0), seed=7), simulate(50, SimConfig(background=(2.0, 2.0)), seed=7)
    np.testing.assert_array_equal(a.x, b.x)


def test_background_range_and_round_trip():
    cfg = SimConfig(photon_range=(50.0, 50.0), background=(0.0, 10.0), jitter_range=(0.0, 0.0))
    d = simulate(300, cfg, seed=2)
    dark = (d.x[:, :5, 0] * d.x_scale[:, None]).mean(axis=1)  # the gates before the IRF: background only
    assert dark.min() < 2.0 and dark.max() > 7.0
    assert SimConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert span(cfg.background) == (0.0, 10.0) and describe(cfg.background) == "0-10" and describe(0.9) == "0.9"


def test_the_wide_instrument_holds_the_shifted_test_instrument():
    wide = SimConfig(**INSTRUMENTS["wide"])
    assert span(wide.irf_center)[0] <= 2.0 <= span(wide.irf_center)[1]
    assert span(wide.irf_fwhm)[0] <= 0.4 <= span(wide.irf_fwhm)[1]

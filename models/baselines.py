"""Classical lifetime estimators, the baselines every model is measured against (issue 14).

Each takes photon counts (n, T) on gates of width `dt` ns and the instrument's IRF
(T,) sampled on the same grid -- the nominal one a user would measure once, not each
pixel's jittered copy -- and returns (n, 4) [tau1, tau2, f, tau_mean] (ns; f the
short component's amplitude fraction; tau_mean amplitude-weighted, f tau1 + (1 - f) tau2,
what a model's decoded curve gives as area over initial value); NaN where a method says
nothing (area over peak gives tau_mean only) or fails on a pixel.

- `area_over_peak`: rapid lifetime determination: the counts' area over their peak, the
  background (mean of the first `background` gates) removed first. No fit, no IRF.
- `least_squares`: a bi-exponential reconvolution fit per pixel (scipy's trust-region
  least squares, Neyman-weighted residuals): amplitude, fraction, tau1, tau2, the IRF's
  shift (the instrument's jitter) and a constant background, the model the simulator
  itself uses (`fli_data._gaussian_irf`-style shifted IRF convolved with the decay).
- `phasor`: phasorpy's blind two-component resolution (Vallmitjana et al. 2020) from the
  first two harmonics, calibrated by the IRF's own phasor (a zero-lifetime reference) and
  the gates' half-gate sampling lag; the window is taken as the laser period; a pixel with
  no two components inside the semicircle is read as one lifetime (its normal lifetime).
  It has no per-pixel IRF shift: an instrument whose IRF moves from pixel to pixel (the
  simulator's jitter) biases it.
"""

from __future__ import annotations

import numpy as np

from .lifetimes import mean_lifetime

METHODS = ("area-over-peak", "least-squares", "phasor")
TAU_BOUNDS = (0.01, 10.0)  # ns: beyond the 12 ns window nothing constrains a lifetime


def area_over_peak(counts: np.ndarray, dt: float, irf: np.ndarray | None = None, background: int = 0) -> np.ndarray:
    """tau_mean = dt * sum(c) / max(c) after the background; the other columns NaN. For a
    pure exponential sampled from its peak, sum_k exp(-k dt / tau) dt = dt / (1 - exp(-dt / tau))."""
    c = np.asarray(counts, dtype=np.float64)
    if background:
        c = np.clip(c - c[:, :background].mean(axis=1, keepdims=True), 0, None)
    peak = c.max(axis=1)
    tau = np.where(peak > 0, dt * c.sum(axis=1) / np.where(peak > 0, peak, 1.0), np.nan)
    out = np.full((len(c), 4), np.nan)
    out[:, 3] = tau
    return out


def _shifted(irf: np.ndarray, shift: float) -> np.ndarray:
    """irf(k - shift) with linear interpolation, zero outside (shift in gates)."""
    k = np.arange(len(irf), dtype=np.float64)
    return np.interp(k - shift, k, irf, left=0.0, right=0.0)


def _model(theta, t, irf, dt):
    amp, frac, tau1, tau2, shift, bg = theta
    decay = frac * np.exp(-t / tau1) + (1.0 - frac) * np.exp(-t / tau2)
    return amp * np.convolve(_shifted(irf, shift / dt), decay)[:len(t)] + bg


def least_squares(counts: np.ndarray, dt: float, irf: np.ndarray, background: int = 0) -> np.ndarray:
    """A bi-exponential reconvolution fit per pixel (module docstring); tau1 <= tau2."""
    from scipy.optimize import least_squares as fit

    c = np.asarray(counts, dtype=np.float64)
    irf = np.asarray(irf, dtype=np.float64) / max(float(np.sum(irf)), 1e-300)
    t = np.arange(c.shape[1]) * dt
    rld = area_over_peak(c, dt)[:, 3]
    max_shift = 5 * dt
    out = np.full((len(c), 4), np.nan)
    for i, y in enumerate(c):
        if y.max() <= 0:
            continue
        weight = 1.0 / np.sqrt(np.maximum(y, 1.0))
        tm = float(np.clip(rld[i], 0.05, 10.0))
        unit = _model((1.0, 0.5, 0.5 * tm, 1.5 * tm, 0.0, 0.0), t, irf, dt).max()
        start = np.array([y.max() / max(unit, 1e-12), 0.5, 0.5 * tm, 1.5 * tm, 0.0, 0.0])
        lower = [0.0, 0.0, TAU_BOUNDS[0], TAU_BOUNDS[0], -max_shift, 0.0]
        upper = [np.inf, 1.0, TAU_BOUNDS[1], TAU_BOUNDS[1], max_shift, max(float(y.max()), 1.0)]
        try:
            res = fit(lambda th: (_model(th, t, irf, dt) - y) * weight, start, bounds=(lower, upper), method="trf",
                      x_scale="jac", max_nfev=200)
        except ValueError:
            continue
        _, frac, tau1, tau2, _, _ = res.x
        if tau1 > tau2:
            tau1, tau2, frac = tau2, tau1, 1.0 - frac
        out[i] = (tau1, tau2, frac, mean_lifetime(tau1, tau2, frac))
    return out


def phasor(counts: np.ndarray, dt: float, irf: np.ndarray, background: int = 0) -> np.ndarray:
    """Two components per pixel from the first two harmonics (module docstring)."""
    from phasorpy.lifetime import lifetime_fraction_to_amplitude, phasor_to_lifetime_search, phasor_to_normal_lifetime
    from phasorpy.phasor import phasor_divide, phasor_from_signal

    c = np.asarray(counts, dtype=np.float64)
    if background:
        c = np.clip(c - c[:, :background].mean(axis=1, keepdims=True), 0, None)
    frequency = 1e3 / (c.shape[1] * dt)  # MHz: the window as the laser period
    _, re, im = phasor_from_signal(c, axis=-1, harmonic=[1, 2])  # (2, n)
    _, ire, iim = phasor_from_signal(np.asarray(irf, dtype=np.float64), axis=-1, harmonic=[1, 2])
    re, im = phasor_divide(re, im, ire[:, None], iim[:, None])
    # the gates sample the decay at their starts: the DFT of point samples of exp(-t/tau)
    # lags the continuous decay's phasor by h * omega * dt / 2 at harmonic h, whatever tau
    # (to first order in dt / tau: (1 - q) / (1 - q e^{-i w dt}) ~ e^{i w dt / 2} / (1 + i w tau)),
    # which the IRF division does not remove; rotate it back
    lag = np.pi / c.shape[1] * np.array([1.0, 2.0])[:, None]  # omega * dt / 2 = pi / T per harmonic
    re, im = re * np.cos(lag) - im * np.sin(lag), re * np.sin(lag) + im * np.cos(lag)
    lifetimes, fractions = phasor_to_lifetime_search(re, im, frequency, lifetime_range=(0.0, 10.0, 0.02))
    tau1, tau2 = lifetimes[0], lifetimes[1]
    amplitude = lifetime_fraction_to_amplitude(np.stack([tau1, tau2], -1), np.stack(fractions, -1)
                                               if isinstance(fractions, (tuple, list)) else np.moveaxis(fractions, 0, -1))
    frac = amplitude[..., 0] / np.where(amplitude.sum(-1) > 0, amplitude.sum(-1), np.nan)
    swap = tau1 > tau2
    tau1, tau2 = np.where(swap, tau2, tau1), np.where(swap, tau1, tau2)
    frac = np.where(swap, 1.0 - frac, frac)
    # where no two components lie inside the semicircle (a mono-exponential pixel, or noise
    # pushing it outside), the pixel is one lifetime: the first harmonic's normal lifetime
    mono = ~(np.isfinite(tau1) & np.isfinite(tau2) & np.isfinite(frac))
    single = phasor_to_normal_lifetime(re[0], im[0], frequency)
    tau1, tau2 = np.where(mono, single, tau1), np.where(mono, single, tau2)
    frac = np.where(mono, 1.0, frac)
    return np.stack([tau1, tau2, frac, mean_lifetime(tau1, tau2, frac)], axis=-1)


def estimate(method: str, counts: np.ndarray, dt: float, irf: np.ndarray, background: int = 0) -> np.ndarray:
    """(n, 4) [tau1, tau2, f, tau_mean] by `method` (one of METHODS)."""
    fn = {"area-over-peak": area_over_peak, "least-squares": least_squares, "phasor": phasor}.get(method)
    if fn is None:
        raise ValueError(f"unknown method '{method}' (one of {', '.join(METHODS)})")
    return fn(counts, dt, irf, background)

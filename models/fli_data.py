"""Synthetic time-domain FLI data for the Seq2Seq / Seq2SeqLite models.

Each sample is one pixel's temporal point-spread function (TPSF), made by the
forward model shared by the published simulators (shared reference
``fli-data.md`` sections 1 and 2):

1. Decay on the gate grid ``t_k = k * gate_width``, ``k = 0 .. n_gates-1``::

       f(t) = A exp(-t/tau1) + (1 - A) exp(-t/tau2),   tau2 >= tau1

   ``A`` (``frac``) is the amplitude fraction of the short component.  A
   mono-exponential curve has ``A`` in {0, 1}; both lifetime labels then hold
   the lifetime of the one component present, so ``tau2 >= tau1`` always holds.
2. Instrument response: the decay is convolved (linear, not circular, and
   truncated to ``n_gates``) with an IRF normalised to unit sum.  The IRF is a
   Gaussian given by its FWHM and centre in ns and point-sampled at the gate
   times, or a measured IRF supplied by the caller (1-D shared by all samples
   or 2-D with one row per sample).
3. Jitter: each sample's IRF is shifted by a random number of gates (integer,
   or fractional by linear interpolation; a Gaussian is re-evaluated at the
   shifted centre, which is exact).
4. Noise: Poisson photon statistics.  ``photon_range`` is the range of the
   expected count in the brightest gate of the noise-free convolved curve
   (peak counts, as in FLI-Net); ``background`` adds a Poisson background of
   that mean per gate.  ``photon_range=None`` gives noise-free curves.
5. Normalisation: ``x = counts / max(counts)``, so every input peaks at
   exactly 1 (an all-zero histogram, possible only at a few counts, stays 0).

The instrument (``irf_center``, ``irf_fwhm``, ``background``) is one value, or
a ``(low, high)`` range drawn uniformly per decay: a model trained over ranges
is meant for any instrument inside them (`INSTRUMENTS` names such sets).

The targets are the three IRF-free curves the models decode, on the same grid
and not normalised (``ch0(0) = 1``, ``ch1(0) = A``), so the amplitude ratio
needed by the lifetime extraction is kept: ``ch0 = ch1 + ch2``,
``ch1 = A exp(-t/tau1)``, ``ch2 = (1 - A) exp(-t/tau2)``.

The defaults follow the Seq2SeqLite setting: SwissSPAD3, 135 gates x 0.09 ns,
lifetimes 0.05-3 ns, mono- and bi-exponential decays.  That work used
measured IRFs and gave no photon counts; the Gaussian width (FWHM 0.2 ns),
the jitter (+-2 gates) and the peak-count range (25-500, spanning FLI-Net's
test bands) are the conventions of the other simulators surveyed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_N_GATES = 135
DEFAULT_GATE_WIDTH = 0.09  # ns, SwissSPAD3 gate step

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_FORMAT_VERSION = 1
# Curves per FFT block: bounds the temporary spectra to a few tens of MB
# whatever n is, while each block is still one vectorised call.
_BLOCK = 16384

Range = tuple[float, float]


def _as_range(name: str, value: Any, low: float, high: float) -> Range:
    """Validate a (low, high) pair inside [low, high] and return it as floats."""
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
        raise ValueError(f"{name} must be a (low, high) pair of finite numbers, got {value!r}")
    if pair[0] > pair[1]:
        raise ValueError(f"{name} is inverted: {pair}; expected (low, high) with low <= high")
    if pair[0] < low or pair[1] > high:
        raise ValueError(f"{name} must lie within [{low}, {high}], got {pair}")
    return pair  # type: ignore[return-value]


def _as_value_or_range(name: str, value: Any, low: float, high: float) -> float | Range:
    """A number, or a (low, high) range of them (a degenerate range is the number)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        pair = _as_range(name, value, low, high)
        return pair[0] if pair[0] == pair[1] else pair
    number = _as_float(name, value)
    if not low <= number <= high:
        raise ValueError(f"{name} must lie within [{low}, {high}], got {number}")
    return number


def span(value: float | Range) -> Range:
    """(low, high) of a number-or-range field."""
    return (value, value) if isinstance(value, float) else value


def _draw(value: float | Range, n: int, rng: np.random.Generator) -> np.ndarray:
    # A fixed value draws nothing, so every dataset of a fixed instrument is the same
    # (seed for seed) as before ranges existed.
    return np.full(n, value) if isinstance(value, float) else rng.uniform(*value, size=n)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


#: Named instrument ranges for training (``python -m flimcc.models.train --instrument``).
#: ``seq2seqlite`` is the defaults' one instrument; ``wide`` spans IRF positions and widths
#: of gated SPAD cameras and TCSPC set-ups in a 12 ns window, peak counts from tens to
#: thousands and a dark/ambient background, so one model serves instruments it never saw.
INSTRUMENTS: dict[str, dict[str, Any]] = {
    "seq2seqlite": {},
    "wide": {"irf_center": (0.5, 3.0), "irf_fwhm": (0.15, 0.6), "photon_range": (20.0, 2000.0),
             "background": (0.0, 3.0)},
}


def describe(value: float | Range) -> str:
    """A number-or-range field as a person writes it: ``0.9`` or ``0.5-3``."""
    lo, hi = span(value)
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


@dataclass(frozen=True)
class SimConfig:
    """All simulation parameters; times in ns, jitter in gates, counts in photons.

    Attributes:
        n_gates: number of time gates T.
        gate_width: gate step dt (ns); gate k starts at t_k = k * dt.
        tau1_range, tau2_range: uniform ranges of the short and long lifetime.
            Each pair is ordered so that tau2 >= tau1; this keeps both inside
            their ranges because ``tau1_range`` may not reach above
            ``tau2_range`` at either end.
        frac_range: uniform range of the short-component amplitude fraction A
            of bi-exponential curves.
        mono_prob: probability that a curve is mono-exponential (A = 1 with
            lifetime from ``tau1_range`` or A = 0 with lifetime from
            ``tau2_range``, equally likely).
        irf_fwhm: full width at half maximum of the Gaussian IRF (ns), i.e.
            sigma = FWHM / (2 sqrt(2 ln 2)), or a (low, high) range drawn per
            decay.  Ignored for a measured IRF.
        irf_center: centre of the Gaussian IRF (ns) before jitter, or a range
            drawn per decay.  Ignored for a measured IRF.
        jitter_range: uniform range of the per-sample IRF shift (gates);
            (0, 0) disables jitter.
        jitter_integer: draw whole-gate shifts (uniform over the integers in
            ``jitter_range``) instead of continuous ones.
        photon_range: uniform range of the expected peak counts, i.e. the
            expected count in the brightest gate of the noise-free curve;
            None for noise-free data.
        background: mean Poisson background counts per gate (needs photons),
            or a range drawn per decay.
    """

    n_gates: int = DEFAULT_N_GATES
    gate_width: float = DEFAULT_GATE_WIDTH
    tau1_range: Range = (0.05, 3.0)
    tau2_range: Range = (0.05, 3.0)
    frac_range: Range = (0.0, 1.0)
    mono_prob: float = 0.2
    irf_fwhm: float | Range = 0.2
    irf_center: float | Range = 0.9
    jitter_range: Range = (-2.0, 2.0)
    jitter_integer: bool = True
    photon_range: Range | None = (25.0, 500.0)
    background: float | Range = 0.0

    def __post_init__(self) -> None:
        # Normalise types (JSON gives lists, callers may give ints) so that
        # equality and the JSON round trip are exact, then validate.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        n_gates = self.n_gates
        if isinstance(n_gates, bool) or not isinstance(n_gates, (int, np.integer)) or n_gates < 2:
            raise ValueError(f"n_gates must be an integer >= 2, got {n_gates!r}")
        put("n_gates", int(n_gates))
        gate_width = _as_float("gate_width", self.gate_width)
        if gate_width <= 0:
            raise ValueError(f"gate_width must be > 0 ns, got {gate_width}")
        put("gate_width", gate_width)

        tau1 = _as_range("tau1_range", self.tau1_range, 0.0, math.inf)
        tau2 = _as_range("tau2_range", self.tau2_range, 0.0, math.inf)
        if tau1[0] <= 0:
            raise ValueError(f"lifetimes must be > 0 ns, got tau1_range {tau1}")
        if tau1[0] > tau2[0] or tau1[1] > tau2[1]:
            raise ValueError(
                f"tau1_range {tau1} reaches above tau2_range {tau2}: each end of "
                "tau1_range must be <= the same end of tau2_range (tau2 >= tau1)"
            )
        put("tau1_range", tau1)
        put("tau2_range", tau2)
        put("frac_range", _as_range("frac_range", self.frac_range, 0.0, 1.0))

        mono_prob = _as_float("mono_prob", self.mono_prob)
        if not 0.0 <= mono_prob <= 1.0:
            raise ValueError(f"mono_prob must lie within [0, 1], got {mono_prob}")
        put("mono_prob", mono_prob)

        irf_fwhm = _as_value_or_range("irf_fwhm", self.irf_fwhm, 0.0, math.inf)
        if span(irf_fwhm)[0] <= 0:
            raise ValueError(f"irf_fwhm must be > 0 ns, got {irf_fwhm}")
        put("irf_fwhm", irf_fwhm)
        put("irf_center", _as_value_or_range("irf_center", self.irf_center, -math.inf, math.inf))

        jitter = _as_range("jitter_range", self.jitter_range, -math.inf, math.inf)
        if not isinstance(self.jitter_integer, (bool, np.bool_)):
            raise ValueError(f"jitter_integer must be a bool, got {self.jitter_integer!r}")
        put("jitter_integer", bool(self.jitter_integer))
        if self.jitter_integer and math.ceil(jitter[0]) > math.floor(jitter[1]):
            raise ValueError(f"jitter_range {jitter} contains no whole-gate shift (jitter_integer=True)")
        if max(-jitter[0], jitter[1]) >= self.n_gates:
            raise ValueError(f"jitter_range {jitter} shifts by n_gates ({self.n_gates}) or more")
        put("jitter_range", jitter)

        if self.photon_range is not None:
            photons = _as_range("photon_range", self.photon_range, 0.0, math.inf)
            if photons[0] <= 0:
                raise ValueError(f"photon_range must be > 0 counts, got {photons}")
            put("photon_range", photons)
        background = _as_value_or_range("background", self.background, -math.inf, math.inf)
        if span(background)[0] < 0:
            raise ValueError(f"background must be >= 0 counts per gate, got {background}")
        if span(background)[1] > 0 and self.photon_range is None:
            raise ValueError("background counts need photon_range (noise-free data has no count scale)")
        put("background", background)

    @property
    def time_axis(self) -> np.ndarray:
        """Gate start times t_k = k * gate_width (ns), shape (n_gates,)."""
        return np.arange(self.n_gates) * self.gate_width

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SimConfig fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True, eq=False)
class FLIDataset:
    """Simulated inputs, targets and labels of n samples (T = config.n_gates).

    Attributes:
        config: the parameters used.
        x: (n, T, 1) float32 model input, peak-normalised TPSFs.
        y: (n, T, 3) float32 IRF-free targets (full, short, long component).
        tau1, tau2: (n,) float64 lifetimes (ns), tau2 >= tau1.
        frac: (n,) float64 short-component amplitude fraction A.
        photons: (n,) float64 expected peak counts (inf for noise-free data).
        shift: (n,) float64 IRF jitter applied (gates).
        x_scale: (n,) float64 divisor of the normalisation: the observed peak
            count (so ``x * x_scale`` are the photon counts), or the peak of
            the noise-free convolved curve.
        irf: the measured IRF supplied (normalised to unit sum per row), or
            None when the Gaussian IRF of ``config`` was used.
    """

    config: SimConfig
    x: np.ndarray
    y: np.ndarray
    tau1: np.ndarray
    tau2: np.ndarray
    frac: np.ndarray
    photons: np.ndarray
    shift: np.ndarray
    x_scale: np.ndarray
    irf: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, t = len(self.x), self.config.n_gates
        if self.x.shape != (n, t, 1) or self.y.shape != (n, t, 3):
            raise ValueError(
                f"expected x of shape (n, {t}, 1) and y of shape (n, {t}, 3), "
                f"got {self.x.shape} and {self.y.shape}"
            )
        for name in ("tau1", "tau2", "frac", "photons", "shift", "x_scale"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def t(self) -> np.ndarray:
        """Time axis (ns), shape (T,)."""
        return self.config.time_axis

    @property
    def labels(self) -> np.ndarray:
        """(n, 3) float64 ground truth [tau1, tau2, frac], the Seq2SeqLite label layout."""
        return np.stack([self.tau1, self.tau2, self.frac], axis=1)

    def save(self, path: str | Path) -> Path:
        """Write an .npz file (".npz" is appended if missing); returns its path.

        The config is stored as a JSON string, so loading needs no pickle.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = {
            "format_version": np.array(_FORMAT_VERSION),
            "config": np.array(json.dumps(self.config.to_dict())),
        }
        for name in ("x", "y", "tau1", "tau2", "frac", "photons", "shift", "x_scale"):
            arrays[name] = getattr(self, name)
        if self.irf is not None:
            arrays["irf"] = self.irf
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FLIDataset:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"]) if "format_version" in data else None
            if version != _FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported FLI dataset format version {version}")
            config = SimConfig.from_dict(json.loads(str(data["config"])))
            arrays = {
                name: data[name]
                for name in ("x", "y", "tau1", "tau2", "frac", "photons", "shift", "x_scale")
            }
            irf = data["irf"] if "irf" in data else None
        return cls(config=config, irf=irf, **arrays)


def simulate(
    n: int,
    config: SimConfig = SimConfig(),
    seed: int = 0,
    irf: np.ndarray | None = None,
) -> FLIDataset:
    """Simulate ``n`` TPSFs with their targets and labels.

    Args:
        n: number of samples (>= 1).
        config: simulation parameters.
        seed: seed of the numpy Generator; the same (n, config, seed, irf)
            always gives the same dataset.
        irf: optional measured IRF, shape (L,) shared by all samples or
            (n, L) one row per sample, L <= n_gates, sampled on the gate grid
            with its first value at t = 0 (before jitter).  Rows are
            normalised to unit sum; ``config.irf_fwhm`` and ``irf_center``
            are then unused.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    cfg = config
    measured = None if irf is None else _normalised_irf(irf, n, cfg.n_gates)
    rng = np.random.default_rng(seed)

    tau1, tau2, frac = _draw_lifetimes(n, cfg, rng)
    lo, hi = cfg.jitter_range
    if cfg.jitter_integer:
        shift = rng.integers(math.ceil(lo), math.floor(hi) + 1, size=n).astype(np.float64)
    else:
        shift = rng.uniform(lo, hi, size=n)
    photons = (
        np.full(n, np.inf) if cfg.photon_range is None else rng.uniform(*cfg.photon_range, size=n)
    )
    centre, fwhm = _draw(cfg.irf_center, n, rng), _draw(cfg.irf_fwhm, n, rng)
    background = _draw(cfg.background, n, rng)

    if measured is None:
        first = span(cfg.irf_center)[0] + lo * cfg.gate_width
        last = span(cfg.irf_center)[1] + hi * cfg.gate_width
        if first < 0 or last > cfg.time_axis[-1]:
            raise ValueError(
                f"the Gaussian IRF centre moves outside the gate window [0, {cfg.time_axis[-1]:g}] ns "
                f"(irf_center {cfg.irf_center:g} ns, jitter_range {cfg.jitter_range} gates)"
            )

    y = np.empty((n, cfg.n_gates, 3), dtype=np.float32)
    signal = np.empty((n, cfg.n_gates))
    for start in range(0, n, _BLOCK):
        block = slice(start, min(start + _BLOCK, n))
        block_irf = measured if measured is None or measured.ndim == 1 else measured[block]
        y[block], signal[block] = _targets_and_signal(
            cfg, tau1[block], tau2[block], frac[block], shift[block], block_irf, centre[block], fwhm[block]
        )

    if cfg.photon_range is None:
        x_scale = signal.max(axis=1)
        x = signal / x_scale[:, None]
    else:
        rate = signal * (photons / signal.max(axis=1))[:, None]
        rate += background[:, None]
        counts = rng.poisson(rate)
        x_scale = counts.max(axis=1).astype(np.float64)
        x = counts / np.where(x_scale > 0, x_scale, 1.0)[:, None]

    return FLIDataset(
        config=cfg,
        x=x.astype(np.float32)[:, :, None],
        y=y,
        tau1=tau1,
        tau2=tau2,
        frac=frac,
        photons=photons,
        shift=shift,
        x_scale=x_scale,
        irf=measured,
    )


def _draw_lifetimes(
    n: int, cfg: SimConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mono = rng.random(n) < cfg.mono_prob
    short_only = rng.random(n) < 0.5
    tau_a = rng.uniform(*cfg.tau1_range, size=n)
    tau_b = rng.uniform(*cfg.tau2_range, size=n)
    frac = rng.uniform(*cfg.frac_range, size=n)
    # Ordering the pair gives tau2 >= tau1 without rejection sampling.
    tau1, tau2 = np.minimum(tau_a, tau_b), np.maximum(tau_a, tau_b)
    mono_tau = np.where(short_only, tau_a, tau_b)
    tau1 = np.where(mono, mono_tau, tau1)
    tau2 = np.where(mono, mono_tau, tau2)
    frac = np.where(mono, short_only.astype(np.float64), frac)
    return tau1, tau2, frac


def _normalised_irf(irf: Any, n: int, n_gates: int) -> np.ndarray:
    arr = np.array(irf, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise ValueError(f"irf must be a non-empty 1-D (L,) or 2-D (n, L) array, got shape {arr.shape}")
    if arr.shape[-1] > n_gates:
        raise ValueError(f"irf is longer ({arr.shape[-1]} samples) than the {n_gates} gates")
    if arr.ndim == 2 and arr.shape[0] != n:
        raise ValueError(f"a 2-D irf needs one row per sample: expected {n} rows, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("irf values must be finite and >= 0")
    total = arr.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("irf must have a positive sum (in every row)")
    return arr / total


def _targets_and_signal(
    cfg: SimConfig,
    tau1: np.ndarray,
    tau2: np.ndarray,
    frac: np.ndarray,
    shift: np.ndarray,
    measured: np.ndarray | None,
    centre: np.ndarray,
    fwhm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """IRF-free targets (m, T, 3) and noise-free convolved decays (m, T) of one block."""
    t = cfg.time_axis
    short = frac[:, None] * np.exp(-t / tau1[:, None])
    long = (1.0 - frac)[:, None] * np.exp(-t / tau2[:, None])
    targets = np.empty((len(tau1), cfg.n_gates, 3), dtype=np.float32)
    targets[:, :, 1] = short
    targets[:, :, 2] = long
    # Summing the stored float32 channels makes ch0 == ch1 + ch2 exact.
    targets[:, :, 0] = targets[:, :, 1] + targets[:, :, 2]
    if measured is None:
        irf = _gaussian_irf(cfg, shift, centre, fwhm)
    else:
        irf = _shifted_irf(measured, shift, cfg.n_gates)
        if np.any(irf.sum(axis=1) <= 0):
            raise ValueError(f"jitter_range {cfg.jitter_range} shifts the irf out of the gate window")
    return targets, _linear_convolve(irf, short + long)


def _gaussian_irf(cfg: SimConfig, shift: np.ndarray, centre: np.ndarray | None = None,
                  fwhm: np.ndarray | None = None) -> np.ndarray:
    """Gaussian IRFs (len(shift), T) at ``centre`` (default: the config's, or the middle
    of its range) moved by ``shift`` gates, of width ``fwhm`` (same default)."""
    mid = lambda v: float(np.mean(span(v)))  # noqa: E731
    centre = np.full(len(shift), mid(cfg.irf_center)) if centre is None else centre
    fwhm = np.full(len(shift), mid(cfg.irf_fwhm)) if fwhm is None else fwhm
    sigma = (fwhm / _FWHM_PER_SIGMA)[:, None]
    at = centre + shift * cfg.gate_width
    exponent = 0.5 * ((cfg.time_axis[None, :] - at[:, None]) / sigma) ** 2
    # Subtracting each row's minimum makes the gate nearest the centre exactly
    # 1, so a Gaussian much narrower than a gate cannot underflow to all zeros
    # (it degrades to a delta on the nearest gate).
    irf = np.exp(-(exponent - exponent.min(axis=1, keepdims=True)))
    return irf / irf.sum(axis=1, keepdims=True)


def _shifted_irf(measured: np.ndarray, shift: np.ndarray, n_gates: int) -> np.ndarray:
    """Measured IRF(s) delayed by ``shift`` gates on the T-gate grid, zero outside.

    ``out[k] = irf(k - s)`` with linear interpolation between samples, which is
    exact for whole-gate shifts.  Mass pushed past either end of the window is
    dropped, as the detector would not see it.
    """
    rows = np.atleast_2d(measured)
    # One zero column on each side: indices that clip onto them read 0.
    padded = np.zeros((len(rows), n_gates + 2))
    padded[:, 1 : rows.shape[1] + 1] = rows
    pos = np.arange(n_gates)[None, :] - shift[:, None]
    base = np.floor(pos)
    weight = pos - base
    i0 = np.clip(base.astype(np.intp) + 1, 0, n_gates + 1)
    i1 = np.clip(base.astype(np.intp) + 2, 0, n_gates + 1)
    if len(rows) == 1:
        left, right = padded[0][i0], padded[0][i1]
    else:
        row = np.arange(len(rows))[:, None]
        left, right = padded[row, i0], padded[row, i1]
    return (1.0 - weight) * left + weight * right


def _fft_length(minimum: int) -> int:
    """Smallest 2^a 3^b 5^c >= minimum (fast sizes for numpy's pocketfft)."""
    best = 1 << (minimum - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < minimum:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def _linear_convolve(irf: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """Row-wise linear convolution truncated to T: out[k] = sum_j irf[j] decay[k - j].

    Zero-padding to >= 2T - 1 points before the FFT removes the wrap-around of
    circular convolution.  ``irf`` has one row (shared) or one per decay row.
    """
    n_gates = decay.shape[1]
    size = _fft_length(2 * n_gates - 1)
    spectrum = np.fft.rfft(decay, size) * np.fft.rfft(irf, size)
    out = np.fft.irfft(spectrum, size)[:, :n_gates]
    # FFT round-off leaves ~1e-17 negatives where the true value is 0, and
    # Poisson rates must not be negative.
    return np.maximum(out, 0.0, out=out)


def simulate_counts(
    n: int,
    bin_width_ns: float = DEFAULT_GATE_WIDTH,
    config: SimConfig = SimConfig(),
    seed: int = 0,
) -> tuple[np.ndarray, FLIDataset]:
    """Photon-count histograms of `n` pixels, as an instrument with bins of `bin_width_ns`
    records them over the window of `config` (n_gates x gate_width): `simulate` on the finer
    grid (jitter and peak counts scaled to it, so the photons per gate are those of
    `config`), the counts integers. Returns (counts (n, bins) int64, the dataset with the
    lifetimes drawn)."""
    ratio = config.gate_width / bin_width_ns
    bins = int(round(config.n_gates * ratio))
    lo, hi = config.jitter_range
    fine = SimConfig(**{**asdict(config), "n_gates": bins, "gate_width": bin_width_ns,
                        "jitter_range": (lo * ratio, hi * ratio),
                        "photon_range": None if config.photon_range is None else
                        tuple(p / ratio for p in config.photon_range),
                        "background": config.background / ratio})
    data = simulate(n, fine, seed=seed)
    counts = np.rint(data.x[..., 0].astype(np.float64) * data.x_scale[:, None]).astype(np.int64)
    return counts, data

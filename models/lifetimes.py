"""Lifetimes from decoded decay components, and the Seq2SeqLite accuracy metrics.

Lifetime extraction (shared reference ``seeds.md`` section 4) needs no fit: on
the grid t_k = k * dt, with the decoder channels ch1 (short component) and ch2
(long component),

    tau_i = trapezoid(ch_i, t) / ch_i(0)          i = 1, 2
    f     = ch1(0) / (ch1(0) + ch2(0))

because the integral of A exp(-t/tau) is A tau.  Guards: tau_i = 0 when
ch_i(0) <= 1e-6 and f = 0.5 when ch1(0) + ch2(0) <= 1e-6; tau_i is capped to
[0, (T - 1) dt], the window: no decaying curve has more area over its initial
value, so a larger reading is a rising component (one of almost no amplitude,
whose noise the rule divides by its tiny ch_i(0): the zoo teacher read 400 ns
from ch2(0) = 5e-4 on two of 2,000 test decays).  On a finite grid the
estimate is biased even for perfect components: on 135 x 0.09 ns it is +25.6 %
at 0.05 ns (trapezoid error) and -1.8 % at 3 ns (truncation of the tail).

Metric conventions (``seeds.md`` section 7, which these reproduce):

* RMSE is pooled over samples x gates of one channel.
* R^2 is computed per sample, 1 - SS_res / SS_tot, then averaged.  A sample
  whose target is constant (SS_tot = 0, e.g. the absent channel of a
  mono-exponential curve) scores 1 if predicted exactly and 0 otherwise, as
  scikit-learn's ``r2_score`` does.
* L2 is the per-sample Euclidean distance over gates, averaged.
* Lifetime errors compare extracted lifetimes with the ground-truth labels.
  The lifetime of a component with zero amplitude is undefined, so the tau1
  errors use only samples whose true fraction is > 0 and the tau2 errors only
  samples whose true fraction is < 1; the fraction errors use all samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .fli_data import DEFAULT_GATE_WIDTH

AMPLITUDE_EPS = 1e-6


def extract_lifetimes(y: np.ndarray, dt: float = DEFAULT_GATE_WIDTH) -> np.ndarray:
    """Lifetimes and fraction from decoded curves.

    Args:
        y: (..., T, 3) curves [full, short, long] on t_k = k * dt; the full
            channel is not used.
        dt: gate width (ns).

    Returns:
        (..., 3) float64 [tau1, tau2, f], the layout of ``FLIDataset.labels``.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim < 2 or y.shape[-1] != 3 or y.shape[-2] < 1:
        raise ValueError(f"y must have shape (..., T, 3) with T >= 1, got {y.shape}")
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    components = y[..., 1:]  # (..., T, 2)
    first, last = components[..., 0, :], components[..., -1, :]
    # Trapezoid rule written out: np.trapz is gone in numpy 2.4 and
    # np.trapezoid is missing before numpy 2.0.
    area = dt * (components.sum(axis=-2) - 0.5 * (first + last))
    present = first > AMPLITUDE_EPS
    window = dt * (y.shape[-2] - 1)
    tau = np.clip(np.where(present, area / np.where(present, first, 1.0), 0.0), 0.0, window)
    total = first.sum(axis=-1)
    valid = total > AMPLITUDE_EPS
    frac = np.where(valid, first[..., 0] / np.where(valid, total, 1.0), 0.5)
    return np.concatenate([tau, frac[..., None]], axis=-1)


def mean_lifetime(tau1, tau2, frac):
    """The amplitude-weighted mean lifetime f tau1 + (1 - f) tau2 (the area over the initial
    value of the whole decay): what `flimcc run`, the baselines and the comparisons report."""
    return frac * tau1 + (1.0 - frac) * tau2


@dataclass(frozen=True)
class SequenceMetrics:
    """Accuracy of one decoded channel: pooled RMSE, mean per-sample R^2 and L2."""

    rmse: float
    r2: float
    l2: float


@dataclass(frozen=True)
class LifetimeMetrics:
    """Mean absolute and root-mean-square errors of tau1, tau2 (ns) and f.

    A tau error is NaN when no sample has that component (see module notes).
    """

    tau1_mae: float
    tau2_mae: float
    frac_mae: float
    tau1_rmse: float
    tau2_rmse: float
    frac_rmse: float


@dataclass(frozen=True)
class Evaluation:
    """Sequence metrics per channel and lifetime errors of one prediction set."""

    full: SequenceMetrics
    short: SequenceMetrics
    long: SequenceMetrics
    lifetimes: LifetimeMetrics

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Nested plain dict, e.g. for a JSON report."""
        return asdict(self)


def sequence_metrics(pred: np.ndarray, target: np.ndarray, channel: int = 0) -> SequenceMetrics:
    """RMSE, R^2 and L2 of ``pred[:, :, channel]`` against ``target`` (both (N, T, C))."""
    pred, target = _matching(pred, target, 3, "(N, T, C)")
    if not 0 <= channel < pred.shape[2]:
        raise ValueError(f"channel {channel} out of range for {pred.shape[2]} channels")
    p = pred[:, :, channel]
    t = target[:, :, channel]
    sq_err = (p - t) ** 2
    ss_res = sq_err.sum(axis=1)
    ss_tot = ((t - t.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    constant = ss_tot == 0
    r2 = np.where(
        constant,
        (ss_res == 0).astype(np.float64),
        1.0 - ss_res / np.where(constant, 1.0, ss_tot),
    )
    return SequenceMetrics(
        rmse=float(np.sqrt(sq_err.mean())),
        r2=float(r2.mean()),
        l2=float(np.sqrt(ss_res).mean()),
    )


def lifetime_metrics(pred: np.ndarray, true: np.ndarray) -> LifetimeMetrics:
    """Errors of (N, 3) [tau1, tau2, f] estimates against (N, 3) ground truth."""
    pred, true = _matching(pred, true, 2, "(N, 3)")
    if pred.shape[1] != 3:
        raise ValueError(f"lifetimes must have shape (N, 3), got {pred.shape}")
    error = pred - true
    has_short = true[:, 2] > 0
    has_long = true[:, 2] < 1
    columns = [error[has_short, 0], error[has_long, 1], error[:, 2]]
    mae = [float(np.abs(e).mean()) if e.size else float("nan") for e in columns]
    rmse = [float(np.sqrt((e**2).mean())) if e.size else float("nan") for e in columns]
    return LifetimeMetrics(*mae, *rmse)


def evaluate(
    pred: np.ndarray, target: np.ndarray, labels: np.ndarray, dt: float = DEFAULT_GATE_WIDTH
) -> Evaluation:
    """All metrics of decoded curves ``pred`` (N, T, 3).

    Args:
        pred: model output [full, short, long].
        target: true IRF-free curves, same shape (``FLIDataset.y``).
        labels: (N, 3) true [tau1, tau2, f] (``FLIDataset.labels``).
        dt: gate width (ns) for the lifetime extraction.
    """
    return Evaluation(
        full=sequence_metrics(pred, target, 0),
        short=sequence_metrics(pred, target, 1),
        long=sequence_metrics(pred, target, 2),
        lifetimes=lifetime_metrics(extract_lifetimes(pred, dt), labels),
    )


def _matching(a: np.ndarray, b: np.ndarray, ndim: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != ndim or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(
            f"expected two non-empty arrays of the same shape {layout}, got {a.shape} and {b.shape}"
        )
    return a, b

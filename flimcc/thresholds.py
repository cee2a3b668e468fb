"""A monotone activation followed by a uniform quantizer, as integer thresholds.

For an integer accumulator a, per channel c, the float stage computes
    level(a) = Q(f(sigma_c * a + beta_c)),  Q(y) = clip(round_half_even(y / s), qmin, qmax)
(qonnx `Quant` with zero-point 0 and rounding mode ROUND). A MultiThreshold computes
    qmin + #{k : a >= T[c, k]}.
Because f is non-decreasing and sigma_c > 0, level(a) is a non-decreasing staircase in a,
so T[c, k] = the smallest integer a with level(a) >= qmin + 1 + k gives the same result
for every integer a, ties included. flimcc finds each T by a vectorised binary search on
level() itself rather than through f's inverse and a ceiling: the inverse is irrational
for sigmoid and tanh, and float error in it misplaces thresholds that sit on integers
(the half-way ties of reference/finn-dialect.md §10.2). Levels never reached get a
threshold past the accumulator's range (never counted); levels always reached get its
lowest value (always counted).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .errors import UnsupportedError


def hard_sigmoid(x, alpha=0.5, beta=0.5):
    return np.clip(alpha * x + beta, 0.0, 1.0)


#: f by name. Hard sigmoid is QKeras' clip(0.5x + 0.5, 0, 1) (ONNX HardSigmoid alpha=beta=0.5).
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "hard_sigmoid": hard_sigmoid,
    "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
    "identity": lambda x: x,
}


def level_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """qonnx Quant's integer range."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


#: qonnx Quant rounding modes flimcc lowers, with qonnx's semantics: ROUND (half to even),
#: FLOOR, and HALF_UP (half away from zero).
ROUNDING = {
    "ROUND": np.round,
    "FLOOR": np.floor,
    "HALF_UP": lambda y: np.sign(y) * np.floor(np.abs(y) + 0.5),
}


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """A uniform quantizer: scale s > 0, zero-point 0, a rounding mode of ROUNDING."""

    scale: float
    bits: int
    signed: bool
    narrow: bool = False
    rounding: str = "ROUND"

    @property
    def levels(self) -> tuple[int, int]:
        return level_range(self.bits, self.signed, self.narrow)

    def quantize(self, y: np.ndarray) -> np.ndarray:
        qmin, qmax = self.levels
        return np.clip(ROUNDING[self.rounding](y / self.scale), qmin, qmax)


def activation_thresholds(
    activation: str | Callable[[np.ndarray], np.ndarray],
    quant: QuantSpec,
    acc_range: tuple[int, int],
    sigma: float | np.ndarray = 1.0,
    beta: float | np.ndarray = 0.0,
    dtype: type = np.float64,
) -> np.ndarray:
    """Thresholds (C, qmax - qmin) in the integer accumulator domain such that, for every
    integer a in `acc_range`, qmin + #{k : a >= T[c, k]} == Q(f(sigma_c * a + beta_c)).

    `dtype` is the float precision in which the stage being replaced evaluates
    sigma * a + beta, f and the division by the scale (float32 for an ONNX graph)."""
    f = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    sigma = np.atleast_1d(np.asarray(sigma, dtype=dtype))
    beta = np.atleast_1d(np.asarray(beta, dtype=dtype))
    if np.any(sigma <= 0):
        raise UnsupportedError("activation thresholds need a positive accumulator scale (factor out the sign first)")
    channels = max(sigma.size, beta.size)
    sigma, beta = np.broadcast_to(sigma, channels), np.broadcast_to(beta, channels)
    qmin, qmax = quant.levels
    lo_acc, hi_acc = int(acc_range[0]), int(acc_range[1])
    targets = np.arange(qmin + 1, qmax + 1)  # the level each threshold admits

    def level(a: np.ndarray) -> np.ndarray:  # a: (C, K) integers
        pre = (sigma[:, None] * a.astype(dtype) + beta[:, None]).astype(dtype)
        return quant.quantize(f(pre).astype(dtype)).astype(np.int64)

    # Smallest a in [lo, hi + 1] with level(a) >= target; hi + 1 means "never".
    lo = np.full((channels, targets.size), lo_acc, dtype=np.int64)
    hi = np.full((channels, targets.size), hi_acc + 1, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        reached = level(np.minimum(mid, hi_acc)) >= targets[None, :]
        reached &= mid <= hi_acc
        hi = np.where(reached & (lo < hi), mid, hi)
        lo = np.where(~reached & (lo < hi), mid + 1, lo)
    return lo


def apply_thresholds(acc: np.ndarray, thresholds: np.ndarray, qmin: int) -> np.ndarray:
    """MultiThreshold semantics on a channels-last accumulator: qmin + #{k : a >= T[c, k]}."""
    return qmin + np.sum(acc[..., None] >= thresholds, axis=-1)


def absorb_clip(thresholds: np.ndarray, lo: float, hi: float, in_min: float, in_max: float) -> np.ndarray:
    """Thresholds T' with #{k : x >= T'[k]} == #{k : clip(x, lo, hi) >= T[k]} for every
    integer x in [in_min, in_max].

    clip(x, lo, hi) >= t is always true for t <= lo, never true for t > hi, and equal to
    x >= t in between; "always" becomes the input's lowest value and "never" one past its
    highest (FINN's convention for thresholds outside the input range)."""
    t = np.asarray(thresholds, dtype=np.float64)
    out = np.where(t <= lo, in_min, np.where(t > hi, in_max + 1, t))
    return out.astype(np.asarray(thresholds).dtype)


def absorb_add(thresholds: np.ndarray, addend: np.ndarray) -> np.ndarray:
    """Thresholds T' with x >= T'[c, k] <=> x + b[c] >= T[c, k] (b per channel or scalar)."""
    t = np.asarray(thresholds)
    b = np.asarray(addend, dtype=np.float64).reshape(-1)
    if b.size == 1:
        return (t - b[0]).astype(t.dtype)
    rows = t if t.shape[0] == b.size else np.broadcast_to(t, (b.size, t.shape[1]))
    return (rows - b[:, None]).astype(t.dtype)

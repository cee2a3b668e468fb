"""Does a recording look like what a model was trained on? (issue 14: refuse nothing silently)

A model card's training data is a simulator configuration (`SimConfig`): the IRF's
position and width, the photons at the peak, the background. A recording outside that
range still decodes, but the numbers deserve doubt, so `flimcc run` says so
(`warnings_for`). Measured on the recording, in its gates (after rebinning):

- the rise: when the decay summed over all pixels first reaches half its peak, and how
  long it takes from 10% to 90% of it (the IRF's position and width, blurred by the
  decays), against decays simulated from the card's configuration (noise-free, its whole
  jitter and lifetime range): the position within their 1st-99th percentile widened by a
  gate; the width no sharper than their sharpest and no wider than their own sum (jitter
  included) by more than 30% and a gate;
- the counts: each pixel's peak counts against the card's photon range (plus background);
  a warning when more than 5% of the pixels with photons fall outside it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .fli_data import SimConfig, describe, simulate, span

#: the share of pixels outside the photon range that makes a warning
OUTSIDE_SHARE = 0.05


def sim_config(card: dict) -> SimConfig | None:
    """The training configuration a card records, or None."""
    cfg = (card.get("training_data") or {}).get("sim_config")
    if not isinstance(cfg, dict):
        return None
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    try:
        return SimConfig(**{k: v for k, v in cfg.items() if k in fields})
    except (TypeError, ValueError):
        return None


def rise(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(half-rise gate, 10-90% rise gates) of each (n, T) curve: the first gate at half the
    peak (linearly interpolated) and the gates from 10% to 90% of the peak on the way up
    (the first crossing of a level comes at or before the peak, so it is on the way up)."""
    c = np.asarray(curves, dtype=np.float64)
    peak = c.max(axis=1)
    rows = np.arange(len(c))

    def crossing(level: float) -> np.ndarray:
        target = level * peak
        k = np.argmax(c >= target[:, None], axis=1)
        lo, hi = c[rows, np.maximum(k - 1, 0)], c[rows, k]
        frac = np.where(hi > lo, (target - lo) / np.where(hi > lo, hi - lo, 1.0), 1.0)
        return np.where(k == 0, 0.0, k - 1 + frac)

    return crossing(0.5), crossing(0.9) - crossing(0.1)


def warnings_for(counts: np.ndarray, card: dict, name: str) -> list[str]:
    """One line per way the recording's counts (pixels, gates) leave the training range of
    the model card `card` (model `name`); [] when they do not, or the card says nothing."""
    cfg = sim_config(card)
    if cfg is None:
        return []
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != cfg.n_gates:
        return []
    lit = counts.sum(axis=1) > 0
    if not lit.any():
        return []
    out = []
    ref = simulate(2000, dataclasses.replace(cfg, photon_range=None, background=0.0), seed=11)
    ref_half, ref_width = rise(ref.x[..., 0])
    half, width = rise(counts[lit].sum(axis=0, keepdims=True))
    dt = cfg.gate_width
    lo, hi = np.percentile(ref_half, [1, 99]) + (-1, 1)
    if not lo <= half[0] <= hi:
        out.append(f"the decay rises to half its peak at {half[0] * dt:.2f} ns, outside the {lo * dt:.2f}-"
                   f"{hi * dt:.2f} ns that {name} was trained on (its IRF at {describe(cfg.irf_center)} ns): lifetimes "
                   "may be biased; a model trained with this instrument's IRF is needed")
    # the recording's rise is a sum over pixels, blurred by any jitter between them: no
    # sharper than one pixel's sharpest (less a gate), no wider than the training decays'
    # own sum (the card's jitter included) by more than 30% and a gate
    summed = rise(ref.x[..., 0].sum(axis=0, keepdims=True))[1][0]
    wlo, whi = np.percentile(ref_width, 1) - 1, 1.3 * summed + 1
    if not wlo <= width[0] <= whi:
        out.append(f"the decay's 10-90% rise takes {width[0] * dt:.2f} ns, outside the {max(wlo, 0) * dt:.2f}-"
                   f"{whi * dt:.2f} ns of {name}'s training (IRF FWHM {describe(cfg.irf_fwhm)} ns)")
    if cfg.photon_range is not None:
        plo, phi = cfg.photon_range
        peaks = counts[lit].max(axis=1) - float(np.mean(span(cfg.background)))
        low, high = float((peaks < plo).mean()), float((peaks > 1.5 * phi).mean())
        if low > OUTSIDE_SHARE:
            out.append(f"{low:.0%} of the pixels peak below {plo:g} photons per gate, fewer than {name} was "
                       f"trained on ({plo:g}-{phi:g}): expect noisier lifetimes (--min-photons skips them)")
        if high > OUTSIDE_SHARE:
            out.append(f"{high:.0%} of the pixels peak above {1.5 * phi:g} photons per gate, more than {name} was "
                       f"trained on ({plo:g}-{phi:g})")
    return out

"""The models beside the classical estimators on the same decays (issue 14).

`compare` runs each model file (`flimcc.execute`) and each method of
`flimcc.models.baselines` on a simulated dataset and gives `lifetime_errors` (tau1, tau2,
fraction, tau_mean: MAE, RMSE, bias) and seconds per 10,000 pixels; `shifted_test_set` is
another instrument than the zoo was trained for. Used by `evaluate --baselines` and by the
zoo's cards.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import flimcc

from .lifetimes import extract_lifetimes, mean_lifetime
from .test_set import DEFAULT_SAMPLES, TEST_SEED


def shifted_test_set(samples: int = DEFAULT_SAMPLES):
    """Another instrument (module docstring), seed 4: what a model meets outside its training."""
    from .fli_data import SimConfig, simulate

    cfg = SimConfig(irf_center=2.0, irf_fwhm=0.4, jitter_range=(0.0, 0.0), photon_range=(200.0, 2000.0),
                    background=2.0)
    return simulate(samples, cfg, TEST_SEED + 1)


QUANTITIES = ("tau1", "tau2", "f", "tau_mean")


def lifetime_errors(est: np.ndarray, data) -> dict[str, dict[str, float]]:
    """MAE, RMSE and bias of (n, 4) [tau1, tau2, f, tau_mean] estimates; tau1 over the
    pixels that have a short component, tau2 over those with a long one (`lifetimes`'s
    convention); NaN estimates are counted as `missing` and left out."""
    true = np.stack([data.tau1, data.tau2, data.frac, mean_lifetime(data.tau1, data.tau2, data.frac)], -1)
    masks = [data.frac > 0, data.frac < 1, np.ones(len(true), bool), np.ones(len(true), bool)]
    out = {}
    for k, (name, mask) in enumerate(zip(QUANTITIES, masks)):
        e = est[mask, k] - true[mask, k]
        ok = np.isfinite(e)
        e = e[ok]
        out[name] = {"mae": float(np.abs(e).mean()) if e.size else float("nan"),
                     "rmse": float(np.sqrt((e ** 2).mean())) if e.size else float("nan"),
                     "bias": float(e.mean()) if e.size else float("nan"), "missing": int((~ok).sum())}
    return out


def compare(data, models: dict[str, Path], methods=None) -> dict[str, dict]:
    """Each model and classical method on `data` (an FLIDataset): `lifetime_errors` and
    seconds per 10,000 pixels."""
    from .baselines import METHODS, estimate
    from .fli_data import _gaussian_irf

    counts = data.x[:, :, 0].astype(np.float64) * data.x_scale[:, None]
    irf = data.irf if data.irf is not None and data.irf.ndim == 1 else _gaussian_irf(data.config, np.zeros(1))[0]
    rows = {}
    for name, path in models.items():
        model = flimcc.load(path)
        input_name = model.graph.input[0].name
        t0 = time.perf_counter()
        pred = flimcc.execute(model, {input_name: data.x})[model.graph.output[0].name]
        seconds = time.perf_counter() - t0
        lt = extract_lifetimes(pred, data.config.gate_width)
        est = np.concatenate([lt, mean_lifetime(lt[:, 0], lt[:, 1], lt[:, 2])[:, None]], axis=1)
        rows[name] = {"kind": "model", "errors": lifetime_errors(est, data),
                      "seconds_per_10k": seconds * 1e4 / len(counts)}
    for method in methods if methods is not None else METHODS:
        t0 = time.perf_counter()
        est = estimate(method, counts, data.config.gate_width, irf)
        seconds = time.perf_counter() - t0
        rows[method] = {"kind": "baseline", "errors": lifetime_errors(est, data),
                        "seconds_per_10k": seconds * 1e4 / len(counts)}
    return rows


def comparison_table(rows: dict[str, dict]) -> str:
    """Markdown: per row, MAE (bias) of tau1, tau2, f, tau_mean and seconds per 10,000 pixels."""
    lines = ["| estimator | tau1 MAE (bias) | tau2 MAE (bias) | f MAE (bias) | tau_mean MAE (bias) | tau_mean RMSE "
             "| s / 10k px |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        cells = []
        for q in QUANTITIES:
            e = r["errors"][q]
            cells.append("-" if np.isnan(e["mae"]) else f"{e['mae']:.3f} ({e['bias']:+.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['errors']['tau_mean']['rmse']:.3f} | "
                     f"{r['seconds_per_10k']:.2f} |")
    return "\n".join(lines)

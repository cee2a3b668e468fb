"""Accuracy of exported models on a fixed synthetic test set, and next to the classical estimators.

    python -m flimcc.models.evaluate MODEL.onnx [MODEL.onnx ...] | --zoo  [--samples N] [--json FILE]
    python -m flimcc.models.evaluate --zoo --baselines [--test-set in|shifted] [--samples N]

The test set is :func:`make_test_set`: the simulator's default configuration with seed
:data:`TEST_SEED`, disjoint by seed from training's. Each model is
loaded with :func:`flimcc.load` and run with :func:`flimcc.execute`, so a QONNX file is
measured as flimcc sees it. The table gives the full-decay channel's RMSE, R^2 and L2
(the paper's sequence metrics) and the mean absolute errors of the extracted tau1, tau2
and fraction (:func:`flimcc.models.lifetimes.evaluate`).

A float model (ONNX ``GRU`` nodes) runs in one onnxruntime session, in seconds. An
unrolled QONNX model at T = 135 (about 5,000 nodes) runs node by node in flimcc's executor.

`--baselines` puts the models beside area over peak, a bi-exponential least-squares fit and
the phasor approach (`flimcc.models.baselines`) on the same decays: tau1, tau2, fraction and
tau_mean (amplitude-weighted), each as MAE, RMSE and bias, and seconds per 10,000 pixels
(`compare`). `--test-set shifted` is another instrument (`shifted_test_set`): the IRF later
in the window and twice as wide, no jitter, 200-2,000 photons at the peak, a background of
2 counts per gate -- outside what the zoo was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import flimcc

from . import zoo
from .lifetimes import Evaluation, evaluate, extract_lifetimes
from .test_set import DEFAULT_SAMPLES, TEST_SEED, make_test_set  # noqa: F401 - the test set of this module

def evaluate_model(model_path: str | Path, samples: int = DEFAULT_SAMPLES) -> Evaluation:
    """Metrics of one ONNX/QONNX model on the test set of its own T."""
    model = flimcc.load(model_path)
    input_name = model.graph.input[0].name
    steps = model.get_tensor_shape(input_name)[1]
    data = make_test_set(samples, steps)
    pred = flimcc.execute(model, {input_name: data.x})[model.graph.output[0].name]
    return evaluate(pred, data.y, data.labels, data.config.gate_width)


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
    true = np.stack([data.tau1, data.tau2, data.frac, data.frac * data.tau1 + (1 - data.frac) * data.tau2], -1)
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
        est = np.concatenate([lt, (lt[:, 2] * lt[:, 0] + (1 - lt[:, 2]) * lt[:, 1])[:, None]], axis=1)
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


COLUMNS = ("model", "RMSE", "R^2", "L2", "tau1 MAE", "tau2 MAE", "f MAE", "seconds")


def table(rows: dict[str, tuple[Evaluation, float]]) -> str:
    """A plain-text table, one row per model: channel-0 RMSE, R^2, L2; lifetime MAEs (ns)."""
    width = max([len(COLUMNS[0])] + [len(name) for name in rows])
    lines = [f"{COLUMNS[0]:<{width}}" + "".join(f"{c:>10}" for c in COLUMNS[1:])]
    for name, (ev, seconds) in rows.items():
        values = (ev.full.rmse, ev.full.r2, ev.full.l2, ev.lifetimes.tau1_mae, ev.lifetimes.tau2_mae,
                  ev.lifetimes.frac_mae)
        lines.append(f"{name:<{width}}" + "".join(f"{v:>10.4f}" for v in values) + f"{seconds:>10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flimcc.models.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help="ONNX or QONNX files")
    p.add_argument("--zoo", action="store_true", help="evaluate every shipped model")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    p.add_argument("--json", help="also write the full metrics as JSON")
    p.add_argument("--baselines", action="store_true",
                   help="the models beside area over peak, least squares and the phasor approach")
    p.add_argument("--test-set", choices=["in", "shifted"], default="in",
                   help="with --baselines: the test set (in) or another instrument (shifted)")
    args = p.parse_args(argv)
    paths = {Path(m).stem: Path(m) for m in args.models}
    if args.zoo:
        paths |= {name: zoo.path(name) for name in zoo.names()}
    if args.baselines:
        data = make_test_set(args.samples) if args.test_set == "in" else shifted_test_set(args.samples)
        rows = compare(data, paths)
        print(f"{args.test_set} test set: {args.samples} simulated decays; lifetimes in ns, MAE (bias)")
        print(comparison_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    if not paths:
        p.error("give model files or --zoo")
    rows = {}
    for name, path in paths.items():
        t0 = time.perf_counter()
        try:
            rows[name] = (evaluate_model(path, args.samples), time.perf_counter() - t0)
        except (flimcc.FlimccError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"test set: {args.samples} simulated decays, seed {TEST_SEED}; RMSE/R^2/L2 of the full decay, "
          "lifetime errors in ns")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({n: ev.as_dict() for n, (ev, _) in rows.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

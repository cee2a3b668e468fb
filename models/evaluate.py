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

import flimcc

from . import zoo
from .comparison import compare, comparison_table, shifted_test_set
from .lifetimes import Evaluation, evaluate
from .test_set import DEFAULT_SAMPLES, TEST_SEED, make_test_set  # noqa: F401 - the test set of this module

def evaluate_model(model_path: str | Path, samples: int = DEFAULT_SAMPLES) -> Evaluation:
    """Metrics of one ONNX/QONNX model on the test set of its own T."""
    model = flimcc.load(model_path)
    input_name = model.graph.input[0].name
    steps = model.get_tensor_shape(input_name)[1]
    data = make_test_set(samples, steps)
    pred = flimcc.execute(model, {input_name: data.x})[model.graph.output[0].name]
    return evaluate(pred, data.y, data.labels, data.config.gate_width)


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

"""Benchmark of the integer lowering: pass times, MACs and executor throughput.

    python benchmarks/bench_integer.py [--pixels 4096] [--bits 8]

For Seq2SeqLite (examples/models/seq2seqlite_random.onnx) and a Seq2Seq-shaped random
model (flimcc.models.seq2seq_onnx.build_seq2seq(128, 2, linear_before_reset=1)), it runs
`unroll-gru,quantize{bits=B},fold-weights,streamline` (verify=False) and prints each
pass's time, the MACs per pixel before / after fold-weights, the pixels/s of flimcc's
executor on the integer graph (T=135, N simulated decays), the time that extrapolates to
a 256x256 frame, and the pixels/s of onnxruntime on the float graph measured in the same
run, with the ratio (float / integer). Throughputs depend on the machine's load.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import flimcc
from flimcc.execute import execute
from flimcc.models.fli_data import simulate
from flimcc.models.seq2seq_onnx import build_seq2seq
from flimcc.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
PASSES = ("unroll-gru", "quantize", "fold-weights", "streamline")
FRAME = 256 * 256


def throughput(model, x: np.ndarray) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = execute(model, {"x": x})
    return x.shape[0] / (time.perf_counter() - t0), out


def bench(label: str, model, x: np.ndarray, bits: int) -> dict:
    run = Pipeline.parse(f"unroll-gru,quantize{{bits={bits}}},fold-weights,streamline").run(model, verify=False)
    stages = {s.stage: s for s in run.report.stages}
    fold = stages["fold-weights"].metrics
    execute(model, {"x": x[:8]})  # warm the float session
    float_pps, _ = throughput(model, x)
    int_pps, _ = throughput(run.model, x)
    return {
        "model": label,
        **{p: stages[p].seconds for p in PASSES},
        "macs_before": fold["macs_per_sample_before"],
        "macs_after": fold["macs_per_sample_after"],
        "int_pps": int_pps,
        "frame_s": FRAME / int_pps,
        "float_pps": float_pps,
        "ratio": float_pps / int_pps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=4096, help="simulated decays executed (default 4096)")
    ap.add_argument("--bits", type=int, default=8, help="quantize bits (default 8)")
    args = ap.parse_args()
    x = simulate(args.pixels, seed=0).x.astype(np.float32)  # (N, 135, 1)
    models = [
        ("Seq2SeqLite", flimcc.load(ROOT / "examples" / "models" / "seq2seqlite_random.onnx")),
        ("Seq2Seq(128x2, reset-after)", flimcc.load(build_seq2seq(128, 2, linear_before_reset=1, name="seq2seq"))),
    ]
    rows = [bench(label, model, x, args.bits) for label, model in models]
    print(f"integer lowering, bits={args.bits}, T={x.shape[1]}, {args.pixels} pixels "
          f"(pass times in s; pixels/s of flimcc.execute on the integer graph vs onnxruntime on the float one)")
    head = (f"{'model':<28} {'unroll':>7} {'quant':>7} {'fold':>7} {'stream':>7} {'MACs/px before':>15} "
            f"{'after':>9} {'int px/s':>9} {'256x256 s':>10} {'float px/s':>11} {'float/int':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<28} {r['unroll-gru']:>7.2f} {r['quantize']:>7.2f} {r['fold-weights']:>7.2f} "
              f"{r['streamline']:>7.2f} {r['macs_before']:>15,} {r['macs_after']:>9,} {r['int_pps']:>9.0f} "
              f"{r['frame_s']:>10.1f} {r['float_pps']:>11.0f} {r['ratio']:>9.1f}")


if __name__ == "__main__":
    main()

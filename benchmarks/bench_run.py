"""Pixels/s of the ways `flimcc run` decodes, side by side in one run (issue 13).

    python benchmarks/bench_run.py [--pixels 16384] [--model seq2seqlite-int8]

The shipped 8-bit Seq2SeqLite is compiled for the PYNQ-Z2 (FIFOs not sized), then the
same simulated pixels (135 gates) are decoded by

- the fast simulator (`flimcc.fastsim`: the loops as generated C, OpenMP over the cores),
- flimcc's executor on the compiled graph (FINN's numpy models node by node; the golden
  the fast simulator is checked against), on a tenth of the pixels,
- onnxruntime running the float Seq2SeqLite (`seq2seqlite-float`, its fused GRU),

each timed after a warm-up batch, in batches of ~4,096 pixels (whole frames of P) as
`flimcc run` decodes. The
table gives pixels/s and the ratio to onnxruntime; the fast simulator's output is checked
bit for bit against the executor's on the executor's pixels.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

BATCH = 4096


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pixels", type=int, default=16384)
    ap.add_argument("--model", default="seq2seqlite-int8")
    args = ap.parse_args(argv)

    import flimcc
    from flimcc.compile import compile_model
    from flimcc.execute import execute
    from flimcc.fastsim import FastModel
    from flimcc.models import zoo
    from flimcc.models.fli_data import simulate

    build = Path(tempfile.mkdtemp(prefix="flimcc-bench-run-")) / "build"
    compile_model(zoo.path(args.model), "pynq-z2", build, verify_samples=0, size_fifos=False)
    hw = flimcc.load(build / "model.onnx")
    name, out = hw.graph.input[0].name, hw.graph.output[0].name
    x = simulate(args.pixels, seed=0).x[:, :135].astype(np.float32)  # (n, 135, 1)
    fast = FastModel(hw)
    from flimcc.run import _pixels

    p = _pixels(hw)
    batch = max(BATCH // p, 1) * p  # a compiled design runs whole frames of P pixels
    x = x[:len(x) // p * p]
    float_model = flimcc.load(zoo.path("seq2seqlite-float"))
    fname = float_model.graph.input[0].name

    def timed(fn, data) -> tuple[float, np.ndarray]:
        fn(data[:min(batch, len(data))])  # warm-up (compilation, sessions, first allocations)
        t0 = time.perf_counter()
        parts = [fn(data[lo:lo + batch]) for lo in range(0, len(data), batch)]
        return len(data) / (time.perf_counter() - t0), np.concatenate(parts)

    few = x[:max(len(x) // 10 // p, 1) * p]
    rows = []
    fast_rate, fast_y = timed(lambda d: fast({name: d})[out], x)
    exec_rate, exec_y = timed(lambda d: execute(hw, {name: d})[out], few)
    ort_rate, _ = timed(lambda d: execute(float_model, {fname: d})[float_model.graph.output[0].name], x)
    exact = np.array_equal(fast_y[:len(few)], exec_y)
    rows = [("fast simulator (flimcc.fastsim, C)", fast_rate, len(x)),
            ("flimcc executor (FINN numpy models)", exec_rate, len(few)),
            ("onnxruntime, float Seq2SeqLite", ort_rate, len(x))]
    print(f"{args.model} compiled for pynq-z2 (P = {p}); {len(x):,} simulated pixels, batches of {batch:,}")
    print()
    print("| decoder | pixels | pixels/s | vs onnxruntime |")
    print("|---|---|---|---|")
    for label, rate, n in rows:
        print(f"| {label} | {n:,} | {rate:,.0f} | {rate / ort_rate:.2f}x |")
    print()
    print(f"fast simulator bit-exact with the executor on {len(few):,} pixels: {'yes' if exact else 'NO'}; "
          f"loops on the executor: {fast.why_slow or 'none'}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of unroll-gru: onnxruntime on the GRU graph against the scan-unrolled graph.

    python benchmarks/bench_unroll_gru.py [--pixels 4096] [--steps 135] [--repeats 7]

For Seq2SeqLite-shaped (GRU 32) and Seq2Seq-shaped (2 x GRU 128) models with random
weights, it prints the median onnxruntime time of the original graph and of the graph after
`unroll-gru` (mode=scan) on the same input, the ratio, the largest output difference, and
the pass's own run time. The two graphs are timed in alternation, so that a change in the
machine's load affects both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gru_models import seq2seq_lite_model, seq2seq_model  # noqa: E402

from flimcc.execute import execute  # noqa: E402
from flimcc.passes.unroll_gru import UnrollGRU  # noqa: E402

TARGET_RATIO = 2.0  # the scan graph may cost at most this much of the GRU graph


def time_pass(model, repeats: int) -> tuple[float, object]:
    times, unrolled = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        unrolled = model.transform(UnrollGRU())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), unrolled


def bench(name: str, model, pixels: int, repeats: int) -> dict:
    pass_s, unrolled = time_pass(model, 3)
    x = np.random.default_rng(0).uniform(0, 1, (pixels, *model.get_tensor_shape("x")[1:])).astype(np.float32)
    # flimcc.execute runs each graph as one onnxruntime session (cached after the first
    # call), with the batch axis relaxed from the model's 1 to the pixel count.
    graphs = {"gru": model, "scan": unrolled}
    outputs = {k: execute(m, x)["y"] for k, m in graphs.items()}  # also builds the sessions
    times = {k: [] for k in graphs}
    for _ in range(repeats):
        for key, m in graphs.items():
            t0 = time.perf_counter()
            execute(m, x)
            times[key].append(time.perf_counter() - t0)
    gru, scan = statistics.median(times["gru"]), statistics.median(times["scan"])
    return {
        "model": name, "gru_ms": gru * 1e3, "scan_ms": scan * 1e3, "ratio": scan / gru,
        "max_diff": float(np.max(np.abs(outputs["gru"] - outputs["scan"]))), "pass_ms": pass_s * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=4096, help="batch size (pixels per run)")
    parser.add_argument("--steps", type=int, default=135, help="sequence length T")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per graph")
    args = parser.parse_args()

    models = [("Seq2SeqLite (GRU 32)", seq2seq_lite_model(args.steps)),
              ("Seq2Seq (2 x GRU 128)", seq2seq_model(args.steps))]
    rows = [bench(name, model, args.pixels, args.repeats) for name, model in models]

    print(f"T={args.steps}, {args.pixels} pixels, median of {args.repeats} interleaved runs, "
          f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs")
    header = f"{'model':<24}{'ORT GRU':>11}{'ORT scan':>11}{'scan/GRU':>10}{'max |diff|':>12}{'pass':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<24}{r['gru_ms']:>8.1f} ms{r['scan_ms']:>8.1f} ms{r['ratio']:>9.2f}x"
              f"{r['max_diff']:>12.1e}{r['pass_ms']:>7.0f} ms")
    worst = max(r["ratio"] for r in rows)
    verdict = "meets" if worst <= TARGET_RATIO else "MISSES"
    print(f"worst ratio {worst:.2f}x {verdict} the target of {TARGET_RATIO:.0f}x")


if __name__ == "__main__":
    main()

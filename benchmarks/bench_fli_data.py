"""Throughput of the FLI data simulator with its default (Seq2SeqLite) settings.

Run as ``python benchmarks/bench_fli_data.py``; prints n, seconds and curves/s
(best of three runs, to damp one-off noise from the machine).
"""

from __future__ import annotations

import time

from flimcc.models.fli_data import SimConfig, simulate

SIZES = (10_000, 100_000)
REPEATS = 3


def main() -> None:
    config = SimConfig()
    simulate(100, config)  # warm-up: imports and first-call allocations
    print(f"{'n':>8}  {'seconds':>8}  {'curves/s':>10}")
    for n in SIZES:
        best = min(_timed(n, config, seed) for seed in range(REPEATS))
        print(f"{n:>8}  {best:>8.3f}  {n / best:>10,.0f}")


def _timed(n: int, config: SimConfig, seed: int) -> float:
    start = time.perf_counter()
    simulate(n, config, seed=seed)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

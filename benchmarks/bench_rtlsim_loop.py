"""A compiled model's recurrent loops as RTL under Verilator (`flimcc rtlsim`), measured.

    python benchmarks/bench_rtlsim_loop.py [BUILD_OR_MODEL] [--pixels N] [--size-fifos] [--gap 10 --stall 10]

BUILD_OR_MODEL is a build folder or a model, compiled for PYNQ-Z2 first (default: the zoo's
Seq2SeqLite float). Prints, per loop: HDL generation seconds, Verilator build + run seconds
(a build is cached by content: the first run on a machine builds, later ones hit the
cache), simulated cycles per wall second, measured against estimated cycles per pixel, and
the bit-exact verdict against flimcc's executor.

Measured (zoo Seq2SeqLite float, PYNQ-Z2, P = 13, T = 135, 26 pixels, 10% input gaps and
output stalls): see the README's rtlsim table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main(argv=None) -> None:
    from flimcc.models import zoo
    from flimcc.rtlsim import rtlsim_build

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", default=str(zoo.path("seq2seqlite-float")))
    ap.add_argument("--pixels", type=int)
    ap.add_argument("--size-fifos", action="store_true")
    ap.add_argument("--gap", type=int, default=10)
    ap.add_argument("--stall", type=int, default=10)
    args = ap.parse_args(argv)
    src = Path(args.source)
    if not src.is_dir():
        from flimcc.compile import compile_model

        out = Path(tempfile.mkdtemp(prefix="flimcc-bench-")) / "build"
        t0 = time.perf_counter()
        compile_model(src, "pynq-z2", out, verify_samples=0, size_fifos=False)  # sized below if asked
        print(f"compiled {src.name} for PYNQ-Z2 in {time.perf_counter() - t0:.1f} s")
        src = out
    t0 = time.perf_counter()
    rec = rtlsim_build(src, pixels=args.pixels, size_fifos=args.size_fifos, gap_percent=args.gap,
                       stall_percent=args.stall)
    wall = time.perf_counter() - t0
    print(f"{rec['simulator']}; {rec['pixels']} pixels; gaps {args.gap}%, stalls {args.stall}%; "
          f"FIFOs {'sized by simulation' if args.size_fifos else 'as in the build'}; {wall:.0f} s in all")
    print("| loop | T | P | HDL s | Verilator build s | run s | cycles | simulated cycles/s | measured cyc/px | "
          "estimated cyc/px | measured/estimated | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rec["loops"]:
        print(f"| {r['loop']} | {r['steps']} | {r['pixels']} | {r['hdl_seconds']:.1f} | {r['build_seconds']:.1f} | "
              f"{r['run_seconds']:.2f} | {r['cycles']:,} | {r['cycles'] / r['run_seconds']:,.0f} | {r['cycles_per_pixel']:,.1f} | "
              f"{r['estimated_cycles_per_pixel']:,.1f} | {r['cycles'] / r['estimated_cycles']:.2f} | "
              f"{'yes' if r['bit_exact'] else 'NO'} |", flush=True)
    print(f"design: {rec['cycles_per_pixel']:,.1f} cycles/pixel measured on the {rec['cycles_measured_on']}; "
          f"compile estimate {rec['estimated_cycles_per_pixel']:,.1f}")


if __name__ == "__main__":
    main()

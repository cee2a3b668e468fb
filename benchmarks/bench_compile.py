"""flimcc compile per model and target, and flimcc's folding against FINN's SetFolding.

    python benchmarks/bench_compile.py [--models seq2seqlite-float,seq2seq,seq2seq:4] [--target pynq-z2]
                                      [--pixels 512] [--skip-setfolding]

A model is a zoo name, optionally with the bits of post-training quantization (name:4).

Table 1, per model: compile time, cycles per pixel, its ratio to the board's arithmetic
limit (MACs per pixel / DSPs: one MAC per DSP per cycle) and to the packed limit (as many
MACs per DSP as finn-rtllib's MVU packs: 2 for 8 x 8 on a DSP48E1; below 1 means LUT
multipliers add to the DSPs), pixels per second, resources,
and the executor's pixels per second on the compiled graph (flimcc's Python execution of
the hardware graph, vectorised over pixels).

Table 2: on the same lowered graph, FINN's SetFolding (a cycles-per-frame target, node by
node, blind to the loop and the budget) swept over targets, its fastest design that fits
the budget, against flimcc's fold. Both are scored with the same cost model
(:mod:`flimcc.hw.cost`: FINN's estimators plus the loop model).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

import flimcc  # noqa: E402
from flimcc.compile import compile_model  # noqa: E402
from flimcc.hw import cost  # noqa: E402
from flimcc.layout import loop_nodes  # noqa: E402
from flimcc.models import zoo  # noqa: E402
from flimcc.models.fli_data import simulate  # noqa: E402
from flimcc.pipeline import Pipeline  # noqa: E402
from flimcc.targets import get_target  # noqa: E402


def executor_rate(model_path: Path, pixels: int) -> float:
    hw = flimcc.load(model_path)
    t_steps = hw.get_tensor_shape("x")[1] if hw.get_tensor_shape("x") else 135
    x = simulate(pixels, seed=5).x[:, :t_steps].astype(np.float32)
    flimcc.execute(hw, {"x": x[:8]})
    t0 = time.perf_counter()
    flimcc.execute(hw, {"x": x})
    return pixels / (time.perf_counter() - t0)


def honest_limit(model_path: Path, part: str, dsps: int, macs: int) -> tuple[float, int]:
    """The arithmetic limit as the RTL packs it: MACs per pixel / (DSPs x products per DSP),
    the products per DSP of finn-rtllib's MVU at the loops' matrix widths (2 for 8 x 8 on a
    DSP48E1); with those products per DSP."""
    from qonnx.custom_op.registry import getCustomOp

    from flimcc.hw.estimate import A_WIDTH, dsp_block, mvu_lanes

    block = dsp_block(part)
    lanes = 1
    for _, loop in loop_nodes(flimcc.load(model_path)):
        for n in loop.get_nodeattr("body").node:
            if n.op_type.startswith("MVAU") and block in A_WIDTH:
                inst = getCustomOp(n)
                lanes = max(lanes, mvu_lanes(inst.get_input_datatype(1).bitwidth(),
                                             inst.get_input_datatype(0).bitwidth(), False, block))
    return macs / (dsps * lanes), lanes


def setfolding_best(lowered, target, headroom: float, clock: float) -> dict | None:
    """FINN's SetFolding on the top graph and every loop body, swept over cycle targets;
    the fastest result within the budget (P = the smallest full-pipeline interleave)."""
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from qonnx.core.modelwrapper import ModelWrapper

    from flimcc.passes.lower_finn import quiet_finn

    from flimcc.passes.fold import THRESHOLD_PLACEMENTS

    budget = target.budget(headroom)
    best = None
    from flimcc.passes.batch_pixels import set_pixels

    # one pixel per frame, as fold searches (FINN's cycles then are per pixel)
    lowered = set_pixels(ModelWrapper(copy.deepcopy(lowered.model)), 1, auto=True)
    sweep = [(4 ** k, d) for k in range(1, 13) for d in THRESHOLD_PLACEMENTS]
    for tgt, depth in sweep:  # the same threshold placements fold tries
        m = ModelWrapper(copy.deepcopy(lowered.model))
        with quiet_finn():
            cost.place_threshold_memories(m, depth)
            m = m.transform(SetFolding(target_cycles_per_frame=tgt, two_pass_relaxation=False))
            for _, inst in loop_nodes(m):
                body = inst.body().transform(SetFolding(target_cycles_per_frame=tgt, two_pass_relaxation=False))
                inst.set_nodeattr("body", body.model.graph)
        p = cost.auto_pixels(m)
        used = cost.total_resources(m, target.fpga_part, p)
        perf = cost.throughput(m, p, clock)
        if cost.fits(used, budget) and (best is None or perf["pixels_per_second"] > best["pixels_per_second"]):
            best = {**perf, "target_cycles": tgt, **{k: used[k] for k in cost.RESOURCES}}
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="seq2seqlite-float,seq2seq,seq2seq:4")
    ap.add_argument("--target", default="pynq-z2")
    ap.add_argument("--pixels", type=int, default=512, help="pixels for the executor measurement")
    ap.add_argument("--out", default="build/bench")
    ap.add_argument("--skip-setfolding", action="store_true")
    args = ap.parse_args(argv)
    target = get_target(args.target)
    rows, fold_rows = [], []
    for spec in args.models.split(","):
        zoo_name, _, bits = spec.partition(":")
        bits = int(bits or 8)
        path = zoo.path(zoo_name)
        qat = any(n.op_type in ("Quant", "IntQuant") for n in flimcc.load(path).graph.node)
        name = f"{zoo_name} ({'QAT' if qat else f'{bits}-bit PTQ'})"
        t0 = time.perf_counter()
        try:
            s = compile_model(path, args.target, Path(args.out) / f"{zoo_name}-{bits}b-{args.target}",
                              verify_samples=8, bits=bits, size_fifos=False)  # the pipeline alone
        except flimcc.errors.FlimccError as e:
            rows.append((name, f"{time.perf_counter() - t0:.0f}", str(e)[:240]))
            continue
        seconds = time.perf_counter() - t0
        rate = executor_rate(Path(s["output_dir"]) / "model.onnx", args.pixels)
        r = s["resources"]
        limit, lanes = honest_limit(Path(s["output_dir"]) / "model.onnx", s["fpga_part"], target.resources["DSP"],
                                    s["macs_per_pixel"])
        rows.append((name, f"{seconds:.0f}", f"{s['cycles_per_pixel']:,.0f}", f"{s['cycles_vs_one_mac_per_dsp']:.2f}",
                     f"{s['cycles_per_pixel'] / limit:.2f} ({lanes}/DSP)",
                     f"{s['pixels_per_second']:,.0f}", str(s["pixel_parallelism"]), f"{r['LUT']:,.0f}",
                     f"{r['BRAM_18K']:,.0f}", f"{r['DSP']:,.0f}", f"{rate:,.0f}"))
        if not args.skip_setfolding:
            model = flimcc.load(path, batch=8)
            text = s["pipeline"].split(",batch-pixels")[0]  # up to and including lower-finn
            lowered = Pipeline.parse(text).run(model, verify=False).model
            base = setfolding_best(lowered, target, 0.85, s["clock_mhz"])
            if base:
                fold_rows.append((name, f"{base['cycles_per_pixel']:,.0f}", f"{base['pixels_per_second']:,.0f}",
                                  f"{base['LUT']:,.0f}/{base['BRAM_18K']:,.0f}/{base['DSP']:,.0f}",
                                  str(base["target_cycles"]), f"{s['cycles_per_pixel']:,.0f}",
                                  f"{s['pixels_per_second']:,.0f}",
                                  f"{r['LUT']:,.0f}/{r['BRAM_18K']:,.0f}/{r['DSP']:,.0f}",
                                  f"{s['pixels_per_second'] / base['pixels_per_second']:.2f}"))
            else:
                fold_rows.append((name, "nothing fits", "", "", "", f"{s['cycles_per_pixel']:,.0f}",
                                  f"{s['pixels_per_second']:,.0f}", "", ""))
    print(f"\nflimcc compile, target {target.name} ({target.fpga_part}, {target.default_clock_mhz:g} MHz, "
          f"budget 85%); limit = MACs per pixel / {target.resources['DSP']} DSPs (one MAC per DSP); packed "
          "limit = MACs per pixel / (DSPs x the products finn-rtllib's MVU packs into one DSP)\n")
    head = ("model", "compile s", "cycles/px", "/limit", "/packed limit", "px/s", "P", "LUT", "BRAM18", "DSP",
            "executor px/s")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if fold_rows:
        print("\nfolding on the same lowered graph, scored by the same cost model\n")
        head = ("model", "SetFolding cycles/px", "px/s", "LUT/BRAM/DSP", "its cycle target",
                "flimcc fold cycles/px", "px/s", "LUT/BRAM/DSP", "flimcc/SetFolding")
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for row in fold_rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())

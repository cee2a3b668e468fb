"""A walk through a `flimcc compile` build folder: what is in it and how to use it.

    flimcc compile models/zoo/seq2seqlite-float.onnx --target pynq-z2      # writes the folder
    python examples/walkthrough_build.py build/seq2seqlite-float-pynq-z2

Prints the summary, the hardware graph (software head and tail, FINN nodes, the recurrent
loops and what their bodies hold), the loop cycle model against FINN's report, the largest
memories, and runs the compiled graph on simulated decays against the original model.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

import flimcc
from flimcc.hw import cost
from flimcc.layout import loop_nodes
from flimcc.models.fli_data import simulate


def walkthrough(build: Path, pixels: int = 64) -> dict:
    summary = json.loads((build / "summary.json").read_text())
    print(f"{summary['model']} on {summary['target']} ({summary['fpga_part']}): fits={summary['fits']}, "
          f"{summary['pixels_per_second']:,.0f} pixels/s, P={summary['pixel_parallelism']}")

    hw = flimcc.load(build / "model.onnx")  # a hardware graph loads like any model
    print("\nhardware graph, in order:")
    for node in hw.graph.node:
        where = "hw" if node.domain.startswith(("finn.", "flimcc.")) else "software"
        print(f"  {where:8s} {node.op_type:22s} {node.name}")

    cycles = json.loads((build / "report" / "estimate_layer_cycles.json").read_text())
    print("\nrecurrent loops (cycles per frame of P pixels = T x (max(P x II, L) + overhead)):")
    for node, loop in loop_nodes(hw):
        timing = cost.loop_timing(node, loop)
        ops = Counter(n.op_type for n in loop.get_nodeattr("body").node)
        p = loop.get_nodeattr("pixels")
        print(f"  {node.name}: T={timing.steps}, P={p}, II={timing.ii}, L={timing.latency}, "
              f"overhead={timing.overhead} -> {timing.frame_cycles(p):,} (report: {cycles[node.name]:,})")
        print(f"    body: {dict(sorted(ops.items()))}")

    plan = json.loads((build / "memory_plan.json").read_text())
    print("\nlargest memories:")
    for m in sorted(plan["memories"], key=lambda m: -m["bits"])[:5]:
        print(f"  {m['memory']:10s} {m['node']:48s} {m['bits']:>9,} bits  BRAM18 {m['BRAM_18K']}  LUT {m['LUT']}")

    original = flimcc.load(summary["model"], batch=pixels)
    x = simulate(pixels, seed=11).x.astype(np.float32)
    got = flimcc.execute(hw, {"x": x})["y"]
    want = flimcc.execute(original, {"x": x})["y"]
    err = float(np.max(np.abs(got - want)))
    print(f"\ncompiled graph vs the float model on {pixels} simulated decays: max abs err {err:.3g}")
    return {"summary": summary, "max_abs_err": err}


if __name__ == "__main__":
    walkthrough(Path(sys.argv[1] if len(sys.argv) > 1 else "build/seq2seqlite-float-pynq-z2"))

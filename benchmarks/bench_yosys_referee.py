"""flimcc's resource estimates against open synthesis (Yosys) of the RTL they describe.

    python benchmarks/bench_yosys_referee.py [BUILD_OR_MODEL] [--ops MVAU_rtl,Thresholding_rtl] [--loop RecurrentLoop_0]

Every node of a loop's hardware body (as its RTL is built: width converters and FIFOs
included) that has RTL is generated as FINN or flimcc generates it and synthesised alone by
Yosys for the build's part family (`flimcc.rtl.yosys`). The table puts flimcc's estimate
(with its source) next to Yosys's cells per node, then the totals of the nodes synthesised.
DSPs agree exactly (they are primitives the RTL instantiates); memories cannot be compared
yet (the front end's --ignore-initial drops their $readmemh initialisation, and Yosys then
keeps the weights in flip-flops); the LUT and FF gaps are kept in the table (Yosys maps LUTs its
own way, and the weights it keeps in logic inflate its count; the FF ratio is taken where
Yosys's count is fair, `ff_comparable`). finn-rtllib's thresholding.sv does not elaborate in
slang ("unsynthesizable feature"), so Thresholding_rtl nodes are listed as failed. A model is compiled first (PYNQ-Z2, FIFOs not sized); default: the 8-bit QAT
student. Nodes whose products are marked for LUTs (resType lut) are synthesised with
``-nodsp`` (Yosys ignores the ``use_dsp = "no"`` Vivado honours). `--ops` restricts the node types (synthesis of an MVU takes ~20 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import flimcc  # noqa: E402
from qonnx.custom_op.registry import getCustomOp  # noqa: E402
from flimcc.hw import cost  # noqa: E402
from flimcc.layout import loop_nodes  # noqa: E402
from flimcc.models import zoo  # noqa: E402
from flimcc.rtl import yosys  # noqa: E402
from flimcc.rtl.finn_hdl import generate_node_hdl, round_thresholds  # noqa: E402

KEYS = ("DSP", "BRAM_18K", "LUT", "FF")

#: fifo.sv builds a FIFO this shallow as a shift register: SRLs in Vivado, flip-flops in Yosys
SHIFT_FIFO_DEPTH = 33


def ff_comparable(op: str, inst) -> bool:
    """Whether Yosys's FF count of the node is a fair referee of flimcc's: not for an
    MVAU_rtl (its uninitialised weights stay in FFs) nor a shift FIFO (SRLs in Vivado)."""
    if op == "MVAU_rtl":
        return False
    return not (op.startswith("StreamingFIFO") and inst.get_nodeattr("depth") <= SHIFT_FIFO_DEPTH)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", default=str(zoo.path("seq2seqlite-int8")))
    ap.add_argument("--ops", default="", help="comma-separated op types to synthesise [all with RTL]")
    ap.add_argument("--loop", default="", help="only this loop [all]")
    args = ap.parse_args(argv)
    src = Path(args.source)
    if not src.is_dir():
        from flimcc.compile import compile_model

        out = Path(tempfile.mkdtemp(prefix="flimcc-referee-")) / "build"
        compile_model(src, "pynq-z2", out, verify_samples=0, size_fifos=False)
        src = out
    summary = json.loads((src / "summary.json").read_text())
    part, clk_ns = summary["fpga_part"], 1000.0 / summary["clock_mhz"]
    from flimcc.hw.estimate import dsp_block

    family = yosys.FAMILY[dsp_block(part)]
    ops = set(filter(None, args.ops.split(",")))
    model = flimcc.load(src / "model.onnx")
    work = Path(tempfile.mkdtemp(prefix="flimcc-yosys-"))
    print(f"{src.name}: {part} ({family}); {yosys.version()}")
    print()
    print("| loop | node | op | estimate DSP / BRAM18 / LUT / FF | source | Yosys DSP / BRAM18 / LUT / FF | s |")
    print("|---|---|---|---|---|---|---|")
    totals = {"estimate": dict.fromkeys(KEYS, 0.0), "yosys": dict.fromkeys(KEYS, 0)}
    ff_fair = {"estimate": 0, "yosys": 0}
    mismatches, failed = [], []
    for node, loop in loop_nodes(model):
        if args.loop and node.name != args.loop:
            continue
        body = round_thresholds(loop.hardware_body())
        for bnode in body.graph.node:
            if (ops and bnode.op_type not in ops) or not bnode.domain.endswith(".rtl"):
                continue
            est = cost.node_res(bnode, part, body.graph)
            t0 = time.perf_counter()
            hdl = generate_node_hdl(body, bnode, work / bnode.name, part, clk_ns)
            try:
                # products marked use_dsp = "no" (resType lut): Vivado honours the mark, Yosys
                # does not, so such a node is synthesised without DSPs
                inst = getCustomOp(bnode)
                luts_only = "resType" in inst.get_nodeattr_types() and inst.get_nodeattr("resType") == "lut"
                got = yosys.synthesize(hdl.top, hdl.files, work / bnode.name, family, dsp=not luts_only)
            except yosys.SynthesisError as e:
                failed.append(bnode.name)
                print(f"| {node.name} | {bnode.name} | {bnode.op_type} | | | {str(e).split(': ', 1)[-1]} | |", flush=True)
                continue
            seconds = time.perf_counter() - t0
            for k in KEYS:
                totals["estimate"][k] += float(est.get(k, 0))
                totals["yosys"][k] += got[k]
            if ff_comparable(bnode.op_type, inst):
                ff_fair["estimate"] += est["FF"]
                ff_fair["yosys"] += got["FF"]
            if round(float(est.get("DSP", 0))) != got["DSP"]:
                mismatches.append(bnode.name)
            print(f"| {node.name} | {bnode.name} | {bnode.op_type} | "
                  f"{est.get('DSP', 0):.0f} / {est.get('BRAM_18K', 0):.0f} / {est.get('LUT', 0):,.0f} / "
                  f"{est['FF']:,.0f} | {est['source']}; FF: {est['FF_source'].removeprefix('flimcc: ')} | "
                  f"{got['DSP']} / {got['BRAM_18K']} / {got['LUT']:,} / {got['FF']:,} | {seconds:.0f} |", flush=True)
    e, y = totals["estimate"], totals["yosys"]
    print(f"| total | | | {e['DSP']:.0f} / {e['BRAM_18K']:.0f} / {e['LUT']:,.0f} / {e['FF']:,.0f} | | "
          f"{y['DSP']} / {y['BRAM_18K']} / {y['LUT']:,} / {y['FF']:,} | |")
    print()
    print(f"DSPs disagree on {len(mismatches)} node(s){': ' + ', '.join(mismatches) if mismatches else ''}; "
          f"Yosys failed on {len(failed)}{': ' + ', '.join(failed) if failed else ''}. Memories are not compared: "
          "slang's --ignore-initial drops the $readmemh that fills them, and Yosys then keeps constant-less "
          f"weights in flip-flops. LUT estimate / Yosys = {e['LUT'] / max(y['LUT'], 1):.2f}; "
          f"FF estimate / Yosys = {ff_fair['estimate'] / max(ff_fair['yosys'], 1):.2f} on the nodes where Yosys's "
          f"count is fair ({ff_fair['estimate']:,} / {ff_fair['yosys']:,}: not MVAU_rtl, whose uninitialised weights "
          f"Yosys keeps in FFs, nor FIFOs <= {SHIFT_FIFO_DEPTH} deep, shift registers that Vivado puts in SRLs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

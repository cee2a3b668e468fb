"""What flimcc's own RTL ops share: one generated SystemVerilog file per node, named after
the node (node names are unique model-wide), and FINN's IPI recipe for a plain RTL module.

An op subclasses FINN's abstract op (its semantics, shapes and Python execution) and
`FlimccRTLOp`, and supplies `hdl_text()`: the module `<node name>` with FINN's port names
(`ap_clk`, `ap_rst_n`, `in0_V_*`, `out0_V_*`, ...). Registered in FINN's RTL domain
(`flimcc.hw`), FINN's SpecializeLayers, code generation and stitching treat it as its own.
"""

from __future__ import annotations

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
        (out / f"{self.onnx_node.name}.sv").write_text(self.hdl_text())
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

    def bram_estimation(self, fpgapart=None):
        return 0

    def uram_estimation(self, fpgapart=None):
        return 0

    def dsp_estimation(self, fpgapart):
        return 0


def stream_ports(direction: str, port: str, width: int) -> str:
    """One AXI-stream port group in FINN's naming (`direction`: "in" or "out")."""
    d_in, d_out = ("input", "output") if direction == "in" else ("output", "input")
    return (f"  {d_in} logic [{width - 1}:0] {port}_TDATA, {d_in} logic {port}_TVALID, "
            f"{d_out} logic {port}_TREADY")

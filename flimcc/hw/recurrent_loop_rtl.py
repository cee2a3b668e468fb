"""RecurrentLoop_rtl: the recurrent loop as an RTL node of FINN's own flow.

FINN's stitching (CreateStitchedIP) takes only nodes of its ``.rtl``/``.hls`` domains, so a
build handed to FINN carries each ``flimcc.hw.RecurrentLoop`` as this op in FINN's RTL domain
(`flimcc.finn_flow.for_finn`): the same semantics, shapes and estimates, plus what FINN's
steps ask of an RTL node:

- `generate_hdl` (FINN's step_hw_codegen via PrepareIP): the loop's RTL
  (`flimcc.rtl.loop.loop_hdl`, finn-rtllib sources unpatched) into the node's code
  generation folder, its sources listed in compile order in ``<loop>_files.f``;
- `get_rtl_file_list`, `code_generation_ipi` (step_create_stitched_ip): the sources and the
  weight/threshold memory files added to the Vivado project, the top module instantiated;
- `get_verilog_top_module_intf_names`: the AXI streams as the generated module has them
  (``in<k>_V`` per node input, ``out<k>_V`` per node output; a final state nothing reads
  has no port, and nothing connects to it).
"""

from __future__ import annotations

from pathlib import Path

from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

from flimcc.hw.recurrent_loop import RecurrentLoop


class RecurrentLoop_rtl(RecurrentLoop, RTLBackend):
    def get_nodeattr_types(self):
        attrs = RecurrentLoop.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def _file_list(self) -> Path:
        return Path(self.get_nodeattr("code_gen_dir_ipgen")) / f"{self.onnx_node.name}_files.f"

    def generate_hdl(self, model, fpgapart, clk):
        from flimcc.rtl.loop import loop_hdl

        out = Path(self.get_nodeattr("code_gen_dir_ipgen"))
        hdl = loop_hdl(model, self.onnx_node, out, fpgapart, clk, sim_patches=False)
        self._file_list().write_text("".join(f"{Path(f).name}\n" for f in hdl.files))
        self.set_nodeattr("gen_top_module", hdl.top)
        self.set_nodeattr("ipgen_path", str(out))
        self.set_nodeattr("ip_path", str(out))

    def get_rtl_file_list(self, abspath=False):
        base = self.get_nodeattr("code_gen_dir_ipgen") + "/" if abspath else ""
        return [base + name for name in self._file_list().read_text().split()]

    def code_generation_ipi(self):
        folder = Path(self.get_nodeattr("code_gen_dir_ipgen"))
        memories = sorted(str(p) for p in folder.glob("*.dat"))  # $readmemh files of weights and thresholds
        cmd = [f"add_files -norecurse {f}" for f in self.get_rtl_file_list(abspath=True) + memories]
        cmd.append(f"create_bd_cell -type module -reference {self.onnx_node.name} {self.onnx_node.name}")
        return cmd

    def get_verilog_top_module_intf_names(self):
        from flimcc.rtl.stitch import stream_port

        body = self.hardware_body()
        n_state, zero = self.get_nodeattr("num_state"), self._zero_flags()
        b_in = [i.name for i in body.graph.input if body.get_initializer(i.name) is None]
        present = [t for k, t in enumerate(b_in) if k >= n_state or not zero[k]]
        return {
            "clk": ["ap_clk"], "rst": ["ap_rst_n"],
            "s_axis": [(f"in{k}_V", stream_port(body, t, producer=False)[0]) for k, t in enumerate(present)],
            "m_axis": [(f"out{k}_V", stream_port(body, o.name, producer=True)[0])
                       for k, o in enumerate(body.graph.output)],
            "aximm": [], "axilite": [], "ap_none": [],
        }

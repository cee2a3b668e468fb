"""FINN's own HDL for FINN's RTL nodes, generated without a vendor tool, in one folder.

FINN's RTL ops (MVAU_rtl, Thresholding_rtl, StreamingFIFO_rtl, ...) fill their finn-rtllib
templates in `generate_hdl`; no Vivado is involved. This module runs that per node into a
folder and copies the finn-rtllib sources each node lists beside the generated files, so
the folder is self-contained (and content-addressed by `flimcc.rtl.verilator.build`).

Simulation copies: a few finn-rtllib files use constructs Verilator 5.48 rejects. Their
copies in the folder are patched (`SIM_PATCHES`, each a plain text substitution that keeps
the logic), the originals, which FINN synthesises, are never touched, and every patch
applied is listed in ``SIM_PATCHES.md`` in the folder.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.errors import UnsupportedError

_LEAF_LOADS = """		// Compute the count of decendents for all nodes in the reduction trees.
		typedef int unsigned  leaf_load_t[2*N-1];
		function leaf_load_t init_leaf_loads();
			automatic leaf_load_t  res;
			for(int unsigned  i = 2*N-1; i-- > N-1;)  res[i] = 1;
			for(int unsigned  i =   N-1; i-- >   0;)  res[i] = res[2*i+1] + res[2*i+2];
			return  res;
		endfunction : init_leaf_loads
"""

_FIFO_ABITS = "\t// Memory Space Decomposition\n\ttypedef struct {\n\t\tint unsigned  lo;\n\t\tint unsigned  hi;\n\t} abits_t;\n\tfunction abits_t INIT_ABITS();\n\t\tautomatic abits_t  abits = '{ lo: $clog2(DEPTH_REQ), hi: 0 };\n\t\tif(abits.lo > MIN_ABITS) begin\n\t\t\t// Consider Decomposition into lo + hi\n\t\t\tautomatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(abits.lo-1));\n\t\t\tif(hi_abits < abits.lo - 1) begin\n\t\t\t\tabits.lo--;\n\t\t\t\tabits.hi = hi_abits < 1? 1 : hi_abits;\n\t\t\tend\n\t\tend\n\t\treturn  abits;\n\tendfunction : INIT_ABITS\n\tlocalparam abits_t       ABITS      = INIT_ABITS();\n"

_FIFO_ABITS_SIM = '\t// Memory Space Decomposition (flimcc simulation copy: two int functions instead of one\n\t// returning a struct, which Verilator 5.48 rejects as a constant function)\n\tfunction int unsigned INIT_ABITS_LO();\n\t\tautomatic int unsigned  lo = $clog2(DEPTH_REQ);\n\t\tif(lo > MIN_ABITS) begin\n\t\t\tautomatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(lo-1));\n\t\t\tif(hi_abits < lo - 1)  lo--;\n\t\tend\n\t\treturn  lo;\n\tendfunction : INIT_ABITS_LO\n\tfunction int unsigned INIT_ABITS_HI();\n\t\tautomatic int unsigned  lo = $clog2(DEPTH_REQ);\n\t\tautomatic int unsigned  hi = 0;\n\t\tif(lo > MIN_ABITS) begin\n\t\t\tautomatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(lo-1));\n\t\t\tif(hi_abits < lo - 1)  hi = hi_abits < 1? 1 : hi_abits;\n\t\tend\n\t\treturn  hi;\n\tendfunction : INIT_ABITS_HI\n\tlocalparam int unsigned  ABITS_LO = INIT_ABITS_LO();\n\tlocalparam int unsigned  ABITS_HI = INIT_ABITS_HI();\n'

#: file name -> [(what, old text, new text)] applied in order to the simulation copy
#: (every occurrence of the old text is replaced).
SIM_PATCHES: dict[str, list[tuple[str, str, str]]] = {
    "add_multi.sv": [
        ("the constant function init_leaf_loads() and its typedef move from the generate block to module "
         "scope, unchanged (Verilator 5.48 rejects a constant function declared in a generate block)",
         _LEAF_LOADS, ""),
        ("(the same patch: where they go)", "\tuwire [SUM_WIDTH-1:0]  sum0;\n",
         _LEAF_LOADS.replace("\t\t", "\t") + "\tuwire [SUM_WIDTH-1:0]  sum0;\n"),
    ],
    "fifo.sv": [
        ("the constant function INIT_ABITS() returning a struct {lo, hi} becomes two int functions "
         "INIT_ABITS_LO/HI with the same arithmetic (Verilator 5.48 rejects struct constant functions)",
         _FIFO_ABITS, _FIFO_ABITS_SIM),
        ("(the same patch: its uses)", "ABITS.lo", "ABITS_LO"),
        ("(the same patch: its uses)", "ABITS.hi", "ABITS_HI"),
    ],
}


def _settings() -> None:
    """FINN reads its settings (finn-rtllib's path) from FINN_BUILD_DIR; any folder does."""
    if not os.environ.get("FINN_BUILD_DIR"):
        import tempfile

        os.environ["FINN_BUILD_DIR"] = tempfile.mkdtemp(prefix="flimcc-finn-")


def round_thresholds(model: ModelWrapper) -> ModelWrapper:
    """FINN's RoundAndClipThresholds: Thresholding_rtl's generator refuses float thresholds
    on integer inputs (flimcc keeps them FLOAT32-typed; their values are integers already)."""
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    return model.transform(RoundAndClipThresholds())


@dataclasses.dataclass
class NodeHDL:
    """A FINN RTL node's simulation sources: `top` has ports ap_clk, ap_rst_n, the node's
    data streams `in0_V`, ... and `out0_V` (weights come from a memstream inside)."""

    node: str
    top: str
    files: list[Path]


def generate_node_hdl(model: ModelWrapper, node, out_dir: Path, fpgapart: str, clk_ns: float,
                      sim_patches: bool = True) -> NodeHDL:
    """Generate `node`'s HDL into `out_dir` (sources in compile order, packages first, all
    inside `out_dir`; paths in generated files relative to it, where the simulator runs).
    `sim_patches`: patch the finn-rtllib copies for Verilator (simulation folders); a build
    folder, which FINN synthesises, gets the originals."""
    _settings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inst = getCustomOp(node)
    if not hasattr(inst, "generate_hdl") or not node.domain.endswith(".rtl"):
        raise UnsupportedError(f"node '{node.name}' ({node.op_type}) has no RTL implementation")
    before = set(out_dir.iterdir())
    inst.set_nodeattr("code_gen_dir_ipgen", str(out_dir))
    inst.generate_hdl(model, fpgapart, clk_ns)
    for f in set(out_dir.iterdir()) - before:  # FINN writes absolute paths into its wrappers
        if f.suffix in (".v", ".sv"):
            f.write_text(f.read_text().replace(str(out_dir.resolve()) + "/", "").replace(str(out_dir) + "/", ""))
    listed = list(inst.get_rtl_file_list(abspath=True))
    top = inst.get_nodeattr("gen_top_module")
    decoupled = node.op_type.startswith("MVAU") and inst.get_nodeattr("mem_mode") == "internal_decoupled"
    if decoupled:
        from finn.util.basic import get_settings

        lib = Path(get_settings().finn_rtllib)
        listed = [lib / "axi/hdl/axilite.sv", lib / "memstream/hdl/memstream.sv",
                  lib / "memstream/hdl/memstream_axi.sv", out_dir / f"{node.name}_memstream_wrapper.v", *listed]
    files = []
    for f in listed:
        src = Path(f)
        dst = out_dir / src.name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
            if sim_patches:
                _patch(dst)
        if dst not in files:
            files.append(dst)
    if decoupled:  # what FINN's Vivado IPI does: the weight memstream feeds in1_V
        # one folder holds many nodes: each memstream reads its own weight file
        os.replace(out_dir / "memblock.dat", out_dir / f"{node.name}_memblock.dat")
        shell = out_dir / f"{node.name}_node.sv"
        shell.write_text(_MEMSTREAM_SHELL.format(name=node.name, top=top, w=inst.get_instream_width_padded(1),
                                                 iw=inst.get_instream_width_padded(0),
                                                 ow=inst.get_outstream_width_padded()))
        files.append(shell)
        top = f"{node.name}_node"
    # packages first: Verilator needs a package before the modules that import it
    order = {f: k for k, f in enumerate(files)}
    files = sorted(files, key=lambda p: (not p.stem.endswith("_pkg"), order[p]))
    return NodeHDL(node.name, top, files)


_MEMSTREAM_SHELL = """// generated by flimcc.rtl.finn_hdl: node {name} with its weight memstream
module {name}_node (
  input logic ap_clk, input logic ap_rst_n,
  input logic [{iw}-1:0] in0_V_TDATA, input logic in0_V_TVALID, output logic in0_V_TREADY,
  output logic [{ow}-1:0] out0_V_TDATA, output logic out0_V_TVALID, input logic out0_V_TREADY
);
  logic [{w}-1:0] w_tdata; logic w_tvalid, w_tready;
  {name}_memstream_wrapper #(.INIT_FILE("{name}_memblock.dat")) weights (
    .ap_clk(ap_clk), .ap_clk2x(ap_clk), .ap_rst_n(ap_rst_n),
    .s_axilite_AWVALID(1'b0), .s_axilite_AWPROT('0), .s_axilite_AWADDR('0), .s_axilite_WVALID(1'b0),
    .s_axilite_WDATA('0), .s_axilite_WSTRB('0), .s_axilite_BREADY(1'b0), .s_axilite_ARVALID(1'b0),
    .s_axilite_ARPROT('0), .s_axilite_ARADDR('0), .s_axilite_RREADY(1'b0),
    .s_axis_0_tvalid(1'b0), .s_axis_0_tdata('0),
    .m_axis_0_tready(w_tready), .m_axis_0_tvalid(w_tvalid), .m_axis_0_tdata(w_tdata)
  );
  {top} mvu (
    .ap_clk(ap_clk), .ap_clk2x(ap_clk), .ap_rst_n(ap_rst_n),
    .in1_V_TDATA(w_tdata), .in1_V_TVALID(w_tvalid), .in1_V_TREADY(w_tready),
    .in0_V_TDATA(in0_V_TDATA), .in0_V_TVALID(in0_V_TVALID), .in0_V_TREADY(in0_V_TREADY),
    .out0_V_TDATA(out0_V_TDATA), .out0_V_TVALID(out0_V_TVALID), .out0_V_TREADY(out0_V_TREADY)
  );
endmodule
"""


def _patch(path: Path) -> None:
    patches = SIM_PATCHES.get(path.name)
    if not patches:
        return
    text = path.read_text()
    notes = []
    for what, old, new in patches:
        if old not in text:
            raise UnsupportedError(f"finn-rtllib {path.name} changed: the simulation patch '{what}' no longer applies")
        text = text.replace(old, new)
        notes.append(f"- `{path.name}`: {what}")
    path.write_text(text)
    listing = path.parent / "SIM_PATCHES.md"
    if not listing.exists():
        listing.write_text("# Simulation-only patches of finn-rtllib copies (FINN synthesises the originals)\n\n")
    if notes[0] not in listing.read_text():
        with open(listing, "a") as f:
            f.write("\n".join(notes) + "\n")


def stream_beats(values: np.ndarray, dtype, folded_shape, width: int) -> list[int]:
    """FINN's packing of a tensor into stream beats (lane 0 in the LSBs), as integers."""
    from finn.util.data_packing import npy_to_rtlsim_input

    return [int(v) for v in npy_to_rtlsim_input(np.asarray(values).reshape(folded_shape), dtype, width)]


def beats_to_array(beats: list[int], dtype, folded_shape, width: int) -> np.ndarray:
    """The inverse of `stream_beats` for an output stream."""
    from finn.util.data_packing import rtlsim_output_to_npy

    return rtlsim_output_to_npy(beats, None, dtype, tuple(folded_shape), width, dtype.bitwidth())

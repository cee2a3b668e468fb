"""Stitch a graph of RTL nodes into one SystemVerilog module: every tensor a stream.

The graph's inputs become the module's ``in<k>_V`` streams and its outputs ``out<k>_V``, in
graph order; each node is an instance of its own HDL (`flimcc.rtl.finn_hdl`), each edge a
set of TDATA/TVALID/TREADY wires. A tensor read by two nodes needs an explicit fork
(DuplicateStreams) in the graph, as FINN requires; constant inputs (weights, thresholds)
live inside the nodes. What the module cannot be built from is refused by name: a node
with no RTL, a fan-out without a fork, or an edge whose producer and consumer disagree on
the beat width (a width converter belongs there).
"""

from __future__ import annotations

from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.errors import UnsupportedError
from flimcc.rtl.finn_hdl import NodeHDL, generate_node_hdl

RTL_DOMAIN = "finn.custom_op.fpgadataflow.rtl"


def _streams(inst, node, inits) -> tuple[list[tuple[str, int]], list[int]]:
    """(tensor, beat width) of each input stream in port order, and each output's width.
    Weights and thresholds live inside MVAU/Thresholding; a constant operand of an
    elementwise op has width 0 and no port."""
    n_in = 1 if node.op_type.startswith(("MVAU", "Thresholding")) else len(node.input)
    ins = [(t, inst.get_instream_width_padded(k)) for k, t in enumerate(node.input[:n_in]) if t and t not in inits]
    outs = [inst.get_outstream_width_padded(k) if len(node.output) > 1 else inst.get_outstream_width_padded()
            for k in range(len(node.output))]
    return [(t, w) for t, w in ins if w], outs


def stream_port(graph_model: ModelWrapper, tensor: str, producer: bool):
    """(beat width, folded shape, datatype) of `tensor`'s stream as its producer writes it
    (`producer`) or as its first consumer reads it."""
    for node in graph_model.graph.node:
        inst = getCustomOp(node)
        if producer and tensor in node.output:
            k = list(node.output).index(tensor)
            if len(node.output) > 1:
                return inst.get_outstream_width_padded(k), list(inst.get_folded_output_shape(k)), \
                    inst.get_output_datatype(k)
            return inst.get_outstream_width_padded(), list(inst.get_folded_output_shape()), inst.get_output_datatype()
        if not producer and tensor in node.input:
            k = list(node.input).index(tensor)
            return inst.get_instream_width_padded(k), list(inst.get_folded_input_shape(k)), inst.get_input_datatype(k)
    raise KeyError(f"no node {'writes' if producer else 'reads'} '{tensor}'")


def stitch(model: ModelWrapper, out_dir: Path, fpgapart: str, clk_ns: float, top: str,
           sim_patches: bool = True) -> NodeHDL:
    """Generate every node's HDL into `out_dir` and a module `top` wiring them up
    (`sim_patches`: see `generate_node_hdl`)."""
    out_dir = Path(out_dir)
    graph = model.graph
    # wires named after their producer's port, not the tensor: the tensors FINN's InsertDWC
    # and InsertFIFO add get random names, and the same graph must give the same module
    wires = _Wires()
    names = {t.name: f"in{k}" for k, t in enumerate(i for i in graph.input)}
    names.update({t: f"{n.name}_out{k}" for n in graph.node for k, t in enumerate(n.output)})
    _wire = (lambda t: wires[names.get(t, t)])
    for node in graph.node:
        if node.domain != RTL_DOMAIN:
            raise UnsupportedError(f"node '{node.name}' ({node.op_type}) has no RTL implementation; "
                                   "the design cannot be simulated as RTL")
    inits = {t.name for t in graph.initializer}
    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for k, t in enumerate(node.input):
            if t and t not in inits:
                consumers.setdefault(t, []).append((node.name, k))
    for t, users in consumers.items():
        if len(users) > 1:
            raise UnsupportedError(f"tensor '{t}' feeds {len(users)} nodes ({', '.join(u for u, _ in users)}) "
                                   "without a DuplicateStreams fork")
    files: list[Path] = []
    width: dict[str, int] = {}
    lines = []
    ports = ["  input logic ap_clk, input logic ap_rst_n"]
    graph_in = [i.name for i in graph.input if i.name not in inits]
    graph_out = [o.name for o in graph.output]
    insts, fills = [], []
    for node in graph.node:
        inst = getCustomOp(node)
        hdl = generate_node_hdl(model, node, out_dir, fpgapart, clk_ns, sim_patches)
        files += [f for f in hdl.files if f not in files]
        in_streams, out_w = _streams(inst, node, inits)
        conns = [".ap_clk(ap_clk)", ".ap_rst_n(ap_rst_n)"]
        for k, (t, w) in enumerate(in_streams):
            if t in width and width[t] != w:
                raise UnsupportedError(f"node '{node.name}' input {k} takes {w}-bit beats but '{t}' carries "
                                       f"{width[t]}-bit beats: a width converter is needed there")
            width.setdefault(t, w)
            conns += [f".in{k}_V_{s}({_wire(t)}_{s})" for s in ("TDATA", "TVALID", "TREADY")]
        for k, t in enumerate(node.output):
            width[t] = out_w[k]
            conns += [f".out{k}_V_{s}({_wire(t)}_{s})" for s in ("TDATA", "TVALID", "TREADY")]
        if node.op_type == "StreamingFIFO_rtl":  # its fill when the simulation ends: sizing, deadlocks
            depth = inst.get_nodeattr("depth")
            lines.append(f"  logic [31:0] {node.name}_count, {node.name}_maxcount;")
            fills.append(f"    $display(\"fifo_fill {node.name} %0d %0d {depth}\", {node.name}_maxcount, "
                         f"{node.name}_count);")
            conns += [f".count({node.name}_count)", f".maxcount({node.name}_maxcount)"]
        insts.append(f"  {hdl.top} {node.name}_i ({', '.join(conns)});")
    for t, w in width.items():
        lines.append(f"  logic [{w - 1}:0] {_wire(t)}_TDATA; logic {_wire(t)}_TVALID, {_wire(t)}_TREADY;")
    # FLIMCC_TRACE: the cycle of each tensor's first beats, to see where latency goes
    lines += ["`ifdef FLIMCC_TRACE", "  int unsigned trace_cycle = 0;",
              "  always_ff @(posedge ap_clk) trace_cycle <= trace_cycle + 1;"]
    for t in width:
        lines += [f"  int unsigned {_wire(t)}_beats = 0;",
                  f"  always_ff @(posedge ap_clk) if ({_wire(t)}_TVALID && {_wire(t)}_TREADY) begin",
                  f"    {_wire(t)}_beats <= {_wire(t)}_beats + 1;",
                  f"    if ({_wire(t)}_beats < `FLIMCC_TRACE) $display(\"trace %0d %0d {_wire(t)}\", trace_cycle, {_wire(t)}_beats);",
                  "  end"]
    lines.append("`endif")
    if fills:  # printed by the testbench's end (flimcc.rtl.harness), read by simulate()
        lines += ["`ifndef SYNTHESIS", "  final begin", *fills, "  end", "`endif"]
    for k, t in enumerate(graph_in):
        if t not in width:
            raise UnsupportedError(f"graph input '{t}' is read by no node")
        ports.append(f"  input logic [{width[t] - 1}:0] in{k}_V_TDATA, input logic in{k}_V_TVALID, "
                     f"output logic in{k}_V_TREADY")
        lines.append(f"  assign {_wire(t)}_TDATA = in{k}_V_TDATA; assign {_wire(t)}_TVALID = in{k}_V_TVALID; "
                     f"assign in{k}_V_TREADY = {_wire(t)}_TREADY;")
    for k, t in enumerate(graph_out):
        ports.append(f"  output logic [{width[t] - 1}:0] out{k}_V_TDATA, output logic out{k}_V_TVALID, "
                     f"input logic out{k}_V_TREADY")
        lines.append(f"  assign out{k}_V_TDATA = {_wire(t)}_TDATA; assign out{k}_V_TVALID = {_wire(t)}_TVALID; "
                     f"assign {_wire(t)}_TREADY = out{k}_V_TREADY;")
    text = (f"// generated by flimcc.rtl.stitch: {len(graph.node)} nodes of graph '{graph.name}'\n"
            f"module {top} (\n" + ",\n".join(ports) + "\n);\n" + "\n".join(lines + insts) + "\nendmodule\n")
    path = out_dir / f"{top}.sv"
    path.write_text(text)
    return NodeHDL(graph.name, top, files + [path])


class _Wires(dict):
    """SystemVerilog identifiers for tensor names (ONNX names hold '/', ':', '.'); two names
    that clean up alike get distinct identifiers."""

    def __missing__(self, tensor: str) -> str:
        base = "t_" + "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in tensor)
        taken = set(self.values())
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        self[tensor] = name
        return name

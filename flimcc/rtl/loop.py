"""RTL of a RecurrentLoop: its body stitched from FINN and flimcc RTL nodes, closed by a
small loop controller per state.

The body (one time step, ``[states, x_t] -> [new states, y_t]``) becomes the module
``<loop>_body`` (`flimcc.rtl.stitch`); its state outputs already pass through the state
FIFOs plan-memory put there (the P interleaved hidden states). The loop module ``<loop>``
adds, for every state k, two switches that count vectors (a vector is F_k beats) over a
frame of T steps x P pixels:

- the state input of step 0 (the frame's first P vectors) comes from the initial-state
  stream, or is zero for a ``zero_init`` state; later steps take the fed-back state;
- the new state of steps 0..T-2 goes back round; that of step T-1 leaves as the final
  state (or is dropped when nothing reads the final state).

Sequences pass straight through: x_t streams into the body, y_t streams out. Ports follow
the node: ``in<k>_V`` for its inputs in order, ``out<k>_V`` for its outputs.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.errors import UnsupportedError
from flimcc.rtl.finn_hdl import NodeHDL, round_thresholds
from flimcc.rtl.stitch import stitch, stream_port


def _bits(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))


def control_res(body: ModelWrapper, n_state: int, t_steps: int, p: int) -> dict:
    """LUTs and FFs of the loop's own logic around its (hardware) `body`, per state
    (`_state_switch`): two beat and two vector counters (in and out; their FFs), and in LUTs
    the data mux (one per bit of the state stream), each counter's increment and wrap
    compare (about three LUTs per counter bit) and a few for the handshakes."""
    lut = ff = 0
    b_in = [i.name for i in body.graph.input if body.get_initializer(i.name) is None]
    for k in range(n_state):
        width, shape = stream_port(body, b_in[k], producer=False)[:2]
        beats = int(np.prod(shape[:-1])) // p
        bits = _bits(beats) + _bits(t_steps * p)
        ff += 2 * bits
        lut += width + 3 * 2 * bits + 4
    return {"LUT": lut, "FF": ff}


def _state_switch(k: int, beats: int, vectors_first: int, vectors_frame: int, source: str | None,
                  final: str | None) -> list[str]:
    """SystemVerilog of state k's input mux and output demux (see the module docstring).
    `source`: the loop port of its initial state (None: zero); `final`: the loop port of its
    final state (None: dropped)."""
    bb, vb = _bits(beats), _bits(vectors_frame)
    s = f"s{k}"
    lines = [
        f"  // state {k}: {vectors_first} vectors per step, {vectors_frame} per frame, {beats} beats each",
        f"  logic [{bb - 1}:0] {s}_in_beat, {s}_out_beat; logic [{vb - 1}:0] {s}_in_vec, {s}_out_vec;",
        f"  wire {s}_first = {s}_in_vec < {vectors_first};",
        f"  wire {s}_last = {s}_out_vec >= {vectors_frame - vectors_first};",
    ]
    if source is None:
        lines += [f"  assign b_in{k}_TDATA = {s}_first ? '0 : b_out{k}_TDATA;",
                  f"  assign b_in{k}_TVALID = {s}_first ? 1'b1 : (b_out{k}_TVALID && !{s}_last);"]
    else:
        lines += [f"  assign b_in{k}_TDATA = {s}_first ? {source}_TDATA : b_out{k}_TDATA;",
                  f"  assign b_in{k}_TVALID = {s}_first ? {source}_TVALID : (b_out{k}_TVALID && !{s}_last);",
                  f"  assign {source}_TREADY = {s}_first && b_in{k}_TREADY;"]
    fb_ready = f"(!{s}_first && b_in{k}_TREADY)"
    if final is None:
        lines.append(f"  assign b_out{k}_TREADY = {s}_last ? 1'b1 : {fb_ready};")
    else:
        lines += [f"  assign {final}_TDATA = b_out{k}_TDATA;",
                  f"  assign {final}_TVALID = b_out{k}_TVALID && {s}_last;",
                  f"  assign b_out{k}_TREADY = {s}_last ? {final}_TREADY : {fb_ready};"]
    for side, hs in (("in", f"b_in{k}_TVALID && b_in{k}_TREADY"), ("out", f"b_out{k}_TVALID && b_out{k}_TREADY")):
        lines += [
            "  always_ff @(posedge ap_clk) begin",
            f"    if (!ap_rst_n) begin {s}_{side}_beat <= '0; {s}_{side}_vec <= '0; end",
            f"    else if ({hs}) begin",
            f"      if ({s}_{side}_beat == {beats - 1}) begin",
            f"        {s}_{side}_beat <= '0;",
            f"        {s}_{side}_vec <= ({s}_{side}_vec == {vectors_frame - 1}) ? '0 : {s}_{side}_vec + 1'b1;",
            f"      end else {s}_{side}_beat <= {s}_{side}_beat + 1'b1;",
            "    end",
            "  end",
        ]
    return lines


def _state_edge_dwcs(body: ModelWrapper, n_state: int) -> ModelWrapper:
    """A width converter at the end of each state output whose beat is not the beat its
    state input is read with: the loop edge (new state -> next step's state input) is an
    edge of the graph's cycle that FINN's InsertDWC cannot see, since it runs from a graph
    output back to a graph input. Without it the controller would count the state's vectors
    with the wrong number of beats and hand the new state to the final output too early."""
    from onnx import helper as oh

    b_in = [i.name for i in body.graph.input if body.get_initializer(i.name) is None]
    for k in range(n_state):
        out_vi = body.graph.output[k]
        _, fs_in, _ = stream_port(body, b_in[k], producer=False)
        _, fs_out, dt = stream_port(body, out_vi.name, producer=True)
        if fs_in[-1] == fs_out[-1]:
            continue
        inner = body.make_new_valueinfo_name()
        producer = body.find_producer(out_vi.name)
        producer.output[list(producer.output).index(out_vi.name)] = inner
        shape = body.get_tensor_shape(out_vi.name)
        body.graph.value_info.append(oh.make_tensor_value_info(inner, out_vi.type.tensor_type.elem_type, shape))
        body.set_tensor_datatype(inner, dt)
        body.graph.node.append(oh.make_node(
            "StreamingDataWidthConverter", [inner], [out_vi.name],
            domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", inShape=shape, outShape=shape,
            inWidth=fs_out[-1] * dt.bitwidth(), outWidth=fs_in[-1] * dt.bitwidth(), dataType=dt.name))
    return body


def check_loop_rtl(node) -> None:
    """Refuse, naming it, a RecurrentLoop whose body has a node without RTL: the loop can
    be neither simulated, nor written as HDL, nor stitched by FINN."""
    from flimcc.rtl.stitch import RTL_DOMAIN

    for bnode in getCustomOp(node).body().graph.node:
        if bnode.domain != RTL_DOMAIN:
            raise UnsupportedError(f"loop '{node.name}': body node '{bnode.name}' ({bnode.op_type}) has no RTL "
                                   "implementation")


def hardware_body(body: ModelWrapper, loop: str, n_state: int,
                  fifo_depths: dict[str, int] | None = None) -> ModelWrapper:
    """The body as its RTL is built, the way FINN's build prepares a dataflow graph:

    - thresholds as integers (FINN's RoundAndClipThresholds, which its Thresholding_rtl
      generator requires);
    - FINN's RTL width converters wherever a producer's beat is not its consumer's (FINN's
      InsertDWC, and on the loop edge of each of the first `n_state` outputs);
    - a FIFO on every stream (FINN's InsertFIFO with shallow FIFOs, as FINN does before
      sizing them): depth 2 unless `fifo_depths` (node name -> depth, from
      `flimcc.rtl.fifo_sizing`) says otherwise. Without them a width converter in front of
      an MVAU cannot collect the next vector while the MVAU replays the current one, and
      the MVAU idles half the time.

    The nodes added are named ``<loop>_<op>_<k>`` and given their RTL variants directly
    (FINN's SpecializeLayers would rename every node of the body, and module names must
    stay unique across loops)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO

    body = _state_edge_dwcs(round_thresholds(body).transform(InsertDWC()), n_state)
    for bnode in body.graph.node:  # one depth per stream (FINN's default lists one)
        hw = getCustomOp(bnode)
        hw.set_nodeattr("inFIFODepths", [2] * max(1, sum(1 for t in bnode.input if t)))
        hw.set_nodeattr("outFIFODepths", [2] * len(bnode.output))
    body = body.transform(InsertFIFO(create_shallow_fifos=True))
    count: dict[str, int] = {}
    for bnode in body.graph.node:
        if bnode.op_type in ("StreamingDataWidthConverter", "StreamingFIFO"):
            k = count.get(bnode.op_type, 0)
            count[bnode.op_type] = k + 1
            bnode.name = f"{loop}_{bnode.op_type}_{k}"
            bnode.op_type += "_rtl"
            bnode.domain = "finn.custom_op.fpgadataflow.rtl"
    for bnode in body.graph.node:
        if bnode.op_type == "StreamingFIFO_rtl" and fifo_depths and bnode.name in fifo_depths:
            getCustomOp(bnode).set_nodeattr("depth", int(fifo_depths[bnode.name]))
    return body


def loop_hdl(model: ModelWrapper, node, out_dir: Path, fpgapart: str, clk_ns: float,
             fifo_depths: dict[str, int] | None = None, sim_patches: bool = True) -> NodeHDL:
    """Generate the RTL of RecurrentLoop `node` into `out_dir` (module named like the node),
    its body's FIFOs at `fifo_depths` (see `hardware_body`; default: the node's own);
    `sim_patches`: see `flimcc.rtl.finn_hdl.generate_node_hdl`."""
    inst = getCustomOp(node)
    name = node.name
    fifo_depths = inst.fifo_depths() if fifo_depths is None else fifo_depths
    body = hardware_body(inst.body(), name, inst.get_nodeattr("num_state"), fifo_depths)
    body_hdl = stitch(body, out_dir, fpgapart, clk_ns, top=f"{name}_body", sim_patches=sim_patches)
    n_state = inst.get_nodeattr("num_state")
    t_steps, p = inst.get_nodeattr("iterations"), inst.get_nodeattr("pixels")
    zero = inst._zero_flags()
    read = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}

    b_in = [i.name for i in body.graph.input if body.get_initializer(i.name) is None]
    b_out = [o.name for o in body.graph.output]
    ports, lines, conns = ["  input logic ap_clk, input logic ap_rst_n"], [], [".ap_clk(ap_clk)", ".ap_rst_n(ap_rst_n)"]
    loop_in = 0
    sources: list[str | None] = []
    for k in range(n_state):
        sources.append(None if zero[k] else f"in{loop_in}_V")
        loop_in += 0 if zero[k] else 1
    for k, t in enumerate(b_in):
        w = stream_port(body, t, producer=False)[0]
        lines.append(f"  logic [{w - 1}:0] b_in{k}_TDATA; logic b_in{k}_TVALID, b_in{k}_TREADY;")
        conns += [f".in{k}_V_{x}(b_in{k}_{x})" for x in ("TDATA", "TVALID", "TREADY")]
        if k < n_state and sources[k] is not None:
            ports.append(f"  input logic [{w - 1}:0] {sources[k]}_TDATA, input logic {sources[k]}_TVALID, "
                         f"output logic {sources[k]}_TREADY")
        elif k >= n_state:
            ports.append(f"  input logic [{w - 1}:0] in{loop_in}_V_TDATA, input logic in{loop_in}_V_TVALID, "
                         f"output logic in{loop_in}_V_TREADY")
            lines.append(f"  assign b_in{k}_TDATA = in{loop_in}_V_TDATA; assign b_in{k}_TVALID = in{loop_in}_V_TVALID;"
                         f" assign in{loop_in}_V_TREADY = b_in{k}_TREADY;")
            loop_in += 1
    finals: list[str | None] = []
    for k, t in enumerate(b_out):
        w = stream_port(body, t, producer=True)[0]
        lines.append(f"  logic [{w - 1}:0] b_out{k}_TDATA; logic b_out{k}_TVALID, b_out{k}_TREADY;")
        conns += [f".out{k}_V_{x}(b_out{k}_{x})" for x in ("TDATA", "TVALID", "TREADY")]
        used = node.output[k] in read if k < len(node.output) else False
        if k < n_state:
            finals.append(f"out{k}_V" if used else None)
        if k >= n_state or used:
            ports.append(f"  output logic [{w - 1}:0] out{k}_V_TDATA, output logic out{k}_V_TVALID, "
                         f"input logic out{k}_V_TREADY")
        if k >= n_state:
            lines.append(f"  assign out{k}_V_TDATA = b_out{k}_TDATA; assign out{k}_V_TVALID = b_out{k}_TVALID;"
                         f" assign b_out{k}_TREADY = out{k}_V_TREADY;")
    for k in range(n_state):
        beats = int(np.prod(stream_port(body, b_in[k], producer=False)[1][:-1])) // p  # per vector
        lines += _state_switch(k, beats, p, t_steps * p, sources[k], finals[k])
    text = (f"// generated by flimcc.rtl.loop: RecurrentLoop {name}, T = {t_steps} steps of P = {p} pixels\n"
            f"module {name} (\n" + ",\n".join(ports) + "\n);\n" + "\n".join(lines)
            + f"\n  {name}_body body ({', '.join(conns)});\nendmodule\n")
    path = Path(out_dir) / f"{name}.sv"
    path.write_text(text)
    return NodeHDL(name, name, body_hdl.files + [path])


def write_build_hdl(model: ModelWrapper, hdl_dir: Path, fpgapart: str, clk_ns: float) -> dict[str, str]:
    """The RTL of every RecurrentLoop of `model` into ``hdl_dir/<loop>/`` as FINN will
    synthesise it (finn-rtllib files unpatched, top module ``<loop>``); returns, per loop,
    its top file relative to the build folder, or why it has none (a body node without RTL)."""
    from flimcc.layout import loop_nodes

    status = {}
    for node, _ in loop_nodes(model):
        try:
            check_loop_rtl(node)
            loop_hdl(model, node, Path(hdl_dir) / node.name, fpgapart, clk_ns, sim_patches=False)
        except UnsupportedError as e:  # the build stands without it; say why
            shutil.rmtree(Path(hdl_dir) / node.name, ignore_errors=True)
            status[node.name] = f"no HDL: {e}"
            continue
        status[node.name] = f"{Path(hdl_dir).name}/{node.name}/{node.name}.sv"
    return status

"""flimcc's resource model (issue 16): MVAU_rtl DSPs as finn-rtllib packs them, the
elementwise datapath's LUTs, and the source of every figure in the build's report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from qonnx.custom_op.registry import getCustomOp

from flimcc.hw import cost
from flimcc.hw.estimate import (ELEMENTWISE, FINN, LANES, OWN, SHARED, graph_facts, mvau_rtl_dsps, mvu_lanes,
                                narrow_weights, node_estimate)
from flimcc.layout import hw_nodes, loop_nodes

PYNQ = "xc7z020clg400-1"  # DSP48E1
ZCU = "xczu9eg-ffvb1156-2-e"  # DSP48E2


def test_lanes_hand_worked():
    # 8 x 8 on a DSP48E1, weights not narrow: 1 + (25 - 1 - 8) // (8 + 8 - 1) = 1 + 16 // 15 = 2
    assert mvu_lanes(8, 8, False, "DSP48E1") == 2
    # 4 x 4: 1 + (25 - 1 - 4) // 7 = 3; narrow weights free the sign bit: 1 + 21 // 7 = 4
    assert mvu_lanes(4, 4, False, "DSP48E1") == 3 and mvu_lanes(4, 4, True, "DSP48E1") == 4
    # a DSP48E2's 27-bit A: 4 x 4 gives 1 + 22 // 7 = 4 (the one case FINN's PE / 4 is right)
    assert mvu_lanes(4, 4, False, "DSP48E2") == 4
    assert mvu_lanes(8, 8, False, "DSP48E2") == 1 + 18 // 15 == 2
    assert mvu_lanes(25, 2, False, "DSP48E1") == 1  # weights as wide as A: one lane
    # ceil(PE / lanes) per SIMD lane: PE 5 at 2 lanes = 3 DSPs per lane, x SIMD 4
    assert mvau_rtl_dsps(5, 4, 8, 8, False, "DSP48E1") == 12
    # clock-pumped compute halves the DSP chain (an odd SIMD is padded by one)
    assert mvau_rtl_dsps(2, 8, 8, 8, False, "DSP48E1", pumped=True) == 4
    assert mvau_rtl_dsps(2, 7, 8, 8, False, "DSP48E1", pumped=True) == 4


# Yosys's DSP48E1 count of FINN's generated MVU on the xc7z020, SIMD = 8
# (../shared/reference/rtl-tools.md; weights there are not narrow)
@pytest.mark.parametrize("w,a,pe,yosys", [(8, 8, 1, 8), (8, 8, 2, 8), (8, 8, 3, 16), (8, 8, 4, 16), (8, 8, 8, 32),
                                          (4, 4, 2, 8), (4, 4, 4, 16), (4, 4, 6, 16), (4, 4, 8, 24), (4, 8, 4, 16)])
def test_lane_formula_is_what_yosys_synthesised(w, a, pe, yosys):
    assert mvau_rtl_dsps(pe, 8, w, a, False, "DSP48E1") == yosys


def test_narrow_weights_as_finn_sets_them(small_build):
    """NARROW_WEIGHTS is 1 when no weight reaches the type's minimum (FINN's generate_hdl)."""
    from flimcc.ir import load

    model = load(small_build / "model.onnx")
    node, loop = next(iter(loop_nodes(model)))
    body = loop.body()
    mvau = next(n for n in body.graph.node if n.op_type == "MVAU_rtl")
    inst = getCustomOp(mvau)
    w = body.get_initializer(mvau.input[1])
    lowest = inst.get_input_datatype(1).min()
    assert graph_facts(mvau, body.graph) == {"narrow": bool(w.min() != lowest)}
    touched = w.copy()
    touched.flat[0] = lowest
    assert narrow_weights(inst, touched) is False and narrow_weights(inst, None) is False


def test_every_mvau_rtl_counts_its_lanes_and_every_elementwise_op_its_luts(small_build):
    from flimcc.ir import load

    model = load(small_build / "model.onnx")
    graphs = [model] + [loop.body() for _, loop in loop_nodes(model)]
    seen = set()
    for g in graphs:
        for node, inst in hw_nodes(g):
            res = cost.node_res(node, PYNQ, g.graph)
            finn = inst.node_res_estimation(PYNQ)
            if node.op_type == "MVAU_rtl":
                lanes = mvu_lanes(inst.get_input_datatype(1).bitwidth(), inst.get_input_datatype(0).bitwidth(),
                                  graph_facts(node, g.graph)["narrow"], "DSP48E1")
                assert res["DSP"] == -(-inst.get_nodeattr("PE") // lanes) * inst.get_nodeattr("SIMD")
                assert res["DSP"] >= finn["DSP"] and res["source"] == LANES
            elif node.op_type == "Thresholding_rtl":
                assert res["BRAM_18K"] <= finn["BRAM_18K"] and res["source"] == SHARED  # one row: see below
            elif "Elementwise" in node.op_type:
                assert res["LUT"] > 0 or res["DSP"] > 0, node.name
                if node.op_type.endswith("_hls"):
                    assert res["source"] == ELEMENTWISE and res["LUT"] > finn["LUT"]
            else:
                assert res["source"] in (FINN, OWN) and res["DSP"] == finn["DSP"]
            seen.add(node.op_type.split("_")[0])
    assert {"MVAU", "ElementwiseAdd", "IntElementwiseMul"} <= seen


def test_the_dsp48e2_packs_more_4bit_lanes():
    """The same node on a ZCU102 (DSP48E2) and a PYNQ-Z2 (DSP48E1): 4 x 4 bits, PE 8."""
    from onnx import helper

    node = helper.make_node("MVAU_rtl", ["x", "w"], ["y"], domain="finn.custom_op.fpgadataflow.rtl",
                            backend="fpgadataflow", MW=16, MH=8, SIMD=4, PE=8, inputDataType="UINT4",
                            weightDataType="INT4", outputDataType="INT16", numInputVectors=[1], mem_mode="internal_embedded",
                            resType="dsp", noActivation=1, ActVal=0, binaryXnorMode=0, accDataType="INT16")
    inst = getCustomOp(node)
    assert node_estimate(inst, ZCU, narrow=False)["DSP"] == 2 * 4  # 4 lanes
    assert node_estimate(inst, PYNQ, narrow=False)["DSP"] == 3 * 4  # 3 lanes
    assert node_estimate(inst, PYNQ, narrow=True)["DSP"] == 2 * 4


def test_build_report_says_where_each_figure_comes_from(small_build):
    report = json.loads((small_build / "report" / "estimate_layer_resources.json").read_text())
    sources = {k: v["source"] for k, v in report.items() if k != "total"}
    assert sources and all(isinstance(s, str) and s for s in sources.values())
    assert LANES in sources.values() and FINN in sources.values()
    assert "source" not in report["total"]
    assert report["total"]["DSP"] == pytest.approx(sum(v["DSP"] for k, v in report.items()
                                                       if k != "total" and k in _top_level(small_build)))


def _top_level(build):
    from flimcc.ir import load

    return {n.name for n in load(build / "model.onnx").graph.node}


def test_one_threshold_row_is_estimated_as_finn_generates_it(small_build, tmp_path):
    """Per-tensor scales: one threshold row. FINN's RTL then stores it once per PE lane
    (C = PE in the generated module, 2^k thresholds per lane in stage k), which flimcc
    estimates; FINN's own estimator counts every channel."""
    from flimcc.ir import load

    model = load(small_build / "model.onnx")
    node, loop = next(iter(loop_nodes(model)))
    body = loop.body()
    thr = next(n for n in body.graph.node if n.op_type == "Thresholding_rtl")
    inst = getCustomOp(thr)
    assert body.get_initializer(thr.input[1]).shape[0] == 1
    assert graph_facts(thr, body.graph) == {"one_threshold_row": True}
    pe, channels = inst.get_nodeattr("PE"), inst.get_nodeattr("NumChannels")
    assert channels > pe  # else the two estimates agree trivially
    ours, finn = node_estimate(inst, PYNQ, one_threshold_row=True), inst.node_res_estimation(PYNQ)
    assert ours["source"] == SHARED and ours["BRAM_18K"] < finn["BRAM_18K"]  # 1/(C/PE) of the memory
    # the generated RTL: C = PE, and the deepest stage's memory holds 2^(bits-1) thresholds per lane
    rtl = (small_build / "hdl" / node.name / f"{thr.name}.v").read_text()
    assert f"parameter  C = {pe}," in rtl
    bits = inst.get_output_datatype().bitwidth()
    last = small_build / "hdl" / node.name / f"{thr.name}_threshs_0_{bits - 1}.dat"
    assert len(last.read_text().split()) == 2 ** (bits - 1)
    # and a per-channel table (C rows) keeps FINN's estimate
    assert node_estimate(inst, PYNQ, one_threshold_row=False)["BRAM_18K"] == finn["BRAM_18K"]


def test_deep_fifos_are_bram_on_parts_without_uram():
    """fifo.sv asks for URAM above 2,028 entries; a 7-series or a ZU9EG has none, so Vivado
    builds BRAM: priced as FINN prices the block style. A ZU7EV keeps FINN's URAM."""
    from finn.util.resource_models import _fifo_cost
    from onnx import helper

    from flimcc.hw.estimate import NO_URAM, part_has_uram

    assert not part_has_uram(PYNQ) and not part_has_uram(ZCU) and part_has_uram("xczu7ev-ffvc1156-2-e")
    node = helper.make_node("StreamingFIFO_rtl", ["x"], ["y"], domain="finn.custom_op.fpgadataflow.rtl",
                            backend="fpgadataflow", depth=4096, folded_shape=[4096, 1], normal_shape=[4096, 16],
                            dataType="INT16", impl_style="rtl")
    inst = getCustomOp(node)
    asked = node_estimate(inst, "xczu7ev-ffvc1156-2-e")
    assert asked["URAM"] > 0 and asked["source"] == FINN
    for part in (PYNQ, ZCU):
        got = node_estimate(inst, part)
        assert got["URAM"] == 0 and got["source"] == NO_URAM
        assert got["BRAM_18K"] == _fifo_cost(4096, inst.get_instream_width_padded(), "block").bram > 0


def test_flip_flop_formulas_hand_worked():
    """FINN estimates no FFs; flimcc counts the registers of the RTL as generated."""
    from flimcc.hw.estimate import dwc_ffs, fifo_ffs, mvau_rtl_ffs, thresholding_ffs

    # the bare 8 x 8 MVU core at SIMD 8: (8 + 8 + 10) per product; Yosys gives 839 and 1,671
    assert mvau_rtl_ffs(4, 8, 8, 8, 16, decoupled=False) == 4 * 8 * 26 == 832
    assert mvau_rtl_ffs(8, 8, 8, 8, 16, decoupled=False) == 1664
    # memstream beside it: two 4 x 8 x 8 = 256-bit weight words, 2 x clog2(16) + 8 counter bits
    assert mvau_rtl_ffs(4, 8, 8, 8, 16, decoupled=True) == 832 + 512 + 8 + 8
    # 255 thresholds (8 output bits) on a 16-bit input, PE 4: 8 stages x (16 + 8 + 2) + 8 per lane
    assert thresholding_ffs(4, 16, 8) == 4 * (8 * 26 + 8) == 864
    # FIFO 64 bits x 64 deep: the output register and two 8-bit occupancy counters, 4 flags
    assert fifo_ffs(64, 64) == 64 + 2 * 8 + 4
    # 8 -> 64 bits: both registers, beat counters over 9 values (4 bits) x 2, 4 flags
    assert dwc_ffs(8, 64) == 8 + 64 + 8 + 4


def test_flimcc_rtl_ops_count_their_skid_buffers():
    """A flimcc RTL op's outputs are registered through a two-entry skid buffer (2 x width + 2
    valid bits each) and its core keeps only counters: Yosys counted exactly these on the
    8-bit student (IntElementwiseMul 32-bit out: 66; DuplicateStreams 3 x 16 bits: 105)."""
    from onnx import helper

    dup = helper.make_node("DuplicateStreams_rtl", ["x"], ["a", "b", "c"], domain="flimcc.hw", backend="fpgadataflow",
                           NumChannels=4, PE=2, NumOutputStreams=3, inputDataType="INT8", numInputVectors=[1])
    inst = getCustomOp(dup)
    assert inst.get_outstream_width_padded(0) == 16
    assert node_estimate(inst, PYNQ)["FF"] == 3 * (2 * 16 + 2) + 3 == 105


def test_loop_control_is_counted_hand_worked(small_build):
    """Each state of a loop has an input mux and in/out beat and vector counters
    (flimcc.rtl.loop._state_switch): FFs 2 x (beat bits + vector bits), LUTs one per state bit
    plus about three per counter bit. The small build: T = 6 steps, P = 2 pixels."""
    import flimcc
    from flimcc.rtl.stitch import stream_port

    model = flimcc.load(small_build / "model.onnx")
    for node, inst in loop_nodes(model):
        body = inst.hardware_body()
        assert inst.get_nodeattr("iterations") == 6 and inst.get_nodeattr("pixels") == 2
        width, shape = stream_port(body, body.graph.input[0].name, producer=False)[:2]
        beats = int(np.prod(shape[:-1])) // 2
        bits = max(1, math.ceil(math.log2(max(beats, 2)))) + 4  # 12 vectors per frame: 4 bits
        got = inst.control_res_estimation(body)
        assert inst.get_nodeattr("num_state") == 1
        assert got == {"FF": 2 * bits, "LUT": width + 6 * bits + 4}
        # and the loop's resources include it (as built)
        total = cost.loop_res(inst, PYNQ, built=True)
        assert total["FF"] == pytest.approx(got["FF"] + sum(cost.node_res(n, PYNQ, body.graph)["FF"]
                                                            for n in body.graph.node))

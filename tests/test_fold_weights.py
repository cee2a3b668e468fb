"""fold-weights: quantized weights become integer initializers with the scale after the
product, constant quantizers and the decoder's zero-input projection fold away; bit-exact
on power-of-two scales. Also the MAC count (`macs_per_sample`) against hand-worked numbers."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import OPSET, quant_mlp
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

import flimcc
from flimcc.execute import graph_input_names
from flimcc.models.seq2seq_onnx import build_seq2seq
from flimcc.passes.fold_weights import FoldWeights, macs_per_sample
from flimcc.passes.quantize import Quantize
from flimcc.passes.unroll_gru import UnrollGRU
from flimcc.pipeline import Pipeline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "models" / "seq2seqlite_random.onnx"
QONNX = "qonnx.custom_op.general"

# Seq2SeqLite, T = 135, H = 32, one input feature, per sample (pixel):
T, H = 135, 32
ENC_PROJ = T * 1 * 3 * H  # x_t (1) @ W^T (1 x 3H), every step, outside the loop
DEC_PROJ = T * 1 * 3 * H  # the same on the decoder's zeros: folded away by fold-weights
RECURRENT = T * H * 3 * H  # h @ R^T (H x 3H) per step, in each Scan body
DENSE = T * H * 3
LITE_MACS = ENC_PROJ + DEC_PROJ + 2 * RECURRENT + DENSE  # 868,320
LITE_MACS_FOLDED = LITE_MACS - DEC_PROJ  # 855,360


@pytest.fixture(scope="module")
def lite():
    return flimcc.load(EXAMPLE)


@pytest.fixture(scope="module")
def lite8(lite):
    return Pipeline.parse("unroll-gru,quantize{bits=8},fold-weights").run(lite, samples=8)


def graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from graphs(attr.g)


def wrapper(graph: onnx.GraphProto) -> ModelWrapper:
    return ModelWrapper(qonnx_make_model(graph, opset_imports=OPSET))


def assert_integer_lowered(model: ModelWrapper, bits: int) -> int:
    """No Quant on a constant anywhere; every MatMul reads an integer-valued, INTb-annotated
    weight and is followed by its scale; no Gemm is left. Returns the number of products."""
    products = 0
    for g in graphs(model.graph):
        w = wrapper(g)
        inits = {t.name for t in g.initializer}
        for node in g.node:
            if node.op_type == "Quant":
                assert node.input[0] not in inits, f"Quant '{node.name}' on a constant"
            assert node.op_type != "Gemm"
            if node.op_type == "MatMul":
                weight = w.get_initializer(node.input[1])
                assert weight is not None and weight.dtype == np.float32
                assert np.array_equal(weight, np.round(weight))
                assert np.abs(weight).max() <= 2 ** (bits - 1)
                assert w.get_tensor_datatype(node.input[1]) == DataType[f"INT{bits}"]
                (rescale,) = [n for n in g.node if node.output[0] in n.input]
                assert rescale.op_type == "Mul"
                scale = w.get_initializer(rescale.input[1])
                assert scale is not None and np.all(np.log2(scale) == np.round(np.log2(scale)))
                products += 1
    return products


def test_seq2seqlite_is_bit_exact_and_integer(lite8):
    model, report = lite8
    quantize, fold = report.stages[-2], report.stages[-1]
    assert 0 < quantize.vs_golden.max_abs_err < 0.02  # measured: 9.4e-3
    assert fold.verdict == "ok" and fold.vs_previous.bit_exact
    # 3 encoder projections, 3 + 3 recurrent products, the dense head (the decoder's 3
    # zero-input projections are gone)
    assert assert_integer_lowered(model, 8) == 10
    assert fold.metrics["integer_weights"] == 10 and fold.metrics["constant_quants_folded"] == 4
    onnx.checker.check_model(model.model)


def test_mac_count_by_hand(lite, lite8):
    assert macs_per_sample(copy.deepcopy(lite).transform(UnrollGRU())) == LITE_MACS
    model, report = lite8
    metrics = report.stages[-1].metrics
    assert (metrics["macs_per_sample_before"], metrics["macs_per_sample_after"]) == (LITE_MACS, LITE_MACS_FOLDED)
    assert macs_per_sample(model) == LITE_MACS_FOLDED == 855_360


def test_decoder_zero_input_projection_folds_into_a_constant(lite8):
    model, report = lite8
    assert not any(n.op_type in ("ConstantOfShape", "Shape") for n in model.graph.node)
    decoder = next(n for n in model.graph.node if n.op_type == "Scan" and n.name.startswith("/decoder"))
    for name in decoder.input[1:]:  # x_z, x_r, x_h: the bias on every step, any batch
        value = model.get_initializer(name)
        assert value is not None and value.shape == (T, 1, H)
        assert np.array_equal(value, np.broadcast_to(value[0], value.shape))
    assert len(report.stages[-1].metrics["broadcast_constants_folded"]) == 3


def test_graph_stays_sorted_with_shapes_and_any_batch(lite8):
    model, _ = lite8
    produced = set(graph_input_names(model)) | {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        assert all(not i or i in produced for i in node.input), node.name
        produced.update(node.output)
        for out in node.output:
            assert model.get_tensor_shape(out) is not None, out
    for g in list(graphs(model.graph))[1:]:  # body axis 0 is the batch: left unknown
        for vi in [*g.input, *g.output, *g.value_info]:
            dims = vi.type.tensor_type.shape.dim
            assert not dims or not dims[0].HasField("dim_value"), vi.name
    x = np.random.default_rng(1).uniform(0, 1, (3, T, 1)).astype(np.float32)
    assert flimcc.execute(model, x)["y"].shape == (3, T, 3)


@pytest.mark.parametrize("bits,bound", [(6, 0.08), (4, 0.25)])  # measured: 4.3e-2, 0.12
def test_lower_bit_widths(lite, bits, bound):
    model, report = Pipeline.parse(f"unroll-gru,quantize{{bits={bits}}},fold-weights").run(lite, samples=4)
    assert 0 < report.stages[-2].vs_golden.max_abs_err < bound
    assert report.stages[-1].vs_previous.bit_exact
    assert assert_integer_lowered(model, bits) == 10


def test_seq2seq_reset_after_two_layers_with_fused_gates():
    model = flimcc.load(build_seq2seq(hidden=16, layers=2, steps=20, linear_before_reset=1))
    out, report = Pipeline.parse("unroll-gru,quantize,fold-weights{fuse-gates=true}").run(model, samples=4)
    fold = report.stages[-1]
    assert fold.vs_previous.bit_exact and 0 < report.stages[-2].vs_golden.max_abs_err < 0.02
    # by hand, T=20, H=16, per sample: encoder projections 20*1*48 + 20*16*48, 4 bodies of
    # 20*16*48, decoder projection of layer 1 20*16*48, dense 20*16*3; the layer-0 decoder
    # projection (20*1*48) folds away
    before = 20 * (48 + 16 * 48 + 4 * 16 * 48 + 48 + 16 * 48 + 16 * 3)
    assert (fold.metrics["macs_per_sample_before"], fold.metrics["macs_per_sample_after"]) == (before, before - 960)
    # reset-after: z, r and h_rec all read h_prev; each body either fuses them or says why not
    handled = fold.metrics.get("fused", []) + [g["products"] for g in fold.metrics.get("not_fused", [])]
    assert len(handled) == 4 and all(len(group) == 3 for group in handled)
    for scan in (n for n in out.graph.node if n.op_type == "Scan"):
        body = next(a.g for a in scan.attribute if a.name == "body")
        ops = [n.op_type for n in body.node]
        assert "Gemm" not in ops and ops.count("MatMul") == (1 if "Split" in ops else 3)


def test_fusion_skipped_when_scales_differ(lite):
    q = copy.deepcopy(lite).transform(UnrollGRU()).transform(Quantize())
    scan = next(n for n in q.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    rz = next(n for n in body.node if n.name.endswith("/Rz/quant"))
    scale = next(t for t in body.initializer if t.name == rz.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 2, scale.name))
    fold = FoldWeights(fuse_gates=True)
    q.transform(fold)
    (skipped,) = fold.metrics["not_fused"]
    assert skipped["products"][0].startswith("/encoder") and "scales differ" in skipped["why"]
    assert len(fold.metrics["fused"]) == 1


def test_qonnx_style_input_is_bit_exact():
    model = flimcc.load(quant_mlp(bits=4))
    out, report = Pipeline.parse("fold-weights").run(model)
    stage = report.stages[-1]
    assert stage.verdict == "ok" and stage.vs_previous.bit_exact
    assert assert_integer_lowered(out, 4) == 1
    assert macs_per_sample(out) == stage.metrics["macs_per_sample_before"] == 8 * 4


def gemm_model() -> onnx.ModelProto:
    """One quantized weight W (4, 3), pow2 scale per output column, feeding a Gemm that
    uses it transposed-free with alpha/beta/transA and a MatMul; a second weight whose
    scale varies along K (stays float); a Gemm with transB."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    wt = rng.standard_normal((3, 4)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(wt, "wt"),
        numpy_helper.from_array(np.array([[0.25, 0.5, 0.125]], np.float32), "w_scale"),
        numpy_helper.from_array(np.array([[0.25], [0.5], [0.125], [0.25]], np.float32), "k_scale"),
        numpy_helper.from_array(np.array(0.25, np.float32), "t_scale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "bits"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "c"),
    ]

    def quant(inp, scale, out):
        return helper.make_node("Quant", [inp, scale, "zero", "bits"], [out], name=out, domain=QONNX,
                                signed=1, narrow=1, rounding_mode="ROUND")

    nodes = [
        quant("w", "w_scale", "wq"), quant("w", "k_scale", "wk"), quant("wt", "t_scale", "wtq"),
        helper.make_node("Transpose", ["x"], ["xt"], name="xt", perm=[1, 0]),
        helper.make_node("Gemm", ["xt", "wq", "c"], ["g1"], name="gemm_ta", transA=1, alpha=0.5, beta=2.0),
        helper.make_node("MatMul", ["x", "wq"], ["m1"], name="matmul_shared"),
        helper.make_node("MatMul", ["x", "wk"], ["m2"], name="matmul_k_scale"),
        helper.make_node("Gemm", ["x", "wtq"], ["g2"], name="gemm_tb", transB=1),
        helper.make_node("Sum", ["g1", "m1", "m2", "g2"], ["y"], name="sum"),
    ]
    graph = helper.make_graph(nodes, "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
    return helper.make_model(graph, opset_imports=OPSET + [helper.make_opsetid(QONNX, 1)])


def test_gemm_attributes_shared_weights_and_per_channel_scales():
    model = flimcc.load(gemm_model())
    x = np.random.default_rng(2).uniform(-1, 1, (5, 2, 4)).astype(np.float32)
    out, report = Pipeline.parse("fold-weights").run(model, samples=16)
    stage = report.stages[-1]
    assert stage.verdict == "ok"
    assert stage.metrics["integer_weights"] == 3
    assert stage.metrics["kept_float"] == ["matmul_k_scale: scale varies along the reduction axis"]
    ops = {n.name: n for n in out.graph.node}
    assert ops["gemm_ta"].op_type == "MatMul" and ops["gemm_ta/transpose_a"].op_type == "Transpose"
    assert ops["gemm_ta/bias"].op_type == "Add"
    # each product of the shared quantized weight has its own integer initializer
    assert ops["gemm_ta"].input[1] != ops["matmul_shared"].input[1]
    assert np.array_equal(out.get_initializer(ops["gemm_ta"].input[1]), out.get_initializer(ops["matmul_shared"].input[1]))
    # alpha goes into the per-column scale, beta into the constant C
    scale = out.get_initializer(ops["gemm_ta/rescale"].input[1])
    assert np.array_equal(scale, np.array([0.125, 0.25, 0.0625], np.float32))
    # transB: the integer weight is stored transposed, (K, N)
    assert out.get_initializer(ops["gemm_tb"].input[1]).shape == (4, 3)
    assert out.get_tensor_datatype(ops["gemm_tb"].input[1]) == DataType["INT6"]
    got = flimcc.execute(out, {"x": x[0]})["y"]
    np.testing.assert_allclose(got, flimcc.execute(model, {"x": x[0]})["y"], rtol=1e-6, atol=1e-6)


def test_float_model_folds_zero_input_and_keeps_float_contract(lite):
    model, report = Pipeline.parse("unroll-gru,fold-weights").run(lite, samples=4)
    stage = report.stages[-1]
    assert stage.verdict == "ok" and stage.metrics["macs_per_sample_after"] == LITE_MACS_FOLDED
    assert "integer_weights" not in stage.metrics
    assert macs_per_sample(model) == LITE_MACS_FOLDED


def test_zero_initializer_input_folds_before_lowering(lite):
    """When the decoder's zeros are already an initializer (e.g. after fold-constants on a
    static batch), MatMul(zeros, Quant(W)) + Quant(b) folds to a constant, and is not lowered."""
    model = copy.deepcopy(lite).transform(UnrollGRU())
    zeros = next(n for n in model.graph.node if n.op_type == "ConstantOfShape")
    shape = next(n for n in model.graph.node if n.output[0] == zeros.input[0])
    model.graph.node.remove(zeros)
    model.graph.node.remove(shape)
    model.set_initializer(zeros.output[0], np.zeros((T, 1, 1), np.float32))
    fold = FoldWeights()
    out = model.transform(Quantize()).transform(fold)
    assert fold.metrics["integer_weights"] == 10 and len(fold.metrics["constants_folded"]) >= 3
    assert fold.metrics["macs_per_sample_after"] == macs_per_sample(out) == LITE_MACS_FOLDED
    decoder = next(n for n in out.graph.node if n.op_type == "Scan" and n.name.startswith("/decoder"))
    assert all(out.get_initializer(name).shape == (T, 1, H) for name in decoder.input[1:])


def test_mac_count_of_gru_nodes_equals_the_unrolled_count(lite):
    assert macs_per_sample(lite) == LITE_MACS
    s2s = flimcc.load(build_seq2seq(hidden=16, layers=2, steps=20, linear_before_reset=1))
    assert macs_per_sample(s2s) == macs_per_sample(copy.deepcopy(s2s).transform(UnrollGRU())) == 95_040


def test_deterministic(lite):
    unrolled = copy.deepcopy(lite).transform(UnrollGRU())
    a, b = (copy.deepcopy(unrolled).transform(Quantize(bits=6)).transform(FoldWeights(fuse_gates=True))
            for _ in range(2))
    assert a.model.SerializeToString(deterministic=True) == b.model.SerializeToString(deterministic=True)

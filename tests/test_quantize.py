"""quantize: post-training quantization into power-of-two QONNX Quant nodes placed where the
QAT GRU (flimcc.models.quant_gru) quantizes; verified against the golden float run."""

from __future__ import annotations

import collections
import copy
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import mlp
from onnx import numpy_helper

import flimcc
from flimcc.errors import FlimccError, PipelineSyntaxError, UnsupportedError
from flimcc.models.seq2seq_onnx import build_seq2seq
from flimcc.passes.quantize import Quantize
from flimcc.passes.unroll_gru import UnrollGRU
from flimcc.pipeline import Pipeline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "models" / "seq2seqlite_random.onnx"


@pytest.fixture(scope="module")
def lite():
    return flimcc.load(EXAMPLE)


@pytest.fixture(scope="module")
def lite_unrolled(lite):
    return copy.deepcopy(lite).transform(UnrollGRU())


def quants(graph: onnx.GraphProto, body: str = "") -> list[tuple[onnx.NodeProto, dict, str]]:
    """Every Quant in the graph and its subgraphs: (node, {param: value}, where)."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type == "Quant":
            params = {k: inits.get(n) for k, n in zip(("x", "scale", "zeropt", "bitwidth"), node.input)}
            found.append((node, params, body))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += quants(attr.g, node.name)
    return found


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def is_pow2(x) -> bool:
    x = np.asarray(x, np.float64)
    return bool(np.all(x > 0) and np.all(np.log2(x) == np.round(np.log2(x))))


def test_places_the_quantizers_of_the_qat_gru(lite_unrolled):
    model = copy.deepcopy(lite_unrolled).transform(Quantize(bits=8))
    found = quants(model.graph)
    # Seq2SeqLite: 13 weights (3 + 3 input projections, 3 + 3 recurrent, dense), 7 biases
    # (3 + 3 projection biases, dense), 1 input, per body 2 sigmoids, 1 tanh, r*h, state.
    kinds = collections.Counter()
    for node, params, body in found:
        a = attrs(node)
        assert node.domain == "qonnx.custom_op.general" and a["rounding_mode"] == b"ROUND"
        assert params["zeropt"] == 0 and params["scale"] is not None and is_pow2(params["scale"])
        assert params["scale"].ndim == 0 and params["bitwidth"].ndim == 0
        if params["x"] is not None:  # a constant: weight (8 bits) or bias (16 bits)
            kind = "weight" if params["bitwidth"] == 8 else "bias"
            assert params["bitwidth"] in (8, 16) and a["signed"] == 1 and a["narrow"] == 1
            qmax = 2 ** (int(params["bitwidth"]) - 1) - 1
            peak = np.abs(params["x"]).max()
            assert peak / params["scale"] <= qmax < 2 * peak / params["scale"]  # no clipping, tightest pow2
        else:
            assert params["bitwidth"] == 8 and a["narrow"] == 0
            kind = "input" if not body else ("unsigned" if a["signed"] == 0 else "signed")
            if body:
                assert params["scale"] == 2.0 ** -7
        kinds[kind] += 1
    assert kinds == {"weight": 13, "bias": 7, "input": 1, "unsigned": 4, "signed": 6}
    m = Quantize(bits=8)
    copy.deepcopy(lite_unrolled).transform(m)
    assert m.metrics["quantizers"] == {"bias": 7, "input": 1, "product": 2, "sigmoid": 4, "state": 2, "tanh": 2,
                                       "weight": 13}
    assert m.metrics["inputs"]["x"]["scale"] == 2.0 ** -7 and m.metrics["inputs"]["x"]["signed"] is False


def test_body_quantizers_sit_on_gates_candidate_product_and_state(lite_unrolled):
    model = copy.deepcopy(lite_unrolled).transform(Quantize(bits=6))
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    producers = {o: n for n in body.node for o in n.output}
    quantized = {producers[q.input[0]].op_type: attrs(q)["signed"] for q in body.node
                 if q.op_type == "Quant" and q.input[0] in producers}
    assert quantized == {"Sigmoid": 0, "Tanh": 1, "Mul": 1, "Add": 1}  # gates, candidate, r*h, h_new
    # the loop-carried state the body returns is the quantized one; the Dense output stays float
    assert producers[body.output[0].name].op_type == "Quant"
    out = model.graph.output[0].name
    assert next(n for n in model.graph.node if out in n.output).op_type == "Add"
    # every Gemm's weight comes from its own Quant
    for gemm in (n for n in body.node if n.op_type == "Gemm"):
        assert producers[gemm.input[1]].op_type == "Quant"


def test_one_quantizer_per_consumer_of_a_shared_weight():
    model = flimcc.load(mlp())
    w1 = model.graph.node[0].input[1]
    model.graph.node[3].input[1] = "w_shared"  # mm2 reads a (6,3) weight; share w2 with a third MatMul
    model.set_initializer("w_shared", np.ones((6, 3), np.float32))
    extra = onnx.helper.make_node("MatMul", ["h3", "w_shared"], ["h5"], name="mm3")
    model.graph.node.insert(4, extra)
    model.graph.output.append(onnx.helper.make_tensor_value_info("h5", onnx.TensorProto.FLOAT, [1, 3]))
    q = model.transform(Quantize(bits=8, calibration="none"))
    users = collections.Counter(n.input[0] for n, _, _ in quants(q.graph))
    # each Quant reads its own copy of the shared weight, under a readable name
    assert users["w_shared"] == 1 and users["w_shared_1"] == 1 and users[w1] == 1
    readers = {n.name: n.input[1] for n in q.graph.node if n.op_type == "MatMul"}
    assert readers["mm2"] != readers["mm3"] and all(r.startswith("w_shared") for r in (readers["mm2"], readers["mm3"]))


def test_pipeline_reports_a_small_error_against_golden(lite):
    # (6 and 4 bits run in test_fold_weights, through the whole integer lowering)
    _, report = Pipeline.parse("unroll-gru,quantize{bits=8}").run(lite, samples=8)
    stage = report.stages[-1]
    assert stage.verdict == "ok" and stage.contract == "approximate"
    assert 0 < stage.vs_golden.max_abs_err < 0.02  # measured: 9.4e-3
    assert stage.metrics["bits"] == 8 and stage.metrics["quantizers_total"] == 31


def test_seq2seq_with_reset_after_and_two_layers():
    # (its error against golden is checked in test_fold_weights, through the whole lowering)
    model = flimcc.load(build_seq2seq(hidden=16, layers=2, steps=20, linear_before_reset=1))
    _, report = Pipeline.parse("unroll-gru,quantize").run(model, verify=False)
    counts = report.stages[-1].metrics["quantizers"]
    # reset-after: no r*h product before a matrix product; the recurrent bias Rbh is
    # Gemm's C in each of the 4 bodies (17 biases = 4 x 3 projections + 4 Rbh + dense);
    # the accumulator h Rh + Rbh is requantized (acc-bits) before r multiplies it
    assert counts == {"accumulator": 4, "bias": 17, "input": 1, "sigmoid": 8, "state": 4, "tanh": 4, "weight": 25}
    q = Pipeline.parse("unroll-gru,quantize{acc-bits=0}").run(model, verify=False).report.stages[-1]
    assert "accumulator" not in q.metrics["quantizers"]


def test_calibration_modes(lite_unrolled, tmp_path):
    p = Quantize(calibration="none", bits=8)
    copy.deepcopy(lite_unrolled).transform(p)
    assert p.metrics["inputs"]["x"]["source"] == "unit range" and p.metrics["inputs"]["x"]["scale"] == 2.0 ** -7
    # signed data -> a signed input quantizer, scale from its max magnitude
    data = np.linspace(-3.0, 2.0, 135, dtype=np.float32).reshape(1, 135, 1)
    np.save(tmp_path / "cal.npy", data)
    p = Quantize(calibration="inputs", calibration_data=str(tmp_path / "cal.npy"), bits=8)
    q = copy.deepcopy(lite_unrolled).transform(p)
    info = p.metrics["inputs"]["x"]
    assert info["signed"] is True and info["scale"] == 2.0 ** math.ceil(math.log2(3.0 / 127))
    node = next(n for n, _, _ in quants(q.graph) if n.input[0] == "x")
    assert attrs(node)["signed"] == 1
    with pytest.raises(UnsupportedError, match="calibration-data"):
        Quantize(calibration="inputs")


def test_qonnx_transformation_style(lite_unrolled):
    q = copy.deepcopy(lite_unrolled).transform(Quantize(bits=8))
    assert isinstance(q, type(lite_unrolled)) and len(quants(q.graph)) == 31
    onnx.checker.check_model(q.model)
    assert any(o.domain == "qonnx.custom_op.general" for o in q.model.opset_import)


def test_bad_options_and_inputs(lite, lite_unrolled):
    for text in ("quantize{bits=1}", "quantize{bits=17}", "quantize{bias-bits=40}"):
        with pytest.raises(UnsupportedError, match="must be in"):
            Pipeline.parse(text)
    with pytest.raises(PipelineSyntaxError, match="calibration"):
        Pipeline.parse("quantize{calibration=histogram}")
    with pytest.raises(UnsupportedError, match="run unroll-gru"):
        copy.deepcopy(lite).transform(Quantize())
    once = copy.deepcopy(lite_unrolled).transform(Quantize())
    with pytest.raises(UnsupportedError, match="already quantized"):
        once.transform(Quantize())
    with pytest.raises(FlimccError):
        Pipeline.parse("quantize{bits=0}").run(lite)


def test_state_bits_option(lite_unrolled):
    assert str(Pipeline.parse("quantize")) == "quantize"  # the default (state as bits) is not spelled out
    p = Quantize(bits=6, state_bits=12)
    q = copy.deepcopy(lite_unrolled).transform(p)
    assert p.metrics["state_bits"] == 12 and p.metrics["bits"] == 6
    states = [(params["bitwidth"], params["scale"]) for node, params, body in quants(q.graph)
              if body and node.name.endswith("h_new/quant")]
    assert states == [(12, 2.0 ** -11)] * 2
    with pytest.raises(UnsupportedError, match="state-bits"):
        Quantize(state_bits=20)

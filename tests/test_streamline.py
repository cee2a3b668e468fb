"""streamline: quantized graphs become integer graphs, bit-exact with the stage before."""

import numpy as np
import pytest
from conftest import quant_mlp
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType

import flimcc
from flimcc.errors import UnsupportedError
from flimcc.pipeline import Pipeline
from flimcc.analysis import check_integer_graph, integer_violations

Q = "qonnx.custom_op.general"


def _quant(inp, out, scale, bits, signed, narrow=0):
    return [
        helper.make_node("Quant", [inp, f"{out}_s", "zero", f"{out}_b"], [out], name=f"{out}_quant", domain=Q,
                         signed=signed, narrow=narrow, rounding_mode="ROUND"),
    ], [numpy_helper.from_array(np.array(scale, np.float32), f"{out}_s"),
        numpy_helper.from_array(np.array(float(bits), np.float32), f"{out}_b")]


def _mlp_with_activations(bits, act1="Sigmoid", act2="Tanh", seed=0):
    """x -> Q -> MatMul(Q(W1)) + Q(b1) -> act1 -> Q(unsigned) -> MatMul(Q(W2)) -> act2 -> Q(signed) -> y."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    def add(q):
        nodes.extend(q[0]); inits.extend(q[1])
    inits += [numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32), "W1"),
              numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.3, "b1"),
              numpy_helper.from_array(rng.standard_normal((16, 5)).astype(np.float32) * 0.4, "W2")]
    s_act = 2.0 ** -(bits - 1)
    add(_quant("x", "xq", 2.0 ** -(bits - 1), bits, 0))
    add(_quant("W1", "W1q", 2.0 ** -(bits - 3), bits, 1, narrow=1))
    add(_quant("b1", "b1q", 2.0 ** -10, 16, 1, narrow=1))
    add(_quant("W2", "W2q", 2.0 ** -(bits - 2), bits, 1, narrow=1))
    nodes += [helper.make_node("MatMul", ["xq", "W1q"], ["a1"], name="mm1"),
              helper.make_node("Add", ["a1", "b1q"], ["p1"], name="bias1"),
              helper.make_node(act1, ["p1"], ["g1"], name="act1")]
    add(_quant("g1", "h1", s_act, bits, 0))
    nodes += [helper.make_node("MatMul", ["h1", "W2q"], ["a2"], name="mm2"),
              helper.make_node(act2, ["a2"], ["g2"], name="act2")]
    add(_quant("g2", "y", s_act, bits, 1))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(Q, 1)])


@pytest.mark.parametrize("bits", [4, 8])
def test_quant_mlp_is_bit_exact(bits):
    model = flimcc.load(quant_mlp(bits=bits))
    out, report = Pipeline.parse("streamline").run(model, samples=256)
    assert report.stages[-1].vs_previous.bit_exact
    assert [n.op_type for n in out.graph.node] == ["Mul", "Quant", "MatMul", "MultiThreshold", "Mul"]
    check_integer_graph(out)


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("act1, act2", [("Sigmoid", "Tanh"), ("HardSigmoid", "Tanh")])
def test_activations_become_exact_multithresholds(bits, act1, act2):
    model = flimcc.load(_mlp_with_activations(bits, act1, act2))
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (4096, 6)).astype(np.float32)
    out, report = Pipeline.parse("streamline").run(model, inputs={"x": x})
    assert report.stages[-1].vs_previous.bit_exact
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("MultiThreshold") == 2 and act1 not in ops and "Tanh" not in ops
    assert out.get_tensor_datatype("h1") == DataType[f"UINT{bits}"]
    check_integer_graph(out)


def test_float_activation_without_quantizer_is_refused():
    proto = _mlp_with_activations(8)
    quant = next(n for n in proto.graph.node if n.name == "h1_quant")
    proto.graph.node.remove(quant)
    next(n for n in proto.graph.node if n.name == "mm2").input[0] = "g1"
    with pytest.raises(UnsupportedError, match="act1.*must be followed by exactly one Quant"):
        Pipeline.parse("streamline").run(flimcc.load(proto), verify=False)


def test_integer_check_fails_on_a_float_graph():
    model = flimcc.load(_mlp_with_activations(8))
    problems = integer_violations(model)
    assert any("'a1'" in p for p in problems)  # the float accumulator before streamline
    with pytest.raises(flimcc.FlimccError, match="not an integer graph"):
        check_integer_graph(model)


@pytest.mark.parametrize("bits", [8, 4])
def test_seq2seqlite_lowers_to_an_integer_loop_bit_exactly(bits):
    """Float Seq2SeqLite -> unroll-gru -> quantize -> fold-weights -> streamline: the last
    two stages are bit-exact on simulated decays and the result is integer-only."""
    from pathlib import Path

    from flimcc.models.fli_data import simulate

    model = flimcc.load(Path(__file__).parent.parent / "examples" / "models" / "seq2seqlite_random.onnx")
    x = simulate(512, seed=11).x.astype(np.float32)
    out, report = Pipeline.parse(f"unroll-gru,quantize{{bits={bits}}},fold-weights,streamline").run(model, inputs={"x": x})
    assert [s.verdict for s in report.stages] == ["ok"] * 5
    assert report.stages[-2].vs_previous.bit_exact and report.stages[-1].vs_previous.bit_exact
    assert integer_violations(out) == []
    scan_ops = {n.op_type for s in out.graph.node if s.op_type == "Scan"
                for a in s.attribute if a.name == "body" for n in a.g.node}
    assert scan_ops <= {"MatMul", "Add", "Sub", "Mul", "MultiThreshold", "Identity"}
    assert report.stages[-1].metrics["multithresholds"] == 10


def test_overflowing_integers_are_refused_with_the_node_named():
    """The teacher's reset-after product r * (h R + b) exceeds float32's exact range
    unless requantized (acc-bits=0 leaves it wide): streamline must refuse rather than
    silently round."""
    from flimcc.models.seq2seq_onnx import build_seq2seq

    model = flimcc.load(build_seq2seq(32, 1, steps=8, linear_before_reset=1))
    with pytest.raises(UnsupportedError, match="r_h_rec.*beyond float32's exact range"):
        Pipeline.parse("unroll-gru,quantize{bits=8,acc-bits=0},fold-weights,streamline").run(model, verify=False)


def test_teacher_shaped_reset_after_gru_lowers_bit_exactly():
    """linear_before_reset=1 (the teacher): quantize requantizes the recurrent accumulator
    h R_h + Rb_h to acc-bits before r multiplies it, so the loop stays within 2^24 and the
    integer lowering is bit-exact."""
    from flimcc.models.fli_data import SimConfig, simulate
    from flimcc.models.seq2seq_onnx import build_seq2seq

    steps = 16
    model = flimcc.load(build_seq2seq(16, 2, steps=steps, linear_before_reset=1, name="seq2seq"))
    x = simulate(128, SimConfig(n_gates=steps), seed=3).x.astype(np.float32)
    out, report = Pipeline.parse("unroll-gru,quantize{bits=8},fold-weights,streamline").run(model, inputs={"x": x})
    assert [s.verdict for s in report.stages] == ["ok"] * 5
    quantize = report.stages[2]
    assert quantize.metrics["acc_bits"] == 16 and quantize.metrics["quantizers"]["accumulator"] == 4
    assert report.stages[-2].vs_previous.bit_exact and report.stages[-1].vs_previous.bit_exact
    assert report.stages[-1].vs_golden.max_abs_err < 0.05
    assert integer_violations(out) == []


def test_join_of_unrelated_scales_is_requantized_and_reported():
    """a (scale 1/4) + b (scale 3/8): no integer ratio, so b is rounded to the 1/4 grid by a
    MultiThreshold; the pass says so, downgrades itself to approximate and reports the bound
    (half a step of 1/4), which the observed error respects."""
    import flimcc
    from onnx import TensorProto, helper, numpy_helper

    from flimcc.pipeline import Pipeline

    def quant(inp, out, scale, bits):
        node = helper.make_node("Quant", [inp, f"{out}_s", "zero", f"{out}_b"], [out], name=out,
                                domain="qonnx.custom_op.general", signed=1, narrow=0, rounding_mode="ROUND")
        return node, [numpy_helper.from_array(np.array(scale, np.float32), f"{out}_s"),
                      numpy_helper.from_array(np.array(float(bits), np.float32), f"{out}_b")]

    nodes, inits = [], [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    for args in (("x", "a", 0.25, 8), ("x2", "b", 0.375, 8), None, ("c", "y", 0.125, 12)):
        if args is None:
            nodes.append(helper.make_node("Add", ["a", "b"], ["c"], name="join"))
            continue
        n, i = quant(*args)
        nodes.append(n)
        inits += i
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "x2")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = flimcc.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                                helper.make_opsetid("qonnx.custom_op.general", 1)]))
    rng = np.random.default_rng(0)
    inputs = {"x": rng.uniform(-20, 20, (512, 4)).astype(np.float32),
              "x2": rng.uniform(-30, 30, (512, 4)).astype(np.float32)}
    stage = Pipeline.parse("streamline").run(model, inputs=inputs).report.stages[-1]
    assert stage.contract == "approximate"
    assert stage.metrics["requantized_joins"] == 1
    assert stage.metrics["requantization_bound"] == 0.125
    assert "join" in stage.metrics["requantizations"][0]
    assert 0 < stage.vs_previous.max_abs_err <= 0.125

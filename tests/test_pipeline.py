"""The pass registry, the textual syntax, and verification catching a pass that lies."""

import json

import numpy as np
import pytest
from conftest import mlp, quant_mlp
from hypothesis import given
from hypothesis import strategies as st

import flimcc
from flimcc.errors import PipelineSyntaxError, VerificationError
from flimcc.pipeline import Contract, Option, Pass, Pipeline, parse_pipeline, register, registry


@register
class PerturbWeight(Pass):
    """Test-only: adds `delta` to the first weight element while claiming a contract."""

    name = "test-perturb-weight"
    summary = "test only: perturbs one weight"
    contract = Contract.FLOAT
    options = (Option("delta", float, 1e-3, "how much to add"),
               Option("claim", str, "float", "the contract to claim", choices=("exact", "float", "approximate")),
               Option("max-err", float, -1.0, "bound for the approximate claim (<0: none)"))

    def __init__(self, **kw):
        super().__init__(**kw)
        self.contract = Contract(self.claim)
        self.bound = self.max_err if self.max_err >= 0 else None

    def apply(self, model):
        init = model.graph.initializer[0].name
        w = model.get_initializer(init).copy()
        w.flat[0] += self.delta
        model.set_initializer(init, w)
        return model, False


def test_builtin_passes_are_registered_with_contracts_and_summaries():
    reg = registry()
    assert {"canonicalize", "fold-constants"} <= set(reg)
    for cls in reg.values():
        assert isinstance(cls.contract, Contract) and cls.summary and "\n" not in cls.summary


def test_text_round_trip():
    text = "canonicalize,fold-constants{keep-quant=false},test-perturb-weight{delta=0.5,claim=exact}"
    p = Pipeline.parse(text)
    assert str(p) == text
    assert Pipeline.parse(str(p)) == p
    assert str(Pipeline.parse(" canonicalize , fold-constants{ keep-quant = true } ")) == "canonicalize,fold-constants"


@given(delta=st.floats(-1e6, 1e6, allow_nan=False), claim=st.sampled_from(["exact", "float", "approximate"]))
def test_round_trip_property(delta, claim):
    p = Pipeline([PerturbWeight(delta=delta, claim=claim), "canonicalize"])
    assert Pipeline.parse(str(p)) == p


@pytest.mark.parametrize("text, message", [
    ("unroll-gruu", "unknown pass 'unroll-gruu'"),
    ("canonicalise", "did you mean 'canonicalize'"),
    ("fold-constants{keep=1}", "unknown option 'keep'; valid options: keep-quant (bool)"),
    ("fold-constants{keep-quant=maybe}", "option 'keep-quant' takes bool"),
    ("test-perturb-weight{claim=sloppy}", "must be one of exact, float, approximate"),
    ("test-perturb-weight{delta=abc}", "option 'delta' takes float"),
    ("canonicalize{x}", "not written as key=value"),
    ("canonicalize,", "ends with a comma"),
    ("", "empty"),
    ("canonicalize{{", "cannot parse"),
])
def test_bad_pipeline_text_lists_what_is_valid(text, message):
    with pytest.raises(PipelineSyntaxError, match=None) as exc:
        parse_pipeline(text)
    assert message in str(exc.value)


def test_unknown_pass_message_lists_known_passes():
    with pytest.raises(PipelineSyntaxError) as exc:
        parse_pipeline("nonsense")
    assert "canonicalize" in str(exc.value) and "fold-constants" in str(exc.value)


@pytest.mark.parametrize("claim", ["exact", "float"])
def test_a_pass_that_perturbs_a_weight_is_caught(claim):
    model = flimcc.load(mlp())
    with pytest.raises(VerificationError) as exc:
        Pipeline([PerturbWeight(delta=0.5, claim=claim)]).run(model)
    msg = str(exc.value)
    assert "test-perturb-weight" in msg and f"{claim} contract" in msg and "output 'y'" in msg
    assert exc.value.report.stages[-1].verdict == "VIOLATED"


def test_tiny_perturbation_passes_float_but_not_exact():
    model = flimcc.load(mlp())
    Pipeline([PerturbWeight(delta=1e-9, claim="float")]).run(model)  # within float tolerance
    with pytest.raises(VerificationError):
        Pipeline([PerturbWeight(delta=1e-3, claim="exact")]).run(model)


def test_approximate_pass_is_reported_and_checked_against_its_bound():
    model = flimcc.load(mlp())
    run = Pipeline([PerturbWeight(delta=0.5, claim="approximate")]).run(model)
    assert run.report.stages[-1].vs_golden.max_abs_err > 0
    with pytest.raises(VerificationError, match="bound 1e-06"):
        Pipeline([PerturbWeight(delta=0.5, claim="approximate", max_err=1e-6)]).run(model)


def test_correct_passes_verify_and_report():
    model = flimcc.load(mlp())
    model, report = Pipeline.parse("canonicalize,fold-constants").run(model, samples=8, seed=3)
    assert [s.stage for s in report.stages] == ["input", "canonicalize", "fold-constants"]
    assert all(s.verdict == "ok" for s in report.stages)
    assert report.stages[1].vs_previous.bit_exact
    assert report.golden == "onnxruntime" and report.samples == 8
    data = json.loads(json.dumps(report.to_json()))
    assert data["stages"][1]["contract"] == "exact" and data["stages"][1]["nodes_after"] == 5


def test_fold_constants_folds_and_keeps_numerics():
    proto = mlp()
    # a constant subexpression: w2' = w2 * 1 computed in the graph
    from onnx import helper, numpy_helper
    proto.graph.initializer.append(numpy_helper.from_array(np.ones((6, 3), np.float32), "one"))
    proto.graph.node.insert(0, helper.make_node("Mul", ["w2", "one"], ["w2x"], name="const_mul"))
    proto.graph.node[4].input[1] = "w2x"
    model = flimcc.load(proto)
    out, report = Pipeline.parse("fold-constants").run(model)
    assert len(out.graph.node) == 5 and report.stages[-1].verdict == "ok"


def test_user_inputs_are_used():
    model = flimcc.load(mlp())
    x = np.full((3, 8), 0.5, np.float32)
    _, report = Pipeline.parse("canonicalize").run(model, inputs={"x": x})
    assert report.samples == 3


def test_quantized_model_golden_is_ort_and_stage_is_bit_exact():
    model = flimcc.load(quant_mlp())
    _, report = Pipeline.parse("canonicalize").run(model, samples=32)
    assert report.golden.startswith("onnxruntime (QONNX")
    assert report.stages[0].vs_golden.bit_exact  # qonnx execution == ORT running its Quant ops as float32 arithmetic


def test_pass_usable_as_plain_qonnx_transformation():
    model = flimcc.load(mlp())
    out = model.transform(registry()["fold-constants"]())
    np.testing.assert_allclose(flimcc.execute(out, np.ones((1, 8), np.float32))["y"],
                               flimcc.execute(model, np.ones((1, 8), np.float32))["y"])


def test_integer_annotated_inputs_are_drawn_from_their_range():
    from qonnx.core.datatype import DataType

    from flimcc.verify import make_inputs
    model = flimcc.load(mlp())
    model.set_tensor_datatype("x", DataType["INT3"])
    x = make_inputs(model, samples=200, seed=0)["x"]
    assert x.shape == (200, 8) and set(np.unique(x)) == set(range(-4, 4))
    model.set_tensor_datatype("x", DataType["BIPOLAR"])
    assert set(np.unique(make_inputs(model, samples=50)["x"])) == {-1.0, 1.0}


def test_report_says_whether_inputs_were_seeded_or_given():
    model = flimcc.load(mlp())
    assert Pipeline.parse("canonicalize").run(model, seed=5).report.seed == 5
    given = Pipeline.parse("canonicalize").run(model, inputs={"x": np.zeros((2, 8), np.float32)}).report
    assert given.seed is None and given.samples == 2


def test_fold_constants_leaves_multi_output_nodes_alone():
    """qonnx's FoldConstants would keep only the first output of a constant Split."""
    from onnx import TensorProto, helper, numpy_helper
    c = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(1, 6), "c")
    nodes = [helper.make_node("Split", ["c"], ["c0", "c1"], axis=1, num_outputs=2, name="split"),
             helper.make_node("Add", ["x", "c0"], ["s0"], name="a0"),
             helper.make_node("Add", ["s0", "c1"], ["y"], name="a1")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [c])
    model = flimcc.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    out, report = Pipeline.parse("fold-constants").run(model)
    assert report.stages[-1].verdict == "ok"
    np.testing.assert_array_equal(flimcc.execute(out, np.zeros((1, 3), np.float32))["y"], [[3, 5, 7]])

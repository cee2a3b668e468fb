"""unroll-gru: the GRU node becomes a Scan (or a time-unrolled DAG) of standard ONNX ops
that computes what the GRU computed: checked against the onnx package's own GRU test
cases, PyTorch, onnxruntime and a numpy reference that follows the spec."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flimcc
from flimcc.errors import UnsupportedError
from flimcc.execute import execute
from flimcc.ir import canonicalize, op_histogram
from flimcc.passes.unroll_gru import UnrollGRU
from flimcc.pipeline import Pipeline

from gru_models import (
    GRUCase, backend_case_model, onnx_backend_cases, random_case, seq2seq_lite_model, seq2seq_model,
    torch_gru_model,
)

ATOL, RTOL = 1e-5, 1e-4  # the pass's float contract
MODES = ("scan", "full")


def unroll(model, **options):
    return model.transform(UnrollGRU(**options))


def assert_unrolled(model) -> None:
    """No GRU left, the ONNX checker passes, and every tensor of the main graph has a
    static shape, also after flimcc's canonicalisation."""
    assert "GRU" not in op_histogram(model)
    onnx.checker.check_model(model.model)
    for m in (model, canonicalize(copy.deepcopy(model))):  # canonicalize works in place
        for node in m.graph.node:
            for out in filter(None, node.output):
                shape = m.get_tensor_shape(out)
                assert shape is not None and all(isinstance(d, int) and d > 0 for d in shape), (out, shape)


def assert_close(got: dict, expected: dict, atol: float = ATOL, rtol: float = RTOL) -> float:
    worst = 0.0
    for name, ref in expected.items():
        assert got[name].shape == np.shape(ref), name
        np.testing.assert_allclose(got[name], ref, atol=atol, rtol=rtol, err_msg=name)
        worst = max(worst, float(np.max(np.abs(got[name] - ref), initial=0.0)))
    return worst


# ---------------------------------------------------------------------------------------
# the onnx package's GRU node tests

BACKEND_CASES = onnx_backend_cases()


def test_backend_cases_were_captured():
    assert {"test_gru_defaults", "test_gru_with_initial_bias", "test_gru_seq_length", "test_gru_batchwise"} <= set(
        BACKEND_CASES
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(BACKEND_CASES))
def test_onnx_backend_case(case, mode):
    node, inputs, expected = BACKEND_CASES[case]
    model, feeds = backend_case_model(node, inputs, expected)
    unrolled = unroll(model, mode=mode)
    assert_unrolled(unrolled)
    got = execute(unrolled, feeds)
    assert_close(got, dict(zip(got, expected)))


# ---------------------------------------------------------------------------------------
# PyTorch


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tbf", "btf"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["1layer", "2layers"])
def test_pytorch_gru_export(num_layers, batch_first, bidirectional):
    model, module, x = torch_gru_model(num_layers, batch_first, bidirectional)
    assert op_histogram(model)["GRU"] == num_layers
    with torch.no_grad():
        y, h_n = module(x)
    golden = execute(model, x.numpy())
    for mode in MODES:
        unrolled = unroll(model, mode=mode)
        assert_unrolled(unrolled)
        got = execute(unrolled, x.numpy())
        assert_close(got, {"y": y.numpy(), "h_n": h_n.numpy()})
        assert_close(got, golden)


def test_pytorch_export_runs_on_other_batch_sizes():
    """Batch-first export, loaded with batch 1: the unrolled graph takes any batch."""
    model, module, _ = torch_gru_model(2, True, True, batch=1)
    x = torch.rand(9, 7, 3)
    with torch.no_grad():
        y, _ = module(x)
    got = execute(unroll(model), x.numpy())
    assert_close({"y": got["y"]}, {"y": y.numpy()})


# ---------------------------------------------------------------------------------------
# layout=1, which onnxruntime's GRU does not run at all


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_layout_1_against_numpy(direction, mode):
    rng = np.random.default_rng(7)
    case = random_case(rng, input_size=3, hidden=6, steps=9, batch=4, direction=direction, layout=1,
                       linear_before_reset=1)
    dirs = 2 if direction == "bidirectional" else 1
    case.initial_h = rng.uniform(-1, 1, (4, dirs, 6)).astype(np.float32)
    case.sequence_lens = np.array([9, 3, 1, 6], np.int32)
    unrolled = unroll(case.model(), mode=mode)
    assert_unrolled(unrolled)
    assert_close(execute(unrolled, case.feeds()), case.reference())


def test_layout_1_runs_on_other_batch_sizes():
    rng = np.random.default_rng(3)
    case = random_case(rng, input_size=2, hidden=5, steps=6, batch=1, direction="bidirectional", layout=1)
    unrolled = unroll(case.model())
    case.x = rng.uniform(0, 1, (11, 6, 2)).astype(np.float32)
    assert_close(execute(unrolled, case.feeds()), case.reference())


# ---------------------------------------------------------------------------------------
# random GRUs: numpy reference and onnxruntime


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_grus(data):
    draw = data.draw
    # mode=full is for short sequences (qonnx's cleanup after a pass is quadratic in nodes).
    mode = draw(st.sampled_from(MODES), label="mode")
    steps = draw(st.integers(1, 40 if mode == "scan" else 16), label="T")
    batch = draw(st.integers(1, 8), label="batch")
    hidden = draw(st.integers(1, 64), label="hidden")
    direction = draw(st.sampled_from(["forward", "reverse", "bidirectional"]), label="direction")
    opset = draw(st.sampled_from([9, 11, 13, 17, 22]), label="opset")
    layout = draw(st.sampled_from([0, 1]), label="layout") if opset >= 14 else 0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    case = random_case(
        rng, input_size=draw(st.integers(1, 16), label="input"), hidden=hidden, steps=steps, batch=batch,
        direction=direction, layout=layout, opset=opset, with_bias=draw(st.booleans(), label="B"),
        linear_before_reset=draw(st.sampled_from([0, 1]), label="linear_before_reset"),
        clip=draw(st.sampled_from([None, 0.5, 3.0]), label="clip"),
        outputs=draw(st.sampled_from([("Y", "Y_h"), ("Y", ""), ("", "Y_h")]), label="outputs"),
    )
    dirs = 2 if direction == "bidirectional" else 1
    if draw(st.booleans(), label="initial_h"):
        shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
        case.initial_h = rng.uniform(-1, 1, shape).astype(np.float32)
    if draw(st.booleans(), label="sequence_lens"):
        case.sequence_lens = rng.integers(1, steps + 1, batch).astype(np.int32)

    model = case.model()
    unrolled = unroll(model, mode=mode)
    assert_unrolled(unrolled)
    got = execute(unrolled, case.feeds())
    assert_close(got, case.reference())
    if layout == 0:
        assert_close(got, execute(model, case.feeds()))


# ---------------------------------------------------------------------------------------
# activation functions, clip


SPEC_ACTIVATIONS = [
    ("Relu", None, None), ("Tanh", None, None), ("Sigmoid", None, None), ("Affine", 0.5, 0.1),
    ("LeakyRelu", 0.1, None), ("ThresholdedRelu", 0.2, None), ("ScaledTanh", 0.9, 1.3),
    ("HardSigmoid", 0.3, 0.4), ("Elu", 0.7, None), ("Softsign", None, None), ("Softplus", None, None),
]


@pytest.mark.parametrize("activation", SPEC_ACTIVATIONS, ids=[a[0] for a in SPEC_ACTIVATIONS])
def test_activation_functions(activation):
    rng = np.random.default_rng(11)
    name, alpha, beta = activation
    act = (name.lower(), alpha, beta)
    case = random_case(rng, input_size=3, hidden=4, steps=6, batch=3, activations=[act, act], clip=1.5)
    model = case.model()
    for mode in MODES:
        got = execute(unroll(model, mode=mode), case.feeds())
        assert_close(got, case.reference())
        assert_close(got, execute(model, case.feeds()))


def test_activation_parameters_are_consumed_in_order():
    """Bidirectional, four functions that take parameters: alphas and betas are consumed
    in list order by the functions that take them (and defaults fill no gaps)."""
    rng = np.random.default_rng(5)
    acts = [("leakyrelu", 0.1, None), ("affine", 0.5, 0.2), ("hardsigmoid", 0.3, 0.4), ("scaledtanh", 0.9, 1.1)]
    case = random_case(rng, input_size=2, hidden=5, steps=7, batch=2, direction="bidirectional",
                       activations=acts, linear_before_reset=1)
    model = case.model()
    got = execute(unroll(model), case.feeds())
    assert_close(got, case.reference())
    assert_close(got, execute(model, case.feeds()))


def test_activation_defaults_match_onnxruntime():
    rng = np.random.default_rng(6)
    case = random_case(rng, input_size=2, hidden=5, steps=7, batch=2, direction="bidirectional",
                       extra_attrs={"activations": ["LeakyRelu", "HardSigmoid", "Elu", "tanh"]})
    model = case.model()
    assert_close(execute(unroll(model), case.feeds()), execute(model, case.feeds()))


def test_double_precision():
    """onnxruntime's GRU has no double kernel; the unrolled graph runs in double."""
    rng = np.random.default_rng(8)
    case = random_case(rng, input_size=3, hidden=4, steps=5, batch=2, direction="bidirectional")
    case.x, case.w, case.r, case.b = (v.astype(np.float64) for v in (case.x, case.w, case.r, case.b))
    got = execute(unroll(case.model()), case.feeds())
    assert got["Y"].dtype == np.float64
    assert_close(got, case.reference(), atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# structure


def test_scan_body_holds_only_the_recurrence():
    """The input projection is computed outside the Scan, one MatMul over the whole
    sequence per gate; the body multiplies only the state, with (H, H) weights."""
    rng = np.random.default_rng(2)
    case = random_case(rng, input_size=3, hidden=6, steps=5, batch=2, linear_before_reset=1)
    unrolled = unroll(case.model())
    ops = op_histogram(unrolled)
    assert ops["Scan"] == 1 and ops["MatMul"] == 3
    for matmul in (n for n in unrolled.graph.node if n.op_type == "MatMul"):
        assert matmul.input[0] == "X" and unrolled.get_initializer(matmul.input[1]).shape == (3, 6)
    scan = next(n for n in unrolled.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    assert sorted(n.op_type for n in body.node) == sorted(
        ["Gemm", "Sigmoid", "Gemm", "Sigmoid", "Gemm", "Mul", "Add", "Tanh", "Sub", "Mul", "Add", "Identity"]
    )
    assert sorted(tuple(t.dims) for t in body.initializer) == [(6,), (6, 6), (6, 6), (6, 6)]
    assert {n.name for n in body.node} >= {"gru/forward/step/z_gate", "gru/forward/step/h_new"}


def test_full_mode_is_a_dag_of_steps():
    rng = np.random.default_rng(2)
    case = random_case(rng, input_size=3, hidden=6, steps=5, batch=2, direction="reverse")
    unrolled = unroll(case.model(), mode="full")
    ops = op_histogram(unrolled)
    assert "Scan" not in ops and ops["Gemm"] == 3 * 5 and ops["Tanh"] == 5
    assert "gru/reverse/t4/z_gate" in {n.name for n in unrolled.graph.node}


def test_reloaded_scan_model_runs_on_other_batch_sizes(tmp_path):
    """flimcc.load writes the static batch into the Scan bodies again; flimcc.execute
    must still run the model on another batch."""
    flimcc.save(unroll(seq2seq_lite_model(10)), tmp_path / "unrolled.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (16, 10, 1)).astype(np.float32)
    assert execute(flimcc.load(tmp_path / "unrolled.onnx"), x)["y"].shape == (16, 10, 3)


def test_constant_zero_initial_state_is_dropped():
    """PyTorch-style constant zeros as initial_h (fixed batch) are the default state: the
    unrolled graph then reads the batch from X and runs on any batch."""
    rng = np.random.default_rng(4)
    case = random_case(rng, input_size=2, hidden=3, steps=4, batch=1, layout=1)
    model = case.model()
    model.set_initializer("h0", np.zeros((1, 1, 3), np.float32))
    model.graph.node[0].input.extend(["", "", "h0"])
    unrolled = unroll(model)
    case.x = rng.uniform(0, 1, (5, 4, 2)).astype(np.float32)
    assert_close(execute(unrolled, case.feeds()), case.reference())


def test_model_without_gru_is_unchanged():
    model = seq2seq_lite_model(4)
    unrolled = unroll(model)
    before = op_histogram(unrolled)
    assert op_histogram(unroll(unrolled)) == before


# ---------------------------------------------------------------------------------------
# the seq2seq models


@pytest.mark.parametrize("build", [seq2seq_lite_model, seq2seq_model], ids=["Seq2SeqLite", "Seq2Seq"])
def test_seq2seq_pipeline_scan(build):
    model = build(135)
    run = Pipeline.parse("unroll-gru").run(model, verify=True, samples=16)
    assert run.report.stages[-1].verdict == "ok"
    assert run.report.stages[-1].vs_golden.max_abs_err < ATOL
    assert_unrolled(run.model)
    grus = op_histogram(model)["GRU"]
    assert op_histogram(run.model)["Scan"] == grus


@pytest.mark.parametrize("build", [seq2seq_lite_model, seq2seq_model], ids=["Seq2SeqLite", "Seq2Seq"])
def test_seq2seq_pipeline_full(build):
    model = build(12)
    run = Pipeline.parse("unroll-gru{mode=full}").run(model, verify=True, samples=16)
    assert run.report.stages[-1].verdict == "ok"
    assert_unrolled(run.model)
    assert "Scan" not in op_histogram(run.model)


# ---------------------------------------------------------------------------------------
# errors


def small_case(**kwargs) -> GRUCase:
    return random_case(np.random.default_rng(0), input_size=2, hidden=3, steps=6, batch=2, **kwargs)


def test_full_mode_refuses_long_sequences():
    with pytest.raises(UnsupportedError, match=r"node 'gru'.*T=6.*max-steps=4"):
        unroll(small_case().model(), mode="full", max_steps=4)
    unroll(small_case().model(), mode="full", max_steps=6)


def test_unsupported_activation_is_refused():
    model = small_case(extra_attrs={"activations": ["Gelu", "Tanh"]}).model()
    with pytest.raises(UnsupportedError, match=r"node 'gru'.*'activations'.*Gelu"):
        unroll(model)


@pytest.mark.parametrize("activation,attribute", [("Affine", "activation_alpha"), ("ScaledTanh", "activation_alpha"),
                                                  ("ThresholdedRelu", "activation_alpha")])
def test_ambiguous_activation_default_is_refused(activation, attribute):
    model = small_case(extra_attrs={"activations": ["Sigmoid", activation]}).model()
    with pytest.raises(UnsupportedError, match=rf"node 'gru'.*'{attribute}'.*{activation}"):
        unroll(model)


def test_unused_activation_parameter_is_refused():
    model = small_case(extra_attrs={"activation_alpha": [0.5]}).model()
    with pytest.raises(UnsupportedError, match=r"node 'gru'.*'activation_alpha'"):
        unroll(model)


def test_unknown_attribute_is_refused():
    model = small_case().model()
    model.graph.node[0].attribute.append(onnx.helper.make_attribute("output_sequence", 1))
    with pytest.raises(UnsupportedError, match=r"node 'gru'.*unknown attribute 'output_sequence'"):
        unroll(model)


def test_hidden_size_must_match_weights():
    model = small_case().model()
    attr = next(a for a in model.graph.node[0].attribute if a.name == "hidden_size")
    attr.i = 4
    with pytest.raises(UnsupportedError, match=r"node 'gru'.*'hidden_size' is 4.*hidden size 3"):
        unroll(model)


def test_weights_must_be_constant():
    case = small_case()
    model = case.model()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "R"))
    model.graph.input.append(onnx.helper.make_tensor_value_info("R", onnx.TensorProto.FLOAT, case.r.shape))
    with pytest.raises(UnsupportedError, match=r"node 'gru'.*input R \('R'\) is not an initializer"):
        unroll(model)


def test_old_opset_is_refused():
    model = small_case(opset=8).model()
    with pytest.raises(UnsupportedError, match=r"node 'gru'.*opset 8"):
        unroll(model)


def flimcc_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flimcc.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli(tmp_path):
    flimcc.save(seq2seq_lite_model(135), tmp_path / "model.onnx")
    bad = flimcc_cli("opt", "model.onnx", "-p", "unroll-gru{mode=full,max-steps=4}", "-o", "out.onnx", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "T=135" in bad.stderr and "max-steps=4" in bad.stderr and "/encoder/GRU_0" in bad.stderr
    assert not (tmp_path / "out.onnx").exists()

    good = flimcc_cli("opt", "model.onnx", "-p", "unroll-gru", "-o", "out.onnx", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "GRU" not in op_histogram(flimcc.load(tmp_path / "out.onnx"))

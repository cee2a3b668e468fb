"""Export: float models keep ONNX GRU nodes and match PyTorch; the quantized student's
QONNX export is bit-exact with PyTorch through flimcc's and qonnx's executors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from qonnx.core.onnx_exec import execute_onnx

import flimcc
from flimcc.models.export import check_export, export
from flimcc.models.fli_data import SimConfig, simulate
from flimcc.models.quant_gru import QuantSeq2SeqLite
from flimcc.models.seq2seq import Seq2Seq, Seq2SeqLite

# Unrolled QONNX grows by ~19 nodes per step and layer and runs node by node: keep T short.
QUANT_STEPS = 6


def _decays(n: int, steps: int) -> np.ndarray:
    return simulate(n, SimConfig(n_gates=steps, irf_center=0.1, jitter_range=(0, 1)), seed=5).x


def _ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


@pytest.mark.parametrize("make, grus", [(Seq2SeqLite, 2), (lambda: Seq2Seq(hidden=16), 4)],
                         ids=["seq2seqlite", "seq2seq-2x16"])
def test_float_export_keeps_gru_nodes_and_matches_pytorch(tmp_path, make, grus):
    torch.manual_seed(0)
    model = make()
    path = export(model, tmp_path / "model.onnx")
    proto = onnx.load(path)
    gru_nodes = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(gru_nodes) == grus
    assert all(onnx.helper.get_attribute_value(a) == 1 for n in gru_nodes for a in n.attribute
               if a.name == "linear_before_reset")
    assert proto.opset_import[0].version == 17
    assert {p.key: p.value for p in proto.metadata_props}["flimcc.bits"] == "float"
    check = check_export(model, path, _decays(8, 135))
    assert check.max_abs_err < 1e-5


def test_qonnx_export_is_bit_exact_at_8_bits(tmp_path):
    # Observed, not guaranteed: torch's and onnxruntime's float32 sigmoid and tanh differ in
    # the last bit, which flips a quantized level a few times in a million (see quant_gru).
    torch.manual_seed(1)
    model = QuantSeq2SeqLite(bits=8)
    path = export(model, tmp_path / "student.onnx", steps=QUANT_STEPS)
    ops = _ops(path)
    assert ops["Quant"] > 0 and "GRU" not in ops and ops["Sigmoid"] == ops["Tanh"] == 2 * QUANT_STEPS
    check = check_export(model, path, _decays(64, QUANT_STEPS))
    assert check.bit_exact, str(check)


def test_qonnx_export_of_the_deployed_activations_is_exact_by_construction(tmp_path):
    # Hard sigmoid and hard tanh: every op is piecewise linear on power-of-two grids.
    torch.manual_seed(3)
    model = QuantSeq2SeqLite(bits=8, sigmoid="hard", tanh="hard")
    path = export(model, tmp_path / "deployed.onnx", steps=QUANT_STEPS)
    assert not {"Sigmoid", "Tanh"} & set(_ops(path))
    x = np.concatenate([_decays(64, QUANT_STEPS), np.random.default_rng(0).uniform(0, 2, (64, QUANT_STEPS, 1))])
    check = check_export(model, path, x.astype(np.float32))
    assert check.bit_exact, str(check)


def test_qonnx_export_at_4_bits_hard_sigmoid_runs_bit_exact_in_qonnx(tmp_path):
    torch.manual_seed(2)
    model = QuantSeq2SeqLite(bits=4, sigmoid="hard", linear_before_reset=1).eval()
    path = export(model, tmp_path / "student4.onnx", steps=QUANT_STEPS)
    assert "Sigmoid" not in _ops(path)  # clip(0.5 x + 0.5, 0, 1) exports as Mul, Add, Clip
    x = _decays(1, QUANT_STEPS)
    got = execute_onnx(flimcc.load(path), {"x": x})["y"]  # qonnx's own executor
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, expected)


def test_qonnx_export_has_a_dynamic_batch_axis(tmp_path):
    """The QONNX export's batch is symbolic, its initializers are not graph inputs, and a
    batch of 5 gives what five single decays give (and what PyTorch gives)."""
    torch.manual_seed(4)
    model = QuantSeq2SeqLite(bits=8, sigmoid="hard", tanh="hard")
    path = export(model, tmp_path / "dyn.onnx", steps=QUANT_STEPS)
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["x"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = _decays(5, QUANT_STEPS)
    batch = flimcc.execute(flimcc.load(path, batch=5), {"x": x})["y"]
    singles = np.concatenate([flimcc.execute(flimcc.load(path), {"x": x[i:i + 1]})["y"] for i in range(5)])
    assert np.array_equal(batch, singles)
    assert check_export(model, path, x).bit_exact


@pytest.mark.parametrize("name", ["seq2seqlite-int8", "seq2seqlite-int8-hard", "seq2seqlite-int4"])
def test_shipped_qonnx_models_have_a_dynamic_batch_axis(name):
    from flimcc.models import zoo

    proto = onnx.load(zoo.path(name))
    assert [i.name for i in proto.graph.input] == ["x"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert zoo.card(name)["export"]["bytes"] == zoo.path(name).stat().st_size


@pytest.mark.parametrize("kwargs, act", [({"state_bits": 8}, "4"), ({"act_bits": 8}, "8")], ids=["state8", "w4a8"])
def test_qonnx_export_of_a_wider_state_is_bit_exact_and_says_so(tmp_path, kwargs, act):
    torch.manual_seed(5)
    model = QuantSeq2SeqLite(bits=4, sigmoid="hard", tanh="hard", **kwargs).eval()
    path = export(model, tmp_path / "state8.onnx", steps=QUANT_STEPS)
    proto = onnx.load(path)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["flimcc.bits"] == "4" and props["flimcc.state_bits"] == "8" and props["flimcc.act_bits"] == act
    widths = Counter(int(onnx.numpy_helper.to_array(i).item()) for i in proto.graph.initializer
                     if any(n.op_type == "Quant" and n.input[3] == i.name for n in proto.graph.node))
    assert widths[8] > 0 and widths[4] > 0
    x = np.concatenate([_decays(32, QUANT_STEPS), np.random.default_rng(1).uniform(0, 2, (32, QUANT_STEPS, 1))])
    check = check_export(model, path, x.astype(np.float32))
    assert check.bit_exact, str(check)


@pytest.mark.parametrize("bits, state_bits", [(8, None), (4, 8)])
def test_reset_after_qat_student_lowers_to_integers_bit_exactly(tmp_path, bits, state_bits):
    """Reset-after's h R_h + Rb_h is requantized (13 bits) before r multiplies it; without
    that the compiler refused the export (integers past float32's 2^24 in the candidate's
    sum). With it, roll-loop .. streamline is bit-exact with the export, whatever scale the
    accumulator's quantizer starts from."""
    from flimcc.models.quant_gru import ACCUMULATOR_BITS
    from flimcc.pipeline import Pipeline
    from flimcc.analysis import integer_violations

    torch.manual_seed(6)
    model = QuantSeq2SeqLite(bits=bits, linear_before_reset=1, state_bits=state_bits).eval()
    path = export(model, tmp_path / "ra.onnx", steps=QUANT_STEPS)
    quants = [n for n in onnx.load(path).graph.node if n.op_type == "Quant"]
    assert any(_bit_width(path, n) == ACCUMULATOR_BITS for n in quants)
    x = _decays(2, QUANT_STEPS)
    out, report = Pipeline.parse("roll-loop,fold-constants,fold-weights,streamline").run(
        flimcc.load(path), inputs={"x": x})
    assert all(s.verdict == "ok" for s in report.stages), [(s.name, s.verdict) for s in report.stages]
    assert all(s.vs_previous.bit_exact for s in report.stages[1:])
    assert integer_violations(out) == []


def _bit_width(path, node) -> float | None:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    value = inits.get(node.input[3])
    return None if value is None else float(value)

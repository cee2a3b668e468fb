"""The QAT student exported by Brevitas (QONNX, an unrolled DAG) lowers to an integer
graph bit-identical to qonnx's execution of the export."""

import numpy as np
import pytest
import torch

import flimcc
from flimcc.analysis import integer_violations
from flimcc.models.export import export_qonnx
from flimcc.models.fli_data import SimConfig, simulate
from flimcc.models.quant_gru import QuantSeq2SeqLite
from flimcc.pipeline import Pipeline

STEPS = 12


@pytest.mark.parametrize("bits, sigmoid", [(8, "logistic"), (4, "logistic"), (8, "hard")])
def test_brevitas_export_lowers_bit_exactly(tmp_path, bits, sigmoid):
    torch.manual_seed(bits)
    student = QuantSeq2SeqLite(bits=bits, sigmoid=sigmoid).eval()
    model = flimcc.load(export_qonnx(student, tmp_path / "student.onnx", steps=STEPS))
    x = simulate(300, SimConfig(n_gates=STEPS, gate_width=0.5, irf_center=2.0), seed=5).x.astype(np.float32)
    out, report = Pipeline.parse("unroll-gru,fold-weights,streamline").run(model, inputs={"x": x})
    assert report.golden.startswith("onnxruntime (QONNX")
    assert report.stages[0].vs_golden.bit_exact  # qonnx's execution == ORT running its Quant ops as float32 arithmetic
    assert all(s.vs_previous.bit_exact for s in report.stages[1:])
    assert integer_violations(out) == []
    ops = {n.op_type for n in out.graph.node}
    assert not ops & {"Quant", "Sigmoid", "Tanh", "HardSigmoid"} - {"Quant"} and "MultiThreshold" in ops

"""Export trained models to ONNX and check the export against PyTorch.

- Float models (:class:`Seq2Seq`, :class:`Seq2SeqLite`): ``torch.onnx.export`` through
  TorchScript (``dynamo=False``), opset 17, so every ``torch.nn.GRU`` layer stays one ONNX
  ``GRU`` node (``linear_before_reset=1``), the form ``unroll-gru`` consumes. Batch axis
  dynamic, T static.
- The quantized student (:class:`QuantSeq2SeqLite`): QONNX through Brevitas'
  ``export_qonnx`` (TorchScript, opset 17). The time loop is Python, so the export is the
  GRU unrolled over T (about 19 nodes per step and layer) with one ``Quant`` per weight
  tensor. Brevitas traces at batch 1; `dynamic_batch` then makes the batch axis symbolic
  ("batch") and drops the initializers TorchScript lists as graph inputs and the traced
  intermediate shapes (shape inference recomputes them for whatever batch a tool binds).

:func:`check_export` runs the file with :func:`flimcc.execute` (onnxruntime for a
standard graph; qonnx's ``Quant`` in Python and every other node in onnxruntime for
QONNX) and compares with PyTorch. Float exports agree to about 1e-6. The quantized
student's matrix products are exact (integer codes on power-of-two grids, exact in
float32 whatever the summation order) and the rounding modes agree (half to even), so:

- with the hard sigmoid and hard tanh (the deployed student's) the export is bit-exact by
  construction;
- with the logistic sigmoid and tanh, torch's and onnxruntime's float32 kernels differ in
  the last bit and a level flips a few times in a million: the zoo's 8-bit model is
  bit-exact on 1,984 of 2,000 test decays at T = 135, max abs error 0.016 on the others.

    python -m flimcc.models.export CHECKPOINT -o MODEL.onnx [--steps T] [--check N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import flimcc

from .fli_data import DEFAULT_N_GATES
from .quant_gru import QuantSeq2SeqLite

OPSET = 17


def export_float(model: nn.Module, path: str | os.PathLike, steps: int = DEFAULT_N_GATES) -> Path:
    """A float model as ONNX ``GRU`` nodes; input "x" (batch, steps, 1), output "y"."""
    path = Path(path)
    example = torch.zeros(1, steps, 1)
    with warnings.catch_warnings():
        # The legacy exporter's deprecation notice, and its warning about GRUs exported at
        # batch 1: it concerns fixed initial states, and ours are none (encoder) or the
        # encoder's (decoder), so any batch runs (check_export runs batches > 1).
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def export_qonnx(model: QuantSeq2SeqLite, path: str | os.PathLike, steps: int = DEFAULT_N_GATES) -> Path:
    """The quantized student as QONNX, unrolled over ``steps``; input "x" (1, steps, 1) as
    traced (`export` makes the batch symbolic)."""
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Brevitas' and TorchScript's tracer warnings
        brevitas_export_qonnx(model.eval(), args=torch.zeros(1, steps, 1), export_path=str(path),
                              dynamo=False, opset_version=OPSET, input_names=["x"], output_names=["y"])
    return path


def dynamic_batch(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph's leading axis made symbolic: inputs and outputs get dim_param "batch";
    initializers no longer listed as graph inputs (TorchScript's export lists them, which
    makes them look overridable); the traced value_info dropped, as its shapes hold the
    trace's batch of 1. In place; returns `proto`."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    keep = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(keep)
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del g.value_info[:]
    return proto


def export(model: nn.Module, path: str | os.PathLike, steps: int = DEFAULT_N_GATES,
           metadata: dict[str, str] | None = None) -> Path:
    """Float models to ONNX, quantized ones to QONNX; ``metadata`` goes into the file's
    ``metadata_props`` (flimcc's exports say what model and bit width they hold)."""
    quantized = isinstance(model, QuantSeq2SeqLite) and model.bits is not None
    path = (export_qonnx if quantized else export_float)(model, path, steps)
    props = {"flimcc.model": type(model).__name__, "flimcc.steps": str(steps),
             "flimcc.bits": str(model.bits) if quantized else "float",
             **({"flimcc.state_bits": str(model.state_bits), "flimcc.act_bits": str(model.act_bits)}
                if quantized else {}), **(metadata or {})}
    proto = onnx.load(path)
    if quantized:
        dynamic_batch(proto)
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "flimcc"
    onnx.save(proto, path)
    return path


@dataclasses.dataclass(frozen=True)
class ExportCheck:
    """How the exported file's output compares with PyTorch's on the same inputs."""

    samples: int
    max_abs_err: float
    mismatches: int  # output elements that are not bit-identical
    elements: int

    @property
    def bit_exact(self) -> bool:
        return self.mismatches == 0

    def __str__(self) -> str:
        if self.bit_exact:
            return f"bit-exact on {self.samples} samples ({self.elements} values)"
        return (f"max abs err {self.max_abs_err:.3g}, {self.mismatches} of {self.elements} values differ "
                f"({self.samples} samples)")


def check_export(model: nn.Module, path: str | os.PathLike, x: np.ndarray) -> ExportCheck:
    """Run ``path`` with :func:`flimcc.execute` on ``x`` (N, T, 1) and compare with ``model``."""
    x = np.asarray(x, dtype=np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    got = flimcc.execute(flimcc.load(path), {"x": x})["y"]
    return ExportCheck(samples=len(x), max_abs_err=float(np.abs(got - expected).max()),
                       mismatches=int((got != expected).sum()), elements=int(expected.size))


def main(argv: list[str] | None = None) -> int:
    from .test_set import make_test_set
    from .train import load_checkpoint

    p = argparse.ArgumentParser(prog="python -m flimcc.models.export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--steps", type=int, default=DEFAULT_N_GATES, help="time gates T of the export")
    p.add_argument("--check", type=int, default=16, metavar="N", help="compare on N simulated samples (0: skip)")
    args = p.parse_args(argv)
    model, _, _ = load_checkpoint(args.checkpoint)
    path = export(model, args.output, args.steps)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    if args.check:
        decays = make_test_set(args.check, args.steps).x
        print("check against PyTorch:", check_export(model, path, decays))
    return 0


if __name__ == "__main__":
    sys.exit(main())

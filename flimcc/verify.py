"""The golden run and the numeric comparisons every verified stage goes through.

Golden is onnxruntime on the input model. A QONNX model's Quant nodes are first rewritten
into the float32 operations qonnx's Quant performs (`flimcc.quant_ops`, bit-identical to
qonnx's execution); a Quant that cannot be rewritten, and any other custom op, make the
golden run fall back to flimcc's node-by-node executor.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from .errors import FlimccError
from .execute import execute, graph_input_names, is_standard_graph, static_batch
from .quant_ops import QUANT_OPS, QuantToStandardOps

#: Inputs are drawn from [0, 1): the models take peak-normalised decay curves.
FLOAT_INPUT_RANGE = (0.0, 1.0)


def make_inputs(model: ModelWrapper, samples: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic input set shaped from the model: axis 0 (the batch) gets `samples`
    rows; integer-annotated inputs are drawn from their DataType's range."""
    rng = np.random.default_rng(seed)
    batch = static_batch(model)
    if batch and samples % batch:  # a fixed-batch model runs in chunks of its batch
        samples += batch - samples % batch
    feeds = {}
    for name in graph_input_names(model):
        shape = list(model.get_tensor_shape(name))
        if shape:
            shape[0] = samples
        dtype = model.get_tensor_datatype(name)
        if dtype == DataType["BIPOLAR"]:
            feeds[name] = rng.choice(np.array([-1.0, 1.0], np.float32), size=shape)
        elif dtype.is_integer():
            feeds[name] = rng.integers(int(dtype.min()), int(dtype.max()) + 1, size=shape).astype(np.float32)
        else:
            feeds[name] = rng.uniform(*FLOAT_INPUT_RANGE, size=shape).astype(np.float32)
    return feeds


def load_inputs(path: str | Path, model: ModelWrapper) -> dict[str, np.ndarray]:
    """Inputs from a `.npy` (one-input models) or `.npz` (arrays named like the inputs)."""
    path = Path(path)
    names = graph_input_names(model)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FlimccError(f"{path}: cannot read inputs ({e})") from None
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise FlimccError(f"{path}: a .npy holds one array but the model has inputs {names}; use .npz")
        return {names[0]: data.astype(np.float32)}
    missing = [n for n in names if n not in data.files]
    if missing:
        raise FlimccError(f"{path}: no array for input(s) {missing} (has {sorted(data.files)})")
    return {n: data[n].astype(np.float32) for n in names}


def golden_model(model: ModelWrapper) -> tuple[ModelWrapper, str]:
    """The model the golden run executes, and a description of how it runs."""
    if is_standard_graph(model.graph):
        return model, "onnxruntime"
    if any(n.op_type in QUANT_OPS for n in model.graph.node):
        proto = onnx.ModelProto()
        proto.CopyFrom(model.model)
        # Not `model.transform`: qonnx's wrapper construction and copies are quadratic on the
        # 5,000-node QAT exports (minutes); the rewrite itself is linear.
        std, _ = QuantToStandardOps().apply(ModelWrapper(proto, fix_missing_initializer_valueinfo=False))
        if is_standard_graph(std.graph):
            return std, "onnxruntime (QONNX Quant as its exact float32 operations)"
    return model, "flimcc executor (qonnx custom ops in Python, standard ops in onnxruntime)"


def golden_run(model: ModelWrapper, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    gm, how = golden_model(model)
    return execute(gm, inputs), how


@dataclasses.dataclass
class Comparison:
    """Worst-case difference between two runs, over all outputs."""

    max_abs_err: float
    max_rel_err: float  # max |a - b| / max |b| of the same output (relative to its range)
    output: str  # the output where the worst absolute error is
    index: tuple[int, ...]
    got: float
    expected: float
    bit_exact: bool

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"index": list(self.index)}


def compare(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> Comparison:
    worst = Comparison(0.0, 0.0, next(iter(expected)), (), 0.0, 0.0, True)
    for name, ref in expected.items():
        if name not in got:
            raise FlimccError(f"output '{name}' is missing from the stage's outputs {sorted(got)}")
        a = np.asarray(got[name], dtype=np.float64)
        b = np.asarray(ref, dtype=np.float64)
        if a.shape != b.shape:
            raise FlimccError(f"output '{name}' changed shape: {a.shape} instead of {b.shape}")
        exact = np.array_equal(a, b, equal_nan=True)
        diff = np.abs(a - b)
        diff[np.isnan(a) & np.isnan(b)] = 0.0
        diff[np.isnan(diff)] = np.inf
        worst.bit_exact &= exact
        if diff.size == 0:
            continue
        idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
        err = float(diff[idx])
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        rel = err / scale if scale > 0 else (0.0 if err == 0 else np.inf)
        worst.max_rel_err = max(worst.max_rel_err, rel)
        if err > worst.max_abs_err or (err == worst.max_abs_err == 0 and not worst.index):
            worst.max_abs_err, worst.output, worst.index = err, name, tuple(int(i) for i in idx)
            worst.got, worst.expected = float(a[idx]), float(b[idx])
    return worst

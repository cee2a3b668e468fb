"""Helpers for the unroll-gru tests and benchmark: a numpy reference GRU that follows the
ONNX spec, and ONNX models with GRU nodes (single nodes, the onnx backend cases, PyTorch
exports, and the Seq2Seq / Seq2SeqLite structures of flimcc's models)."""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

DEFAULT_OPSET = 17

# ---------------------------------------------------------------------------------------
# numpy reference (float64), written from the ONNX GRU operator doc

ACTIVATIONS = {
    "relu": lambda x, a, b: np.maximum(x, 0),
    "tanh": lambda x, a, b: np.tanh(x),
    "sigmoid": lambda x, a, b: 1 / (1 + np.exp(-x)),
    "affine": lambda x, a, b: a * x + b,
    "leakyrelu": lambda x, a, b: np.where(x >= 0, x, a * x),
    "thresholdedrelu": lambda x, a, b: np.where(x >= a, x, 0),
    "scaledtanh": lambda x, a, b: a * np.tanh(b * x),
    "hardsigmoid": lambda x, a, b: np.clip(a * x + b, 0, 1),
    "elu": lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)),
    "softsign": lambda x, a, b: x / (1 + np.abs(x)),
    "softplus": lambda x, a, b: np.log1p(np.exp(x)),
}


def gru_step(xt, h, W, R, B, linear_before_reset, f, g):
    """One step of the ONNX GRU equations (float64): z, r, candidate, new state."""
    Wz, Wr, Wh = np.split(np.asarray(W, np.float64), 3)
    Rz, Rr, Rh = np.split(np.asarray(R, np.float64), 3)
    Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = np.split(np.asarray(B, np.float64), 6)
    z = f(xt @ Wz.T + h @ Rz.T + Wbz + Rbz)
    r = f(xt @ Wr.T + h @ Rr.T + Wbr + Rbr)
    if linear_before_reset:
        cand = g(xt @ Wh.T + r * (h @ Rh.T + Rbh) + Wbh)
    else:
        cand = g(xt @ Wh.T + (r * h) @ Rh.T + Rbh + Wbh)
    return (1 - z) * cand + z * h


def reference_gru(x, w, r, b=None, sequence_lens=None, initial_h=None, *, direction="forward", layout=0,
                  linear_before_reset=0, clip=None, activations=None):
    """Y, Y_h of an ONNX GRU. `activations` is a list of (name, alpha, beta), f and g per
    direction. Steps past a sequence's length give zeros in Y and keep the state; the
    reverse direction runs over each sequence's valid part from its end."""
    x = np.asarray(x, np.float64)
    if layout:
        x = x.swapaxes(0, 1)
    steps, batch, _ = x.shape
    dirs = 2 if direction == "bidirectional" else 1
    hid = r.shape[-1]
    b = np.zeros((dirs, 6 * hid)) if b is None else np.asarray(b, np.float64)
    h0 = np.zeros((dirs, batch, hid)) if initial_h is None else np.asarray(initial_h, np.float64)
    if layout and initial_h is not None:
        h0 = h0.swapaxes(0, 1)
    lens = np.full(batch, steps) if sequence_lens is None else np.asarray(sequence_lens)
    acts = activations or [("sigmoid", None, None), ("tanh", None, None)] * dirs
    clip_fn = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    y = np.zeros((steps, dirs, batch, hid))
    y_h = np.zeros((dirs, batch, hid))
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        (fn, fa, fb), (gn, ga, gb) = acts[2 * d], acts[2 * d + 1]
        f = lambda v: ACTIVATIONS[fn](clip_fn(v), fa, fb)  # noqa: E731
        g = lambda v: ACTIVATIONS[gn](clip_fn(v), ga, gb)  # noqa: E731
        for n in range(batch):
            h = h0[d, n].copy()
            order = range(lens[n] - 1, -1, -1) if reverse else range(lens[n])
            for t in order:
                h = gru_step(x[t, n], h, w[d], r[d], b[d], linear_before_reset, f, g)
                y[t, d, n] = h
            y_h[d, n] = h
    if layout:
        return y.transpose(2, 0, 1, 3), y_h.swapaxes(0, 1)
    return y, y_h


# ---------------------------------------------------------------------------------------
# single-GRU models


@dataclasses.dataclass
class GRUCase:
    """A GRU node with its weights and inputs, as arrays; `model()` builds the ONNX model."""

    x: np.ndarray
    w: np.ndarray
    r: np.ndarray
    b: np.ndarray | None = None
    sequence_lens: np.ndarray | None = None
    initial_h: np.ndarray | None = None
    direction: str = "forward"
    layout: int = 0
    linear_before_reset: int = 0
    clip: float | None = None
    activations: list | None = None  # [(name, alpha, beta)], as reference_gru takes them
    outputs: tuple[str, str] = ("Y", "Y_h")  # "" leaves an output out
    opset: int = DEFAULT_OPSET
    extra_attrs: dict = dataclasses.field(default_factory=dict)

    def attrs(self) -> dict:
        attrs = dict(hidden_size=self.r.shape[-1], **self.extra_attrs)
        if self.direction != "forward":
            attrs["direction"] = self.direction
        if self.layout:
            attrs["layout"] = self.layout
        if self.linear_before_reset:
            attrs["linear_before_reset"] = self.linear_before_reset
        if self.clip is not None:
            attrs["clip"] = self.clip
        if self.activations:
            attrs["activations"] = [a[0] for a in self.activations]
            alphas = [a[1] for a in self.activations if a[1] is not None]
            betas = [a[2] for a in self.activations if a[2] is not None]
            if alphas:
                attrs["activation_alpha"] = alphas
            if betas:
                attrs["activation_beta"] = betas
        return attrs

    def feeds(self) -> dict[str, np.ndarray]:
        """Graph inputs: X, and sequence_lens / initial_h where given (initializers are W, R, B)."""
        feeds = {"X": self.x}
        if self.sequence_lens is not None:
            feeds["sequence_lens"] = self.sequence_lens
        if self.initial_h is not None:
            feeds["initial_h"] = self.initial_h
        return feeds

    def model(self) -> ModelWrapper:
        inputs = ["X", "W", "R", "B" if self.b is not None else "",
                  "sequence_lens" if self.sequence_lens is not None else "",
                  "initial_h" if self.initial_h is not None else ""]
        while inputs[-1] == "":
            inputs.pop()
        node = helper.make_node("GRU", inputs, list(self.outputs), name="gru", **self.attrs())
        inits = [numpy_helper.from_array(self.w, "W"), numpy_helper.from_array(self.r, "R")]
        if self.b is not None:
            inits.append(numpy_helper.from_array(self.b, "B"))
        graph_inputs = [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for name, v in self.feeds().items()
        ]
        elem = helper.np_dtype_to_tensor_dtype(self.x.dtype)
        graph_outputs = [helper.make_tensor_value_info(o, elem, v.shape) for o, v in self.reference().items()]
        graph = helper.make_graph([node], "gru_case", graph_inputs, graph_outputs, inits)
        return to_model(graph, self.opset)

    def reference(self) -> dict[str, np.ndarray]:
        y, y_h = reference_gru(
            self.x, self.w, self.r, self.b, self.sequence_lens, self.initial_h, direction=self.direction,
            layout=self.layout, linear_before_reset=self.linear_before_reset, clip=self.clip,
            activations=self.activations,
        )
        return {name: v for name, v in zip(self.outputs, (y, y_h)) if name}


def to_model(graph: onnx.GraphProto, opset: int = DEFAULT_OPSET) -> ModelWrapper:
    """A canonical flimcc model (checked, shapes inferred) from a graph."""
    import flimcc

    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return flimcc.load(proto)


def random_case(rng: np.random.Generator, *, input_size: int, hidden: int, steps: int, batch: int,
                direction: str = "forward", with_bias: bool = True, **kwargs) -> GRUCase:
    """Weights drawn like PyTorch's (uniform in +-1/sqrt(hidden)), inputs in [0, 1)."""
    dirs = 2 if direction == "bidirectional" else 1
    k = 1 / np.sqrt(hidden)
    layout = kwargs.get("layout", 0)
    x_shape = (batch, steps, input_size) if layout else (steps, batch, input_size)
    return GRUCase(
        x=rng.uniform(0, 1, x_shape).astype(np.float32),
        w=rng.uniform(-k, k, (dirs, 3 * hidden, input_size)).astype(np.float32),
        r=rng.uniform(-k, k, (dirs, 3 * hidden, hidden)).astype(np.float32),
        b=rng.uniform(-k, k, (dirs, 6 * hidden)).astype(np.float32) if with_bias else None,
        direction=direction,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------
# the GRU cases of the onnx package's backend tests


def onnx_backend_cases() -> dict[str, tuple[onnx.NodeProto, list[np.ndarray], list[np.ndarray]]]:
    """name -> (node, inputs, expected outputs), as `onnx.backend.test.case.node.gru`'s
    export functions hand them to `expect` (captured by replacing it for the call)."""
    from onnx.backend.test.case.node import gru

    captured = {}

    def capture(node, inputs, outputs, name, **kwargs):
        captured[name] = (node, inputs, outputs)

    original, state = gru.expect, np.random.get_state()
    gru.expect = capture
    np.random.seed(0)  # export_seq_length draws its weights from the global generator
    try:
        for attr in sorted(dir(gru.GRU)):
            if attr.startswith("export"):
                getattr(gru.GRU, attr)()
    finally:
        gru.expect = original
        np.random.set_state(state)
    return captured


def backend_case_model(node: onnx.NodeProto, inputs: list[np.ndarray], expected: list[np.ndarray],
                       opset: int = 22) -> tuple[ModelWrapper, dict]:
    """The case as a model: X a graph input, the other inputs initializers."""
    names = [n for n in node.input if n]
    graph_inputs = [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, inputs[0].shape)]
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names[1:], inputs[1:])]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, v.shape)
               for o, v in zip([o for o in node.output if o], expected)]
    node = onnx.NodeProto.FromString(node.SerializeToString())
    node.name = "gru"
    graph = helper.make_graph([node], "backend_case", graph_inputs, outputs, inits)
    return to_model(graph, opset), {names[0]: inputs[0]}


# ---------------------------------------------------------------------------------------
# PyTorch exports


def torch_gru_model(num_layers: int, batch_first: bool, bidirectional: bool, *, input_size: int = 3,
                    hidden: int = 8, steps: int = 7, batch: int = 2, seed: int = 0):
    """(model, torch module, example input): nn.GRU exported by torch.onnx (TorchScript)."""
    import torch

    torch.manual_seed(seed)
    gru = torch.nn.GRU(input_size, hidden, num_layers=num_layers, batch_first=batch_first,
                       bidirectional=bidirectional).eval()
    shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
    x = torch.rand(*shape)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gru, (x,), buf, dynamo=False, input_names=["x"], output_names=["y", "h_n"],
                          dynamic_axes={"x": {0 if batch_first else 1: "batch"}})
    import flimcc

    return flimcc.load(buf.getvalue(), dims={"batch": batch}), gru, x


# ---------------------------------------------------------------------------------------
# Seq2Seq (teacher) and Seq2SeqLite (student) structures, random weights


def _gru_weights(rng, name: str, input_size: int, hidden: int) -> list[onnx.TensorProto]:
    k = 1 / np.sqrt(hidden)
    return [
        numpy_helper.from_array(rng.uniform(-k, k, (1, 3 * hidden, input_size)).astype(np.float32), f"{name}.W"),
        numpy_helper.from_array(rng.uniform(-k, k, (1, 3 * hidden, hidden)).astype(np.float32), f"{name}.R"),
        numpy_helper.from_array(rng.uniform(-k, k, (1, 6 * hidden)).astype(np.float32), f"{name}.B"),
    ]


def seq2seq_model(steps: int = 135, widths: tuple[int, ...] = (128, 128), linear_before_reset: int = 1,
                  seed: int = 0, opset: int = DEFAULT_OPSET) -> ModelWrapper:
    """Input (B, T, 1), batch first as a PyTorch export gives it (Transpose to (T, B, 1)).
    Encoder: stacked GRUs; decoder: as many GRUs, each started from the final state of the
    encoder layer of its depth, the first fed zeros of shape (T, B, 1); then Dense(3) per
    step as MatMul + Add; output (B, T, 3). Seq2Seq is widths (128, 128) with
    linear_before_reset=1 (Keras reset_after=True); Seq2SeqLite is (32,) with 0."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    nodes.append(helper.make_node("Transpose", ["x"], ["x_tbf"], name="/Transpose", perm=[1, 0, 2]))
    # The decoder's zero input, shaped from x so that the graph keeps any batch size.
    nodes.append(helper.make_node("Shape", ["x_tbf"], ["x_shape"], name="/decoder/Shape"))
    nodes.append(helper.make_node("ConstantOfShape", ["x_shape"], ["dec_in"], name="/decoder/zeros",
                                  value=numpy_helper.from_array(np.zeros(1, np.float32))))
    lbr = dict(linear_before_reset=linear_before_reset) if linear_before_reset else {}
    states = []
    for part, first in (("encoder", "x_tbf"), ("decoder", "dec_in")):
        seq, in_size = first, 1
        for k, hid in enumerate(widths):
            name = f"/{part}/GRU_{k}"
            inits += _gru_weights(rng, name, in_size, hid)
            h0 = states[k] if part == "decoder" else ""
            # The top encoder layer's sequence is unused (as in Keras, return_state only).
            y = "" if part == "encoder" and k == len(widths) - 1 else f"{name}/Y"
            nodes.append(helper.make_node("GRU", [seq, f"{name}.W", f"{name}.R", f"{name}.B", "", h0],
                                          [y, f"{name}/Y_h"], name=name, hidden_size=hid, **lbr))
            if part == "encoder":
                states.append(f"{name}/Y_h")
            if y:
                # Y is (T, 1, B, H): drop the direction axis for the next layer.
                seq = f"{name}/seq"
                nodes.append(helper.make_node("Squeeze", [y, "axis1"], [seq], name=f"{name}/Squeeze"))
            in_size = hid
    hid = widths[-1]
    inits += [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(rng.uniform(-0.3, 0.3, (hid, 3)).astype(np.float32), "/dense/W"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 3).astype(np.float32), "/dense/B"),
    ]
    nodes.append(helper.make_node("MatMul", [seq, "/dense/W"], ["dense_mm"], name="/dense/MatMul"))
    nodes.append(helper.make_node("Add", ["dense_mm", "/dense/B"], ["dense_tb"], name="/dense/Add"))
    nodes.append(helper.make_node("Transpose", ["dense_tb"], ["y"], name="/Transpose_out", perm=[1, 0, 2]))
    graph = helper.make_graph(
        nodes, "seq2seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", steps, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", steps, 3])],
        inits,
    )
    return to_model(graph, opset)


def seq2seq_lite_model(steps: int = 135, seed: int = 0, opset: int = DEFAULT_OPSET) -> ModelWrapper:
    return seq2seq_model(steps, (32,), linear_before_reset=0, seed=seed, opset=opset)

"""Executes an ONNX `Scan` whose body holds qonnx/FINN custom ops (which neither
onnxruntime nor qonnx's executor can run), following the ONNX Scan specification.

The loop runs over time steps only: each step executes the body once on the whole batch
of pixels, so the cost per step is a handful of vectorised numpy/ORT calls, whatever the
number of pixels.
"""

from __future__ import annotations

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from .errors import UnsupportedError
from .execute import register_node_executor, run_nodes


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def body_model(node: onnx.NodeProto, model: ModelWrapper) -> ModelWrapper:
    """The Scan body as a model (same opsets as the parent), for executors and analyses."""
    body = _attr(node, "body")
    return ModelWrapper(qonnx_make_model(body, opset_imports=list(model.model.opset_import)))


@register_node_executor("Scan")
def run_scan(node: onnx.NodeProto, context: dict, model: ModelWrapper) -> None:
    body = body_model(node, model)
    n_scan_in = _attr(node, "num_scan_inputs")
    inputs = [context[n] if n else None for n in node.input]
    n_state = len(inputs) - n_scan_in
    scans = [np.asarray(v) for v in inputs[n_state:]]
    in_axes = list(_attr(node, "scan_input_axes", [0] * n_scan_in))
    in_dirs = list(_attr(node, "scan_input_directions", [0] * n_scan_in))
    n_scan_out = len(body.graph.output) - n_state
    out_axes = list(_attr(node, "scan_output_axes", [0] * n_scan_out))
    out_dirs = list(_attr(node, "scan_output_directions", [0] * n_scan_out))
    if any(v is None for v in inputs):
        raise UnsupportedError(f"node '{node.name}': Scan with an empty input is not supported")
    in_axes = [a % s.ndim for a, s in zip(in_axes, scans)]
    steps = scans[0].shape[in_axes[0]] if scans else 0
    if any(s.shape[a] != steps for s, a in zip(scans, in_axes)):
        raise UnsupportedError(f"node '{node.name}': scan inputs differ in length")

    body_in = [i.name for i in body.graph.input]
    body_out = [o.name for o in body.graph.output]
    # The body sees the enclosing scope (outer initializers and tensors) and its own initializers.
    scope = {k: v for k, v in context.items()}
    scope.update({t.name: body.get_initializer(t.name) for t in body.graph.initializer})
    states = [np.asarray(v) for v in inputs[:n_state]]
    collected: list[list[np.ndarray]] = [[] for _ in range(n_scan_out)]
    for t in range(steps):
        ctx = dict(scope)
        ctx.update(zip(body_in[:n_state], states))
        for j, (s, axis, rev) in enumerate(zip(scans, in_axes, in_dirs)):
            ctx[body_in[n_state + j]] = np.take(s, steps - 1 - t if rev else t, axis=axis)
        run_nodes(body, ctx)
        states = [ctx[n] for n in body_out[:n_state]]
        for k in range(n_scan_out):
            collected[k].append(ctx[body_out[n_state + k]])

    outs = [n for n in node.output]
    for name, value in zip(outs[:n_state], states):
        if name:
            context[name] = value
    for k, name in enumerate(outs[n_state:]):
        if not name:
            continue
        seq = collected[k][::-1] if out_dirs[k] else collected[k]
        context[name] = np.stack(seq, axis=out_axes[k] % (seq[0].ndim + 1)) if seq else np.zeros((0,), np.float32)

"""Structural and numeric comparison of two models, for users' CI.

Nodes are matched by what they compute, not by name or position: walking B in
topological order, a node matches an unmatched A node of the same domain and op type
whose dynamic inputs are the matched counterparts of its own (graph inputs match by name,
else by position). So renaming tensors or nodes, or listing nodes in another order, is not
a difference. A matched pair can still differ in attributes or in the values of its
constant inputs (initializers, compared with a tolerance). Unmatched nodes are removed
(only in A) or added (only in B).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from .execute import execute, graph_input_names
from .verify import compare, make_inputs


@dataclasses.dataclass
class Change:
    kind: str  # node-added | node-removed | attribute-changed | initializer-changed | io-changed | opset-changed
    node: str  # the node (B's name where it has one) or tensor concerned
    detail: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DiffResult:
    changes: list[Change]
    numeric: dict[str, Any] | None = None  # per output: max_abs_err, max_rel_err
    numeric_ok: bool = True

    @property
    def equivalent(self) -> bool:
        return not self.changes and self.numeric_ok

    def to_json(self) -> dict:
        return {
            "equivalent": self.equivalent,
            "changes": [c.to_json() for c in self.changes],
            "numeric": self.numeric,
        }

    def text(self) -> str:
        lines = []
        for c in self.changes:
            lines.append(f"{c.kind:20s} {c.node}: {c.detail}")
        if self.numeric is not None:
            for name, r in self.numeric.items():
                flag = "ok" if r["within_tolerance"] else "DIFFERENT"
                lines.append(
                    f"{'numeric':20s} {name}: max abs err {r['max_abs_err']:.3g}, max rel err {r['max_rel_err']:.3g} ({flag})"
                )
        lines.append("equivalent" if self.equivalent else f"different: {len(self.changes)} structural change(s)"
                     + ("" if self.numeric_ok else ", outputs differ"))
        return "\n".join(lines)


#: Ops whose inputs may be listed in any order (a user's export may swap them).
COMMUTATIVE = {"Add", "Mul", "Sum", "Max", "Min", "Mean", "And", "Or", "Xor", "Equal", "BitwiseAnd", "BitwiseOr", "BitwiseXor"}


def _key(node: onnx.NodeProto, inputs: tuple) -> tuple:
    if node.op_type in COMMUTATIVE and node.domain in ("", "ai.onnx"):
        inputs = tuple(sorted(inputs, key=lambda v: "" if v is None else v))
    return (node.domain, node.op_type, inputs)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            # Compare subgraphs by their op sequence: names inside them are auto-generated too.
            out[a.name] = ("graph", tuple((n.domain, n.op_type) for n in a.g.node))
        else:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, onnx.TensorProto):
                v = numpy_helper.to_array(v).tolist()
            elif isinstance(v, list):
                v = tuple(x.decode() if isinstance(x, bytes) else x for x in v)
            elif isinstance(v, bytes):
                v = v.decode()
            out[a.name] = v
    return out


def _const_value(model: ModelWrapper, name: str):
    return model.get_initializer(name) if name else None


def _fmt(v: Any) -> str:
    text = repr(v)
    return text if len(text) < 60 else text[:57] + "..."


def structural_diff(a: ModelWrapper, b: ModelWrapper, atol: float = 0.0, rtol: float = 0.0) -> list[Change]:
    changes: list[Change] = []
    opa = {i.domain or "ai.onnx": i.version for i in a.model.opset_import}
    opb = {i.domain or "ai.onnx": i.version for i in b.model.opset_import}
    for dom in sorted(set(opa) | set(opb)):
        if opa.get(dom) != opb.get(dom):
            changes.append(Change("opset-changed", dom, f"{opa.get(dom)} -> {opb.get(dom)}"))

    ins_a, ins_b = graph_input_names(a), graph_input_names(b)
    tmap: dict[str, str] = {}  # B tensor -> A tensor
    for pos, name in enumerate(ins_b):
        counterpart = name if name in ins_a else (ins_a[pos] if pos < len(ins_a) else None)
        if counterpart is None:
            changes.append(Change("io-changed", name, "input only in B"))
            continue
        tmap[name] = counterpart
        sa, sb = a.get_tensor_shape(counterpart), b.get_tensor_shape(name)
        if sa != sb:
            changes.append(Change("io-changed", name, f"input shape {sa} -> {sb}"))
    for name in ins_a[len(ins_b):]:
        if name not in tmap.values():
            changes.append(Change("io-changed", name, "input only in A"))

    consumers: dict[tuple, list[int]] = {}
    a_nodes = list(a.graph.node)
    for idx, node in enumerate(a_nodes):
        dyn = tuple(n if a.get_initializer(n) is None else None for n in node.input)
        consumers.setdefault(_key(node, dyn), []).append(idx)
    matched_a: set[int] = set()

    for node in b.graph.node:
        dyn_b = tuple(
            "" if not n else None if b.get_initializer(n) is not None else tmap.get(n, "?" + n) for n in node.input
        )
        candidates = [i for i in consumers.get(_key(node, dyn_b), []) if i not in matched_a]
        if not candidates:
            changes.append(Change("node-added", node.name, f"{node.op_type} ({', '.join(node.input)})"))
            continue
        attrs_b = _attrs(node)
        same = [i for i in candidates if _attrs(a_nodes[i]) == attrs_b]
        idx = (same or candidates)[0]
        matched_a.add(idx)
        na = a_nodes[idx]
        if not same:
            attrs_a = _attrs(na)
            for key in sorted(set(attrs_a) | set(attrs_b)):
                if attrs_a.get(key) != attrs_b.get(key):
                    changes.append(Change("attribute-changed", node.name,
                                          f"{node.op_type}.{key}: {_fmt(attrs_a.get(key))} -> {_fmt(attrs_b.get(key))}"))
        for pos, (ta, tb) in enumerate(zip(na.input, node.input)):
            va, vb = _const_value(a, ta), _const_value(b, tb)
            if va is None or vb is None:
                continue
            if va.shape != vb.shape or va.dtype != vb.dtype:
                changes.append(Change("initializer-changed", node.name,
                                      f"input {pos} ({tb}): {va.dtype}{list(va.shape)} -> {vb.dtype}{list(vb.shape)}"))
            elif not np.allclose(va.astype(np.float64), vb.astype(np.float64), atol=atol, rtol=rtol, equal_nan=True):
                err = float(np.max(np.abs(va.astype(np.float64) - vb.astype(np.float64))))
                changes.append(Change("initializer-changed", node.name, f"input {pos} ({tb}): max abs change {err:.3g}"))
        for oa, ob in zip(na.output, node.output):
            tmap[ob] = oa
    for idx, node in enumerate(a_nodes):
        if idx not in matched_a:
            changes.append(Change("node-removed", node.name, f"{node.op_type} ({', '.join(node.input)})"))

    outs_a, outs_b = [o.name for o in a.graph.output], [o.name for o in b.graph.output]
    if len(outs_a) != len(outs_b):
        changes.append(Change("io-changed", "outputs", f"{len(outs_a)} outputs -> {len(outs_b)}"))
    for oa, ob in zip(outs_a, outs_b):
        sa, sb = a.get_tensor_shape(oa), b.get_tensor_shape(ob)
        if sa != sb:
            changes.append(Change("io-changed", ob, f"output shape {sa} -> {sb}"))
    return changes


def numeric_diff(a: ModelWrapper, b: ModelWrapper, samples: int = 16, seed: int = 0,
                 atol: float = 1e-5, rtol: float = 1e-4) -> tuple[dict[str, Any], bool]:
    """Run both models on the same seeded inputs; compare outputs pairwise by position."""
    feeds = make_inputs(a, samples, seed)
    feeds_b = dict(zip(graph_input_names(b), feeds.values()))
    out_a, out_b = execute(a, feeds), execute(b, feeds_b)
    result, ok = {}, True
    for (na, va), (nb, vb) in zip(out_a.items(), out_b.items()):
        if np.shape(va) != np.shape(vb):
            result[nb] = {"max_abs_err": float("inf"), "max_rel_err": float("inf"), "within_tolerance": False}
            ok = False
            continue
        c = compare({nb: vb}, {nb: va})
        within = bool(np.allclose(np.asarray(vb, np.float64), np.asarray(va, np.float64), atol=atol, rtol=rtol))
        result[nb] = {"max_abs_err": c.max_abs_err, "max_rel_err": c.max_rel_err, "within_tolerance": within}
        ok &= within
    if len(out_a) != len(out_b):
        ok = False
    return result, ok


def diff(a: ModelWrapper, b: ModelWrapper, numeric: bool = False, atol: float = 1e-5, rtol: float = 1e-4,
         samples: int = 16, seed: int = 0) -> DiffResult:
    """Compare A (expected) with B (actual). Initializers differ when not allclose(atol, rtol)."""
    result = DiffResult(structural_diff(a, b, atol=atol, rtol=rtol))
    if numeric:
        result.numeric, result.numeric_ok = numeric_diff(a, b, samples, seed, atol, rtol)
    return result

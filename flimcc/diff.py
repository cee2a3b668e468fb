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

_UNKNOWN = "?"  # prefix of a B tensor whose producer has no counterpart (yet)


def _commutative(node: onnx.NodeProto) -> bool:
    return node.op_type in COMMUTATIVE and node.domain in ("", "ai.onnx")


def _order(v) -> tuple:
    # Input states: "" (absent), None (initializer), a value class / unknown tensor (str).
    return (v is None, v or "")


def _key(node: onnx.NodeProto, inputs: tuple) -> tuple:
    if _commutative(node):
        inputs = tuple(sorted(inputs, key=_order))
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


def _fmt(v: Any) -> str:
    text = repr(v)
    return text if len(text) < 60 else text[:57] + "..."


class _Graph:
    """One side of a diff: nodes in topological order, initializers, cached node facts."""

    def __init__(self, model: ModelWrapper):
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.inputs = graph_input_names(model)
        self.nodes = _topological(list(model.graph.node))
        self.outputs = {o.name: k for k, o in enumerate(model.graph.output)}
        self._arrays: dict[str, np.ndarray] = {}
        self._attrs: dict[int, dict] = {}

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.inits

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.inits[name])
        return self._arrays[name]

    def attrs(self, idx: int) -> dict:
        if idx not in self._attrs:
            self._attrs[idx] = _attrs(self.nodes[idx])
        return self._attrs[idx]


def _topological(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Kahn's order, stable in the listed order (a topologically listed graph is unchanged)."""
    import heapq

    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        deps = {producer[t] for t in n.input if t in producer and producer[t] != i}
        waiting[i] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    done = set(order)
    order += [i for i in range(len(nodes)) if i not in done]  # a cycle (invalid ONNX): keep the listing
    return [nodes[i] for i in order]


class _Matcher:
    """Pairs B's nodes with A's.

    Every A tensor gets a value class: graph inputs by name, node outputs by what computes
    them (hash-consed: op, attributes, input classes, initializer contents), so duplicated
    computations share a class and which twin a B node pairs with does not matter downstream.
    A B tensor maps to the class of its A counterpart once its producer is paired.

    1. exact: a B node pairs with an A node of the same op whose dynamic inputs are the
       same classes (commutative ops: as a multiset); among several, the one with the same
       attributes, initializer values, name, output names wins.
    2. where a node upstream was added, removed or changed, its consumers cannot pair
       exactly: a B node may pair with an A node of the same op and arity whose inputs
       agree wherever both producers are paired ("settled") and differ only where one side's
       producer is unpaired. Pairs with evidence (a settled input, equal initializers, the
       same name, output name or graph output) go first, best first; a pair with no
       evidence only when it is the only candidate either way. After each round the exact
       step runs again, downstream of the new pairs.
    """

    def __init__(self, a: _Graph, b: _Graph, input_map: dict[str, str], atol: float, rtol: float):
        self.a, self.b, self.atol, self.rtol = a, b, atol, rtol
        self.cls: dict[str, str] = {name: "i:" + name for name in a.inputs}
        self.tmap: dict[str, str] = {nb: self.cls[na] for nb, na in input_map.items()}
        self.mapped: set[str] = set(self.tmap.values())
        self.exact: dict[tuple, list[int]] = {}
        self.by_op: dict[tuple, list[int]] = {}
        cons: dict[tuple, str] = {}
        for idx, node in enumerate(a.nodes):
            sig = []
            for t in node.input:
                if not t:
                    sig.append("")
                elif a.is_const(t):
                    v = a.array(t)
                    sig.append(("c", str(v.dtype), v.shape, hash(v.tobytes())))
                else:
                    sig.append(self.cls.setdefault(t, "f:" + t))
            dyn = tuple(None if isinstance(s, tuple) else s for s in sig)
            self.exact.setdefault(_key(node, dyn), []).append(idx)
            self.by_op.setdefault((node.domain, node.op_type), []).append(idx)
            ins = tuple(sorted(sig, key=repr)) if _commutative(node) else tuple(sig)
            h = (node.domain, node.op_type, repr(sorted(a.attrs(idx).items())), ins)
            for k, o in enumerate(node.output):
                if o:
                    self.cls[o] = cons.setdefault(h + (k,), "#%d" % len(cons))
        self.a_of: dict[int, int] = {}  # B node -> A node
        self.b_of: dict[int, int] = {}  # A node -> B node
        self.perm: dict[int, tuple[int, ...]] = {}  # B node: B input position -> A input position

    # input states
    def b_in(self, t: str):
        if not t:
            return ""
        if self.b.is_const(t):
            return None
        return self.tmap.get(t, _UNKNOWN + t)

    def a_in(self, t: str):
        if not t:
            return ""
        if self.a.is_const(t):
            return None
        return self.cls.get(t, "f:" + t)

    def consts_equal(self, ai: int, bi: int, perm) -> tuple[bool, bool]:
        """(all aligned initializer inputs equal, there is at least one)."""
        na, nb = self.a.nodes[ai], self.b.nodes[bi]
        some = False
        for i, tb in enumerate(nb.input):
            ta = na.input[perm[i]]
            if not (self.a.is_const(ta) and self.b.is_const(tb)):
                continue
            some = True
            va, vb = self.a.array(ta), self.b.array(tb)
            if va.shape != vb.shape or va.dtype != vb.dtype or not np.allclose(
                    va.astype(np.float64), vb.astype(np.float64), atol=self.atol, rtol=self.rtol, equal_nan=True):
                return False, True
        return True, some

    def evidence(self, ai: int, bi: int, perm) -> tuple:
        na, nb = self.a.nodes[ai], self.b.nodes[bi]
        consts, some = self.consts_equal(ai, bi, perm)
        return (
            self.a.attrs(ai) == self.b.attrs(bi),
            consts and some,
            bool(na.name) and na.name == nb.name,
            any(oa and oa == ob for oa, ob in zip(na.output, nb.output)),
            any(oa in self.a.outputs and self.a.outputs[oa] == self.b.outputs.get(ob)
                for oa, ob in zip(na.output, nb.output)),
        )

    def accept(self, ai: int, bi: int, perm) -> None:
        self.a_of[bi], self.b_of[ai], self.perm[bi] = ai, bi, tuple(perm)
        for oa, ob in zip(self.a.nodes[ai].output, self.b.nodes[bi].output):
            if oa and ob:
                self.tmap[ob] = self.cls[oa]
                self.mapped.add(self.cls[oa])

    def exact_perm(self, ai: int, bi: int, ins_b: tuple) -> tuple[int, ...]:
        n = len(ins_b)
        if not _commutative(self.b.nodes[bi]):
            return tuple(range(n))
        ins_a = [self.a_in(t) for t in self.a.nodes[ai].input]
        order_b = sorted(range(n), key=lambda i: _order(ins_b[i]))
        order_a = sorted(range(n), key=lambda i: _order(ins_a[i]))
        perm = [0] * n
        for pb, pa in zip(order_b, order_a):
            perm[pb] = pa
        return tuple(perm)

    def exact_step(self) -> None:
        # One pass in topological order reaches everything downstream of what is paired.
        for bi, node in enumerate(self.b.nodes):
            if bi in self.a_of:
                continue
            ins = tuple(self.b_in(t) for t in node.input)
            if any(isinstance(v, str) and v.startswith(_UNKNOWN) for v in ins):
                continue
            cands = [ai for ai in self.exact.get(_key(node, ins), ()) if ai not in self.b_of]
            if not cands:
                continue
            scored = [(self.evidence(ai, bi, p), -ai, ai, p)
                      for ai in cands for p in [self.exact_perm(ai, bi, ins)]]
            _, _, ai, p = max(scored)
            self.accept(ai, bi, p)

    def loose(self, ai: int, bi: int):
        """(settled inputs that agree, alignment) when B's node may be A's, else None."""
        na, nb = self.a.nodes[ai], self.b.nodes[bi]
        n = len(nb.input)
        if len(na.input) != n:
            return None
        ins_b = [self.b_in(t) for t in nb.input]
        ins_a = [self.a_in(t) for t in na.input]
        if _commutative(nb) and n <= 4:
            import itertools
            perms = itertools.permutations(range(n))
        else:
            perms = [tuple(range(n))]
        best = None
        for perm in perms:
            settled = 0
            for i, v in enumerate(ins_b):
                w = ins_a[perm[i]]
                if v == "" or w == "":
                    ok = v == w
                elif v is None and w is None:
                    ok = True
                elif (v is not None and v.startswith(_UNKNOWN)) or (w is not None and w not in self.mapped):
                    ok = True  # one side's producer is unpaired: added, removed or changed
                else:
                    ok = v == w
                    settled += ok
                if not ok:
                    break
            else:
                if best is None or settled > best[0]:
                    best = (settled, perm)
        return best

    def loose_step(self) -> bool:
        strong, weak = [], []
        free_a = {}
        for bi, nb in enumerate(self.b.nodes):
            if bi in self.a_of:
                continue
            for ai in self.by_op.get((nb.domain, nb.op_type), ()):
                if ai in self.b_of:
                    continue
                m = self.loose(ai, bi)
                if m is None:
                    continue
                settled, perm = m
                ev = self.evidence(ai, bi, perm)
                pair = ((settled, *ev[1:], ev[0]), bi, ai, perm)
                (strong if settled or any(ev[1:]) else weak).append(pair)
                free_a.setdefault(ai, []).append(bi)
        if strong:
            strong.sort(key=lambda p: (tuple(-int(x) for x in p[0]), p[1], p[2]))
            for _, bi, ai, perm in strong:
                if bi not in self.a_of and ai not in self.b_of:
                    self.accept(ai, bi, perm)
            return True
        per_b: dict[int, list] = {}
        for pair in weak:
            per_b.setdefault(pair[1], []).append(pair)
        progress = False
        for bi, pairs in sorted(per_b.items()):
            if len(pairs) == 1 and len(free_a[pairs[0][2]]) == 1:
                _, _, ai, perm = pairs[0]
                self.accept(ai, bi, perm)
                progress = True
        return progress

    def run(self) -> None:
        while True:
            self.exact_step()
            if not self.loose_step():
                return


def structural_diff(a: ModelWrapper, b: ModelWrapper, atol: float = 0.0, rtol: float = 0.0) -> list[Change]:
    changes: list[Change] = []
    opa = {i.domain or "ai.onnx": i.version for i in a.model.opset_import}
    opb = {i.domain or "ai.onnx": i.version for i in b.model.opset_import}
    for dom in sorted(set(opa) | set(opb)):
        if opa.get(dom) != opb.get(dom):
            changes.append(Change("opset-changed", dom, f"{opa.get(dom)} -> {opb.get(dom)}"))

    ga, gb = _Graph(a), _Graph(b)
    ins_a, ins_b = ga.inputs, gb.inputs
    input_map: dict[str, str] = {}  # B graph input -> A graph input
    for pos, name in enumerate(ins_b):
        counterpart = name if name in ins_a else (ins_a[pos] if pos < len(ins_a) else None)
        if counterpart is None:
            changes.append(Change("io-changed", name, "input only in B"))
            continue
        input_map[name] = counterpart
        sa, sb = a.get_tensor_shape(counterpart), b.get_tensor_shape(name)
        if sa != sb:
            changes.append(Change("io-changed", name, f"input shape {sa} -> {sb}"))
    for name in ins_a[len(ins_b):]:
        if name not in input_map.values():
            changes.append(Change("io-changed", name, "input only in A"))

    m = _Matcher(ga, gb, input_map, atol, rtol)
    m.run()
    for bi, node in enumerate(gb.nodes):
        if bi not in m.a_of:
            changes.append(Change("node-added", node.name, f"{node.op_type} ({', '.join(node.input)})"))
            continue
        ai, perm = m.a_of[bi], m.perm[bi]
        na = ga.nodes[ai]
        attrs_a, attrs_b = ga.attrs(ai), gb.attrs(bi)
        for key in sorted(set(attrs_a) | set(attrs_b)):
            if attrs_a.get(key) != attrs_b.get(key):
                changes.append(Change("attribute-changed", node.name,
                                      f"{node.op_type}.{key}: {_fmt(attrs_a.get(key))} -> {_fmt(attrs_b.get(key))}"))
        for pos, tb in enumerate(node.input):
            ta = na.input[perm[pos]]
            if not (ga.is_const(ta) and gb.is_const(tb)):
                continue
            va, vb = ga.array(ta), gb.array(tb)
            if va.shape != vb.shape or va.dtype != vb.dtype:
                changes.append(Change("initializer-changed", node.name,
                                      f"input {pos} ({tb}): {va.dtype}{list(va.shape)} -> {vb.dtype}{list(vb.shape)}"))
            elif not np.allclose(va.astype(np.float64), vb.astype(np.float64), atol=atol, rtol=rtol, equal_nan=True):
                err = float(np.max(np.abs(va.astype(np.float64) - vb.astype(np.float64))))
                changes.append(Change("initializer-changed", node.name, f"input {pos} ({tb}): max abs change {err:.3g}"))
    for ai, node in enumerate(ga.nodes):
        if ai not in m.b_of:
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

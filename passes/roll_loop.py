"""`roll-loop`: roll a fully unrolled recurrence (T copies of one time step, a DAG) back into
an ONNX `Scan` whose body is one step.

Exporters that trace a Python loop over time (Brevitas' QONNX export of a GRU written as a
loop) write every step out: ~19 nodes per step and layer, ~5,000 nodes at T = 135. qonnx's
transformations are quadratic on such graphs, and the hardware lowering wants a loop. This
pass finds the repetition and writes the loop back, exactly.

How it finds the steps (linear time apart from sorting: dictionaries of producers and
consumers built once, no qonnx transformation on the large graph):

1. Time-indexed reads are the seeds: `Gather(X, k)` with a constant index k (a scalar, or a
   one-element vector that keeps the axis). A Split of X into size-1 parts and a one-element
   Slice read the same values and are first rewritten into such Gathers (given back when
   nothing rolls). Gathers of the same X along the same axis form a family; the read of
   index k maps to the read of index k + 1.
2. The shift map: in topological order, a node whose inputs include a mapped tensor maps to
   the unique consumer of that tensor's image (same input position) with the same signature
   (domain, op type, attributes, arity) whose inputs are the images of the mapped inputs and
   whose initializer inputs hold equal values. Then backwards, into the work before the
   loop: where a mapped pair reads, at the same input, two unmapped nodes of one signature
   (h0 @ R on the initial state, h_0 @ R), those map too. The orbits (n, shift(n), ...) are
   the roles of a step; orbits joined by data edges form a recurrence (the encoder and the
   decoder are two: the edge from the encoder's last step into the decoder's initial state
   does not join them, as the map does not send that last step on).
3. The step boundary: each role gets the step of its latest time-indexed input (ASAP). Work
   on the carried state alone (the recurrent product h @ R) then sits in the step before
   the one that reads it; it moves there (a retiming) when that lowers the number of carried
   tensors, or keeps it and the role has no instance in the last step (h_{T-1} @ R is never
   computed). The state is then the hidden state itself.
4. A template (one step, each input classified as produced in the step, carried from the
   step before, a constant, a time-indexed read, or a tensor from outside that every step
   reads) is taken in the middle of the recurrence and matched against every step, outwards,
   edge by edge. The first step may read its initial state from equal-valued constants (the
   export's three zero tensors) or any tensor computed before the loop; a node of a step
   that the map missed is found through the step node that reads it. Matching stops at the
   first step that differs; at least one tensor must be carried from step to step.

What it writes: one `Scan` per recurrence; inputs = initial states, then the time-indexed
sources moved so that time is axis 0 (Transpose; Unsqueeze where the read kept the axis;
Slice for a partial range: data movement only); outputs = final states (named as the last
step's tensors, so their readers need no change), then the stacked per-step tensors that
the graph reads after the loop. A run of a Concat's inputs that holds every step's
Unsqueeze(y_k) along the concatenated axis becomes a Transpose of the stacked y (a Concat
of the steps' own tensors a Transpose and Reshape); any other read of step k's tensor
becomes Gather(stacked, k). The body holds one step: constants are copied in as body
initializers (one copy per reading node); a constant that the steps compute (a weight's
Quant, then Transpose / Split) is computed in the body too, with the data movement applied
to the float weight before a copy of its Quant when the quantizer is per tensor (elementwise,
so exact), so the body holds `Quant(initializer) -> MatMul`, the form `fold-weights` lowers
to integer weights (as after `unroll-gru,quantize`); other constant computations are copied
as they are. A Split into equal parts is written without its sizes input (the same
operation; `streamline` keeps only the numeric constants of a Scan body).

Contract `exact`: the body runs the same operations on the same operands in the same order
and shapes as each unrolled step did, the first step included (its initial state is the
tensor that step read), so the outputs are bit-identical. One exception keeps this true for
onnxruntime: it holds a Scan's state to the initial state's shape, so where the body is
standard ONNX (onnxruntime runs it) and an initial state is a constant that the first step
broadcast over the batch, that step stays unrolled and the loop starts from its output.
What does not match is not rolled: a recurrence that does not verify stays as it is (the
reason is in the metrics, or an `UnsupportedError` names the node with `strict=true`); a
graph with nothing to roll comes back unchanged.

Limits: time reads must go forward, one index per step (a recurrence that runs from the
last index to the first is left unrolled); a step reads only its own tensors and those of
the step before (after the retiming); constants that differ per step (other than the time
index) stop the match; nodes with subgraphs are never part of a step; only the main graph
is searched; a tensor that every step reads but that is not constant is carried through
the loop as an extra state.
"""
from __future__ import annotations

import collections
import heapq

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from flimcc.analysis import datatype_annotations
from flimcc.errors import UnsupportedError
from flimcc.execute import run_ort
from flimcc.pipeline import Contract, Option, Pass, register

from .quantize import all_names, free_names, subgraph_attrs

ONNX_DOMAINS = ("", "ai.onnx")
#: Ops that only move data: they commute with an elementwise per-tensor quantizer.
_MOVEMENT_OPS = ("Transpose", "Split", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Gather", "Slice",
                 "Flatten")
_WEIGHT_QUANTS = ("Quant", "IntQuant")


class _NoMatch(Exception):
    """A step, or a recurrence, that does not match: the message names the node."""


class _NotRecurrence(_NoMatch):
    """Steps alike, but nothing carried from one to the next (reads of a shape's dims, a
    per-step map): nothing to roll, and nothing to report."""


# ---------------------------------------------------------------------------------------
# The graph index: built once, every lookup O(1)


def _reads(node: onnx.NodeProto) -> list[str]:
    names = [n for n in node.input if n]
    for attr in subgraph_attrs(node):
        names += sorted(free_names(attr.g))
    return names


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Kahn's algorithm, keeping the given order where it may (ONNX graphs are sorted already)."""
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = collections.defaultdict(list)
    for i, n in enumerate(nodes):
        deps = {producer[t] for t in _reads(n) if t in producer and producer[t] != i}
        waiting[i] = len(deps)
        for d in deps:
            readers[d].append(i)
    ready = [i for i in range(len(nodes)) if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise UnsupportedError(f"roll-loop: graph '{graph.name}' has a cycle")
    return [nodes[i] for i in order]


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Index:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.nodes = _topological(graph)
        self.inits = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.vi = {v.name: v for v in [*graph.input, *graph.output, *graph.value_info]}
        self.prod: dict[str, tuple[int, int]] = {}
        self.cons: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        for i, n in enumerate(self.nodes):
            for p, t in enumerate(n.output):
                if t:
                    self.prod[t] = (i, p)
            for j, t in enumerate(n.input):
                if t:
                    self.cons[t].append((i, j))
            for attr in subgraph_attrs(n):
                for t in free_names(attr.g):
                    self.cons[t].append((i, -1))
        self.sig = [self._signature(n) for n in self.nodes]
        self._keys: dict[str, tuple] = {}
        self.literals: dict[str, onnx.TensorProto] = dict(self.inits)  # initializers, Constant nodes
        for n in self.nodes:
            value = _attr(n, "value") if n.op_type == "Constant" and n.domain in ONNX_DOMAINS else None
            if isinstance(value, onnx.TensorProto) and n.output and n.output[0]:
                self.literals[n.output[0]] = value
        self.const: set[str] = set(self.inits)

    @staticmethod
    def _signature(node: onnx.NodeProto):
        if subgraph_attrs(node) or any(a.type == onnx.AttributeProto.GRAPHS for a in node.attribute):
            return None
        attrs = tuple(sorted((a.name, a.SerializeToString()) for a in node.attribute))
        return node.domain, node.op_type, attrs, len(node.input), len(node.output)

    def mark_constants(self, seeds: set[int]) -> None:
        """Tensors that do not depend on any graph input or time-indexed read."""
        for i, n in enumerate(self.nodes):
            if i in seeds or self.sig[i] is None:
                continue
            if all(not t or t in self.const for t in n.input):
                self.const.update(o for o in n.output if o)

    def value_key(self, name: str) -> tuple:
        key = self._keys.get(name)
        if key is None:
            t = self.literals[name]
            data = numpy_helper.to_array(t)
            key = self._keys[name] = (t.data_type, tuple(t.dims), data.tobytes())
        return key

    def same_const(self, a: str, b: str) -> bool:
        """The same tensor, or two literals (initializers, Constant nodes) of equal value."""
        return a == b or (a in self.literals and b in self.literals and self.value_key(a) == self.value_key(b))

    def shape(self, name: str) -> list | None:
        """The static shape (None for an unknown dim), or None if the rank is unknown."""
        if name in self.inits:
            return list(self.inits[name].dims)
        vi = self.vi.get(name)
        if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in vi.type.tensor_type.shape.dim]

    def elem_type(self, name: str) -> int:
        if name in self.inits:
            return self.inits[name].data_type
        vi = self.vi.get(name)
        return vi.type.tensor_type.elem_type if vi is not None and vi.type.HasField("tensor_type") else 0

    def const_array(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None


# ---------------------------------------------------------------------------------------
# Seeds, the shift map, orbits and recurrences


def _seeds(ix: _Index) -> tuple[dict[tuple, dict[int, int]], dict[int, tuple]]:
    """Families of constant-index Gathers: (source, axis, keeps axis) -> {index: node}."""
    families: dict[tuple, dict[int, int]] = collections.defaultdict(dict)
    duplicated: dict[tuple, list[int]] = {}
    for i, n in enumerate(ix.nodes):
        if n.op_type != "Gather" or n.domain not in ONNX_DOMAINS or len(n.input) != 2:
            continue
        index = ix.const_array(n.input[1])
        if index is None or index.dtype.kind not in "iu" or index.size != 1 or index.ndim > 1:
            continue
        keep = index.ndim == 1
        shape = ix.shape(n.input[0])
        out = ix.shape(n.output[0])
        rank = len(shape) if shape is not None else (len(out) + (0 if keep else 1) if out is not None else None)
        if rank is None:
            continue
        axis = int(_attr(n, "axis", 0))
        if not -rank <= axis < rank:
            continue
        axis %= rank
        k = int(index.reshape(-1)[0])
        if k < 0:
            if shape is None or shape[axis] is None:
                continue
            k += shape[axis]
        key = (n.input[0], axis, keep)
        if k in families[key]:
            duplicated.setdefault((key, k), [families[key][k]]).append(i)
        else:
            families[key][k] = i
    # Two reads of one index (unroll-gru's zero state reads x[0] to shape it): the one
    # whose readers look like the neighbouring index's readers is the step's.
    for (key, k), candidates in duplicated.items():
        members = families[key]
        like = [_reader_kinds(ix, members[j]) for j in (k - 1, k + 1) if j in members]
        chosen = [c for c in candidates if _reader_kinds(ix, c) in like]
        if len(chosen) == 1:
            members[k] = chosen[0]
        else:
            members.pop(k)
    seed_of = {i: (key, k) for key, members in families.items() for k, i in members.items()}
    return families, seed_of


def _reader_kinds(ix: _Index, node: int) -> list:
    return sorted((repr(ix.sig[c]), pos) for t in ix.nodes[node].output for c, pos in ix.cons.get(t, ()))


def _time_slices(graph: onnx.GraphProto, opset: int) -> bool:
    """Rewrite reads of one time index that are not Gathers into the Gather that reads the
    same values, `Gather(X, [k], axis)` (the axis kept): a Split into size-1 parts (each
    output k) and a one-element Slice (starts k, ends k + 1, step 1). Data movement only.
    Returns whether anything changed."""
    inits = {t.name: t for t in graph.initializer}
    shapes = {v.name: v.type.tensor_type.shape for v in [*graph.input, *graph.value_info, *graph.output]
              if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}

    def const(name: str):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def dim(name: str, axis: int) -> tuple[int | None, int | None]:
        shape = shapes.get(name)
        if shape is None:
            return None, None
        rank = len(shape.dim)
        if not -rank <= axis < rank:
            return rank, None
        d = shape.dim[axis % rank]
        return rank, d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None

    taken = all_names(graph)
    new_nodes, new_inits, changed = [], [], False
    for node in graph.node:
        reads = None  # [(output, index, axis)]
        if node.domain in ONNX_DOMAINS and node.op_type == "Split" and len(node.output) >= 2:
            axis = int(_attr(node, "axis", 0))
            rank, size = dim(node.input[0], axis)
            sizes = _attr(node, "split")
            if len(node.input) > 1 and node.input[1]:
                value = const(node.input[1])
                sizes = None if value is None else value.reshape(-1).tolist()
            elif sizes is None and size == len(node.output):
                sizes = [1] * len(node.output)
            if rank is not None and sizes is not None and list(sizes) == [1] * len(node.output):
                reads = [(o, k, axis % rank) for k, o in enumerate(node.output) if o]
        elif node.domain in ONNX_DOMAINS and node.op_type == "Slice" and opset >= 10 and 3 <= len(node.input) <= 5:
            values = [const(n) if n else None for n in node.input[1:]]
            starts, ends = values[0], values[1]
            axes = values[2] if len(values) > 2 else np.array([0])
            steps = values[3] if len(values) > 3 else np.array([1])
            one = all(v is not None and v.size == 1 for v in (starts, ends, axes, steps))
            if one and int(steps.reshape(-1)[0]) == 1:
                rank, size = dim(node.input[0], int(axes.reshape(-1)[0]))
                k, end = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
                if size is not None:  # (Slice clamps an index past the end; Gather would fail)
                    k, end = (k + size if k < 0 else k), (end + size if end < 0 else end)
                    if 0 <= k and end == k + 1 <= size:
                        reads = [(node.output[0], k, int(axes.reshape(-1)[0]) % rank)]
        if reads is None:
            new_nodes.append(node)
            continue
        changed = True
        for out, k, axis in reads:
            index = _Names(taken)(f"{out}/time_index")
            new_inits.append(numpy_helper.from_array(np.array([k], np.int64), index))
            new_nodes.append(helper.make_node("Gather", [node.input[0], index], [out], name=f"{node.name}/{k}",
                                              axis=axis))
    if changed:
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(new_inits)
    return changed


def _shift_map(ix: _Index, families: dict, seed_of: dict) -> dict[int, int]:
    """node -> the node that plays its role one step later (see the module docstring)."""
    sigma: dict[int, int] = {}
    image: set[int] = set()
    for members in families.values():
        for k, i in members.items():
            if k + 1 in members:
                sigma[i] = members[k + 1]
                image.add(members[k + 1])

    def image_of(t: str) -> str | None:
        p = ix.prod.get(t)
        if p is None or p[0] not in sigma:
            return None
        return ix.nodes[sigma[p[0]]].output[p[1]]

    for i, n in enumerate(ix.nodes):
        if i in seed_of or ix.sig[i] is None:
            continue
        shifted = [image_of(t) if t else None for t in n.input]
        first = next((j for j, s in enumerate(shifted) if s is not None), None)
        if first is None:
            continue
        found = []
        for c, pos in ix.cons.get(shifted[first], ()):
            if pos != first or c == i or c in image or ix.sig[c] != ix.sig[i]:
                continue
            d = ix.nodes[c]
            ok = True
            for j, t in enumerate(n.input):
                u = d.input[j]
                if shifted[j] is not None:
                    ok = u == shifted[j]
                elif bool(t) != bool(u):
                    ok = False
                elif t in ix.literals and u in ix.literals:
                    ok = ix.same_const(t, u)
                if not ok:
                    break
            if ok:
                found.append(c)
                if len(found) > 1:
                    break
        if len(found) == 1:
            sigma[i] = found[0]
            image.add(found[0])
    # Backwards, into the work before the loop: where n reads from outside the map and
    # shift(n) reads, at the same input, a node of the same signature, that producer pair
    # is one more step of a role (h0 @ R on the initial state, then h_0 @ R). Only nodes
    # that no orbit holds yet: the map never reaches across an initial state into the
    # recurrence before. This lets a role with a single instance inside the loop (K = 2)
    # still be found.
    work = list(sigma.items())
    while work:
        i, c = work.pop()
        n, d = ix.nodes[i], ix.nodes[c]
        for t, u in zip(n.input, d.input):
            p, q = ix.prod.get(t), ix.prod.get(u)
            if p is None or q is None or p[1] != q[1]:
                continue
            a, b = p[0], q[0]
            if a == b or a in sigma or a in image or b in image or a in seed_of or ix.sig[a] is None \
                    or ix.sig[a] != ix.sig[b] or not _same_constants(ix, ix.nodes[a], ix.nodes[b]):
                continue
            sigma[a] = b
            image.add(b)
            work.append((a, b))
    return sigma


def _same_constants(ix: _Index, n: onnx.NodeProto, d: onnx.NodeProto) -> bool:
    """Inputs present in both or neither; initializer inputs equal in value."""
    for t, u in zip(n.input, d.input):
        if bool(t) != bool(u) or (t in ix.literals and u in ix.literals and not ix.same_const(t, u)):
            return False
    return True


class _Orbits:
    """The shift map's orbits (one role of a step each) with their ASAP steps."""

    def __init__(self, ix: _Index, sigma: dict[int, int], seed_of: dict) -> None:
        image = set(sigma.values())
        self.members: list[dict[int, int]] = []  # orbit -> {step: node}
        self.of: dict[int, int] = {}  # node -> orbit
        self.step: dict[int, int] = {}
        self.seed: list[tuple | None] = []  # orbit -> its seed family, or None
        # ASAP: a time-indexed read is at its index; a node the map reaches at the step of
        # its latest input that has a step (nodes are in topological order)
        # (only inputs whose producer the map sends on count: the last step of an earlier
        # recurrence, which feeds this one's initial state, does not)
        asap: dict[int, int] = {}
        for i in sorted(set(sigma) | image):
            if i in seed_of:
                asap[i] = seed_of[i][1]
                continue
            steps = [asap[ix.prod[t][0]] for t in ix.nodes[i].input
                     if t in ix.prod and ix.prod[t][0] in sigma and ix.prod[t][0] in asap]
            if steps:
                asap[i] = max(steps)
        for start in sorted(i for i in sigma if i not in image):
            chain = [start]
            while chain[-1] in sigma:
                chain.append(sigma[chain[-1]])
            anchor = next((j for j, node in enumerate(chain) if node in asap), None)
            if anchor is None:
                continue
            base = asap[chain[anchor]] - anchor
            oid = len(self.members)
            self.members.append({base + j: node for j, node in enumerate(chain)})
            self.seed.append(seed_of[start][0] if start in seed_of else None)
            for j, node in enumerate(chain):
                self.of[node] = oid
                self.step[node] = base + j
        # recurrences: orbits joined by a data edge between two nodes the map reaches
        parent = list(range(len(self.members)))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for c in sigma:
            if c not in self.of:
                continue
            for t in ix.nodes[c].input:
                p = ix.prod.get(t)
                if p is not None and p[0] in sigma and p[0] in self.of:
                    parent[find(self.of[p[0]])] = find(self.of[c])
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for oid in range(len(self.members)):
            groups[find(oid)].append(oid)
        self.components = [sorted(g) for g in groups.values()]
        self.components.sort(key=lambda g: min(min(self.members[o].values()) for o in g))

    def member(self, oid: int, step: int) -> int | None:
        return self.members[oid].get(step)


# ---------------------------------------------------------------------------------------
# The template of one step, and matching it against every step


class _Template:
    """One step: its roles (orbits) in topological order and each input's kind:
    ("empty",) | ("const", name) | ("int", orbit, port) | ("state", orbit, port) | ("outer", name)."""

    def __init__(self, ix: _Index, orbits: _Orbits, comp: list[int], ref: int, lag: dict[int, int]) -> None:
        self.ref, self.lag = ref, lag
        at = {oid: orbits.member(oid, ref - lag[oid]) for oid in comp}
        self.at = {oid: node for oid, node in at.items() if node is not None}
        role = {node: oid for oid, node in self.at.items()}
        before = {}
        for oid in self.at:
            node = orbits.member(oid, ref - 1 - lag[oid])
            if node is not None:
                before[node] = oid
        comp_set = set(comp)
        self.order = sorted(self.at, key=lambda o: self.at[o])
        self.seeds = {oid for oid in self.order if orbits.seed[oid] is not None}
        self.inputs: dict[int, list[tuple]] = {}
        for oid in self.order:
            if oid in self.seeds:
                continue
            node = ix.nodes[self.at[oid]]
            kinds = []
            for t in node.input:
                p = ix.prod.get(t) if t else None
                if not t:
                    kinds.append(("empty",))
                elif p is not None and p[0] in role:
                    kinds.append(("int", role[p[0]], p[1]))
                elif p is not None and p[0] in before:
                    kinds.append(("state", before[p[0]], p[1]))
                elif t in ix.const:
                    kinds.append(("const", t))
                elif p is not None and orbits.of.get(p[0]) in comp_set:
                    raise _NoMatch(f"node '{node.name}' reads '{t}' from a step other than its own or the "
                                   "one before")
                else:
                    kinds.append(("outer", t))
            self.inputs[oid] = kinds
        self.states = sorted({(k[1], k[2]) for ins in self.inputs.values() for k in ins if k[0] == "state"},
                             key=lambda s: (self.order.index(s[0]), s[1]))
        self.readers: dict[int, list[tuple[int, int, int]]] = collections.defaultdict(list)
        for oid, ins in self.inputs.items():
            for j, k in enumerate(ins):
                if k[0] == "int":
                    self.readers[k[1]].append((oid, j, k[2]))


def _retime(ix: _Index, orbits: _Orbits, comp: list[int], ref: int) -> _Template:
    """Move state-only work (h @ R) into the step that consumes it: a node whose outputs
    only the next step reads moves there when that lowers the number of carried tensors,
    or keeps it and the node's role has no instance in the last step (h_{T-1} @ R is never
    computed: the role belongs to the step after)."""
    # a role without an instance at the reference step but with one just before is work
    # of the step before that this step consumes (at K = 2, h_0 @ R is the only instance)
    lag = {oid: int(orbits.member(oid, ref) is None and orbits.member(oid, ref - 1) is not None) for oid in comp}
    seed_end = max(max(orbits.members[o]) for o in comp if orbits.seed[o] is not None)
    for _ in range(len(comp)):
        tmpl = _Template(ix, orbits, comp, ref, lag)
        state_set = set(tmpl.states)
        moved = False
        for oid in reversed(tmpl.order):
            if oid in tmpl.seeds or tmpl.readers.get(oid):
                continue
            ins = tmpl.inputs[oid]
            if any(k[0] in ("state", "outer") or (k[0] == "int" and k[1] in tmpl.seeds) for k in ins):
                continue
            node = ix.nodes[tmpl.at[oid]]
            carried = {(oid, p) for p in range(len(node.output))} & state_set
            if not carried or not _only_read_next_step(ix, orbits, tmpl, oid, node):
                continue
            newly = {(k[1], k[2]) for k in ins if k[0] == "int"} - state_set
            if len(newly) < len(carried) or (len(newly) == len(carried) and max(orbits.members[oid]) < seed_end):
                lag[oid] += 1
                moved = True
                break
        if not moved:
            return tmpl
    return _Template(ix, orbits, comp, ref, lag)


def _only_read_next_step(ix: _Index, orbits: _Orbits, tmpl: _Template, oid: int, node: onnx.NodeProto) -> bool:
    for p, t in enumerate(node.output):
        if not t:
            continue
        if t in ix.outputs:
            return False
        for c, pos in ix.cons.get(t, ()):
            r = orbits.of.get(c)
            if r is None or r not in tmpl.inputs or orbits.step[c] + tmpl.lag[r] != tmpl.ref + 1:
                return False
            if pos < 0 or tmpl.inputs[r][pos] != ("state", oid, p):
                return False
    return True


class _Chain:
    """A recurrence matched over steps lo..hi: its nodes per step and initial states."""

    def __init__(self, tmpl: _Template, lo: int, hi: int, locs: dict[int, dict[int, int]],
                 inits: dict[tuple[int, int], str]) -> None:
        self.tmpl, self.lo, self.hi, self.locs, self.inits = tmpl, lo, hi, locs, inits

    @property
    def steps(self) -> int:
        return self.hi - self.lo + 1

    def nodes(self) -> set[int]:
        return {i for loc in self.locs.values() for i in loc.values()}


def _locate(ix: _Index, orbits: _Orbits, tmpl: _Template, step: int) -> dict[int, int] | None:
    loc: dict[int, int | None] = {oid: orbits.member(oid, step - tmpl.lag[oid]) for oid in tmpl.order}
    for oid in reversed(tmpl.order):
        if loc[oid] is not None:
            continue
        if oid in tmpl.seeds:
            return None
        for reader, j, port in tmpl.readers.get(oid, ()):
            if loc[reader] is None:
                continue
            t = ix.nodes[loc[reader]].input[j]
            p = ix.prod.get(t)
            if p is None or p[1] != port:
                return None
            loc[oid] = p[0]
            break
        if loc[oid] is None:
            return None
    if len(set(loc.values())) != len(loc):
        return None
    return loc  # type: ignore[return-value]


def _verify(ix: _Index, tmpl: _Template, loc: dict[int, int], before: dict[int, int] | None,
            step: int) -> dict[tuple[int, int], str]:
    """Check one step against the template, edge by edge; `before` is the previous step's
    nodes (None for the first step, whose carried inputs are returned as initial states)."""
    inits: dict[tuple[int, int], str] = {}
    for oid in tmpl.order:
        node = ix.nodes[loc[oid]]
        if ix.sig[loc[oid]] != ix.sig[tmpl.at[oid]]:
            raise _NoMatch(f"step {step}: node '{node.name}' differs from '{ix.nodes[tmpl.at[oid]].name}'")
        if oid in tmpl.seeds:
            continue
        for j, kind in enumerate(tmpl.inputs[oid]):
            t = node.input[j]
            if kind[0] == "empty":
                ok = not t
            elif kind[0] == "const":
                ok = ix.same_const(kind[1], t)
            elif kind[0] == "int":
                ok = t == ix.nodes[loc[kind[1]]].output[kind[2]]
            elif kind[0] == "outer":
                ok = t == kind[1]
            elif before is not None:
                ok = t == ix.nodes[before[kind[1]]].output[kind[2]]
            else:
                key = (kind[1], kind[2])
                ok = bool(t) and (key not in inits or ix.same_const(inits[key], t))
                inits.setdefault(key, t)
            if not ok:
                raise _NoMatch(f"step {step}: input {j} ('{t}') of node '{node.name}' is not wired like "
                               f"the other steps'")
    return inits


def _match(ix: _Index, orbits: _Orbits, comp: list[int], used: set[int]) -> _Chain:
    seeds = [oid for oid in comp if orbits.seed[oid] is not None]
    if not seeds:
        raise _NoMatch("no time-indexed input")
    steps = sorted({s for oid in seeds for s in orbits.members[oid]})
    ref = steps[len(steps) // 2]
    tmpl = _retime(ix, orbits, comp, ref)
    if not tmpl.states:
        raise _NotRecurrence("no tensor is carried from one step to the next")
    locs: dict[int, dict[int, int]] = {}

    def located(s: int) -> dict[int, int] | None:
        if s not in locs:
            loc = _locate(ix, orbits, tmpl, s)
            if loc is None or any(i in used for i in loc.values()):
                return None
            locs[s] = loc
        return locs[s]

    ref_loc = located(ref)
    if ref_loc is None:
        raise _NoMatch(f"step {ref} is incomplete")
    hi = ref
    while located(hi + 1) is not None:
        try:
            _verify(ix, tmpl, locs[hi + 1], locs[hi], hi + 1)
        except _NoMatch:
            break
        hi += 1
    lo = ref
    while located(lo - 1) is not None:
        try:
            _verify(ix, tmpl, locs[lo], locs[lo - 1], lo)
        except _NoMatch:
            break
        lo -= 1
    error = None
    while lo <= hi:
        try:
            inits = _verify(ix, tmpl, locs[lo], None, lo)
            break
        except _NoMatch as e:
            error = error or e
            lo += 1
    else:
        raise error or _NoMatch("no first step")
    if lo < hi and any(t in ix.const for t in inits.values()) and _standard_body(ix, tmpl):
        # onnxruntime runs a standard body and holds every step's state to the initial
        # state's shape: a constant (batch-1) state that the first step broadcasts would
        # break re-batched runs. That step stays unrolled; the loop starts from its output.
        lo += 1
        inits = _verify(ix, tmpl, locs[lo], None, lo)
    kept = {s: locs[s] for s in range(lo, hi + 1)}
    taken = [i for loc in kept.values() for i in loc.values()]
    if len(set(taken)) != len(taken):
        raise _NoMatch("steps share nodes")
    return _Chain(tmpl, lo, hi, kept, inits)


def _standard_body(ix: _Index, tmpl: _Template) -> bool:
    """Whether the body would hold standard ops only (onnxruntime runs it)."""
    seen: set[str] = set()

    def standard(name: str) -> bool:
        if name in seen or name not in ix.prod:
            return True
        seen.add(name)
        node = ix.nodes[ix.prod[name][0]]
        return node.domain in ONNX_DOMAINS and all(standard(t) for t in node.input if t)

    for oid in tmpl.order:
        if oid in tmpl.seeds:
            continue
        if ix.nodes[tmpl.at[oid]].domain not in ONNX_DOMAINS:
            return False
        if not all(standard(k[1]) for k in tmpl.inputs[oid] if k[0] == "const"):
            return False
    return True


# ---------------------------------------------------------------------------------------
# Writing the Scan


class _Names:
    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name


def _loop_prefix(names: list[str]) -> str:
    parts = [n.split("/") for n in names if n]
    common: list[str] = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    prefix = "/".join(common[:-1] if len(common) == len(parts[0]) else common) if parts else ""
    return prefix.rstrip("/")


def _value_info(name: str, elem: int, shape: list | None) -> onnx.ValueInfoProto:
    """A typed ValueInfo; None for an unknown shape or dimension."""
    return helper.make_tensor_value_info(name, elem, shape)


class _Writer:
    """Builds the Scan of one chain and the main-graph nodes around it."""

    def __init__(self, ix: _Index, orbits: _Orbits, chain: _Chain, names: _Names,
                 opsets: list[onnx.OperatorSetIdProto], datatypes: dict[str, str]) -> None:
        self.ix, self.orbits, self.chain, self.names = ix, orbits, chain, names
        self.opsets = [op for op in opsets if op.domain in ONNX_DOMAINS]
        self.opset = self.opsets[0].version if self.opsets else 13
        self.datatypes = datatypes
        self.tmpl = chain.tmpl
        self.first = chain.locs[chain.lo]
        self.last = chain.locs[chain.hi]
        self.ref = chain.locs[self.tmpl.ref] if self.tmpl.ref in chain.locs else self.first
        # the names all steps share: `/encoder/Add`, `/encoder/Add_7` -> `/encoder`
        members = [ix.nodes[i].name for i in [*self.first.values(), *self.last.values()]]
        self.base = _loop_prefix(members)
        self.loop = names(f"{self.base}/loop" if self.base else "loop")
        self.body_nodes: list[onnx.NodeProto] = []
        self.body_inits: list[onnx.TensorProto] = []
        self.body_vi: dict[str, onnx.ValueInfoProto] = {}
        self.body_annotations: dict[str, str] = {}
        self.outer_nodes: list[onnx.NodeProto] = []  # before and after the Scan
        self.outer_vi: list[onnx.ValueInfoProto] = []
        self.outer_inits: list[onnx.TensorProto] = []
        self.removed: set[int] = set(chain.nodes())
        self.stats: dict = {}

    # -- names --------------------------------------------------------------------------
    def local(self, label: str) -> str:
        """A new name under the loop's: `/encoder/Add_output_0` -> `/encoder/loop/Add_output_0`."""
        if self.base and label.startswith(self.base + "/"):
            label = label[len(self.base) + 1:]
        return self.names(f"{self.loop}/{label.lstrip('/')}")

    def tensor_ref(self, oid: int, port: int) -> str:
        """The tensor of role (oid, port) in the reference step (for types and shapes)."""
        return self.ix.nodes[self.ref[oid]].output[port]

    def declare(self, name: str, like: str) -> onnx.ValueInfoProto:
        """A body tensor typed like `like`, axis 0 (the batch) left unknown: the body runs
        on any batch, as unroll-gru writes it and fold-weights leaves it."""
        shape = self.ix.shape(like)
        if shape:
            shape = [None] + shape[1:]
        vi = _value_info(name, self.ix.elem_type(like) or onnx.TensorProto.FLOAT, shape)
        if like in self.datatypes:
            self.body_annotations[name] = self.datatypes[like]
        return vi

    # -- the body -----------------------------------------------------------------------
    def build(self) -> onnx.NodeProto:
        ix, tmpl = self.ix, self.tmpl
        body_name: dict[tuple[int, int], str] = {}
        scan_inputs: list[tuple[int, str]] = []  # (seed orbit, body input name)
        for oid in tmpl.order:
            node = ix.nodes[self.first[oid]]
            for p, t in enumerate(node.output):
                if oid in tmpl.seeds:
                    body_name[(oid, p)] = self.local(t)
                    scan_inputs.append((oid, body_name[(oid, p)]))
                else:
                    body_name[(oid, p)] = self.local(t) if t else ""
        state_in = {s: self.local(ix.nodes[self.first[s[0]]].output[s[1]] + "_prev") for s in tmpl.states}
        collected = self._collected()
        dropped = {oid for oid, how in collected.items() if how[0] == "unsqueeze"}
        passthrough: dict[str, tuple[str, str]] = {}  # outer tensor -> (body input, body output)
        const_copies = _ConstCopies(self)
        for oid in tmpl.order:
            if oid in tmpl.seeds or oid in dropped:
                continue
            node = ix.nodes[self.first[oid]]
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.name = self.local(node.name)
            del new.input[:]
            kinds = tmpl.inputs[oid]
            if self._equal_split(node):
                kinds = kinds[:1]
                if self.opset >= 18:
                    new.attribute.append(helper.make_attribute("num_outputs", len(node.output)))
            for j, kind in enumerate(kinds):
                if kind[0] == "empty":
                    new.input.append("")
                elif kind[0] == "const":
                    new.input.append(const_copies(node.input[j], new.name))
                elif kind[0] == "int":
                    new.input.append(body_name[(kind[1], kind[2])])
                elif kind[0] == "state":
                    new.input.append(state_in[(kind[1], kind[2])])
                else:
                    if kind[1] not in passthrough:
                        passthrough[kind[1]] = (self.local(kind[1] + "_in"), self.local(kind[1] + "_out"))
                    new.input.append(passthrough[kind[1]][0])
            del new.output[:]
            new.output.extend(body_name[(oid, p)] for p in range(len(node.output)))
            self.body_nodes.append(new)
            for p, t in enumerate(new.output):
                if t:
                    self.body_vi[t] = self.declare(t, self.tensor_ref(oid, p))
        for outer, (b_in, b_out) in passthrough.items():
            self.body_nodes.append(helper.make_node("Identity", [b_in], [b_out], name=self.local(outer + "_carry")))

        # body inputs: states, passed-through tensors, then time slices
        body_inputs = [self.declare(state_in[s], self.tensor_ref(*s)) for s in tmpl.states]
        body_inputs += [self.declare(b_in, outer) for outer, (b_in, _) in passthrough.items()]
        body_inputs += [self.declare(name, self.tensor_ref(oid, 0)) for oid, name in scan_inputs]
        # body outputs: states, passed-through tensors, then per-step tensors read later
        outs: list[str] = []

        def output(name: str, like: str) -> str:
            if name in outs or name in [i.name for i in body_inputs]:
                alias = self.names(name + "_out")
                self.body_nodes.append(helper.make_node("Identity", [name], [alias], name=alias))
                self.body_vi[alias] = self.declare(alias, like)
                name = alias
            outs.append(name)
            return name

        for s in tmpl.states:
            output(body_name[s], self.tensor_ref(*s))
        for outer, (_, b_out) in passthrough.items():
            outs.append(b_out)
            self.body_vi[b_out] = self.declare(b_out, outer)
        scan_outs = []  # (body output, how, role whose per-step values it stacks)
        for key, how in collected.items():
            if how[0] == "unsqueeze":  # stack what the Unsqueeze read
                src = tmpl.inputs[key][0]
                role = (src[1], src[2])
                name = body_name[role] if src[0] == "int" else state_in[role]
            else:
                role, name = key, body_name[key]
            scan_outs.append((output(name, self.tensor_ref(*role)), how, role))

        body = helper.make_graph(
            self.body_nodes, self.loop.strip("/").replace("/", "_") + "_body",
            body_inputs, [self.body_vi.get(o) or self.declare(o, o) for o in outs], self.body_inits,
            value_info=[vi for name, vi in self.body_vi.items() if name not in outs],
        )
        for name, dt in self.body_annotations.items():
            qa = onnx.TensorAnnotation(tensor_name=name)
            qa.quant_parameter_tensor_names.append(onnx.StringStringEntryProto(key="finn_datatype", value=dt))
            body.quantization_annotation.append(qa)

        # the Scan's inputs
        init_names = []
        for s in tmpl.states:
            init_names.append(self.chain.inits[s])
        init_names += list(passthrough)
        sources = [self._time_major(oid) for oid, _ in scan_inputs]
        outputs = [ix.nodes[self.last[s[0]]].output[s[1]] for s in tmpl.states]
        outputs += [self.local(outer + "_last") for outer in passthrough]
        stacked = []
        for name, how, role in scan_outs:
            seq = self.local(ix.nodes[self.first[role[0]]].output[role[1]] + "_steps")
            stacked.append(seq)
            shape = ix.shape(self.tensor_ref(*role))
            self.outer_vi.append(_value_info(seq, ix.elem_type(self.tensor_ref(*role)) or onnx.TensorProto.FLOAT,
                                             [self.chain.steps] + shape if shape is not None else None))
        k = len(sources)
        attrs = dict(body=body, num_scan_inputs=k, scan_input_axes=[0] * k, scan_input_directions=[0] * k)
        if stacked:
            attrs.update(scan_output_axes=[0] * len(stacked), scan_output_directions=[0] * len(stacked))
        scan = helper.make_node("Scan", init_names + sources, outputs + stacked, name=self.loop, **attrs)
        self.outer_nodes.append(scan)
        for (name, how, role), seq in zip(scan_outs, stacked):
            self._unstack(seq, how, role)
        self.stats = {"scan": self.loop, "steps": self.chain.steps, "first_index": self.chain.lo,
                      "body_nodes": len(self.body_nodes), "states": len(tmpl.states) + len(passthrough),
                      "scan_inputs": k, "scan_outputs": len(stacked)}
        return scan

    def _equal_split(self, node: onnx.NodeProto) -> bool:
        """A Split into equal parts is written without its `split` sizes (opset 13-17; 18+
        says `num_outputs` instead): the same operation without an integer constant, which
        `streamline` would lose from a Scan body (it keeps only the constants it lowers)."""
        if node.op_type != "Split" or node.domain not in ONNX_DOMAINS or self.opset < 13 or len(node.input) != 2:
            return False
        sizes = self.ix.const_array(node.input[1]) if node.input[1] else None
        return sizes is not None and sizes.size == len(node.output) and bool(np.all(sizes == sizes.reshape(-1)[0]))

    # -- per-step tensors read after the loop --------------------------------------------
    def _collected(self) -> dict:
        """Role -> how the graph reads it later: ("unsqueeze", concat node, axis) for a Concat
        of every step's Unsqueeze along that axis (the Unsqueeze role is dropped from the
        body), ("concat", concat node, axis) for a Concat of every step's tensor, ("gather",
        {step: tensor}) for any other read (the last step's carried tensors are the Scan's
        final states and need nothing)."""
        ix, tmpl, chain = self.ix, self.tmpl, self.chain
        states = set(tmpl.states)
        found: dict = {}
        for oid in tmpl.order:
            n_out = len(ix.nodes[self.first[oid]].output)
            for p in range(n_out):
                outside: dict[int, str] = {}
                for s, loc in chain.locs.items():
                    t = ix.nodes[loc[oid]].output[p]
                    readers = [c for c, _ in ix.cons.get(t, ()) if c not in self.removed] if t else []
                    if readers or t in ix.outputs:
                        outside[s] = t
                if not outside:
                    continue
                how = self._collector(oid, p, outside)
                if how is None and (oid, p) in states:
                    outside.pop(chain.hi, None)  # the Scan's final state output takes this name
                if how is not None or outside:
                    found[(oid, p)] = how or ("gather", outside)
        # roles whose Unsqueeze is dropped are keyed by the Unsqueeze orbit
        result = {}
        for (oid, p), how in found.items():
            result[oid if how[0] == "unsqueeze" else (oid, p)] = how
        return result

    def _collector(self, oid: int, port: int, outside: dict[int, str]):
        """("unsqueeze" | "concat", Concat node, axis, first input, last input + 1) when
        every rolled step's tensor is read once, by one Concat, as a run of its inputs in
        step order; None otherwise."""
        ix, chain = self.ix, self.chain
        if len(outside) != chain.steps:
            return None
        tensors = [outside[s] for s in range(chain.lo, chain.hi + 1)]
        reads = [[(c, pos) for c, pos in ix.cons.get(t, ()) if c not in self.removed] for t in tensors]
        if len(reads[0]) != 1:
            return None
        concat_i, first = reads[0][0]
        concat = ix.nodes[concat_i]
        if concat.op_type != "Concat" or concat.domain not in ONNX_DOMAINS:
            return None
        carried = (oid, port) in self.tmpl.states
        for k, (t, r) in enumerate(zip(tensors, reads)):
            mine = [x for x in r if x[0] == concat_i]
            # the last step's carried tensor may have other readers: they read the Scan's
            # final state, which keeps its name
            others_ok = carried and k == len(tensors) - 1
            if len(mine) != 1 or (len(r) != 1 and not others_ok) or (t in ix.outputs and not others_ok):
                return None
        inputs = list(concat.input)
        run = (first, first + len(tensors))
        if inputs[run[0]:run[1]] != tensors:
            return None
        out_shape = ix.shape(concat.output[0])
        if out_shape is None:
            return None
        axis = int(_attr(concat, "axis", 0)) % len(out_shape)
        node = ix.nodes[chain.locs[chain.lo][oid]]
        if node.op_type == "Unsqueeze" and port == 0 and not self.tmpl.readers.get(oid) \
                and (oid, 0) not in self.tmpl.states:
            axes = _attr(node, "axes")
            if axes is None and len(node.input) > 1:
                value = ix.const_array(node.input[1])
                axes = None if value is None else value.reshape(-1).tolist()
            src = self.tmpl.inputs[oid][0]
            if axes is not None and len(axes) == 1 and int(axes[0]) % len(out_shape) == axis \
                    and src[0] in ("int", "state"):
                self.removed.add(concat_i)
                return ("unsqueeze", concat_i, axis, *run)
        piece = ix.shape(tensors[0])
        if piece is None or len(piece) != len(out_shape) or any(d is None for d in piece[axis + 1:]):
            return None
        self.removed.add(concat_i)
        return ("concat", concat_i, axis, *run)

    def _unstack(self, seq: str, how: tuple, role: tuple[int, int]) -> None:
        """Main-graph nodes that read the stacked per-step tensor `seq` where the steps' own
        tensors were read."""
        ix = self.ix
        if how[0] == "gather":
            for s, t in how[1].items():
                index = self.local(f"{t}_step")
                self.outer_inits.append(numpy_helper.from_array(np.array(s - self.chain.lo, np.int64), index))
                self.outer_nodes.append(helper.make_node("Gather", [seq, index], [t], name=self.local(t), axis=0))
            return
        kind, concat_i, axis, first, stop = how
        concat = ix.nodes[concat_i]
        whole = first == 0 and stop == len(concat.input)
        label = concat.output[0]
        out = label if whole else self.local(label + "_rolled_steps")
        if kind == "unsqueeze":  # seq stacks what each step unsqueezed: move time to `axis`
            rank = len(ix.shape(concat.output[0]))
            perm = list(range(1, axis + 1)) + [0] + list(range(axis + 1, rank))
            op = "Identity" if axis == 0 else "Transpose"
            self.outer_nodes.append(helper.make_node(op, [seq], [out], name=self.local(label),
                                                     **({"perm": perm} if axis else {})))
        else:  # seq stacks the pieces: move time before `axis`, then merge the two
            piece = ix.shape(ix.nodes[self.ref[role[0]]].output[role[1]])
            rank = len(piece)
            moved = seq
            if axis > 0:
                moved = self.local(label + "_time_moved")
                perm = list(range(1, axis + 1)) + [0] + list(range(axis + 1, rank + 1))
                self.outer_nodes.append(helper.make_node("Transpose", [seq], [moved], name=moved, perm=perm))
            shape = self.local(label + "_shape")
            self.outer_inits.append(numpy_helper.from_array(
                np.array([0] * axis + [-1] + [int(d) for d in piece[axis + 1:]], np.int64), shape))
            self.outer_nodes.append(helper.make_node("Reshape", [moved, shape], [out], name=self.local(label)))
        if not whole:  # the Concat keeps its other inputs, the run of steps becomes one
            rest = onnx.NodeProto()
            rest.CopyFrom(concat)
            del rest.input[:]
            rest.input.extend([*concat.input[:first], out, *concat.input[stop:]])
            self.outer_nodes.append(rest)

    # -- time-indexed sources -------------------------------------------------------------
    def _time_major(self, oid: int) -> str:
        """The source of a Gather family with time on axis 0, cut to the rolled steps."""
        ix = self.ix
        source, axis, keep = self.orbits.seed[oid]
        shape = ix.shape(source)
        if shape is None:
            rank = len(ix.shape(ix.nodes[self.first[oid]].output[0])) + (0 if keep else 1)
        else:
            rank = len(shape)
        elem = ix.elem_type(source) or onnx.TensorProto.FLOAT
        dims = list(shape) if shape is not None else [None] * rank
        t = source
        if axis != 0:
            perm = [axis] + [d for d in range(rank) if d != axis]
            moved = self.local(source + "_time_major")
            self.outer_nodes.append(helper.make_node("Transpose", [t], [moved], name=moved, perm=perm))
            dims = [dims[d] for d in perm]
            t = moved
            self.outer_vi.append(_value_info(t, elem, dims))
        if keep:
            kept = self.local(source + "_time_slices")
            self.outer_nodes.append(self._unsqueeze(t, axis + 1, kept))
            dims = dims[:axis + 1] + [1] + dims[axis + 1:]
            t = kept
            self.outer_vi.append(_value_info(t, elem, dims))
        first, stop = self.chain.lo, self.chain.hi + 1
        if first != 0 or dims[0] != stop:
            cut = self.local(source + "_steps_rolled")
            self.outer_nodes.append(self._slice(t, first, stop, cut))
            dims = [stop - first] + dims[1:]
            t = cut
            self.outer_vi.append(_value_info(t, elem, dims))
        return t

    def _unsqueeze(self, x: str, axis: int, out: str) -> onnx.NodeProto:
        if self.opset >= 13:
            axes = self.names(out + "_axes")
            self.outer_inits.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
            return helper.make_node("Unsqueeze", [x, axes], [out], name=out)
        return helper.make_node("Unsqueeze", [x], [out], name=out, axes=[axis])

    def _slice(self, x: str, start: int, stop: int, out: str) -> onnx.NodeProto:
        if self.opset >= 10:
            names = []
            for label, value in (("starts", start), ("ends", stop), ("axes", 0)):
                name = self.names(f"{out}_{label}")
                self.outer_inits.append(numpy_helper.from_array(np.array([value], np.int64), name))
                names.append(name)
            return helper.make_node("Slice", [x, *names], [out], name=out)
        return helper.make_node("Slice", [x], [out], name=out, starts=[start], ends=[stop], axes=[0])


class _ConstCopies:
    """Constants a step reads, as body initializers (one copy per reading node, so that no
    later pass finds one shared); a constant the graph computes (a weight's Quant, then
    Transpose / Split) is computed in the body from copies of its initializers, the data
    movement applied to the float weight first where the quantizer is per tensor."""

    def __init__(self, writer: _Writer) -> None:
        self.w = writer
        self.computed: dict[str, str] = {}

    def __call__(self, name: str, reader: str) -> str:
        ix = self.w.ix
        if name in ix.inits:
            return self.initializer(name, f"{reader}/{name.rsplit('/', 1)[-1]}")
        if name not in self.computed:
            self.computed[name] = self.pushed_down(name) or self.copy(name)
        return self.computed[name]

    def initializer(self, name: str, label: str) -> str:
        new = self.w.names(label)
        t = onnx.TensorProto()
        t.CopyFrom(self.w.ix.inits[name])
        t.name = new
        self.w.body_inits.append(t)
        if name in self.w.datatypes:
            self.w.body_annotations[new] = self.w.datatypes[name]
        return new

    def pushed_down(self, name: str) -> str | None:
        """Quant(W) -> data movement -> name, as Quant(moved W) in the body, or None."""
        ix = self.w.ix
        chain = []
        t = name
        while True:
            p = ix.prod.get(t)
            if p is None:
                return None
            node = ix.nodes[p[0]]
            if node.op_type in _WEIGHT_QUANTS and node.domain.startswith("qonnx"):
                break
            if node.op_type not in _MOVEMENT_OPS or node.domain not in ONNX_DOMAINS:
                return None
            if not node.input or any(u not in ix.inits for u in node.input[1:] if u):
                return None
            chain.append(node)
            t = node.input[0]
        quant = node
        if len(quant.input) < 4 or any(u not in ix.inits for u in quant.input[:4]):
            return None
        if any(ix.const_array(u).size != 1 for u in quant.input[1:4]):
            return None  # per-channel: data movement would have to move the scale too
        w = ix.const_array(quant.input[0])
        if chain:
            chain.reverse()
            feeds = {quant.output[0]: w}
            inputs = [helper.make_tensor_value_info(quant.output[0], ix.inits[quant.input[0]].data_type, w.shape)]
            extra = sorted({u for n in chain for u in n.input[1:] if u})
            graph = helper.make_graph(chain, "movement", inputs, [onnx.ValueInfoProto(name=name)],
                                      [ix.inits[u] for u in extra])
            proto = helper.make_model(graph, opset_imports=self.w.opsets)
            w = run_ort(proto, feeds)[name]
        base = self.w.local(name)
        weight = self.w.names(base + "/float")
        self.w.body_inits.append(numpy_helper.from_array(np.ascontiguousarray(w), weight))
        params = [self.initializer(u, f"{base}/{label}") for u, label in zip(quant.input[1:4],
                                                                           ("scale", "zeropt", "bitwidth"))]
        new = onnx.NodeProto()
        new.CopyFrom(quant)
        new.name = self.w.names(base + "/quant")
        del new.input[:]
        new.input.extend([weight, *params])
        del new.output[:]
        new.output.append(base)
        self.w.body_nodes.append(new)
        self.w.body_vi[base] = self.w.declare(base, name)
        return base

    def copy(self, name: str) -> str:
        """Copy the nodes that compute constant `name` (down to initializers) into the body."""
        ix = self.w.ix
        p = ix.prod[name]
        node = ix.nodes[p[0]]
        new_name = self.w.local(node.name)
        inputs = [(self(u, new_name) if u else "") for u in node.input]
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = new_name
        del new.input[:]
        new.input.extend(inputs)
        del new.output[:]
        for t in node.output:
            if t and t not in self.computed:
                self.computed[t] = self.w.local(t)
            new.output.append(self.computed[t] if t else "")
            if t:
                self.w.body_vi[self.computed[t]] = self.w.declare(self.computed[t], t)
        self.w.body_nodes.append(new)
        return self.computed[name]


# ---------------------------------------------------------------------------------------
# the pass


def _downstream(ix: _Index, nodes: set[int]) -> set[int]:
    seen = set(nodes)
    work = list(nodes)
    while work:
        i = work.pop()
        for t in ix.nodes[i].output:
            for c, _ in ix.cons.get(t, ()):
                if c not in seen:
                    seen.add(c)
                    work.append(c)
    return seen


@register
class RollLoop(Pass):
    """Rolls every recurrence that an exporter unrolled into T copies of its time step
    back into one ONNX `Scan` (see the module docstring for the matching, its guarantees
    and its limits). Metrics: the loops written (steps, body nodes, states, scan inputs and
    outputs) and the recurrences found but left unrolled, with the reason."""

    name = "roll-loop"
    summary = "roll an unrolled recurrence (T copies of a time step) back into a Scan"
    contract = Contract.EXACT
    options = (
        Option("min-steps", int, 2, "roll only chains of at least this many steps"),
        Option("strict", bool, False, "raise when a recurrence is found but does not roll"),
    )

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        if self.min_steps < 2:
            raise UnsupportedError(f"roll-loop: min-steps must be at least 2 (got {self.min_steps})")
        graph = model.graph
        nodes_before = len(graph.node)
        self.metrics = {"loops": [], "not_rolled": []}
        original = (list(graph.node), list(graph.initializer))
        opset = next((op.version for op in model.model.opset_import if op.domain in ONNX_DOMAINS), 13)
        rewritten = _time_slices(graph, opset)
        model, rolled = self._roll(model)
        if not rolled and rewritten:  # give back the Splits and Slices as they were
            del graph.node[:]
            graph.node.extend(original[0])
            del graph.initializer[:]
            graph.initializer.extend(original[1])
        if rolled:
            self.metrics["nodes_before"] = nodes_before
            self.metrics["nodes_after"] = len(model.graph.node)
        return model, False

    def _roll(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        ix = _Index(model.graph)
        families, seed_of = _seeds(ix)
        if not any(len(f) >= 2 for f in families.values()):
            return model, False
        ix.mark_constants(set(seed_of))
        sigma = _shift_map(ix, families, seed_of)
        orbits = _Orbits(ix, sigma, seed_of)
        chains: list[_Chain] = []
        used: set[int] = set()
        for comp in orbits.components:
            seeds = [o for o in comp if orbits.seed[o] is not None]
            if not seeds:
                continue
            try:
                chain = _match(ix, orbits, comp, used)
                if chain.steps < self.min_steps:
                    raise _NoMatch(f"only {chain.steps} step(s) match")
                self._check_acyclic(ix, orbits, chain)
            except _NotRecurrence:
                continue
            except _NoMatch as e:
                first = ix.nodes[min(orbits.members[seeds[0]].values())]
                why = f"recurrence from node '{first.name}': {e}"
                if self.strict:
                    raise UnsupportedError(f"roll-loop: {why}") from None
                self.metrics["not_rolled"].append(why)
                continue
            chains.append(chain)
            used |= chain.nodes()
        if not chains:
            return model, False
        return self._rewrite(model, ix, orbits, chains), True

    @staticmethod
    def _check_acyclic(ix: _Index, orbits: _Orbits, chain: _Chain) -> None:
        """What enters the loop (initial states, time-indexed sources, tensors every step
        reads) must not depend on the loop itself."""
        inside = chain.nodes()
        after = _downstream(ix, inside)
        entering = list(chain.inits.values())
        entering += [orbits.seed[o][0] for o in chain.tmpl.seeds]
        entering += [k[1] for ins in chain.tmpl.inputs.values() for k in ins if k[0] == "outer"]
        for t in entering:
            p = ix.prod.get(t)
            if p is not None and p[0] in after:
                raise _NoMatch(f"'{t}' enters the loop but is computed from it")

    def _rewrite(self, model: ModelWrapper, ix: _Index, orbits: _Orbits, chains: list[_Chain]) -> ModelWrapper:
        graph = model.graph
        names = _Names(all_names(graph))
        datatypes = datatype_annotations(graph)
        removed: set[int] = set()
        placed: list[tuple[float, onnx.NodeProto]] = []
        new_inits: list[onnx.TensorProto] = []
        new_vi: list[onnx.ValueInfoProto] = []
        for chain in chains:
            writer = _Writer(ix, orbits, chain, names, list(model.model.opset_import), datatypes)
            writer.build()
            position = min(writer.removed)
            placed += [(position, n) for n in writer.outer_nodes]
            removed |= writer.removed
            new_inits += writer.outer_inits
            new_vi += writer.outer_vi
            self.metrics["loops"].append(writer.stats)
        kept = [(i, n) for i, n in enumerate(ix.nodes) if i not in removed]
        ordered = sorted([(float(i), k, n) for k, (i, n) in enumerate(kept)] +
                         [(p, len(kept) + k, n) for k, (p, n) in enumerate(placed)], key=lambda x: (x[0], x[1]))
        del graph.node[:]
        graph.node.extend(n for _, _, n in ordered)
        graph.initializer.extend(new_inits)
        _remove_dead(graph)
        sorted_nodes = _topological(graph)
        del graph.node[:]
        graph.node.extend(sorted_nodes)
        live = {t for n in graph.node for t in [*n.input, *n.output]} | {i.name for i in graph.input}
        live |= {o.name for o in graph.output} | {t.name for t in graph.initializer}
        for attr_node in graph.node:
            for attr in subgraph_attrs(attr_node):
                live |= free_names(attr.g)
        keep_vi = [vi for vi in graph.value_info if vi.name in live]
        del graph.value_info[:]
        graph.value_info.extend(keep_vi)
        graph.value_info.extend(vi for vi in new_vi if vi.name in live)
        keep_qa = [qa for qa in graph.quantization_annotation if qa.tensor_name in live]
        del graph.quantization_annotation[:]
        graph.quantization_annotation.extend(keep_qa)
        return model


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads (reference counts, linear), then unread
    initializers."""
    nodes = list(graph.node)
    readers: collections.Counter = collections.Counter()
    for n in nodes:
        readers.update(_reads(n))
    outputs = {o.name for o in graph.output}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    alive = [True] * len(nodes)

    def dead(i: int) -> bool:
        return all(not o or (readers[o] == 0 and o not in outputs) for o in nodes[i].output)

    work = [i for i in range(len(nodes)) if dead(i)]
    while work:
        i = work.pop()
        if not alive[i] or not dead(i):
            continue
        alive[i] = False
        for t in _reads(nodes[i]):
            readers[t] -= 1
            if readers[t] == 0 and t in producer and alive[producer[t]] and dead(producer[t]):
                work.append(producer[t])
    del graph.node[:]
    graph.node.extend(n for n, a in zip(nodes, alive) if a)
    unused = {t.name for t in graph.initializer if readers[t.name] <= 0 and t.name not in outputs}
    if unused:
        kept = [t for t in graph.initializer if t.name not in unused]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        inputs = [i for i in graph.input if i.name not in unused]  # IR < 4 lists initializers as inputs
        del graph.input[:]
        graph.input.extend(inputs)

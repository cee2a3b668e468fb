"""roll-loop, part 1: finding the steps of an unrolled recurrence and matching them against
one template step (the graph index, time-indexed seeds, the shift map, orbits, retiming).
See `flimcc.passes.roll_loop` for the method and its guarantees."""

from __future__ import annotations

import collections
import heapq

import numpy as np
import onnx
from onnx import helper, numpy_helper

from flimcc.errors import UnsupportedError

from .quantize import NameScope, all_names, free_names, subgraph_attrs

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
            index = NameScope(taken=taken)(f"{out}/time_index")
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

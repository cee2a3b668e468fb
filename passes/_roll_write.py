"""roll-loop, part 2: writing a matched recurrence as an ONNX Scan (names, the body, the
constants copied into it, the reads of its outputs). See `flimcc.passes.roll_loop`."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from flimcc.execute import run_ort

from ._roll_match import _MOVEMENT_OPS, _WEIGHT_QUANTS, ONNX_DOMAINS, _attr, _Chain, _Index, _Orbits
from .quantize import NameScope



# ---------------------------------------------------------------------------------------
# Writing the Scan


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

    def __init__(self, ix: _Index, orbits: _Orbits, chain: _Chain, names: NameScope,
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


"""Per-pixel task graphs of a GRU sequence model, at the granularity of the seeds' STOMP DAGs.

The graph comes from the model itself: flimcc's front end brings any GRU seq2seq ONNX/QONNX
model to loops (`unroll-gru` for GRU nodes, `roll-loop` for an unrolled export, then
`fold-constants`), and every op of one time step is lowered to scalar-row tasks
(`_Lowering`), as the seeds' graphs are built (`../shared/reference/seeds.md` 9.2):

- a product x @ W with constant W (K x N): for each input row k, a read of x[k] (shared
  memory for a recurrent state, data memory otherwise; one read per element and step,
  shared by every product that uses it), a read of W's row k (constant memory), a multiply
  (DSP) and an add onto the accumulation chain; a bias: a constant read and an add;
- an elementwise Add/Sub/Mul of vectors: one DSP task (a constant operand adds its read);
- Sigmoid and Tanh: the pre-activation read from data memory, sinh/cosh, add, divide (the
  seeds' exact activations); Clip (the hard sigmoid's): one DSP task;
- the new state: one write per element to shared memory, which the next step's reads wait
  for;
- Quant, Split, Transpose and the other data movements: no task (the quantizer is the
  fixed-point arithmetic the DSP tasks already do).

A product whose input is zero is dropped with its reads (the decoder's zero inputs: only
the biases remain). Stages: the loops chained by sequences form one stage; a loop whose
state starts from another stage's final state starts the next one ("encoder", "decoder");
the lifetime read-out is the "post" stage (per step, each decay component read, scaled by
the gate width and accumulated; at the last step the lifetimes and amplitude fractions
divided out). Each stage is its own graph per pixel, as STOMP's traces run them.

Switches for the seeds' pitfalls (`Options`): `gru_form` rewrites GRU nodes to the
reset-after or reset-before form before lowering (the seeds' 2024 Seq2SeqLite graphs use
reset-after, while the QKeras model is reset-before, which puts the candidate's product
behind r); `fuse_chains` accumulates a layer's x @ W and h @ U in one chain (the seeds'
teacher graphs) instead of two chains and an add, where the model adds the input
projection as the recurrent product's bias (a Gemm's C, as `unroll-gru` writes GRU nodes);
`chain_stages` makes one graph per pixel ("pixel") in which the decoder waits for the
encoder's final state writes and the read-out for the decoder's outputs, instead of
STOMP's separate graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from flimcc.errors import UnsupportedError

from .service import ServiceTable

#: ops that move or relabel data: their outputs are their inputs (no task)
ALIAS_OPS = {"Identity", "Quant", "IntQuant", "BipolarQuant", "Trunc", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
             "Flatten", "Cast", "Gather", "Concat", "Split", "Slice", "Expand", "Dropout"}
GRU_FORMS = ("model", "reset-after", "reset-before")


@dataclass(frozen=True)
class Options:
    """What graph to build: `steps` time steps per graph (T-step DAGs chain the states),
    `gru_form`, `fuse_chains` and `chain_stages` as in the module docstring."""

    steps: int = 1
    gru_form: str = "model"
    fuse_chains: bool = False
    chain_stages: bool = False


@dataclass
class TaskGraph:
    """One pixel's tasks in program order (every dependency has a smaller id)."""

    name: str
    kinds: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    preds: list[tuple[int, ...]] = field(default_factory=list)

    def add(self, kind: str, label: str, deps) -> int:
        self.kinds.append(kind)
        self.labels.append(label)
        self.preds.append(tuple(sorted({d for d in deps if d is not None})))
        return len(self.kinds) - 1

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def edges(self) -> list[tuple[int, int]]:
        return [(a, b) for b, ps in enumerate(self.preds) for a in ps]

    def times(self, table: ServiceTable) -> list[int]:
        return [table.time(k) for k in self.kinds]

    def work(self, table: ServiceTable) -> dict[str, int]:
        """Service time per server type, summed over the tasks."""
        out = dict.fromkeys(table.servers, 0)
        for k in self.kinds:
            out[table.server(k)] += table.time(k)
        return out

    def counts(self, table: ServiceTable) -> dict[str, int]:
        out = dict.fromkeys(table.servers, 0)
        for k in self.kinds:
            out[table.server(k)] += 1
        return out

    def critical_path(self, table: ServiceTable) -> int:
        """The longest chain of service times (what one pixel takes on unlimited servers)."""
        finish = []
        for t, ps in zip(self.times(table), self.preds):
            finish.append(max((finish[p] for p in ps), default=0) + t)
        return max(finish, default=0)

    def bottom_levels(self, table: ServiceTable) -> list[int]:
        """Each task's longest path to the end, its own time included (the critical-path
        policy's priority)."""
        times = self.times(table)
        succs: list[list[int]] = [[] for _ in self.kinds]
        for a, b in self.edges:
            succs[a].append(b)
        level = [0] * len(times)
        for i in range(len(times) - 1, -1, -1):
            level[i] = times[i] + max((level[s] for s in succs[i]), default=0)
        return level

    def to_json(self, table: ServiceTable) -> dict:
        """``{"tasks": [{"id", "type", "time", "kind", "name"}], "edges": [[a, b]]}``; type
        is the server type."""
        return {"graph": self.name,
                "tasks": [{"id": i, "type": table.server(k), "time": table.time(k), "kind": k, "name": lab}
                          for i, (k, lab) in enumerate(zip(self.kinds, self.labels))],
                "edges": [list(e) for e in self.edges]}


# ---------------------------------------------------------------------------------------
# Values of one step


@dataclass
class _Value:
    """A tensor within one step: where it lives and which tasks it waits for.

    kind: "zero" / "const" (constant memory) / "shared" (a recurrent state: per element)
    / "data" (an intermediate or an input: data memory). `deps`: the tasks producing the
    whole vector; `elems`: per element (shared values and inputs)."""

    kind: str
    width: int
    deps: tuple[int, ...] = ()
    elems: tuple[tuple[int, ...], ...] | None = None
    chain: int | None = None  # the last add of the product that made it (fuse_chains)


def prepare(model, options: Options):
    """The model brought to loops (Scan nodes, one per recurrent layer) with constants folded."""
    from flimcc.pipeline import Pipeline

    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    if options.gru_form != "model":
        if not grus:
            raise UnsupportedError(f"--gru-form {options.gru_form}: the model has no GRU nodes (an unrolled export "
                                   f"keeps its own form)")
        for n in grus:
            attrs = [a for a in n.attribute if a.name != "linear_before_reset"]
            del n.attribute[:]
            n.attribute.extend(attrs + [onnx.helper.make_attribute("linear_before_reset",
                                                                   int(options.gru_form == "reset-after"))])
    text = ("unroll-gru" if grus else "roll-loop") + ",fold-constants"
    try:
        return Pipeline.parse(text).run(model, verify=False).model
    except UnsupportedError as e:
        raise UnsupportedError(f"no GRU recurrence to schedule ({e})") from None


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Graph:
    """Where a graph's (or a loop body's) tensors come from: initializers (with the
    enclosing graph's), producers, shapes."""

    def __init__(self, graph: onnx.GraphProto, shapes: dict[str, list[int]], outer: _Graph | None = None):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.shapes = shapes
        self.outer = outer

    def init(self, name: str):
        if name in self.inits:
            return onnx.numpy_helper.to_array(self.inits[name])
        return self.outer.init(name) if self.outer is not None else None

    def const_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of a constant tensor: an initializer, or one behind quantizers,
        identities and transposes of one."""
        arr = self.init(name)
        if arr is not None:
            return arr.shape
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type in ("Quant", "IntQuant", "Identity", "Trunc", "Cast"):
            return self.const_shape(node.input[0])
        if node.op_type == "Transpose":
            inner = self.const_shape(node.input[0])
            perm = _attr(node, "perm", list(range(len(inner or ())))[::-1])
            return None if inner is None else tuple(inner[p] for p in perm)
        return self.shapes.get(name)

    def width(self, name: str) -> int:
        shape = self.shapes.get(name) or self.const_shape(name)
        return int(shape[-1]) if shape else 1


def _shapes(model) -> dict[str, list[int]]:
    out = {}
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            dims = vi.type.tensor_type.shape.dim
            out[vi.name] = [d.dim_value for d in dims]
        for t in g.initializer:
            out[t.name] = list(t.dims)
        for n in g.node:
            graphs += [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    return out


# ---------------------------------------------------------------------------------------
# Stages


def _stages(g: _Graph) -> tuple[list[onnx.NodeProto], dict[str, int]]:
    """The loops in order and each node's stage (loops chained by sequences share a stage;
    a loop whose state comes from a loop of an earlier stage starts the next)."""
    nodes = list(g.graph.node)
    loops = [n for n in nodes if n.op_type == "Scan"]
    if not loops:
        raise UnsupportedError("no recurrent loop (GRU) to schedule")
    loop_of_output = {o: n for n in loops for o in n.output}

    def upstream(name: str, seen=None) -> set[str]:
        """The loops whose outputs reach tensor `name` through non-loop nodes."""
        seen = set() if seen is None else seen
        if name in seen:
            return set()
        seen.add(name)
        if name in loop_of_output:
            return {loop_of_output[name].name}
        node = g.producer.get(name)
        return set().union(*(upstream(i, seen) for i in node.input if i)) if node is not None else set()

    stage: dict[str, int] = {}
    for loop in loops:
        n_state = len(loop.input) - _attr(loop, "num_scan_inputs")
        seq_from = set().union(*(upstream(i) for i in loop.input[n_state:] if i))
        state_from = set().union(*(upstream(i) for i in loop.input[:n_state] if i))
        if seq_from:
            stage[loop.name] = max(stage[s] for s in seq_from)
        elif state_from:
            stage[loop.name] = max(stage[s] for s in state_from) + 1
        else:
            stage[loop.name] = max(stage.values(), default=-1) + 1
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def downstream(node, seen) -> int | None:
        """The stage of the first loop this node's outputs feed as a sequence."""
        for o in node.output:
            for c in consumers.get(o, []):
                if c.op_type == "Scan":
                    n_state = len(c.input) - _attr(c, "num_scan_inputs")
                    if o in c.input[n_state:]:
                        return stage[c.name]
                elif c.name not in seen:
                    seen.add(c.name)
                    s = downstream(c, seen)
                    if s is not None:
                        return s
        return None

    for n in nodes:
        if n.op_type == "Scan":
            continue
        s = downstream(n, set())
        if s is None:
            ups = set().union(*(upstream(i) for i in n.input if i))
            s = max((stage[u] for u in ups), default=0)
        stage[n.name] = s
    return loops, stage


def stage_name(index: int, count: int) -> str:
    names = ["encoder", "decoder"] if count <= 2 else [f"stage{k + 1}" for k in range(count)]
    return names[index]


# ---------------------------------------------------------------------------------------
# Lowering


class _Lowering:
    """Tasks of one stage for `steps` steps, into `tg`."""

    def __init__(self, tg: TaskGraph, g: _Graph, stage: dict[str, int], current: int, options: Options,
                 carry: dict[str, _Value] | None = None):
        self.tg, self.g, self.stage, self.current, self.options = tg, g, stage, current, options
        self.carry = carry  # the earlier stages' last values, their tasks in `tg` (chain_stages)
        self.loop_states: dict[str, list[_Value]] = {}

    # -- helpers ------------------------------------------------------------------------

    def task(self, kind: str, label: str, deps) -> int:
        return self.tg.add(kind, f"t{self.t}/{label}", deps)

    def read_elem(self, v: _Value, k: int, key: str) -> int | None:
        """The task reading element k of v (one per element and step)."""
        if v.kind in ("zero", "const"):
            return None
        cache_key = (key, k)
        if cache_key not in self.reads:
            if v.kind == "shared":
                self.reads[cache_key] = self.task("read_hidden", f"{key}[{k}]", v.elems[k] if v.elems else ())
            else:
                deps = v.elems[k] if v.elems else v.deps
                self.reads[cache_key] = self.task("read_data", f"{key}[{k}]", deps)
        return self.reads[cache_key]

    def operand(self, v: _Value, key: str, label: str) -> tuple[int, ...]:
        """What a vector op waits for to use v whole."""
        if v.kind == "const":
            return (self.task("read_const", f"{label}/read {key}", ()),)
        if v.kind == "zero":
            return ()
        if v.kind == "shared" or v.elems is not None:
            return tuple(self.read_elem(v, k, key) for k in range(v.width))
        return v.deps

    def value(self, name: str, env: dict[str, _Value], g: _Graph) -> _Value:
        """`name` in this step: computed, else an initializer (the body's or an enclosing
        graph's)."""
        if name not in env:
            arr = g.init(name)
            if arr is None:
                raise UnsupportedError(f"tensor '{name}' is used before it is computed")
            env[name] = _Value("zero" if not np.any(arr) else "const", int(arr.shape[-1]) if arr.ndim else 1)
        return env[name]

    # -- ops ----------------------------------------------------------------------------

    def matvec(self, label: str, x: _Value, xkey: str, w_shape, bias: _Value | None, bkey: str) -> _Value:
        k_in, n_out = int(w_shape[0]), int(w_shape[1])
        if x.kind == "zero":  # a zero input: the product vanishes with its reads
            return bias if bias is not None else _Value("zero", n_out)
        fuse = self.options.fuse_chains and bias is not None and bias.kind == "data" and bias.chain is not None
        acc = bias.chain if fuse else None
        for k in range(k_in):
            rx = self.read_elem(x, k, xkey)
            rw = self.task("read_const", f"{label}/read_w[{k}]", ())
            m = self.task("multiply", f"{label}/multiply[{k}]", (rx, rw))
            acc = m if acc is None else self.task("add", f"{label}/add[{k}]", (acc, m))
        if bias is not None and bias.kind != "zero" and not fuse:
            acc = self.task("add", f"{label}/add_bias", (acc, *self.operand(bias, bkey, label)))
        return _Value("data", n_out, (acc,), chain=acc)

    def node(self, node, env: dict[str, _Value], g: _Graph, emit: bool) -> None:
        op = node.op_type
        if not emit and self.carry is not None and all(o in self.carry for o in node.output):
            for o in node.output:  # an earlier stage's result, waited for in this graph
                env[o] = self.carry[o]
            return
        ins = [self.value(i, env, g) if i else None for i in node.input]
        label = node.name or node.output[0]
        if op == "Scan":
            self.loop(node, env, g, emit)
            return
        if all(v is None or v.kind in ("zero", "const") for v in ins):  # constant folding's leftovers
            zero = op in ("MatMul", "Mul") and any(v is not None and v.kind == "zero" for v in ins)
            for o in node.output:
                env[o] = _Value("zero" if zero else "const", g.width(o))
            return
        if not emit:  # another stage computes it: available in memory when this stage runs
            for o in node.output:
                env[o] = _Value("shared" if any(v is not None and v.kind == "shared" for v in ins) else "data",
                                g.width(o))
            return
        if op in ALIAS_OPS:
            self.alias(node, ins, env, g)
        elif op in ("MatMul", "Gemm"):
            x, w = ins[0], node.input[1]
            if ins[1] is None or ins[1].kind not in ("const", "zero"):
                raise UnsupportedError(f"node '{label}': a {op} of two computed tensors (only x @ constant W)")
            shape = g.const_shape(w)
            if shape is None or len(shape) != 2:
                raise UnsupportedError(f"node '{label}': weights of shape {shape}, not (K, N)")
            if op == "Gemm" and _attr(node, "transB", 0):
                shape = shape[::-1]
            if op == "Gemm" and _attr(node, "transA", 0):
                raise UnsupportedError(f"node '{label}': Gemm with transA")
            bias = ins[2] if op == "Gemm" and len(ins) > 2 else None
            env[node.output[0]] = self.matvec(label, x, node.input[0], shape, bias, node.input[2] if bias else "")
        elif op in ("Add", "Sub", "Mul", "Div"):
            a, b = ins
            zero_a, zero_b = a.kind == "zero", b.kind == "zero"
            if op == "Add" and (zero_a or zero_b):
                env[node.output[0]] = b if zero_a else a
            elif op == "Sub" and zero_b:
                env[node.output[0]] = a
            elif op == "Mul" and (zero_a or zero_b):
                env[node.output[0]] = _Value("zero", g.width(node.output[0]))
            else:
                kind = {"Add": "add", "Sub": "sub", "Mul": "multiply", "Div": "divide"}[op]
                deps = self.operand(a, node.input[0], label) + self.operand(b, node.input[1], label)
                t = self.task(kind, f"{label}/{kind}", deps)
                # a bias added to a product stays on its accumulation chain (fuse_chains)
                chain = t if op == "Add" and (a.chain is not None or b.chain is not None) else None
                env[node.output[0]] = _Value("data", g.width(node.output[0]), (t,), chain=chain)
        elif op in ("Sigmoid", "Tanh"):
            x = ins[0]
            read = self.task("read_data", f"{label}/read_input", self.operand(x, node.input[0], label)
                             if x.kind != "data" or x.elems is not None else x.deps)
            sc = self.task("sinh_cosh", f"{label}/sinh_cosh", (read,))
            add = self.task("add", f"{label}/add", (sc,))
            div = self.task("divide", f"{label}/divide", (add,))
            env[node.output[0]] = _Value("data", g.width(node.output[0]), (div,))
        elif op == "Clip":
            t = self.task("clip", f"{label}/clip", self.operand(ins[0], node.input[0], label))
            env[node.output[0]] = _Value("data", g.width(node.output[0]), (t,))
        elif op == "HardSigmoid":
            m = self.task("multiply", f"{label}/multiply", self.operand(ins[0], node.input[0], label))
            a = self.task("add", f"{label}/add", (m,))
            t = self.task("clip", f"{label}/clip", (a,))
            env[node.output[0]] = _Value("data", g.width(node.output[0]), (t,))
        else:
            raise UnsupportedError(f"node '{label}': {op} has no task lowering (supported: MatMul/Gemm with constant "
                                   f"weights, Add/Sub/Mul/Div, Sigmoid, Tanh, Clip, HardSigmoid, data movement)")

    def alias(self, node, ins, env, g: _Graph) -> None:
        src = ins[0]
        if node.op_type == "Split":  # element slices of the input
            offset = 0
            for o in node.output:
                w = g.width(o)
                elems = src.elems[offset:offset + w] if src.elems else None
                env[o] = _Value(src.kind, w, src.deps, elems, src.chain)
                offset += w
            return
        if node.op_type == "Concat":
            parts = [v for v in ins if v is not None]
            kinds = {v.kind for v in parts}
            width = g.width(node.output[0])
            if kinds <= {"shared", "data"} and any(v.elems for v in parts):
                elems = tuple(e for v in parts for e in (v.elems or (v.deps,) * v.width))
                env[node.output[0]] = _Value("shared" if "shared" in kinds else "data", width, (), elems)
            else:
                deps = tuple(d for v in parts for d in v.deps)
                env[node.output[0]] = _Value(parts[0].kind if len(kinds) == 1 else "data", width, deps)
            return
        for o in node.output:
            env[o] = _Value(src.kind, g.width(o), src.deps, src.elems, src.chain)

    def loop(self, node, env: dict[str, _Value], g: _Graph, emit: bool) -> None:
        body = _attr(node, "body")
        bg = _Graph(body, g.shapes, g)
        n_scan = _attr(node, "num_scan_inputs")
        n_state = len(node.input) - n_scan
        name = node.name
        if not emit:
            for o in node.output:
                env[o] = _Value("shared", g.width(o), (), None)
            return
        if name not in self.loop_states:  # step 0: the initial states
            self.loop_states[name] = [self.value(i, env, g) if i else _Value("zero", bg.width(body.input[k].name))
                                      for k, i in enumerate(node.input[:n_state])]
        benv: dict[str, _Value] = {}
        for k, binput in enumerate(body.input):
            if k < n_state:
                v = self.loop_states[name][k]
                width = bg.width(binput.name)
                if v.kind in ("zero", "const"):
                    benv[binput.name] = _Value("shared", width, (), tuple(() for _ in range(width)))
                else:
                    elems = v.elems if v.elems is not None else tuple(v.deps for _ in range(width))
                    benv[binput.name] = _Value("shared", width, (), elems)
            else:
                benv[binput.name] = self.value(node.input[k], env, g)
        for bnode in body.node:
            self.node(bnode, benv, bg, True)
        new_states = []
        for k, bout in enumerate(body.output[:n_state]):
            v = benv[bout.name]
            writes = tuple((self.task("write_hidden", f"{name}/write_h[{j}]",
                                      v.elems[j] if v.elems else v.deps),) for j in range(v.width))
            new_states.append(_Value("shared", v.width, (), writes))
        self.loop_states[name] = new_states
        for k, o in enumerate(node.output):
            if k < n_state:
                env[o] = new_states[k]
            else:  # a scan output: this step's value; a state's copy reads from shared memory
                bout = body.output[k].name
                v = benv[bout]
                same_state = [s for j, s in enumerate(body.output[:n_state])
                              if _same(body, bout, s.name)]
                env[o] = new_states[[s.name for s in body.output[:n_state]].index(same_state[0].name)] \
                    if same_state else v

    def step(self, t: int) -> dict[str, _Value]:
        self.t = t
        self.reads: dict = {}
        env: dict[str, _Value] = {}
        for inp in self.g.graph.input:
            if inp.name not in self.g.inits:
                env[inp.name] = _Value("data", self.g.width(inp.name))
        for n in self.g.graph.node:
            self.node(n, env, self.g, self.stage[n.name] == self.current)
        return env


def _same(body: onnx.GraphProto, a: str, b: str) -> bool:
    """Whether body tensor a is b passed through identities (a scan output that copies a state)."""
    producer = {o: n for n in body.node for o in n.output}
    seen = set()
    while a not in seen:
        if a == b:
            return True
        seen.add(a)
        node = producer.get(a)
        if node is None or node.op_type not in ("Identity",):
            return False
        a = node.input[0]
    return False


def _post(tg: TaskGraph, width: int, deps_at: list[tuple[int, ...]]) -> None:
    """The lifetime read-out (one graph per pixel, `deps_at[t]` the decoder's output of
    step t or none): per step each component read, scaled by the gate width and
    accumulated (the area); at the last step each lifetime (area over initial value) and
    the amplitude fractions divided out and written."""
    sums: list[int | None] = [None] * width
    first = [None] * width
    for t, deps in enumerate(deps_at):
        for c in range(width):
            r = tg.add("read_data", f"t{t}/post/read y[{c}]", deps)
            if t == 0:
                first[c] = r
            k = tg.add("read_const", f"t{t}/post/read dt", ())
            m = tg.add("multiply", f"t{t}/post/scale[{c}]", (r, k))
            sums[c] = m if sums[c] is None else tg.add("add", f"t{t}/post/accumulate[{c}]", (sums[c], m))
    last = len(deps_at) - 1
    for c in range(width):
        tau = tg.add("divide", f"t{last}/post/tau[{c}]", (sums[c], first[c]))
        tg.add("write_data", f"t{last}/post/write tau[{c}]", (tau,))
    total = tg.add("add", f"t{last}/post/amplitude_sum", first)
    for c in range(width):
        frac = tg.add("divide", f"t{last}/post/fraction[{c}]", (first[c], total))
        tg.add("write_data", f"t{last}/post/write fraction[{c}]", (frac,))


def stage_graphs(model, options: Options = Options()) -> dict[str, TaskGraph]:
    """One pixel's task graph per stage ("encoder", "decoder", ..., "post"), each over
    `options.steps` steps, from a GRU seq2seq model (a ModelWrapper as `flimcc.load` gives)."""
    if options.steps < 1:
        raise UnsupportedError(f"--steps is {options.steps}; it must be >= 1")
    if options.gru_form not in GRU_FORMS:
        raise UnsupportedError(f"--gru-form is '{options.gru_form}'; it must be one of {', '.join(GRU_FORMS)}")
    model = prepare(model, options)
    g = _Graph(model.graph, _shapes(model))
    loops, stage = _stages(g)
    count = max(stage[n.name] for n in loops) + 1
    out: dict[str, TaskGraph] = {}
    outputs = [o.name for o in model.graph.output]
    post_deps: list[tuple[int, ...]] = []
    whole = TaskGraph("pixel") if options.chain_stages else None
    carry: dict[str, _Value] | None = {} if whole is not None else None
    for s in range(count):
        tg = whole if whole is not None else TaskGraph(stage_name(s, count))
        low = _Lowering(tg, g, stage, s, options, carry)
        for t in range(options.steps):
            env = low.step(t)
            if s == count - 1:
                post_deps.append(tuple(d for o in outputs if o in env for d in env[o].deps))
        if whole is None:
            out[tg.name] = tg
        else:
            carry = {**carry, **env}
    width = min(g.width(o) for o in outputs)
    if whole is not None:  # the read-out waits for the decoder's outputs
        _post(whole, width, post_deps)
        return {"pixel": whole}
    post = TaskGraph("post")
    _post(post, width, [() for _ in post_deps])  # its own graph: the decoder's outputs are in memory
    out["post"] = post
    return out

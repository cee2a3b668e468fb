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

import onnx
from qonnx.core.modelwrapper import ModelWrapper

from flimcc.analysis import datatype_annotations
from flimcc.errors import UnsupportedError
from flimcc.passbase import Contract, Option, Pass, register

from ._roll_match import (ONNX_DOMAINS, _Chain, _Index, _match, _NoMatch, _NotRecurrence, _Orbits, _reads,
                          _seeds, _shift_map, _time_slices, _topological)
from ._roll_write import _Writer
from .quantize import NameScope, all_names, free_names, subgraph_attrs


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
        names = NameScope(taken=all_names(graph))
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


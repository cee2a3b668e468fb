"""A compiled build's recurrent loops as a SimPy dataflow: each hardware node a server with
its cycles, each stream a bounded queue at its FIFO's depth, the loop's feedback carrying
P interleaved pixels -- the same question as the STOMP study, asked of the design flimcc
built, and checked against the analytic estimate the compiler reports.

Granularity: one token is one pixel's vector at one step. A node waits for a token on
every streamed input, holds for its cycles per vector (FINN's `get_exp_cycles` at batch 1,
as the estimate uses), then puts a token on each output, waiting while a queue is full
(backpressure). A StreamingFIFO holds depth / words-per-vector tokens (at least one); a
stream without one holds one token (the producer's output register). The controller feeds
the body's state inputs: the initial states at step 0, then each pixel's state from the
state FIFO, after `step_overhead` cycles per step; the loop's sequence inputs are always
ready and its outputs always drained, so the loop is measured alone, as the estimate
treats it. Moving whole vectors is store-and-forward, which is what FINN's
critical-path latency (the sum of the nodes' cycles) assumes too; the estimate is
max(P x II, L) + overhead per step. Where P x II dominates (the shipped designs) the
simulation finds the controller's overhead hidden behind the pipeline's drain and agrees
with Verilator; where the latency dominates (small P) the RTL, streaming words through,
is faster than both (tests/test_schedule.py). FIFOs shallower than a vector are modelled
as holding one: the word-level stalls that sizing by RTL simulation removes are not seen.

`steps` steps are simulated (default: all); fewer are extrapolated from the last
simulated step's cycles.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from flimcc.errors import UnsupportedError


def _timed_body(loop):
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    from flimcc.hw.recurrent_loop import rebatch

    body = loop.hardware_body()
    if any(body.get_tensor_shape(i.name)[0] != 1 for i in body.graph.input):
        body = rebatch(body, 1)
    return body.transform(AnnotateCycles(), cleanup=False)


def _words(inst) -> int:
    """Stream beats per vector: the folded shape without its last (parallel) axis."""
    try:
        shape = inst.get_folded_output_shape()
    except Exception:  # noqa: BLE001 - an op without a folded shape moves whole vectors
        return 1
    return max(1, math.prod(int(d) for d in shape[:-1]))


class _Stream:
    """A stream holding `capacity` vectors; 0: none -- a producer waits until its vector is
    taken (a FIFO shallower than one vector, or a plain connection: the producer cannot run
    a vector ahead of its consumer)."""

    def __init__(self, env, capacity: int):
        import simpy

        self.env = env
        self.store = simpy.Store(env, capacity=max(capacity, 1))
        self.rendezvous = capacity == 0
        self.put_count = self.taken_count = 0
        self.waiter = None

    def put(self):
        yield self.store.put(1)
        self.put_count += 1
        while self.rendezvous and self.taken_count < self.put_count:
            self.waiter = self.env.event()
            yield self.waiter

    def get(self):
        yield self.store.get()
        self.taken_count += 1
        if self.waiter is not None and not self.waiter.triggered:
            self.waiter.succeed()


def simulate_loop(node, loop, steps: int | None = None) -> dict:
    """Cycles of one RecurrentLoop as a dataflow (module docstring): the simulated cycles
    per pixel against the estimate's."""
    import simpy
    from qonnx.custom_op.registry import getCustomOp

    body = _timed_body(loop)
    g = body.graph
    pixels, iterations = loop.get_nodeattr("pixels"), loop.get_nodeattr("iterations")
    overhead, n_state = loop.get_nodeattr("step_overhead"), loop.get_nodeattr("num_state")
    steps = iterations if steps is None else max(1, min(int(steps), iterations))
    inits = {t.name for t in g.initializer}
    env = simpy.Environment()
    queues: dict[str, _Stream] = {}
    capacity: dict[str, int] = {}
    for n in g.node:
        inst = getCustomOp(n)
        if n.op_type.startswith("StreamingFIFO"):
            capacity[n.output[0]] = int(inst.get_nodeattr("depth")) // _words(inst)
    for name in [i.name for i in g.input] + [o for n in g.node for o in n.output]:
        queues[name] = _Stream(env, capacity.get(name, 0))
    busy: dict[str, int] = {}

    def server(n, cycles: int):
        ins = [queues[i] for i in n.input if i and i not in inits and i in queues]
        outs = [queues[o] for o in n.output]
        while True:
            for q in ins:
                yield from q.get()
            if cycles:
                yield env.timeout(cycles)
                busy[n.name] = busy.get(n.name, 0) + cycles
            for q in outs:
                yield from q.put()

    for n in g.node:
        cycles = 0 if n.op_type.startswith(("StreamingFIFO", "StreamingDataWidthConverter")) \
            else int(getCustomOp(n).get_nodeattr("cycles_estimate") or 0)
        env.process(server(n, cycles))
    b_in = [i.name for i in g.input]
    b_out = [o.name for o in g.output]
    step_start: list[int] = []

    def controller():
        for t in range(steps):
            if overhead:
                yield env.timeout(overhead)
            step_start.append(env.now)
            for _ in range(pixels):
                for k in range(n_state):
                    if t:
                        yield from queues[b_out[k]].get()
                    yield from queues[b_in[k]].put()
        for _ in range(pixels):  # the last step's states leave the loop
            for k in range(n_state):
                yield from queues[b_out[k]].get()

    def source(name: str):
        for _ in range(steps * pixels):
            yield from queues[name].put()

    def sink(name: str):
        for k in range(steps * pixels):
            yield from queues[name].get()
            if (k + 1) % pixels == 0:
                done_steps[name].append(env.now)

    done_steps: dict[str, list[int]] = {}
    for name in b_in[n_state:]:
        env.process(source(name))
    for name in b_out[n_state:]:
        done_steps[name] = []
        env.process(sink(name))
    ctl = env.process(controller())
    env.run(until=ctl)
    if any(len(v) < steps for v in done_steps.values()):
        raise UnsupportedError(f"loop '{node.name}': the dataflow deadlocked (a FIFO too shallow for a fork)")
    cycles = env.now
    if steps < iterations:  # the rest at the pace of the last simulated step
        per_step = step_start[-1] - step_start[-2] if steps > 1 else cycles
        cycles = cycles + (iterations - steps) * per_step
    estimated = loop.get_exp_cycles()
    return {"loop": node.name, "pixels": pixels, "iterations": iterations, "steps_simulated": steps,
            "cycles": round(cycles), "cycles_per_pixel": cycles / pixels,
            "estimated_cycles_per_pixel": estimated / pixels, "ratio": cycles / estimated,
            "busiest_node": max(busy, key=busy.get) if busy else None}


def simulate_build(build: str | Path, steps: int | None = None) -> dict:
    """Every loop of the build folder's design (`simulate_loop`), the bottleneck's cycles per
    pixel against the design's estimate and, where `flimcc rtlsim` ran, its measurement."""
    import flimcc
    from flimcc.layout import loop_nodes

    build = Path(build)
    model_path = build / "model.onnx"
    if not model_path.is_file():
        raise UnsupportedError(f"{build}: not a flimcc build folder (no model.onnx)")
    try:
        summary = json.loads((build / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    model = flimcc.load(model_path)
    loops = [simulate_loop(n, inst, steps) for n, inst in loop_nodes(model)]
    if not loops:
        raise UnsupportedError(f"{build}: the design has no recurrent loop")
    measured = (summary.get("rtlsim") or {}).get("loops") or {}
    for r in loops:
        r["rtlsim_cycles_per_pixel"] = (measured.get(r["loop"]) or {}).get("cycles_per_pixel")
    worst = max(loops, key=lambda r: r["cycles_per_pixel"])
    depths = summary.get("fifo_depths")
    sized = not (isinstance(depths, str) and depths.startswith("not sized"))
    return {"build": str(build), "loops": loops, "bottleneck": worst["loop"], "fifos_sized": sized,
            "cycles_per_pixel": worst["cycles_per_pixel"],
            "estimated_cycles_per_pixel": summary.get("cycles_per_pixel"),
            "simulator": "SimPy, a token per vector"}

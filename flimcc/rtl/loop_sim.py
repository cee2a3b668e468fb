"""One RecurrentLoop of a compiled design as RTL under Verilator, fed what flimcc's executor
fed it, its outputs compared bit for bit; and the sizing of its FIFOs by simulation.

The loop's RTL (`flimcc.rtl.loop`) runs frames of P pixels: a frame streams every step's
x_t of its P interleaved pixels (step-major), and its initial state (P vectors) unless the
state starts at zero. N pixels (a multiple of P) are N / P frames back to back; the
executor's tensors over N pixels are reordered into that stream order and back.

FIFO sizing follows FINN's recipe with Verilator instead of Vivado's simulator: every FIFO
of the body becomes FINN's unbounded ``fifo_gauge`` (``FINN_SIMULATION``), the run logs
each FIFO's highest fill, and the depth becomes that fill, at least 2 and at most one
step's beats on its stream (P vectors: no stream of a step holds more; the FIFOs behind
the loop's x_t inputs would otherwise grow with the whole input the testbench offers).
Then `settle_fifos` widens the joins' FIFOs until the sized loop is as fast as the gauge
run (the highest fill of an unbounded run is not always enough room once bounded).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.errors import UnsupportedError
from flimcc.rtl.finn_hdl import beats_to_array, stream_beats
from flimcc.rtl.harness import Stream, fifo_fills, simulate
from flimcc.rtl.loop import check_loop_rtl, hardware_body, loop_hdl
from flimcc.rtl.stitch import stream_port


@dataclasses.dataclass
class LoopRun:
    """What one simulation of a loop gave."""

    loop: str
    steps: int  # T
    pixels: int  # P, per frame
    frames: int
    cycles: int  # first input beat accepted to last output beat accepted
    estimated_cycles: int  # the loop model's, for the same frames
    bit_exact: bool
    fifo_fill: dict[str, int]  # highest fill per FIFO (gauge runs only)
    hdl_seconds: float
    build_seconds: float  # Verilator build (0 on a cache hit: builds are cached by content)
    run_seconds: float  # the simulation

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _to_frames(a: np.ndarray, p: int, sequence: bool) -> np.ndarray:
    """(1, T, N, C) sequence or (N, C) state over N = F*P pixels -> stream order
    (F, T, P, C) or (F, P, C)."""
    if sequence:
        _, t, n, c = a.shape
        return a.reshape(t, n // p, p, c).transpose(1, 0, 2, 3)
    n, c = a.shape
    return a.reshape(n // p, p, c)


def _from_frames(a: np.ndarray, like: np.ndarray, sequence: bool) -> np.ndarray:
    if sequence:
        return a.transpose(1, 0, 2, 3).reshape(like.shape)
    return a.reshape(like.shape)


def run_loop(model: ModelWrapper, node, context: dict, workdir: Path, fpgapart: str, clk_ns: float,
             fifo_depths: dict[str, int] | None = None, gauge: bool = False, gap_percent: int = 0,
             stall_percent: int = 0, seed: int = 1, max_cycles: int | None = None) -> LoopRun:
    """Simulate loop `node` on the tensors `context` holds for its inputs (an executor run
    of `model` with ``return_context``), compare with the outputs there. A stall raises
    `flimcc.rtl.verilator.SimulatorError` naming the beats each output still owes."""
    check_loop_rtl(node)
    inst = getCustomOp(node)
    n_state, zero, p = inst.get_nodeattr("num_state"), inst._zero_flags(), inst.get_nodeattr("pixels")
    body = hardware_body(inst.body(), node.name, n_state, fifo_depths)
    read = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    ins = [context[t] for t in node.input if t]
    outs = [context[t] for t in node.output]
    n_pix = (outs[0].shape[0] if n_state and outs[0].ndim == 2 else outs[-1].shape[2])
    if n_pix % p:
        raise UnsupportedError(f"loop '{node.name}' runs frames of {p} pixels; {n_pix} pixels are not a multiple")
    streams: dict[Stream, list[int]] = {}
    k = 0
    for j, vi in enumerate(i for i in body.graph.input if body.get_initializer(i.name) is None):
        if j < n_state and zero[j]:
            continue
        w, fs, dt = stream_port(body, vi.name, producer=False)
        frames = _to_frames(ins[k], p, sequence=j >= n_state)
        beats = frames.size // fs[-1]
        streams[Stream(f"in{len(streams)}_V", w, beats)] = stream_beats(frames, dt, [beats, fs[-1]], w)
        k += 1
    expect = []
    for j, vo in enumerate(body.graph.output):
        if j < n_state and node.output[j] not in read:
            continue
        w, fs, dt = stream_port(body, vo.name, producer=True)
        beats = outs[j].size // fs[-1]
        expect.append((j, Stream(f"out{j}_V", w, beats), dt, fs[-1]))
    workdir = Path(workdir)
    t0 = time.perf_counter()
    hdl = loop_hdl(model, node, workdir, fpgapart, clk_ns, fifo_depths)
    hdl_s = time.perf_counter() - t0
    defines = ("FINN_SIMULATION",) if gauge else ()
    res = simulate(hdl.files, hdl.top, streams, [s for _, s, _, _ in expect], workdir, gap_percent=gap_percent,
                   stall_percent=stall_percent, seed=seed, max_cycles=max_cycles, defines=defines)
    exact = True
    for j, s, dt, lanes in expect:
        seq = j >= n_state
        got = beats_to_array(res.outputs[s.port], dt, [s.beats, lanes], s.width)
        shape = _to_frames(outs[j], p, seq).shape
        exact &= bool(np.array_equal(_from_frames(got.reshape(shape), outs[j], seq), outs[j]))
    fills = {name: most for name, (most, _, _) in fifo_fills(res.log).items()} if gauge else {}
    frames = n_pix // p
    return LoopRun(node.name, inst.get_nodeattr("iterations"), p, frames, res.cycles,
                   frames * int(inst.get_exp_cycles()), exact, fills, hdl_s, res.build_seconds, res.run_seconds)


def size_fifos(model: ModelWrapper, node, context: dict, workdir: Path, fpgapart: str, clk_ns: float,
               max_cycles: int | None = None) -> tuple[dict[str, int], LoopRun]:
    """Depths for every FIFO of the loop's hardware body from a gauge run (module docstring);
    returns them with the gauge run."""
    run = run_loop(model, node, context, workdir, fpgapart, clk_ns, gauge=True, max_cycles=max_cycles)
    depths = {name: max(2, min(run.fifo_fill.get(name, 2), cap)) for name, cap in _fifo_caps(node).items()}
    return depths, run


def _fifo_caps(node) -> dict[str, int]:
    """Every FIFO of the loop's hardware body with its cap: one step's beats on its stream."""
    inst = getCustomOp(node)
    body = hardware_body(inst.body(), node.name, inst.get_nodeattr("num_state"))
    return {b.name: int(np.prod(getCustomOp(b).get_nodeattr("folded_shape")[:-1]))
            for b in body.graph.node if b.op_type == "StreamingFIFO_rtl"}


#: a sized loop is settled when it runs within this factor of its gauge run's cycles
SETTLE_TOLERANCE = 1.02

#: rounds of `settle_fifos` at most (each a Verilator build and run)
SETTLE_ROUNDS = 3


def settle_fifos(model: ModelWrapper, node, context: dict, workdir: Path, fpgapart: str, clk_ns: float,
                 depths: dict[str, int], gauge: LoopRun, max_cycles: int | None = None
                 ) -> tuple[dict[str, int], LoopRun, int]:
    """Depths at the gauge's highest fills can still be too shallow: once a FIFO is bounded,
    a fork upstream of it stalls its other branches whenever it is full, which shifts when
    beats arrive at the join and asks for more room than the unbounded run ever used (the
    zoo students' decoders: 1.18-1.22x the gauge run's cycles at the fills, the gauge's
    speed at twice them). Run the loop at `depths`; while it is slower than the gauge run
    by more than SETTLE_TOLERANCE, double every FIFO deeper than 4 (the joins' FIFOs; the
    2-4 deep ones between nodes are not what stalls), capped at one step's beats. Returns
    the depths, the last run (no gaps, no stalls) and the rounds of doubling."""
    caps = _fifo_caps(node)
    run = run_loop(model, node, context, workdir, fpgapart, clk_ns, fifo_depths=depths, max_cycles=max_cycles)
    rounds = 0
    while run.cycles > gauge.cycles * SETTLE_TOLERANCE and rounds < SETTLE_ROUNDS:
        wider = {k: (min(2 * v, caps.get(k, 2 * v)) if v > 4 else v) for k, v in depths.items()}
        if wider == depths:
            break
        depths, rounds = wider, rounds + 1
        run = run_loop(model, node, context, workdir, fpgapart, clk_ns, fifo_depths=depths, max_cycles=max_cycles)
    return depths, run, rounds

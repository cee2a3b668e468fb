"""A compiled model's recurrent loops as RTL under Verilator, against flimcc's executor.

    python benchmarks/bench_rtlsim_loop.py [BUILD_OR_MODEL] [--pixels-seed 1] [--max-cycles 3000000]

BUILD_OR_MODEL is a build folder (its model.onnx) or a model, which is compiled for PYNQ-Z2
first (default: the zoo's Seq2SeqLite float). For each RecurrentLoop: the loop's inputs
are taken from the executor's run of the hardware graph on simulated decays (one frame of
P pixels), streamed through the loop's generated RTL (`flimcc.rtl.loop`), and its outputs
compared bit for bit. The table gives HDL generation and Verilator build seconds,
simulated cycles against the loop model's estimate, and the verdict, or the simulator's
error (a stall names the beats each output still owes).

Status (issue 12), zoo Seq2SeqLite float for PYNQ-Z2 (P = 13, T = 135), first run: the
decoder loop is bit-exact but takes 84,325 cycles against the loop model's 33,480 (2.5x
slower than the compile report says); the encoder loop stalls (no final state within 3 M
cycles). Small loops are bit-exact in tests/test_rtl_loop.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

import flimcc  # noqa: E402
from flimcc.layout import loop_nodes  # noqa: E402
from flimcc.rtl.finn_hdl import beats_to_array, stream_beats  # noqa: E402
from flimcc.rtl.harness import Stream, simulate  # noqa: E402
from flimcc.rtl.loop import hardware_body, loop_hdl  # noqa: E402
from flimcc.rtl.stitch import stream_port  # noqa: E402
from flimcc.rtl.verilator import SimulatorError  # noqa: E402

PART = "xc7z020clg400-1"


def run_loop(model, node, inst, context, max_cycles: int) -> dict:
    body = hardware_body(inst.body(), node.name, PART, inst.get_nodeattr("num_state"))
    n_state, zero = inst.get_nodeattr("num_state"), inst._zero_flags()
    read = {t for n in model.graph.node for t in n.input} | {o.name for o in model.graph.output}
    ins = [context[t] for t in node.input if t]
    outs = [context[t] for t in node.output]
    streams, k = {}, 0
    for j, vi in enumerate(i for i in body.graph.input if body.get_initializer(i.name) is None):
        if j < n_state and zero[j]:
            continue
        w, fs, dt = stream_port(body, vi.name, producer=False)
        shape = [int(np.prod(ins[k].shape[:-1]))] + fs[-2:]
        streams[Stream(f"in{len(streams)}_V", w, shape[0] * shape[1])] = stream_beats(ins[k], dt, shape, w)
        k += 1
    expect = []
    for j, vo in enumerate(body.graph.output):
        if j < n_state and node.output[j] not in read:
            continue
        w, fs, dt = stream_port(body, vo.name, producer=True)
        shape = [int(np.prod(outs[j].shape[:-1]))] + fs[-2:]
        expect.append((j, Stream(f"out{j}_V", w, shape[0] * shape[1]), shape, dt))
    row = {"loop": node.name, "T": inst.get_nodeattr("iterations"), "P": inst.get_nodeattr("pixels"),
           "estimate": int(inst.get_exp_cycles())}
    work = Path(tempfile.mkdtemp(prefix=f"flimcc-{node.name}-"))
    t0 = time.perf_counter()
    hdl = loop_hdl(model, node, work, PART, 10.0)
    row["hdl_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        res = simulate(hdl.files, hdl.top, streams, [s for _, s, _, _ in expect], work, max_cycles=max_cycles)
    except SimulatorError as e:
        row.update(sim_s=time.perf_counter() - t0, cycles=None, verdict=str(e))
        return row
    row.update(sim_s=time.perf_counter() - t0, cycles=res.cycles)
    exact = all(np.array_equal(beats_to_array(res.outputs[s.port], dt, shape, s.width).reshape(outs[j].shape), outs[j])
                for j, s, shape, dt in expect)
    row["verdict"] = "bit-exact" if exact else "DIFFERENT"
    return row


def main(argv=None) -> None:
    from flimcc.models import zoo
    from flimcc.models.fli_data import simulate as simulate_decays

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", default=str(zoo.path("seq2seqlite-float")))
    ap.add_argument("--pixels-seed", type=int, default=1)
    ap.add_argument("--max-cycles", type=int, default=3_000_000)
    args = ap.parse_args(argv)
    src = Path(args.source)
    if src.is_dir():
        hw_path = src / "model.onnx"
    else:
        from flimcc.compile import compile_model

        out = Path(tempfile.mkdtemp(prefix="flimcc-bench-")) / "build"
        hw_path = Path(compile_model(src, "pynq-z2", out, verify_samples=0)["output_dir"]) / "model.onnx"
    model = flimcc.load(hw_path)
    loops = list(loop_nodes(model))
    p = loops[0][1].get_nodeattr("pixels")
    steps = model.get_tensor_shape(model.graph.input[0].name)[1]
    x = simulate_decays(p, seed=args.pixels_seed).x[:, :steps].astype(np.float32)
    context = flimcc.execute(model, {model.graph.input[0].name: x}, return_context=True)
    print("| loop | T | P | HDL s | simulate s | cycles | estimate | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for node, inst in loops:
        r = run_loop(model, node, inst, context, args.max_cycles)
        cycles = f"{r['cycles']:,}" if r["cycles"] is not None else "-"
        print(f"| {r['loop']} | {r['T']} | {r['P']} | {r['hdl_s']:.1f} | {r['sim_s']:.1f} | {cycles} | "
              f"{r['estimate']:,} | {r['verdict']} |", flush=True)


if __name__ == "__main__":
    main()

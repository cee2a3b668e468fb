"""`flimcc compile`: a GRU model to a FINN build folder for a board (or an ORT model for cpu).

The default pipeline is the whole compiler: unroll-gru, quantize (float models only),
fold-weights, streamline, lower-finn, batch-pixels, fold; every stage is executed and
compared with the stage before (integer stages bit for bit) and with the golden run. The
build folder is written to a temporary sibling and renamed into place only when everything
succeeded, so a failed compile leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from flimcc.build_folder import check_output_folder, write_folder
from flimcc.errors import FlimccError, TargetError, UnsupportedError, VerificationError
from flimcc.hw import cost
from flimcc.pipeline import Pipeline

#: FINN builder steps a user with Vivado continues with (finn-plus step names).
FINN_CONTINUE_STEPS = [
    "step_create_dataflow_partition",
    "step_apply_folding_config",
    "step_minimize_bit_width",
    "step_generate_estimate_reports",
    "step_hw_codegen",
    "step_hw_ipgen",
    "step_set_fifo_depths",
    "step_create_stitched_ip",
    "step_synthesize_bitfile",
    "step_make_driver",
    "step_deployment_package",
]


def _is_quantized(model: ModelWrapper) -> bool:
    return any(n.op_type in ("Quant", "IntQuant", "QuantizeLinear", "MultiThreshold") for n in model.graph.node)


def _has_gru(model: ModelWrapper) -> bool:
    return any(n.op_type == "GRU" for n in model.graph.node)


#: Recurrent layers flimcc does not compile, in a user's words.
OTHER_RECURRENT = {"LSTM": "an LSTM layer", "RNN": "a plain RNN layer"}


def check_recurrent_layers(model: ModelWrapper, source: str) -> None:
    """Refuse, before any work, the recurrent layers the hardware flow does not build: LSTM
    and RNN nodes, and GRUs that run backwards (reverse, bidirectional)."""
    for node in model.graph.node:
        if node.op_type in OTHER_RECURRENT:
            raise UnsupportedError(f"{source}: node '{node.name}' is {OTHER_RECURRENT[node.op_type]} ({node.op_type}); "
                                   "flimcc compiles GRU sequence models (LSTM and RNN layers are not supported)")
        if node.op_type == "GRU":
            direction = next((a.s.decode() for a in node.attribute if a.name == "direction"), "forward")
            if direction != "forward":
                raise UnsupportedError(
                    f"{source}: GRU node '{node.name}' is {direction} (attribute direction='{direction}'); "
                    "flimcc lowers forward GRUs to hardware (a backward loop would need the whole decay first)")


def _has_recurrence(model: ModelWrapper, pipeline: Pipeline) -> bool:
    """The model has a GRU, a Scan, or an unrolled recurrence roll-loop recognised."""
    if _has_gru(model) or any(n.op_type == "Scan" for n in model.graph.node):
        return True
    return any(p.name == "roll-loop" and p.metrics.get("loops") for p in pipeline.passes)


def default_pipeline(model: ModelWrapper, target: str, pixels: str, fps: float, clock_mhz: float,
                     headroom: float, bits: int, state_bits: int = 0) -> str:
    steps = []
    if _has_gru(model):
        steps.append("unroll-gru")
    elif not any(n.op_type == "Scan" for n in model.graph.node):
        steps.append("roll-loop")  # an unrolled export (Brevitas QAT): back to loops
    steps.append("fold-constants")
    if not _is_quantized(model):
        steps.append(f"quantize{{bits={bits}}}" if not state_bits or state_bits == bits
                     else f"quantize{{bits={bits},state-bits={state_bits}}}")
    steps += ["fold-weights", "streamline", f"lower-finn{{target={target}}}", f"batch-pixels{{p={pixels}}}",
              f"fold{{target={target},headroom={headroom},fps={fps},clock-mhz={clock_mhz}}}",
              f"plan-memory{{target={target},headroom={headroom}}}"]
    return ",".join(steps)


def _finn_build_config(target, clock_mhz: float) -> dict:
    return {
        "output_dir": "output",
        "synth_clk_period_ns": round(1000.0 / clock_mhz, 6),
        "board": target.finn_board,
        "fpga_part": target.fpga_part,
        "shell_flow_type": target.shell_flow,
        "folding_config_file": "folding_config.json",
        "auto_fifo_depths": True,
        "generate_outputs": ["estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package"],
        "steps": FINN_CONTINUE_STEPS,
    }


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _check_options(pixels, clock_mhz, fps, verify_samples, headroom, bits, state_bits=0) -> None:
    """The Python API's checks (the command line checks the same with click, naming --options)."""
    def bad(name, value, why):
        raise FlimccError(f"compile_model: {name}={value!r} {why}")

    if not (str(pixels).strip().lower() == "auto" or (str(pixels).strip().isdigit() and int(pixels) >= 1)):
        bad("pixels", pixels, "is neither 'auto' nor a whole number >= 1")
    if clock_mhz is not None and not clock_mhz > 0:
        bad("clock_mhz", clock_mhz, "must be > 0")
    if not fps >= 0:
        bad("fps", fps, "must be >= 0")
    if not 0 < headroom <= 1:
        bad("headroom", headroom, "must be in (0, 1]")
    if not (isinstance(verify_samples, int) and verify_samples >= 0):
        bad("verify_samples", verify_samples, "must be a whole number >= 0")
    if not (isinstance(bits, int) and 2 <= bits <= 16):
        bad("bits", bits, "must be a whole number in 2..16")
    if not (isinstance(state_bits, int) and (state_bits == 0 or bits <= state_bits <= 16)):
        bad("state_bits", state_bits, f"must be 0 (as bits) or a whole number in {bits}..16")


def compile_model(model_path: str | Path, target_name: str = "pynq-z2", out_dir: str | Path | None = None,
                  pixels: str = "auto", clock_mhz: float | None = None, fps: float = 0.0,
                  verify_samples: int = 16, headroom: float = 0.85, bits: int = 8, seed: int = 0,
                  dims: dict | None = None, size_fifos: bool = True, state_bits: int = 0) -> dict:
    """Compile and write the build folder; returns the summary (also in summary.json).
    `size_fifos` (the default): then size the loops' FIFOs by RTL simulation (`flimcc rtlsim
    --size-fifos`, no backpressure) and check the sized loops bit for bit, so that the build
    meets its cycle estimate; without it the folder says its FIFOs are not sized (and the
    cycles assume FIFOs that never stall). A sized loop that is not bit-exact with the
    executor is a flimcc bug: VerificationError (the folder holds the run's record).
    `state_bits` (float models): the recurrent state's bits in post-training quantization
    (0: as `bits`); a float-trained GRU loses least on a state wider than its weights."""
    import flimcc
    from flimcc.targets import get_target

    _check_options(pixels=pixels, clock_mhz=clock_mhz, fps=fps, verify_samples=verify_samples, headroom=headroom,
                   bits=bits, state_bits=state_bits)
    target = get_target(target_name)
    model_path = Path(model_path)
    stem = model_path.name.removesuffix(".onnx")
    out = check_output_folder(Path(out_dir) if out_dir else Path("build") / f"{stem}-{target.name}",
                              inputs=[model_path])
    # A symbolic batch is bound to the verification batch: exporters compute zero states
    # from Shape(x), which fold-constants turns into constants of that batch; they end as
    # loop flags and biases, so the hardware graph itself is re-batched freely afterwards.
    model = flimcc.load(model_path, dims=dims, batch=max(verify_samples, 1))
    if not _has_gru(model) and model.get_tensor_shape(model.graph.input[0].name)[0] != 1:
        # an unrolled export (QONNX) with a symbolic batch: roll-loop's bodies are built at
        # batch 1 and lower-finn then mismatches a larger graph batch, so such a file is
        # compiled at batch 1, as traced (the executor re-batches the verification inputs)
        model = flimcc.load(model_path, dims=dims, batch=1)
    if target.kind == "cpu":
        return _compile_cpu(model, target, out, verify_samples, seed)
    clock = float(clock_mhz or target.default_clock_mhz)
    check_recurrent_layers(model, str(model_path))
    text = default_pipeline(model, target.name, pixels, fps, clock, headroom, bits, state_bits)
    t0 = time.perf_counter()
    pipeline = Pipeline.parse(text)
    try:
        run = pipeline.run(model, verify=verify_samples > 0, samples=max(verify_samples, 1), seed=seed)
    except UnsupportedError as e:
        if _has_recurrence(model, pipeline):
            raise
        raise UnsupportedError(f"{model_path}: the model has no GRU (nor an unrolled GRU recurrence); flimcc compiles "
                               f"GRU sequence models ({e})") from None
    seconds = time.perf_counter() - t0
    hw = run.model
    report = run.report.to_json()
    p = int(next(iter(_loop_pixels(hw)), 1))
    perf = cost.throughput(hw, p, clock)
    used = cost.total_resources(hw, target.fpga_part, p, built=True)  # as the RTL is built
    budget = target.budget(headroom)
    fits = cost.fits(used, budget)
    if not fits:  # plan-memory checked already; this guards pipelines given by hand
        from flimcc.passes.plan_memory import does_not_fit

        raise TargetError(does_not_fit(hw, target, used, budget))
    stages = report["stages"]
    integer_from = next((i for i, s in enumerate(stages) if s["stage"] == "streamline"), None)
    after = stages[integer_from + 1:] if integer_from is not None else []
    bit_exact = bool(after) and all(s["vs_previous"] and s["vs_previous"]["bit_exact"] for s in after)
    macs = _macs_per_pixel(report)
    limit = macs / target.resources["DSP"] if macs else None
    summary = {
        "model": str(model_path),
        "target": target.name,
        "fpga_part": target.fpga_part,
        "board": target.finn_board,
        "clock_mhz": clock,
        "fits": fits,
        "headroom": headroom,
        "resources": {k: round(used[k], 1) for k in cost.RESOURCES},
        "budget": {k: round(budget[k], 1) for k in cost.RESOURCES},
        "board_resources": {k: target.resources.get(k) for k in ("LUT", "FF", "BRAM_18K", "URAM", "DSP")},
        "pixel_parallelism": p,
        "cycles_per_pixel": round(perf["cycles_per_pixel"], 1),
        "bottleneck": perf["max_cycles_node_name"],
        "pixels_per_second": round(perf["pixels_per_second"], 1),
        "latency_ms_per_pixel_batch": round(_latency_cycles(hw, p) / (clock * 1e3), 4),
        "macs_per_pixel": macs,
        "one_mac_per_dsp_cycles_per_pixel": round(limit, 1) if limit else None,
        "cycles_vs_one_mac_per_dsp": round(perf["cycles_per_pixel"] / limit, 2) if limit else None,
        "pipeline": text,
        "compile_seconds": round(seconds, 1),
        # Honest provenance: the figure is the model's; the rtlsim entry (FIFO sizing, on by
        # default) holds what the loops' RTL measured against it.
        "cycles_source": ("estimate: FINN's estimators and flimcc's loop model (flimcc/hw/recurrent_loop.py); "
                          "`flimcc rtlsim <build>` measures the loops' RTL under Verilator (summary's rtlsim)"),
        # The loop model assumes FIFOs that never stall a loop; unsized, the FIFOs are FINN's
        # shallow defaults and plan-memory's estimates, which can stall (README, RTL simulation).
        "fifo_depths": ("not sized by simulation (--no-size-fifos): `flimcc rtlsim <build> --size-fifos` sizes "
                        "the loops' FIFOs; the cycles above assume FIFOs that never stall a loop"),
        "finn_build": ("`python finn_build.py` in this folder, on a machine with Vivado and Vitis HLS, continues with "
                       "FINN's build_dataflow (steps in dataflow_build_config.json; those needing a vendor tool are "
                       "listed in finn_build.py); each loop's RTL is also in hdl/<loop>/ (top module <loop>), and "
                       "`flimcc rtlsim` simulates it here"),
        "verification": {
            "golden": report.get("golden", "onnxruntime"),
            "samples": verify_samples,
            "bit_exact": bit_exact,
            "max_abs_err": stages[-1]["vs_golden"]["max_abs_err"] if stages[-1].get("vs_golden") else None,
        },
    }
    from flimcc.passes.plan_memory import memory_plan

    _write_build(out, hw, target, clock, summary, report, {"pixel_parallelism": p, **memory_plan(hw, target.fpga_part)})
    summary["output_dir"] = str(out)
    if size_fifos and summary["hdl"] and all(v.startswith("hdl/") for v in summary["hdl"].values()):
        from flimcc.rtlsim import rtlsim_build

        try:
            rec = rtlsim_build(out, size_fifos=True)
        except TargetError:  # the sized FIFOs do not fit: no build rather than one that does not fit
            shutil.rmtree(out, ignore_errors=True)
            raise
        written = json.loads((Path(out) / "summary.json").read_text())
        summary.update({k: written[k] for k in ("resources", "fits", "hdl", "fifo_depths", "rtlsim")})
        if not rec["bit_exact"]:
            raise VerificationError(f"{out}: the loops' RTL is not bit-exact with flimcc's executor (a flimcc bug; "
                                    "rtlsim.json in the folder has the run)")
    return summary


def _loop_pixels(model):
    from flimcc.layout import loop_nodes

    for _, inst in loop_nodes(model):
        yield inst.get_nodeattr("pixels")


def _latency_cycles(model: ModelWrapper, p: int) -> int:
    """Critical path of one frame through the design (FINN's pessimistic no-overlap sum)."""
    cycles = cost.node_cycles_per_frame(model, p)
    lat: dict[str, int] = {}
    for node in model.graph.node:
        if node.name not in cycles:
            continue
        preds = [pn.name for pn in (model.find_direct_predecessors(node) or []) if pn.name in lat]
        lat[node.name] = cycles[node.name] + max((lat[x] for x in preds), default=0)
    return max(lat.values())


def _macs_per_pixel(report: dict) -> int | None:
    for stage in report["stages"]:
        m = (stage.get("metrics") or {}).get("macs_per_sample_after")
        if m:
            return int(m)
    return None


def _write_build(out: Path, hw: ModelWrapper, target, clock: float, summary: dict, report: dict, plan: dict) -> None:
    import flimcc
    from flimcc.passes.fold import folding_of
    from flimcc.reports import estimate_reports, write_reports

    from flimcc.finn_flow import entry_script
    from flimcc.rtl.loop import write_build_hdl

    def write(tmp: Path) -> None:
        flimcc.save(hw, tmp / "model.onnx")
        summary["hdl"] = write_build_hdl(hw, tmp / "hdl", target.fpga_part, 1000.0 / clock)
        no_rtl = [f"{loop}: {why}" for loop, why in summary["hdl"].items() if not why.startswith("hdl/")]
        if no_rtl:  # then nothing can size the FIFOs here
            summary["fifo_depths"] = ("not sized by simulation (" + "; ".join(no_rtl)
                                      + "); the cycles above assume FIFOs that never stall a loop")
        (tmp / "finn_build.py").write_text(entry_script())
        _dump(tmp / "folding_config.json", {"Defaults": {}, **folding_of(hw)})
        _dump(tmp / "dataflow_build_config.json", _finn_build_config(target, clock))
        write_reports(estimate_reports(hw, target.fpga_part, clock), tmp / "report")
        _dump(tmp / "memory_plan.json", plan)
        _dump(tmp / "verification.json", {"golden": report.get("golden"), "stages": [
            {k: s.get(k) for k in ("stage", "contract", "verdict", "vs_previous", "vs_golden")} for s in report["stages"]]})
        _dump(tmp / "pipeline.json", _without_timings(report))
        _dump(tmp / "summary.json", {k: v for k, v in summary.items() if k != "compile_seconds"})

    write_folder(out, write)


def _without_timings(report: dict) -> dict:
    """The per-pass report without wall-clock times: same input, byte-identical build."""
    return {**report, "stages": [{k: v for k, v in s.items() if k != "seconds"} for s in report["stages"]]}


def _compile_cpu(model: ModelWrapper, target, out: Path, verify_samples: int, seed: int) -> dict:
    """The cpu target: the float model with its GRUs unrolled to Scan loops (what ORT runs
    fastest, see benchmarks/bench_unroll_gru.py) and its measured pixels per second."""
    import flimcc
    from flimcc.execute import run_ort
    from flimcc.models.fli_data import simulate

    text = "unroll-gru" if _has_gru(model) else "canonicalize"
    run = Pipeline.parse(text).run(model, verify=verify_samples > 0, samples=max(verify_samples, 1), seed=seed)
    cpu = run.model
    if not all(n.domain in ("", "ai.onnx") for n in cpu.graph.node):
        raise TargetError("--target cpu runs float ONNX models on onnxruntime; this model holds quantizers "
                          f"({sorted({n.op_type for n in cpu.graph.node if n.domain not in ('', 'ai.onnx')})})")
    x_name = cpu.graph.input[0].name
    t_steps = cpu.get_tensor_shape(x_name)[1]
    n = 2048
    x = simulate(n, seed=seed).x[:, :t_steps].astype(np.float32)
    run_ort(cpu.model, {x_name: x[:64]})
    t0 = time.perf_counter()
    run_ort(cpu.model, {x_name: x})
    seconds = time.perf_counter() - t0
    report = run.report.to_json()
    summary = {"target": "cpu", "runtime": "onnxruntime", "pixels_per_second": round(n / seconds, 1),
               "measured_on_pixels": n, "fits": True, "pipeline": text,
               "verification": {"golden": report.get("golden"), "samples": verify_samples,
                                "max_abs_err": report["stages"][-1]["vs_golden"]["max_abs_err"]
                                if report["stages"][-1].get("vs_golden") else None}}
    def write(tmp: Path) -> None:
        flimcc.save(cpu, tmp / "model.onnx")
        _dump(tmp / "pipeline.json", _without_timings(report))
        _dump(tmp / "summary.json", {k: v for k, v in summary.items() if k != "pixels_per_second"})

    write_folder(out, write)
    summary["output_dir"] = str(out)
    return summary

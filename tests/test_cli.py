"""The command line as a user types it (the installed `flimcc` entry point via python -m)."""

import json
import numpy as np
import onnx
from conftest import mlp, run_cli

import flimcc


def flimcc_cli(*args):
    return run_cli(*args)


def test_version():
    r = flimcc_cli("--version")
    assert r.returncode == 0 and flimcc.__version__ in r.stdout


def test_passes_and_targets_listings():
    r = flimcc_cli("passes")
    assert r.returncode == 0 and "fold-constants" in r.stdout and "exact" in r.stdout
    data = json.loads(flimcc_cli("passes", "--json").stdout)
    assert data["fold-constants"]["options"][0]["name"] == "keep-quant"
    r = flimcc_cli("targets")
    assert r.returncode == 0 and "xc7z020clg400-1" in r.stdout and "53,200" in r.stdout
    assert json.loads(flimcc_cli("targets", "--json").stdout)["pynq-z2"]["resources"]["DSP"] == 220


def test_opt_writes_model_and_report(tmp_path, mlp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    r = flimcc_cli("opt", mlp_path, "-p", "canonicalize,fold-constants", "-o", out, "--report", report, "--samples", 4)
    assert r.returncode == 0, r.stderr
    assert "fold-constants" in r.stdout and "bit-exact" in r.stdout
    data = json.loads(report.read_text())
    assert [s["stage"] for s in data["stages"]] == ["input", "canonicalize", "fold-constants"]
    assert data["samples"] == 4 and data["golden"] == "onnxruntime"
    assert flimcc.diff(flimcc.load(mlp_path), flimcc.load(out)).equivalent


def test_opt_is_deterministic(tmp_path, mlp_path):
    for name in ("a.onnx", "b.onnx"):
        assert flimcc_cli("opt", mlp_path, "-p", "canonicalize,fold-constants", "-o", tmp_path / name).returncode == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_opt_with_user_inputs(tmp_path, mlp_path):
    np.save(tmp_path / "x.npy", np.full((5, 8), 0.25, np.float32))
    r = flimcc_cli("opt", mlp_path, "-p", "canonicalize", "--inputs", tmp_path / "x.npy", "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["samples"] == 5


def test_bad_pipeline_exits_2_and_writes_nothing(tmp_path, mlp_path):
    out = tmp_path / "out.onnx"
    r = flimcc_cli("opt", mlp_path, "-p", "canonicalize,unroll-grux", "-o", out)
    assert r.returncode == 2 and "unknown pass 'unroll-grux'" in r.stderr and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1


def test_verify_command(tmp_path, mlp_path):
    r = flimcc_cli("verify", mlp_path, "--against", mlp_path)
    assert r.returncode == 0 and "bit-exact" in r.stdout and "within tolerance" in r.stdout
    other = mlp(seed=1)
    onnx.save(other, tmp_path / "other.onnx")
    r = flimcc_cli("verify", tmp_path / "other.onnx", "--against", mlp_path, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["within_tolerance"] is False


def test_opt_is_deterministic_on_the_example_model(tmp_path):
    """qonnx names some new tensors randomly; the pipeline seeds that per pass."""
    from pathlib import Path
    model = Path(__file__).parent.parent / "examples" / "models" / "seq2seqlite_random.onnx"
    for name in ("a.onnx", "b.onnx"):
        r = flimcc_cli("opt", model, "-p", "unroll-gru,fold-constants", "--no-verify", "-o", tmp_path / name)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_targets_say_which_boards_share_a_chip():
    r = flimcc_cli("targets")
    row = next(line for line in r.stdout.splitlines() if line.lstrip("│ ").startswith("pynq-z2"))
    assert "pynq-z1" in row  # identical resources, and the row says why


def test_passes_follow_columns(monkeypatch):
    import os
    wide = run_cli("passes", env={**os.environ, "COLUMNS": "200"}).stdout
    narrow = run_cli("passes", env={**os.environ, "COLUMNS": "70"}).stdout
    assert max(map(len, narrow.splitlines())) <= 70 < max(map(len, wide.splitlines()))


def test_compile_state_bits_reach_the_quantizer_and_a_narrower_state_is_refused(tmp_path):
    from flimcc.compile import default_pipeline

    model = flimcc.load("models/zoo/seq2seqlite-float.onnx")
    assert "quantize{bits=8,state-bits=10}" in default_pipeline(model, "pynq-z2", "auto", 0.0, 100.0, 0.85, 8, 10)
    assert "quantize{bits=8}," in default_pipeline(model, "pynq-z2", "auto", 0.0, 100.0, 0.85, 8, 0)
    out = tmp_path / "build"
    r = flimcc_cli("compile", "models/zoo/seq2seqlite-float.onnx", "--state-bits", "6", "-o", out)
    assert r.returncode == 2 and "'--state-bits': 6 is narrower than --bits 8" in r.stderr and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1

"""`flimcc run` (issue 13): a synthetic FLIM image written as .ptu (30 ps bins) and as .npy
(the same photons in 90 ps bins) gives identical maps, tau_mean follows the truth for the
compiled 8-bit Seq2SeqLite and the float model, and bad input is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli

H, W = 24, 20


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The image as .ptu and .npy files, and its true amplitude-weighted mean lifetimes."""
    import ptufile

    from flimcc.models.fli_data import SimConfig, simulate_counts

    root = tmp_path_factory.mktemp("flim")
    config = SimConfig(photon_range=(300.0, 1500.0))
    counts30, data = simulate_counts(H * W, bin_width_ns=0.03, config=config, seed=11)
    counts30 = counts30.reshape(H, W, -1)
    ptufile.imwrite(root / "img.ptu", counts30.astype(np.uint16), global_resolution=25e-9, tcspc_resolution=30e-12)
    np.save(root / "img.npy", counts30.reshape(H, W, 135, 3).sum(axis=-1))
    truth = (data.frac * data.tau1 + (1 - data.frac) * data.tau2).reshape(H, W)
    return root, truth


def _maps(folder):
    import tifffile

    return {k: tifffile.imread(folder / f"{k}.tif") for k in ("tau1", "tau2", "frac", "tau_mean", "photons")}


def test_run_compiled_design_on_ptu_and_npy(zoo_build, image, tmp_path):
    root, truth = image
    build = zoo_build("seq2seqlite-int8")
    # the simulated IRF peaks at gate 10 (0.9 ns): the background is the 5 gates before its rise
    r = run_cli("run", build, root / "img.ptu", "-o", tmp_path / "ptu", "--json", "--background", "5")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["shape"] == [H, W] and rec["pixels"] == H * W and rec["skipped"] == 0
    assert rec["rebinning"].startswith("3 bin(s) of 0.03 ns summed") and "bit-exact" in rec["source_kind"]
    assert rec["pixels_per_second"] > 0 and rec["read"].startswith("PicoQuant PTU")
    r = run_cli("run", build, root / "img.npy", "-o", tmp_path / "npy", "--background", "5", "--curves")
    assert r.returncode == 0, r.stderr
    assert "pixels/s" in r.stdout and "maps.png" in r.stdout
    a, b = _maps(tmp_path / "ptu"), _maps(tmp_path / "npy")
    for k in a:
        assert a[k].shape == (H, W) and a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k])
    assert np.corrcoef(a["tau_mean"].ravel(), truth.ravel())[0, 1] > 0.95
    assert (tmp_path / "ptu" / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "ptu" / "curves.npy").exists()  # only if asked
    curves = np.load(tmp_path / "npy" / "curves.npy")
    assert curves.shape == (H, W, 135, 3) and curves.dtype == np.float32
    from flimcc.models.lifetimes import extract_lifetimes

    np.testing.assert_allclose(extract_lifetimes(curves)[..., 0], a["tau1"], rtol=1e-5, atol=1e-6)
    written = json.loads((tmp_path / "ptu" / "run.json").read_text())
    assert written["maps"]["tau_mean"] == "tau_mean.tif" and written["pixels_per_second"] > 0
    import tifffile

    with tifffile.TiffFile(tmp_path / "ptu" / "tau_mean.tif") as tif:
        meta = json.loads(tif.pages[0].description)
    assert meta["gate_width_ns"] == 0.09 and meta["unit"] == "ns" and meta["source"] == str(build)


def test_run_float_model_and_photon_threshold(image, tmp_path):
    from flimcc.models import zoo

    root, truth = image
    r = run_cli("run", zoo.path("seq2seqlite-float"), root / "img.npy", "-o", tmp_path / "f", "--json",
                "--background", "5")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["source_kind"].startswith("onnxruntime") and rec["skipped"] == 0
    assert np.corrcoef(_maps(tmp_path / "f")["tau_mean"].ravel(), truth.ravel())[0, 1] > 0.95
    r = run_cli("run", zoo.path("seq2seqlite-float"), root / "img.npy", "-o", tmp_path / "g", "--json",
                "--background", "5", "--min-photons", "2000")
    rec = json.loads(r.stdout)
    maps, full = _maps(tmp_path / "g"), _maps(tmp_path / "f")
    dim = maps["photons"] < 2000
    assert rec["skipped"] == int(dim.sum()) > 0 and np.all(np.isnan(maps["tau_mean"][dim]))
    np.testing.assert_array_equal(maps["tau_mean"][~dim], full["tau_mean"][~dim])  # the others as before


def test_run_in_a_process_pool_gives_the_same_maps(zoo_build, image, tmp_path):
    root, _ = image
    build = zoo_build("seq2seqlite-int8")
    for workers, out in ((1, "one"), (2, "two")):
        r = run_cli("run", build, root / "img.npy", "-o", tmp_path / out, "--batch", "112", "--workers", workers)
        assert r.returncode == 0, r.stderr
    a, b = _maps(tmp_path / "one"), _maps(tmp_path / "two")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_run_bad_input(zoo_build, image, tmp_path):
    root, _ = image
    build = zoo_build("seq2seqlite-int8")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "bad.ptu").write_bytes(b"PQTTTR\0\0" + bytes(300))
    np.save(tmp_path / "empty.npy", np.zeros((4, 4, 135), np.uint16))
    cases = [
        ((tmp_path / "notes.txt",), "notes.txt: not a FLIM recording"),
        ((tmp_path / "bad.ptu",), "bad.ptu: cannot read it as PTU"),
        ((tmp_path / "empty.npy",), "empty.npy: the recording holds no photons"),
        ((root / "img.npy", "--bin-width", "0.04"), "its 0.04 ns bins do not divide the model's 0.09 ns gates"),
        ((root / "img.npy", "--background", "-1"), "--background"),
    ]
    for k, (args, message) in enumerate(cases):
        out = tmp_path / f"out{k}"
        r = run_cli("run", build, *args, "-o", out)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not out.exists()  # nothing half-written
    r = run_cli("run", tmp_path / "nowhere", root / "img.npy", "-o", tmp_path / "x")
    assert r.returncode == 2 and "no such build folder or model file" in r.stderr
    import onnx
    from onnx import TensorProto, helper

    other = helper.make_model(helper.make_graph(  # a model that is not a lifetime decoder
        [helper.make_node("Identity", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 135, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 135, 1])]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(other, tmp_path / "other.onnx")
    r = run_cli("run", tmp_path / "other.onnx", root / "img.npy", "-o", tmp_path / "y")
    assert r.returncode == 2 and "not the (pixels, 135, 3) decay components" in r.stderr, r.stderr
    assert not (tmp_path / "y").exists()
    # never overwrite what flimcc did not write
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    r = run_cli("run", build, root / "img.npy", "-o", tmp_path / "mine")
    assert r.returncode == 2 and (tmp_path / "mine" / "keep.txt").read_text() == "mine"

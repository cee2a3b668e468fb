"""Models a user writes in PyTorch and exports with torch.onnx.export, as they come (issue 11):
dynamic and fixed batch compile with no extra flag; other recurrent layers are refused in
words a user recognises."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch")
nn = torch.nn

STEPS = 16


class UserSeq2Seq(nn.Module):
    """A GRU encoder, a decoder fed zeros from the encoder's state, a linear read-out: what
    a user writes, zero input computed from x.shape[0] as usual."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.enc = nn.GRU(1, hidden, batch_first=True)
        self.dec = nn.GRU(1, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x):
        _, h = self.enc(x)
        y, _ = self.dec(torch.zeros(x.shape[0], STEPS, 1), h)
        return self.fc(y)


def _export(module, path, batch: int, dynamic: bool, features: tuple = (STEPS, 1)):
    torch.manual_seed(0)
    extra = {"dynamic_axes": {"x": {0: "N"}, "y": {0: "N"}}} if dynamic else {}
    with torch.no_grad():
        torch.onnx.export(module.eval(), (torch.rand(batch, *features),), str(path), input_names=["x"],
                          output_names=["y"], dynamo=False, **extra)
    return path


@pytest.fixture(scope="module")
def user_model():
    torch.manual_seed(3)
    return UserSeq2Seq()


@pytest.mark.parametrize("batch,dynamic", [(2, True), (2, False), (1, False), (3, False)])
def test_user_export_compiles(tmp_path, user_model, batch, dynamic):
    path = _export(user_model, tmp_path / "user.onnx", batch, dynamic)
    r = run_cli("compile", path, "--target", "pynq-z2", "-o", tmp_path / "b", "--verify", 8, "--json",
                "--no-size-fifos")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["fits"] and s["verification"]["bit_exact"]
    assert s["verification"]["max_abs_err"] < 0.05  # 8-bit post-training quantization
    # verified on at least the samples asked for, in chunks of a fixed batch
    assert s["verification"]["samples"] >= 8


def test_user_export_through_the_python_api(tmp_path, user_model):
    """flimcc.load binds a dynamic batch; verification on 16 samples still runs."""
    import flimcc
    from flimcc.compile import default_pipeline
    from flimcc.pipeline import Pipeline

    for dynamic in (True, False):
        model = flimcc.load(_export(user_model, tmp_path / f"u{dynamic}.onnx", 2, dynamic))
        text = default_pipeline(model, "pynq-z2", "auto", 0.0, 100.0, 0.85, 8).split(",lower-finn")[0]
        run = Pipeline.parse(text).run(model, verify=True, samples=16)
        assert run.report.samples == 16
        assert run.report.stages[-1].vs_golden.max_abs_err < 0.05


def test_fixed_batch_model_runs_in_chunks(tmp_path, user_model):
    import flimcc
    from flimcc.execute import execute, static_batch

    model = flimcc.load(_export(user_model, tmp_path / "u.onnx", 2, False))
    assert static_batch(model) == 2
    x = np.random.default_rng(0).random((6, STEPS, 1), np.float32)
    y = execute(model, {"x": x})["y"]
    with torch.no_grad():
        want = user_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, want, atol=1e-5)


class _Bi(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = nn.GRU(1, 8, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(16, 1)

    def forward(self, x):
        return self.fc(self.g(x)[0])


class _Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = nn.LSTM(1, 8, batch_first=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(self.g(x)[0])


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(STEPS, STEPS)

    def forward(self, x):
        return torch.relu(self.fc(x))


@pytest.mark.parametrize("module,features,words", [
    (_Bi, (STEPS, 1), ["GRU node '/g/GRU'", "bidirectional"]),
    (_Lstm, (STEPS, 1), ["node '/g/LSTM'", "LSTM", "GRU sequence models"]),
    (_Mlp, (STEPS,), ["has no GRU", "GRU sequence models"]),
])
def test_other_models_are_refused_in_words(tmp_path, module, features, words):
    path = _export(module(), tmp_path / "m.onnx", 1, True, features)
    r = run_cli("compile", path, "--target", "pynq-z2", "-o", tmp_path / "b", "--verify", 4)
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and str(path) in line, line
    for w in words:
        assert w in line, (w, line)
    assert not (tmp_path / "b").exists()

"""Small models the foundation tests build by hand (no files checked in)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def mlp(seed: int = 0, batch: int | str = 1, names: str = "", shuffle: bool = False) -> onnx.ModelProto:
    """x(B,8) -> MatMul(8x6) -> Add -> Relu -> MatMul(6x3) -> Sigmoid -> y(B,3).

    `names` prefixes every node, tensor and initializer name; `shuffle` lists the nodes in
    reverse order (still a valid graph for ONNX once sorted)."""
    rng = np.random.default_rng(seed)
    p = names
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), f"{p}w1"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), f"{p}b1"),
        numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), f"{p}w2"),
    ]
    nodes = [
        helper.make_node("MatMul", [f"{p}x", f"{p}w1"], [f"{p}h1"], name=f"{p}mm1"),
        helper.make_node("Add", [f"{p}h1", f"{p}b1"], [f"{p}h2"], name=f"{p}add"),
        helper.make_node("Relu", [f"{p}h2"], [f"{p}h3"], name=f"{p}relu"),
        helper.make_node("MatMul", [f"{p}h3", f"{p}w2"], [f"{p}h4"], name=f"{p}mm2"),
        helper.make_node("Sigmoid", [f"{p}h4"], [f"{p}y"], name=f"{p}sig"),
    ]
    if shuffle:
        nodes = nodes[::-1]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(f"{p}x", TensorProto.FLOAT, [batch, 8])],
        [helper.make_tensor_value_info(f"{p}y", TensorProto.FLOAT, [batch, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=OPSET)


def quant_mlp(bits: int = 4, seed: int = 0) -> onnx.ModelProto:
    """A QONNX model: Quant(weights, power-of-two scale) -> MatMul -> Quant(activation)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 4)).astype(np.float32)

    def quant(inp, out, scale, signed, name):
        return helper.make_node("Quant", [inp, scale, "zero", "bits"], [out], name=name, domain="qonnx.custom_op.general",
                                signed=signed, narrow=0, rounding_mode="ROUND")

    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(0.25, np.float32), "wscale"),
        numpy_helper.from_array(np.array(0.125, np.float32), "ascale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(float(bits), np.float32), "bits"),
    ]
    nodes = [
        quant("x", "xq", "ascale", 1, "quant_in"),
        quant("w", "wq", "wscale", 1, "quant_w"),
        helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"),
        quant("acc", "y", "ascale", 1, "quant_out"),
    ]
    graph = helper.make_graph(nodes, "qmlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=OPSET + [helper.make_opsetid("qonnx.custom_op.general", 1)])


@pytest.fixture
def mlp_path(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(), path)
    return path


@pytest.fixture(scope="session")
def small_build(tmp_path_factory):
    """A compiled Seq2SeqLite (32 units, 6 steps, P = 2, PYNQ-Z2): its loops are small enough
    to build and simulate as RTL in CI. Its FIFOs are not sized (tests size copies). Tests that
    change it work on a copy."""
    import flimcc
    from flimcc.compile import compile_model
    from gru_models import seq2seq_lite_model

    root = tmp_path_factory.mktemp("small_build")
    flimcc.save(seq2seq_lite_model(steps=6), root / "small.onnx")
    compile_model(root / "small.onnx", "pynq-z2", root / "build", pixels="2", verify_samples=0, size_fifos=False)
    return root / "build"


@pytest.fixture(scope="session")
def zoo_build(tmp_path_factory):
    """`zoo_build(name)`: the shipped model `name` compiled for the PYNQ-Z2 (FIFOs not
    sized, no verification: tests check what they need), once per session."""
    from flimcc.compile import compile_model
    from flimcc.models import zoo

    built = {}

    def get(name: str):
        if name not in built:
            out = tmp_path_factory.mktemp(f"zoo-{name}") / "build"
            compile_model(zoo.path(name), "pynq-z2", out, verify_samples=0, size_fifos=False)
            built[name] = out
        return built[name]

    return get


def run_cli(*args, **kw):
    """Run the installed `flimcc` console script, as a user would (never the source tree)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import os

    exe = Path(sys.executable).parent / "flimcc"
    cmd = [str(exe)] if exe.exists() else [shutil.which("flimcc")]
    # Piped output as a user's script sees it: pytest's environment exports COLUMNS=80.
    kw.setdefault("env", {k: v for k, v in os.environ.items() if k != "COLUMNS"})
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, **kw)

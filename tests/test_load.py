"""flimcc.load: canonical IR in, one-line errors naming the file for every bad input."""

import numpy as np
import onnx
import pytest
from conftest import mlp, run_cli
from onnx import TensorProto, helper

import flimcc
from flimcc.errors import ModelLoadError


def test_load_path_bytes_proto_agree(mlp_path):
    a = flimcc.load(mlp_path)
    b = flimcc.load(mlp_path.read_bytes())
    c = flimcc.load(onnx.load(mlp_path))
    assert a.model.SerializeToString() == b.model.SerializeToString() == c.model.SerializeToString()
    assert all(a.get_tensor_shape(n) is not None for n in ("h1", "h2", "h3", "h4", "y"))
    assert flimcc.ir.opset(a) == 17


def test_unnamed_and_duplicate_nodes_get_unique_readable_names():
    proto = mlp()
    for node in proto.graph.node:
        node.name = ""
    proto.graph.node[1].name = proto.graph.node[2].name = "dup"
    names = [n.name for n in flimcc.load(proto).graph.node]
    assert len(set(names)) == len(names)
    assert names[0] == "MatMul_0" and names[3] == "MatMul_1"
    assert "dup" not in names  # a duplicated name is not kept for either node


def test_symbolic_batch_is_bound_and_other_dims_named_by_user():
    proto = mlp(batch="batch")
    model = flimcc.load(proto)
    assert model.get_tensor_shape("x") == [1, 8]
    assert flimcc.load(proto, dims={"batch": 5}).get_tensor_shape("y") == [5, 3]


def test_loaded_model_saves_byte_identically(tmp_path, mlp_path):
    m = flimcc.load(mlp_path)
    flimcc.save(m, tmp_path / "a.onnx")
    flimcc.save(flimcc.load(tmp_path / "a.onnx"), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def _dynamic_seq_model(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 1])])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _checker_failure(tmp_path):
    proto = mlp()
    proto.graph.node[1].input[1] = "does_not_exist"
    path = tmp_path / "broken.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


BAD_INPUTS = {
    "missing": (lambda p: p / "nope.onnx", "no such file"),
    "not-onnx": (lambda p: (p / "text.onnx").write_text("this is not a model at all\n") and p / "text.onnx",
                 "not an ONNX model"),
    "truncated": (lambda p: (p / "cut.onnx").write_bytes(mlp().SerializeToString()[:150]) and p / "cut.onnx",
                  "not an ONNX model or truncated"),
    "empty": (lambda p: (p / "empty.onnx").write_bytes(b"") or p / "empty.onnx", "empty file"),
    "checker": (_checker_failure, "fails the ONNX checker"),
    "dynamic": (_dynamic_seq_model, "dynamic dimension 'T' at axis 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(ModelLoadError) as exc:
        flimcc.load(path)
    text = str(exc.value)
    assert message in text and str(path) in text and "\n" not in text


@pytest.mark.parametrize("case", ["missing", "truncated", "dynamic"])
def test_bad_input_through_the_cli_exits_2_without_traceback(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    out = tmp_path / "out.onnx"
    proc = run_cli("opt", path, "-p", "canonicalize", "-o", out)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_dynamic_dimension_fixed_from_the_command_line(tmp_path):
    path = _dynamic_seq_model(tmp_path)
    proc = run_cli("opt", path, "-p", "canonicalize", "--dim", "T=135", "-o", tmp_path / "o.onnx")
    assert proc.returncode == 0, proc.stderr
    assert flimcc.load(tmp_path / "o.onnx").get_tensor_shape("y") == [1, 135, 1]
    np.testing.assert_array_equal(flimcc.execute(flimcc.load(tmp_path / "o.onnx"), -np.ones((2, 135, 1), np.float32))["y"], 0)

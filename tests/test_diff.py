"""Graph diff: structure insensitive to names and order, numeric on seeded inputs, CLI exit codes."""

import json
import numpy as np
import onnx
import pytest
from conftest import mlp, run_cli
from onnx import numpy_helper

import flimcc
from flimcc.testing import assert_equivalent


def _load(proto):
    return flimcc.load(proto)


def _kinds(result):
    return sorted(c.kind for c in result.changes)


def test_identical_models_are_equivalent():
    r = flimcc.diff(_load(mlp()), _load(mlp()), numeric=True)
    assert r.equivalent and r.changes == [] and r.text().endswith("equivalent")


def test_renamed_only_graph_is_equivalent():
    r = flimcc.diff(_load(mlp()), _load(mlp(names="renamed_")), numeric=True)
    assert r.equivalent, r.text()


def _branches(order, prefix=""):
    """x -> Relu -> a, x -> Sigmoid -> b, x -> Tanh -> c, Sum(a, b, c): nodes in `order`."""
    from onnx import TensorProto, helper
    p = prefix
    nodes = {
        "relu": helper.make_node("Relu", [f"{p}x"], [f"{p}a"], name=f"{p}relu"),
        "sig": helper.make_node("Sigmoid", [f"{p}x"], [f"{p}b"], name=f"{p}sig"),
        "tanh": helper.make_node("Tanh", [f"{p}x"], [f"{p}c"], name=f"{p}tanh"),
    }
    listed = [nodes[k] for k in order] + [helper.make_node("Sum", [f"{p}a", f"{p}b", f"{p}c"], [f"{p}y"], name=f"{p}sum")]
    g = helper.make_graph(listed, "br", [helper.make_tensor_value_info(f"{p}x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info(f"{p}y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_reordered_only_graph_is_equivalent():
    a = _load(_branches(["relu", "sig", "tanh"]))
    b = _load(_branches(["tanh", "relu", "sig"]))
    assert [n.op_type for n in b.graph.node][0] == "Tanh"
    r = flimcc.diff(a, b, numeric=True)
    assert r.equivalent, r.text()


def test_renamed_and_reordered_together():
    assert flimcc.diff(_load(_branches(["relu", "sig", "tanh"])), _load(_branches(["sig", "tanh", "relu"], "n_"))).equivalent
    swapped = _branches(["relu", "sig", "tanh"])
    swapped.graph.node[0].op_type, swapped.graph.node[1].op_type = "Sigmoid", "Relu"  # same multiset, other wiring
    assert flimcc.diff(_load(_branches(["relu", "sig", "tanh"])), _load(swapped)).equivalent  # Sum is symmetric


def test_changed_weight_is_found_with_its_node_and_size():
    proto = mlp()
    w = numpy_helper.to_array(proto.graph.initializer[2]).copy()
    w[1, 2] += 0.25
    proto.graph.initializer[2].CopyFrom(numpy_helper.from_array(w, "w2"))
    r = flimcc.diff(_load(mlp()), _load(proto), numeric=True)
    assert _kinds(r) == ["initializer-changed"]
    assert r.changes[0].node == "mm2" and "0.25" in r.changes[0].detail
    assert not r.numeric_ok and r.numeric["y"]["max_abs_err"] > 0


def test_weight_change_below_tolerance_is_ignored():
    proto = mlp()
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    w[0, 0] += 1e-9
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w1"))
    assert flimcc.diff(_load(mlp()), _load(proto)).equivalent


def test_changed_attribute():
    a = mlp()
    b = mlp()
    b.graph.node[4].op_type = "HardSigmoid"
    b.graph.node[4].attribute.append(onnx.helper.make_attribute("alpha", 0.5))
    c = mlp()
    c.graph.node[4].CopyFrom(onnx.helper.make_node("HardSigmoid", ["h4"], ["y"], name="sig", alpha=0.25))
    b.graph.node[4].CopyFrom(onnx.helper.make_node("HardSigmoid", ["h4"], ["y"], name="sig", alpha=0.5))
    r = flimcc.diff(_load(c), _load(b))
    assert _kinds(r) == ["attribute-changed"]
    assert "HardSigmoid.alpha: 0.25 -> 0.5" in r.changes[0].detail
    assert "node-removed" in _kinds(flimcc.diff(_load(a), _load(b)))  # op type changed


def test_removed_node():
    b = mlp()
    relu = b.graph.node[2]
    b.graph.node[3].input[0] = relu.input[0]
    b.graph.node.remove(relu)
    r = flimcc.diff(_load(mlp()), _load(b), numeric=True)
    assert "node-removed" in _kinds(r)
    assert any(c.node == "relu" for c in r.changes if c.kind == "node-removed")
    assert not r.equivalent


def test_assert_equivalent_helper_reports_the_diff():
    assert_equivalent(mlp(), mlp(names="q_"))
    b = mlp()
    b.graph.node[2].op_type = "Tanh"
    with pytest.raises(pytest.fail.Exception, match="node-added"):
        assert_equivalent(mlp(), b)


def _cli(*args):
    return run_cli("diff", *args)


def test_cli_exit_codes_and_json(tmp_path):
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    onnx.save(mlp(), a)
    onnx.save(mlp(names="other_"), b)
    changed = mlp()
    changed.graph.node[2].op_type = "Tanh"
    onnx.save(changed, c)
    same = _cli(a, b, "--numeric")
    assert same.returncode == 0 and "equivalent" in same.stdout
    differ = _cli(a, c, "--json", "--numeric")
    assert differ.returncode == 1
    data = json.loads(differ.stdout)
    assert data["equivalent"] is False and {"node-added", "node-removed"} <= {ch["kind"] for ch in data["changes"]}
    assert data["numeric"]["y"]["max_abs_err"] > 0
    missing = _cli(a, tmp_path / "nope.onnx")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_onnx_snapshot_fixture(onnx_snapshot, tmp_path):
    from flimcc.testing import Snapshot
    snap = Snapshot(tmp_path / "snaps", update=True)
    snap(_load(mlp()), "mlp")
    Snapshot(tmp_path / "snaps", update=False)(_load(mlp(names="r_")), "mlp")
    changed = mlp()
    changed.graph.node[2].op_type = "Tanh"
    with pytest.raises(pytest.fail.Exception):
        Snapshot(tmp_path / "snaps", update=False)(_load(changed), "mlp")
    with pytest.raises(pytest.fail.Exception, match="--update-snapshots"):
        Snapshot(tmp_path / "snaps", update=False)(_load(mlp()), "missing")


# --- issue 11: unchanged nodes are never reported as both added and removed ---------------

def _added_removed(result):
    added = {c.node for c in result.changes if c.kind == "node-added"}
    removed = {c.node for c in result.changes if c.kind == "node-removed"}
    return added, removed


def test_upstream_op_change_does_not_cascade():
    """Relu -> Tanh: only that node is added/removed; MatMul and Sigmoid after it match."""
    b = mlp()
    b.graph.node[2].op_type = "Tanh"
    r = flimcc.diff(_load(mlp()), _load(b))
    assert _added_removed(r) == ({"relu"}, {"relu"}), r.text()
    assert _kinds(r) == ["node-added", "node-removed"]


def test_upstream_change_with_renamed_nodes():
    b = mlp(names="n_")
    for n in b.graph.node:
        if n.op_type == "Relu":
            n.op_type = "Tanh"
    r = flimcc.diff(_load(mlp()), _load(b))
    assert _added_removed(r) == ({"n_relu"}, {"relu"}), r.text()
    # a real change downstream of it is still found, on the right node
    w = numpy_helper.to_array(b.graph.initializer[2]).copy() + 1.0
    b.graph.initializer[2].CopyFrom(numpy_helper.from_array(w, "n_w2"))
    r = flimcc.diff(_load(mlp()), _load(b))
    assert [c.node for c in r.changes if c.kind == "initializer-changed"] == ["n_mm2"], r.text()


def test_removed_and_inserted_node_do_not_cascade():
    b = mlp()
    relu = b.graph.node[2]
    b.graph.node[3].input[0] = relu.input[0]
    b.graph.node.remove(relu)
    r = flimcc.diff(_load(mlp()), _load(b))
    assert _added_removed(r) == (set(), {"relu"}), r.text()
    r = flimcc.diff(_load(b), _load(mlp()))
    assert _added_removed(r) == ({"relu"}, set()), r.text()


def _twins(first):
    """Two identical Relu(x) feeding different ops: which one is listed first must not matter."""
    from onnx import TensorProto, helper
    relus = {"r1": helper.make_node("Relu", ["x"], ["a"], name="r1"),
             "r2": helper.make_node("Relu", ["x"], ["b"], name="r2")}
    nodes = [relus[first], relus["r2" if first == "r1" else "r1"],
             helper.make_node("Tanh", ["a"], ["c"], name="tanh"),
             helper.make_node("Sigmoid", ["b"], ["d"], name="sig"),
             helper.make_node("Sub", ["c", "d"], ["y"], name="sub")]
    g = helper.make_graph(nodes, "twins", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_identical_twin_nodes_in_other_order_are_equivalent():
    r = flimcc.diff(_load(_twins("r1")), _load(_twins("r2")), numeric=True)
    assert r.equivalent, r.text()


def test_same_shape_siblings_match_by_weights():
    """x -> MatMul(W1), MatMul(W2) listed in the other order: no initializer-changed."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), n) for n in ("w1", "w2"))

    def model(order):
        mms = {"m1": helper.make_node("MatMul", ["x", "w1"], ["p"], name="m1"),
               "m2": helper.make_node("MatMul", ["x", "w2"], ["q"], name="m2")}
        nodes = [mms[k] for k in order] + [helper.make_node("Sub", ["p", "q"], ["y"], name="sub")]
        g = helper.make_graph(nodes, "sib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w1, w2])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    b = model(["m2", "m1"])
    for n in b.graph.node:
        n.name = "other_" + n.name
    r = flimcc.diff(_load(model(["m1", "m2"])), _load(b))
    assert r.equivalent, r.text()


def test_swapped_commutative_inputs_still_compare_initializers():
    from onnx import TensorProto, helper
    def model(bias, order):
        ins = ["x", "b"] if order else ["b", "x"]
        g = helper.make_graph([helper.make_node("Add", ins, ["y"], name="add")], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.full(4, bias, np.float32), "b")])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert flimcc.diff(_load(model(1.0, True)), _load(model(1.0, False))).equivalent
    assert _kinds(flimcc.diff(_load(model(1.0, True)), _load(model(2.0, False)))) == ["initializer-changed"]


def test_zoo_model_against_its_unrolled_form():
    """unroll-gru replaces the GRUs: only they are removed; the nodes after them are matched."""
    from pathlib import Path

    from flimcc.pipeline import Pipeline
    zoo = Path(__file__).parent.parent / "models" / "zoo" / "seq2seqlite-float.onnx"
    a = flimcc.load(zoo)
    b = Pipeline.parse("unroll-gru").run(flimcc.load(zoo), verify=False).model
    r = flimcc.diff(a, b)
    added, removed = _added_removed(r)
    assert removed == {"/encoder/GRU", "/decoder/GRU"}, r.text()
    assert not added & {n.name for n in a.graph.node}, r.text()
    assert not [c for c in r.changes if c.kind not in ("node-added", "node-removed")], r.text()
    assert flimcc.diff(b, b).equivalent and flimcc.diff(a, a).equivalent

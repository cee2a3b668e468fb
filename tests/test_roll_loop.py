"""roll-loop: recurrences unrolled into T copies of one time step (a DAG) roll back into a
Scan whose body is one step, bit-identically; the Brevitas QAT student then lowers to
integers (fold-weights, streamline) with every stage bit-exact."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from conftest import OPSET, mlp
from onnx import TensorProto, helper, numpy_helper

import flimcc
from flimcc.errors import UnsupportedError
from flimcc.passes.roll_loop import RollLoop
from flimcc.pipeline import Pipeline

QONNX = "qonnx.custom_op.general"


def unrolled_rnn(steps: int = 5, hidden: int = 4, quant: bool = True, odd_step: int | None = None,
                 reads: str = "gather", reverse: bool = False, seed: int = 0) -> onnx.ModelProto:
    """h_{k+1} = Q(tanh(h_k @ Q(W) + x_k)), h_0 = 0, written out step by step as a tracing
    exporter does: per-step Gather index and Unsqueeze axes constants, a separate zero
    constant for the first step's state, one shared weight quantizer; outputs the stacked
    states y = Concat(Unsqueeze(h_k)) (batch, steps, hidden) and the last state. Without
    `quant` the graph is plain ONNX. `odd_step` gives that step a different weight;
    `reads` = "split" / "slice" reads x_k as Squeeze(Split(x)[k]) / Squeeze(Slice(x, k, k+1));
    `reverse` runs the recurrence from the last time index to the first."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((hidden, hidden)) * 0.6).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal((hidden, hidden)) * 0.6).astype(np.float32), "W_odd"),
        numpy_helper.from_array(np.zeros((1, hidden), np.float32), "h0"),
        numpy_helper.from_array(np.array(2.0 ** -5, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(2.0 ** -7, np.float32), "h_scale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(8.0, np.float32), "bits"),
    ]
    nodes = []

    def quantize(x: str, out: str, scale: str, narrow: int = 0) -> str:
        if not quant:
            return x
        nodes.append(helper.make_node("Quant", [x, scale, "zero", "bits"], [out], name=f"{out}/quant", domain=QONNX,
                                      signed=1, narrow=narrow, rounding_mode="ROUND"))
        return out

    weights = {"W": quantize("W", "Wq", "w_scale", narrow=1)}
    if odd_step is not None:
        weights["W_odd"] = quantize("W_odd", "W_oddq", "w_scale", narrow=1)
    h = "h0"
    stacked = []
    if reads == "split":
        inits.append(numpy_helper.from_array(np.ones(steps, np.int64), "split_sizes"))
        nodes.append(helper.make_node("Split", ["x", "split_sizes"], [f"t{k}/x1" for k in range(steps)],
                                      name="unbind", axis=1))
    for k in (range(steps - 1, -1, -1) if reverse else range(steps)):
        inits.append(numpy_helper.from_array(np.array(k, np.int64), f"t{k}/index"))
        inits.append(numpy_helper.from_array(np.array([1], np.int64), f"t{k}/axes"))
        w = weights["W_odd" if k == odd_step else "W"]
        if reads == "gather":
            nodes.append(helper.make_node("Gather", ["x", f"t{k}/index"], [f"t{k}/x"], name=f"t{k}/gather", axis=1))
        else:
            if reads == "slice":
                for label, value in (("start", k), ("end", k + 1)):
                    inits.append(numpy_helper.from_array(np.array([value], np.int64), f"t{k}/{label}"))
                nodes.append(helper.make_node("Slice", ["x", f"t{k}/start", f"t{k}/end", f"t{k}/axes"], [f"t{k}/x1"],
                                              name=f"t{k}/slice"))
            nodes.append(helper.make_node("Squeeze", [f"t{k}/x1", f"t{k}/axes"], [f"t{k}/x"], name=f"t{k}/squeeze"))
        nodes += [
            helper.make_node("MatMul", [h, w], [f"t{k}/rec"], name=f"t{k}/matmul"),
            helper.make_node("Add", [f"t{k}/rec", f"t{k}/x"], [f"t{k}/pre"], name=f"t{k}/add"),
            helper.make_node("Tanh", [f"t{k}/pre"], [f"t{k}/act"], name=f"t{k}/tanh"),
        ]
        h = quantize(f"t{k}/act", f"t{k}/h", "h_scale")
        nodes.append(helper.make_node("Unsqueeze", [h, f"t{k}/axes"], [f"t{k}/h_seq"], name=f"t{k}/unsqueeze"))
        stacked.append(f"t{k}/h_seq")
    nodes.append(helper.make_node("Concat", stacked[::-1] if reverse else stacked, ["y"], name="stack", axis=1))
    nodes.append(helper.make_node("Identity", [h], ["h_last"], name="last"))
    graph = helper.make_graph(
        nodes, "unrolled_rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, steps, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, steps, hidden]),
         helper.make_tensor_value_info("h_last", TensorProto.FLOAT, [1, hidden])], inits)
    opsets = OPSET + ([helper.make_opsetid(QONNX, 1)] if quant else [])
    return helper.make_model(graph, opset_imports=opsets)


def bit_identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def scans(model) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Scan"]


def body(scan: onnx.NodeProto) -> onnx.GraphProto:
    return next(a.g for a in scan.attribute if a.name == "body")


@pytest.mark.parametrize("quant", [True, False])
def test_hand_built_recurrence_rolls_into_one_scan_bit_exactly(quant):
    steps = 5
    model = flimcc.load(unrolled_rnn(steps=steps, quant=quant))
    rolling = RollLoop()
    rolled = model.transform(rolling)
    assert len(model.graph.node) == steps * (6 if quant else 5) + 2 + quant
    (scan,) = scans(rolled)
    ops = sorted(n.op_type for n in body(scan).node)
    # h is both the carried state and the stacked output: an Identity names it twice
    assert ops == sorted(["MatMul", "Add", "Tanh", "Identity"] + ["Quant", "Quant"] * quant)
    if quant:
        assert [n.op_type for n in rolled.graph.node] == ["Transpose", "Scan", "Transpose", "Identity"]
    # the weight's quantizer is copied into the body, on a body initializer
    if quant:
        weight_quant = next(n for n in body(scan).node if n.op_type == "Quant" and "W" in n.input[0])
        assert weight_quant.input[0] in {t.name for t in body(scan).initializer}
    (loop,) = rolling.metrics["loops"]
    # Without quantizers onnxruntime runs the body, and it holds the state to the initial
    # state's shape: the first step, which broadcasts the constant (1, hidden) zero state
    # over the batch, stays unrolled. With them flimcc's executor runs the Scan.
    peeled = 0 if quant else 1
    assert (loop["first_index"], loop["steps"], loop["states"], loop["scan_inputs"], loop["scan_outputs"]) == \
        (peeled, steps - peeled, 1, 1, 1)
    x = np.random.default_rng(1).uniform(-1, 1, (64, steps, 4)).astype(np.float32)
    assert bit_identical(flimcc.execute(rolled, {"x": x}), flimcc.execute(model, {"x": x}))


def test_two_steps_roll():
    """At K = 2 the product on the state has one instance inside the loop (h_0 @ W) and
    one on the initial state (h0 @ W): found through the step that reads it."""
    model = flimcc.load(unrolled_rnn(steps=2))
    rolled = model.transform(RollLoop())
    assert [n.op_type for n in rolled.graph.node] == ["Transpose", "Scan", "Transpose", "Identity"]
    x = np.random.default_rng(4).uniform(-1, 1, (16, 2, 4)).astype(np.float32)
    assert bit_identical(flimcc.execute(rolled, {"x": x}), flimcc.execute(model, {"x": x}))


@pytest.mark.parametrize("reads", ["split", "slice"])
def test_time_steps_read_by_split_or_slice_roll_too(reads):
    model = flimcc.load(unrolled_rnn(steps=6, reads=reads))
    rolling = RollLoop()
    rolled = model.transform(rolling)
    (scan,) = scans(rolled)
    assert [loop["steps"] for loop in rolling.metrics["loops"]] == [6]
    assert "Squeeze" in {n.op_type for n in body(scan).node}  # the step's own op, kept in the body
    assert not {"Split", "Slice", "Gather"} & {n.op_type for n in rolled.graph.node}
    x = np.random.default_rng(3).uniform(-1, 1, (16, 6, 4)).astype(np.float32)
    assert bit_identical(flimcc.execute(rolled, {"x": x}), flimcc.execute(model, {"x": x}))


def test_a_reverse_recurrence_is_left_as_it_is():
    """Steps that run from the last time index to the first are not rolled (time reads
    must go forward, one index per step): no state links step k to step k + 1, and the
    graph comes back unchanged."""
    model = flimcc.load(unrolled_rnn(steps=5, reverse=True))
    rolling = RollLoop()
    rolled = model.transform(rolling, cleanup=False)
    assert rolling.metrics["loops"] == []
    assert rolled.model == model.model


def test_a_step_that_differs_stops_the_chain_and_stays_unrolled():
    model = flimcc.load(unrolled_rnn(steps=9, odd_step=6))
    rolling = RollLoop()
    rolled = model.transform(rolling)
    (loop,) = rolling.metrics["loops"]
    assert (loop["first_index"], loop["steps"]) == (0, 6)  # steps 6, 7, 8 stay as they were
    assert sum(n.op_type == "Tanh" for n in rolled.graph.node) == 3
    x = np.random.default_rng(2).uniform(-1, 1, (32, 9, 4)).astype(np.float32)
    assert bit_identical(flimcc.execute(rolled, {"x": x}), flimcc.execute(model, {"x": x}))


def test_unroll_gru_full_rolls_back_into_scans():
    """unroll-gru{mode=full} writes T copies of the GRU step, each with its own copy of the
    weights (equal values, other names) and a zero state shaped from the input: rolling
    gives one Scan per GRU again, bit-identical to the unrolled graph on onnxruntime."""
    from gru_models import seq2seq_lite_model

    from flimcc.passes.unroll_gru import UnrollGRU

    full = seq2seq_lite_model(steps=12).transform(UnrollGRU(mode="full"))
    rolling = RollLoop()
    rolled = full.transform(rolling)
    assert [loop["steps"] for loop in rolling.metrics["loops"]] == [12, 12]
    assert len(full.graph.node) > 300 and len(rolled.graph.node) < 40
    assert not {"Sigmoid", "Tanh"} & {n.op_type for n in rolled.graph.node}
    x = np.random.default_rng(5).uniform(0, 1, (16, 12, 1)).astype(np.float32)
    assert bit_identical(flimcc.execute(rolled, {"x": x}), flimcc.execute(full, {"x": x}))


def test_nothing_to_roll_leaves_the_graph_unchanged():
    model = flimcc.load(mlp())
    rolling = RollLoop()
    rolled = model.transform(rolling, cleanup=False)
    assert rolled.model == model.model
    assert rolling.metrics["loops"] == []


def test_strict_names_the_recurrence_it_cannot_roll():
    model = flimcc.load(unrolled_rnn(steps=5))
    with pytest.raises(UnsupportedError, match=r"roll-loop: recurrence from node 't0/gather': only 5 step"):
        model.transform(RollLoop(min_steps=6, strict=True))
    lenient = RollLoop(min_steps=6)
    assert lenient.apply(flimcc.load(unrolled_rnn(steps=5)))[0] is not None and lenient.metrics["not_rolled"]


@pytest.mark.parametrize("bits, sigmoid", [(8, "logistic"), (4, "hard")])
def test_brevitas_student_rolls_and_lowers_bit_exactly(tmp_path, bits, sigmoid):
    """The QAT student exported by Brevitas (QONNX, an unrolled DAG; see
    test_lower_brevitas) rolls into an encoder and a decoder Scan, and the integer
    lowering after it is bit-exact stage by stage against qonnx's execution of the export."""
    torch = pytest.importorskip("torch")
    from flimcc.analysis import integer_violations
    from flimcc.models.export import export_qonnx
    from flimcc.models.fli_data import SimConfig, simulate
    from flimcc.models.quant_gru import QuantSeq2SeqLite
    from test_lower_brevitas import STEPS

    torch.manual_seed(bits)
    student = QuantSeq2SeqLite(bits=bits, sigmoid=sigmoid).eval()
    model = flimcc.load(export_qonnx(student, tmp_path / "student.onnx", steps=STEPS))
    x = simulate(300, SimConfig(n_gates=STEPS, gate_width=0.5, irf_center=2.0), seed=5).x.astype(np.float32)
    out, report = Pipeline.parse("roll-loop,fold-weights,streamline").run(model, inputs={"x": x})
    assert all(s.verdict == "ok" and s.vs_previous.bit_exact for s in report.stages[1:])
    rolled = report.stages[1]
    assert rolled.nodes_before > 19 * STEPS * 2 and rolled.nodes_after < 40
    assert [loop["steps"] for loop in rolled.metrics["loops"]] == [STEPS, STEPS]
    assert integer_violations(out) == []
    assert len(scans(out)) == 2
    # fold-weights found the recurrent weights' quantizers in the bodies: integer weights
    assert report.stages[2].metrics["integer_weights"] == 4
    assert all("MultiThreshold" in {n.op_type for n in body(s).node} for s in scans(out))


def test_zoo_student_rolls_from_5000_nodes(capsys):
    """The zoo's 8-bit student (T = 135): ~5,000 nodes roll into two Scans in well under a
    second, bit-identical to the DAG on 32 simulated decays. The DAG is executed from a
    copy without value_info: flimcc's node-by-node executor looks up each output's declared
    type by a scan of value_info (quadratic at this size: ~1 min); without it the types are
    inferred, the same nodes run on the same values, and the outputs are the same."""
    from flimcc.models import zoo
    from flimcc.models.fli_data import simulate

    path = zoo.path("seq2seqlite-int8")
    model = flimcc.load(path)
    rolling = RollLoop()
    t0 = time.perf_counter()
    rolled = model.transform(rolling)
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nroll-loop on {path.name}: {len(model.graph.node)} -> {len(rolled.graph.node)} nodes "
              f"in {seconds:.2f} s (transform with qonnx cleanup included)")
    assert len(model.graph.node) > 4500 and len(rolled.graph.node) < 200
    assert [loop["steps"] for loop in rolling.metrics["loops"]] == [135, 135]
    assert len(scans(rolled)) == 2
    dag = flimcc.load(path)
    del dag.graph.value_info[:]
    x = simulate(32).x.astype(np.float32)
    assert bit_identical(flimcc.execute(rolled, {"x": x}), flimcc.execute(dag, {"x": x}))

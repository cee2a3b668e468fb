"""flimcc.reports: FINN's estimate reports for hardware graphs with RecurrentLoop nodes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import qonnx_make_model

import flimcc
import flimcc.hw  # noqa: F401  (registers RecurrentLoop)
from flimcc.hw import cost
from flimcc.layout import hw_nodes, loop_nodes
from flimcc.pipeline import Pipeline
from flimcc.reports import LOOP_SOURCE, REPORT_FILES, estimate_reports, write_reports

from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
from finn.analysis.fpgadataflow.op_and_param_counts import op_and_param_counts
from finn.analysis.fpgadataflow.res_estimation import res_estimation
from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

PART = "xc7z020clg400-1"
HLS = "finn.custom_op.fpgadataflow.hls"


@pytest.fixture(scope="session")
def hw_model() -> ModelWrapper:
    lite = flimcc.load("examples/models/seq2seqlite_random.onnx")
    pipeline = Pipeline.parse("unroll-gru,quantize{bits=8},fold-weights,streamline,lower-finn")
    return pipeline.run(lite, verify=False).model


@pytest.fixture(scope="session")
def reports(hw_model):
    return estimate_reports(hw_model, PART, 100.0)


def test_report_files_and_shape(hw_model, reports):
    assert set(reports) == set(REPORT_FILES)
    names = [n.name for n, _ in hw_nodes(hw_model)] + [n.name for n, _ in loop_nodes(hw_model)]
    body = [n.name for _, inst in loop_nodes(hw_model) for n in inst.hardware_body().graph.node]  # as built
    assert len(list(loop_nodes(hw_model))) == 2 and body
    assert set(reports["estimate_layer_cycles.json"]) == set(names) | set(body)
    control = {f"{n.name}_control" for n, _ in loop_nodes(hw_model)}  # each loop's muxes and counters
    assert set(reports["estimate_layer_resources.json"]) == set(names) | set(body) | control | {"total"}
    # FINN estimates no flip-flops: every node has flimcc's figure and the rule behind it
    resources = reports["estimate_layer_resources.json"]
    assert all(resources[n]["FF"] > 0 for n in set(names) | set(body) | control)
    assert all(resources[n]["FF_source"].startswith("flimcc") for n in set(body) | {n.name for n, _ in hw_nodes(hw_model)})
    assert set(reports["op_and_param_counts.json"]) == set(names) | {"total"}
    bodies = reports["estimate_loop_bodies.json"]
    assert sorted(n for b in bodies.values() for n in b["body_nodes"]) == sorted(body)
    # software edge nodes are not counted
    assert not any(n.op_type in ("Mul", "Quant", "Transpose") for n in hw_model.graph.node if n.name in names)


def test_finn_nodes_equal_finn_analyses(hw_model, reports):
    """(1) Every FINN node's numbers are those of FINN's own analysis functions."""
    finn_names = [n.name for n, _ in hw_nodes(hw_model)]
    assert finn_names
    cycles = hw_model.analysis(exp_cycles_per_layer)
    res = hw_model.analysis(lambda m: res_estimation(m, PART))
    # FINN's op_and_param_counts fails on a graph holding a Quant node (it filters on any
    # registered custom-op domain, then requires a FINN op): call it on the FINN nodes.
    finn_only = ModelWrapper(copy.deepcopy(hw_model.model))
    for node in [n for n in finn_only.graph.node if n.name not in finn_names]:
        finn_only.graph.node.remove(node)
    counts = finn_only.analysis(op_and_param_counts)
    assert set(cycles) == set(res) == set(finn_names)
    for name in finn_names:
        assert reports["estimate_layer_cycles.json"][name] == cycles[name]
        # resources: FINN's figure, or flimcc's where the RTL differs, saying so (flimcc.hw.estimate)
        ours = dict(reports["estimate_layer_resources.json"][name])
        source = ours.pop("source")
        assert ours.pop("FF") > 0 and ours.pop("FF_source").startswith("flimcc: ")  # FINN estimates no FFs
        assert source == "finn" and ours == res[name] or source.startswith("flimcc: "), (name, source)
        assert reports["op_and_param_counts.json"][name] == counts[name]
    # the outer MVAUs are FINN's: MAC count MW * MH * prod(numInputVectors)
    for node, inst in hw_nodes(hw_model):
        if node.op_type.startswith("MVAU"):
            macs = inst.get_nodeattr("MW") * inst.get_nodeattr("MH") * int(np.prod(inst.get_nodeattr("numInputVectors")))
            assert reports["op_and_param_counts.json"][node.name]["op_mac_8bx8b"] == macs


def test_loop_entries_equal_loop_methods(hw_model, reports):
    """(2) Loops are reported from their own methods, and enter the totals."""
    for node, inst in loop_nodes(hw_model):
        assert reports["estimate_layer_cycles.json"][node.name] == int(inst.get_exp_cycles())
        assert reports["estimate_layer_resources.json"][node.name] == {**inst.node_res_estimation(PART),
                                                                       "source": LOOP_SOURCE}
        assert reports["op_and_param_counts.json"][node.name] == inst.get_op_and_param_counts()
    for file, keys in (("estimate_layer_resources.json", ("BRAM_18K", "LUT", "FF", "URAM", "DSP")),
                       ("op_and_param_counts.json", None)):
        rep = reports[file]
        top = {n.name for n in hw_model.graph.node}  # body nodes are listed, counted once in their loop
        per_node = {k: v for k, v in rep.items() if k in top}
        keys = keys or sorted({k for v in per_node.values() for k in v})
        assert set(rep["total"]) == set(keys)
        for k in keys:
            assert rep["total"][k] == pytest.approx(sum(float(v.get(k, 0)) for v in per_node.values()))
            assert isinstance(rep["total"][k], float)


def test_body_nodes_equal_finn_estimates_and_names_are_unique(hw_model, reports):
    """Every loop-body node is reported under its model-wide unique name with FINN's own
    cycles (per iteration) and flimcc's resource estimate of that node."""
    from flimcc.layout import all_node_names

    names = all_node_names(hw_model)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for loop, inst in loop_nodes(hw_model):
        body = inst.hardware_body()  # the body as built, width converters and FIFOs included
        assert any(n.name.startswith(f"{loop.name}_StreamingFIFO_") for n in body.graph.node)
        for node, binst in hw_nodes(body):
            assert reports["estimate_layer_cycles.json"][node.name] == binst.get_exp_cycles()
            assert reports["estimate_layer_resources.json"][node.name] == cost.node_res(node, PART, body.graph)


def test_network_performance_fixture_by_hand(hw_model, reports):
    """The loops sit on the critical path: DuplicateStreams -> 3 parallel projection
    branches -> encoder loop -> decoder loop -> dense MVAU -> Mul -> Add."""
    c = reports["estimate_layer_cycles.json"]
    mvaus = [n.name for n in hw_model.graph.node if n.op_type.startswith("MVAU")]
    assert len(mvaus) == 4  # three projections (one-element inputs: HLS), the dense layer
    branch = max(c[mvaus[i]] + c[f"ElementwiseAdd_hls_{i}"] for i in range(3))
    critical = (c["DuplicateStreams_rtl_0"] + branch + c["RecurrentLoop_0"] + c["RecurrentLoop_1"]
                + c[mvaus[3]] + c["ElementwiseMul_hls_0"] + c["ElementwiseAdd_hls_3"])
    top = {n.name for n in hw_model.graph.node}
    slowest = max((k for k in c if k in top), key=c.get)
    perf = reports["estimate_network_performance.json"]
    assert perf == {
        "critical_path_cycles": critical,
        "max_cycles": c[slowest],
        "max_cycles_node_name": slowest,
        "estimated_throughput_fps": 100e6 / c[slowest],
        "estimated_latency_ns": critical * 10.0,
    }
    assert slowest.startswith("RecurrentLoop")


def _mvau_hls(name, inp, out, mw, mh, pe, simd):
    return helper.make_node(
        "MVAU_hls", [inp, f"{name}_w"], [out], name=name, domain=HLS, backend="fpgadataflow",
        MW=mw, MH=mh, PE=pe, SIMD=simd, inputDataType="INT8", weightDataType="INT8",
        outputDataType="INT32", accDataType="INT32", noActivation=1, numInputVectors=[1],
    )


def test_network_performance_hand_built():
    """(3) Two chained MVAU_hls behind a software Mul: critical path = sum, max = max."""
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["xs"], name="Mul_0"),
        _mvau_hls("MVAU_a", "xs", "h", mw=32, mh=96, pe=1, simd=1),   # (96/1)*(32/1) = 3072
        _mvau_hls("MVAU_b", "h", "y", mw=96, mh=32, pe=4, simd=8),    # (32/4)*(96/8) = 96
    ]
    graph = helper.make_graph(nodes, "two_mvaus",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model.set_initializer("MVAU_a_w", np.zeros((32, 96), np.float32))
    model.set_initializer("MVAU_b_w", np.zeros((96, 32), np.float32))

    reps = estimate_reports(model, PART, 250.0)
    assert reps["estimate_layer_cycles.json"] == {"MVAU_a": 3072, "MVAU_b": 96}
    assert reps["estimate_network_performance.json"] == {
        "critical_path_cycles": 3072 + 96,
        "max_cycles": 3072,
        "max_cycles_node_name": "MVAU_a",
        "estimated_throughput_fps": 250e6 / 3072,
        "estimated_latency_ns": (3072 + 96) * 4.0,
    }
    assert reps["op_and_param_counts.json"]["MVAU_a"] == {"op_mac_8bx8b": 32 * 96, "param_weight_8b": 32 * 96}
    assert reps["op_and_param_counts.json"]["total"] == {"op_mac_8bx8b": 2 * 3072.0, "param_weight_8b": 2 * 3072.0}
    # finn-dialect.md 3.7: MVAU_hls MW=32 MH=96 P=Q=1, noAct -> BRAM18 2, LUT 428
    res_a = reps["estimate_layer_resources.json"]["MVAU_a"]
    assert (res_a["BRAM_18K"], res_a["LUT"], res_a["DSP"]) == (2, 428, 0)

    # where FINN's dataflow_performance runs (FINN nodes only), it agrees
    model.graph.node.remove(model.graph.node[0])
    finn = model.transform(AnnotateCycles()).analysis(dataflow_performance)
    mine = estimate_reports(model, PART, 250.0)["estimate_network_performance.json"]
    assert {k: mine[k] for k in finn} == finn


def _hand_cycles_per_vector(body: ModelWrapper) -> dict[str, int]:
    """Body node cycles for one vector, by hand: MVAU (MH/PE)*(MW/SIMD); a FIFO 0; a
    streaming elementwise / threshold / duplicate op C/PE for its C output channels."""
    out = {}
    for node in body.graph.node:
        inst = getCustomOp(node)
        if node.op_type.startswith("MVAU"):
            mw, mh = inst.get_nodeattr("MW"), inst.get_nodeattr("MH")
            out[node.name] = (mh // inst.get_nodeattr("PE")) * (mw // inst.get_nodeattr("SIMD"))
        elif node.op_type.startswith("StreamingFIFO"):
            out[node.name] = 0
        else:
            out[node.name] = body.get_tensor_shape(node.output[0])[-1] // inst.get_nodeattr("PE")
    return out


def _longest_path(body: ModelWrapper, cycles: dict[str, int]) -> int:
    lat = {}
    for node in body.graph.node:  # sorted graph
        preds = body.find_direct_predecessors(node) or []
        lat[node.name] = cycles[node.name] + max((lat[p.name] for p in preds), default=0)
    return max(lat.values())


def test_loop_cycle_formula_by_hand(hw_model):
    """(4) cycles = T * (max(P * II, L) + step_overhead), II and L derived by hand."""
    node, _ = next(loop_nodes(hw_model))
    loop = getCustomOp(copy.deepcopy(node))  # leave the session's model alone
    body = loop.body()
    hand = _hand_cycles_per_vector(body)
    mvaus = [n.name for n in body.graph.node if n.op_type.startswith("MVAU")]
    assert mvaus
    ii = max(hand.values())
    assert ii == max(hand[n] for n in mvaus) == 32 * 32  # hidden size 32, PE = SIMD = 1
    latency = _longest_path(body, hand)
    assert latency >= 2 * ii  # reset-gate MVAU, then the candidate MVAU on r * h

    perf = loop.body_performance()
    assert perf["max_cycles"] == ii
    assert perf["critical_path_cycles"] == latency

    t = loop.get_nodeattr("iterations")
    overhead = loop.get_nodeattr("step_overhead")
    assert (t, overhead) == (135, 40)
    loop.set_nodeattr("pixels", 1)  # latency-bound: one pixel waits for its own step
    assert latency > 1 * ii
    assert loop.get_exp_cycles() == t * (latency + overhead)
    loop.set_nodeattr("pixels", 16)  # throughput-bound: 16 interleaved pixels
    assert 16 * ii > latency
    assert loop.get_exp_cycles() == t * (16 * ii + overhead) == 135 * (16 * 1024 + 40)


def test_write_reports_byte_identical(reports, tmp_path):
    """(5) Deterministic files: indent 2, sorted keys, trailing newline, same bytes twice."""
    a, b = tmp_path / "a", tmp_path / "b"
    paths = write_reports(reports, a)
    write_reports(copy.deepcopy(reports), b)
    assert sorted(p.name for p in paths) == sorted(REPORT_FILES)
    for name in REPORT_FILES:
        data = (a / name).read_bytes()
        assert data == (b / name).read_bytes()
        assert data.endswith(b"}\n")
        assert json.loads(data) == json.loads(json.dumps(reports[name]))
        assert data.decode() == json.dumps(reports[name], indent=2, sort_keys=True) + "\n"
    first = (a / "estimate_layer_cycles.json").read_bytes()
    write_reports(reports, a)  # overwriting gives the same bytes
    assert (a / "estimate_layer_cycles.json").read_bytes() == first

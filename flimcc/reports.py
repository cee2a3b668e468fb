"""FINN's analytical estimate reports for a flimcc hardware graph.

:func:`estimate_reports` produces the four JSON reports FINN's
``step_generate_estimate_reports`` writes (``estimate_layer_cycles.json``,
``estimate_layer_resources.json``, ``estimate_network_performance.json``,
``op_and_param_counts.json``) in FINN's own formats; :func:`write_reports` writes them.

The numbers of FINN's nodes come from FINN's own analysis functions (``exp_cycles_per_layer``,
``op_and_param_counts``); resources from flimcc's estimate (:mod:`flimcc.hw.estimate`: FINN's
``node_res_estimation`` corrected where the RTL differs, each entry with its ``source``). Those functions keep only the nodes of
FINN's ``finn.custom_op.fpgadataflow.hls``/``.rtl`` domains, so flimcc's ``RecurrentLoop``
nodes (domain ``flimcc.hw``) would be missing from every report: flimcc adds them here,
from the loop's own estimate methods (the same methods FINN calls on its nodes), in the
same format. FINN's ``dataflow_performance`` cannot be called on a flimcc graph at all
(it fails on any non-FINN predecessor: software edge nodes and loops), so the network
performance is computed here by FINN's algorithm over FINN nodes and loops together.
Software nodes at the graph edges (Mul, Quant, Transpose, ...) are not counted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
from finn.analysis.fpgadataflow.op_and_param_counts import aggregate_dict_keys, op_and_param_counts

from flimcc.hw.estimate import graph_estimates
from flimcc.layout import is_finn_hw, loop_nodes

#: the ``source`` of a loop's resources in the layer report
LOOP_SOURCE = "flimcc: the loop's built body (width converters and FIFOs included), summed"

LOOP_BODIES = "estimate_loop_bodies.json"
CYCLES = "estimate_layer_cycles.json"
RESOURCES = "estimate_layer_resources.json"
PERFORMANCE = "estimate_network_performance.json"
COUNTS = "op_and_param_counts.json"
REPORT_FILES = (CYCLES, RESOURCES, PERFORMANCE, COUNTS, LOOP_BODIES)


def _finn_only(model: ModelWrapper) -> ModelWrapper:
    """A graph of the model's FINN nodes alone (no initializers: FINN's op counts read only
    node attributes). FINN's ``op_and_param_counts`` filters on "any registered custom-op
    domain" and then insists on a FINN HWCustomOp, so it fails on a Quant node."""
    nodes = [n for n in model.graph.node if is_finn_hw(n)]
    return ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "finn_nodes", [], [])))


def _in_graph_order(model: ModelWrapper, entries: dict) -> dict:
    return {n.name: entries[n.name] for n in model.graph.node if n.name in entries}


def network_performance(model: ModelWrapper, cycles: dict[str, int], clock_mhz: float) -> dict:
    """FINN's ``dataflow_performance`` plus its fps and latency, over the nodes in ``cycles``.

    As FINN: nodes in graph order; lat(n) = cycles(n) + the largest lat of n's predecessors
    that are hardware nodes (0 without any); critical path = max lat; ``max_cycles`` is the
    first slowest node. fps = clock / max_cycles, latency = critical path * clock period.
    """
    latency: dict[str, int] = {}
    max_cycles, max_node = 0, ""
    for node in model.graph.node:
        if node.name not in cycles:
            continue
        c = int(cycles[node.name])
        if c > max_cycles:
            max_cycles, max_node = c, node.name
        if node.name in latency:
            continue
        preds = [p.name for p in (model.find_direct_predecessors(node) or []) if p.name in cycles]
        late = [p for p in preds if p not in latency]
        if late:
            raise ValueError(f"network performance: graph is not sorted ({node.name} precedes {late[0]})")
        latency[node.name] = c + max((latency[p] for p in preds), default=0)
    if not max_cycles:
        raise ValueError("network performance: the graph has no hardware node that takes cycles")
    critical = int(max(latency.values()))
    period_ns = 1e3 / clock_mhz
    return {
        "critical_path_cycles": critical,
        "max_cycles": int(max_cycles),
        "max_cycles_node_name": max_node,
        "estimated_throughput_fps": (clock_mhz * 1e6) / max_cycles,
        "estimated_latency_ns": critical * period_ns,
    }


def estimate_reports(model: ModelWrapper, fpgapart: str, clock_mhz: float) -> dict[str, dict]:
    """The FINN estimate reports of a hardware graph, keyed by file name.

    The cycles and resources reports list every FINN node, loop-body nodes included (node
    names are unique model-wide), each with FINN's own estimate for that node, and each
    loop with its aggregate (the whole loop: T steps of its body, body resources plus its
    control). A body node's cycles are per loop iteration (one time step of the P
    interleaved pixels); ``estimate_loop_bodies.json`` says which nodes are in which loop.
    The resources ``total`` counts top-level entries only, so a body is counted once."""
    loops = list(loop_nodes(model))

    cycles = dict(model.analysis(exp_cycles_per_layer))
    for node, inst in loops:
        cycles[node.name] = int(inst.get_exp_cycles())
    cycles = _in_graph_order(model, cycles)
    performance = network_performance(model, cycles, clock_mhz)

    resources = graph_estimates(model.graph, fpgapart)
    for node, inst in loops:
        resources[node.name] = {**inst.node_res_estimation(fpgapart), "source": LOOP_SOURCE}
    resources = _in_graph_order(model, resources)
    resources["total"] = aggregate_dict_keys({k: {r: v for r, v in res.items() if not r.endswith("source")}
                                              for k, res in resources.items()})

    bodies = {}
    for node, inst in loops:
        body = inst.hardware_body()  # as built: width converters and stream FIFOs included
        body_cycles = _in_graph_order(body, dict(body.analysis(exp_cycles_per_layer)))
        body_resources = _in_graph_order(body, graph_estimates(body.graph, fpgapart))
        body_resources[f"{node.name}_control"] = {**inst.control_res_estimation(body),
                                                  "source": "flimcc: the loop's muxes and counters"}
        cycles.update(body_cycles)
        resources.update(body_resources)
        bodies[node.name] = {
            "iterations": int(inst.get_nodeattr("iterations")),
            "pixels_interleaved": int(inst.get_nodeattr("pixels")),
            "body_nodes": [n.name for n in body.graph.node],
            "loop_cycles": cycles[node.name],
            "body_cycles_are": "per loop iteration (one time step of the interleaved pixels)",
            "loop_resources_include_body": True,
        }

    counts = dict(_finn_only(model).analysis(op_and_param_counts))
    counts.pop("total")
    for node, inst in loops:
        counts[node.name] = inst.get_op_and_param_counts()
    counts = _in_graph_order(model, counts)
    counts["total"] = aggregate_dict_keys(counts)

    return {
        CYCLES: cycles,
        RESOURCES: resources,
        PERFORMANCE: performance,
        COUNTS: counts,
        LOOP_BODIES: bodies,
    }


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def dumps(report: dict) -> str:
    """A report as deterministic JSON text: indent 2, sorted keys, trailing newline."""
    return json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_reports(reports: dict[str, dict], report_dir: Path) -> list[Path]:
    """Write each report to ``report_dir/<file name>``; return the paths written."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in sorted(reports):
        path = report_dir / name
        path.write_text(dumps(reports[name]), encoding="utf-8")
        paths.append(path)
    return paths

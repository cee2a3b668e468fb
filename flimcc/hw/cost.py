"""The hardware graph's cost model: throughput and resources from FINN's own estimators
(resources through :mod:`flimcc.hw.estimate`, which corrects them where the RTL differs).

Everything here reads a lowered graph at any batch: FINN's cycle estimates scale with the
pixels in a frame, so they are taken per pixel; a loop's cycles follow its documented
model (:mod:`flimcc.hw.recurrent_loop`) for a given pixel interleave P. Resources are
FINN's ``node_res_estimation`` per node (a loop sums its body) plus the state buffers of
:func:`state_buffers`, which ``plan-memory`` later places as FIFOs.

Used by ``fold`` (search), ``batch-pixels`` (P) and ``compile`` (summary).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.hw.estimate import graph_facts, node_estimate
from flimcc.hw.fifos import insert_loop_fifos
from flimcc.layout import FINN_HW_DOMAINS, all_node_names, for_each_graph, hw_nodes, loop_nodes

RESOURCES = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


def _batch(model: ModelWrapper) -> int:
    """Pixels per frame the graph is written for (the graph input's first axis)."""
    inits = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    return int(model.get_tensor_shape(first.name)[0])


@dataclasses.dataclass
class LoopTiming:
    name: str
    steps: int
    ii: int  # slowest body node, cycles per vector
    latency: int  # body critical path, cycles per vector
    overhead: int
    bottleneck: str

    def min_pixels(self) -> int:
        """Smallest P whose P x II covers the body latency (pipeline stays full)."""
        return max(1, math.ceil(self.latency / self.ii))

    def frame_cycles(self, p: int) -> int:
        return self.steps * (max(p * self.ii, self.latency) + self.overhead)


#: FINN's per-node estimates depend only on the node's attributes (and the part): cached by
#: the node's bytes, so a folding search re-estimates only the node it changed.
_RES_CACHE: dict[tuple[bytes, str], dict] = {}
_CYCLES_CACHE: dict[bytes, int] = {}
_CACHE_MAX = 200_000


def _key(node: onnx.NodeProto) -> bytes:
    return node.SerializeToString(deterministic=True)


def node_res(node: onnx.NodeProto, fpgapart: str, graph: onnx.GraphProto | None = None) -> dict:
    """flimcc's estimate of one FINN node (`flimcc.hw.estimate.node_estimate`: FINN's, with
    MVAU_rtl DSPs as the RTL packs them), cached; `graph` holds the node's weights."""
    facts = graph_facts(node, graph)
    key = (_key(node), fpgapart, tuple(sorted(facts.items())))
    found = _RES_CACHE.get(key)
    if found is None:
        if len(_RES_CACHE) > _CACHE_MAX:
            _RES_CACHE.clear()
        found = _RES_CACHE[key] = node_estimate(getCustomOp(node), fpgapart, **facts)
    return found


def node_cycles(node: onnx.NodeProto) -> int:
    """FINN's ``get_exp_cycles`` of one FINN node, cached."""
    key = _key(node)
    found = _CYCLES_CACHE.get(key)
    if found is None:
        if len(_CYCLES_CACHE) > _CACHE_MAX:
            _CYCLES_CACHE.clear()
        found = _CYCLES_CACHE[key] = int(getCustomOp(node).get_exp_cycles())
    return found


def loop_timing(node, inst) -> LoopTiming:
    """II and L of a loop body per vector: FINN's dataflow_performance algorithm (nodes in
    order, a node's latency its cycles plus its slowest FINN predecessor's) over the body
    nodes' FINN cycle estimates divided by the body's batch; equal to
    ``RecurrentLoop.body_performance`` (tested), without building models."""
    body = inst.get_nodeattr("body")
    batch = body.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    producer = {o: n.name for n in body.node for o in n.output}
    lat: dict[str, float] = {}
    ii, worst = 0.0, ""
    for n in body.node:
        if n.domain not in FINN_HW_DOMAINS:
            continue
        c = node_cycles(n) / batch
        if c > ii:
            ii, worst = c, n.name
        preds = [lat[producer[i]] for i in n.input if i in producer and producer[i] in lat]
        lat[n.name] = c + max(preds, default=0.0)
    return LoopTiming(node.name, inst.get_nodeattr("iterations"), int(ii), int(max(lat.values(), default=0)),
                      inst.get_nodeattr("step_overhead"), worst)


def loop_res(inst, fpgapart: str, built: bool = False) -> dict:
    """The loop's resources: its body nodes' estimates (`node_res`) summed, cached per node.
    `built`: the body as its RTL is built (`RecurrentLoop.hardware_body`: width converters
    and stream FIFOs included), equal to ``RecurrentLoop.node_res_estimation`` (tested), for
    what a build reports, with the loop's own muxes and counters; else the body alone, a few
    times faster, for the fold search (the difference is small and does not depend much on
    the folding)."""
    totals = {k: 0.0 for k in RESOURCES}
    if built:
        hw_body = inst.hardware_body()
        body = hw_body.graph
        for k, v in inst.control_res_estimation(hw_body).items():
            totals[k] += v
    else:
        body = inst.get_nodeattr("body")
    for n in body.node:
        if n.domain in FINN_HW_DOMAINS:
            res = node_res(n, fpgapart, body)
            for k in RESOURCES:
                totals[k] += float(res.get(k, 0))
    return totals


def auto_pixels(model: ModelWrapper, max_pixels: int = 256) -> int:
    """The smallest P that keeps every loop's pipeline full, capped at max_pixels."""
    need = [loop_timing(n, i).min_pixels() for n, i in loop_nodes(model)]
    return min(max(need, default=1), max_pixels)


def node_cycles_per_frame(model: ModelWrapper, p: int) -> dict[str, int]:
    """Cycles of every hardware node for one frame of P pixels."""
    batch = _batch(model)
    cycles = {}
    for node, inst in hw_nodes(model):
        cycles[node.name] = int(round(node_cycles(node) * p / batch))
    for node, inst in loop_nodes(model):
        cycles[node.name] = loop_timing(node, inst).frame_cycles(p)
    return cycles


def state_buffers(model: ModelWrapper, p: int) -> list[dict]:
    """The P hidden states each loop holds between steps: one FIFO per state, P x C
    elements deep... folded by the PE of the body node that consumes it (FINN stream
    geometry: width = PE x bits, depth = P x C / PE)."""
    bufs = []
    for node, inst in loop_nodes(model):
        body = inst.body()
        n_state = inst.get_nodeattr("num_state")
        for k in range(n_state):
            vi = body.graph.input[k]
            c = body.get_tensor_shape(vi.name)[-1]
            bits = body.get_tensor_datatype(vi.name).bitwidth()
            pe = 1
            for user in body.find_consumers(vi.name):
                try:
                    pe = max(pe, int(getCustomOp(user).get_nodeattr("PE")))
                except (AttributeError, KeyError, Exception):  # noqa: BLE001 - ops without PE
                    pass
            bufs.append({"loop": node.name, "state": vi.name, "channels": int(c), "bits": int(bits),
                         "pe": pe, "width": pe * bits, "depth": max(2, p * c // pe)})
    return bufs


def fifo_cost(width: int, depth: int, fpgapart: str, ram_style: str = "auto") -> dict:
    """FINN's own StreamingFIFO estimate for a FIFO of this geometry (ram_style "auto"
    lets FINN's ladder pick SRL, LUTRAM or BRAM from depth and width)."""
    from onnx import helper

    node = helper.make_node("StreamingFIFO_rtl", ["i"], ["o"], domain="finn.custom_op.fpgadataflow.rtl",
                            backend="fpgadataflow", depth=int(depth), folded_shape=[1, int(depth), 1],
                            normal_shape=[1, int(depth)], dataType=f"INT{int(width)}", ram_style=ram_style)
    return node_estimate(getCustomOp(node), fpgapart)


def total_resources(model: ModelWrapper, fpgapart: str, p: int, buffer_style: str = "auto",
                    built: bool = False) -> dict[str, float]:
    """The design's resources (`node_res` per node); `built`: loops as built (see `loop_res`)."""
    totals = {k: 0.0 for k in RESOURCES}
    for node, inst in hw_nodes(model):
        res = node_res(node, fpgapart, model.graph)
        for k in RESOURCES:
            totals[k] += float(res.get(k, 0))
    for node, inst in loop_nodes(model):
        res = loop_res(inst, fpgapart, built)
        for k in RESOURCES:
            totals[k] += res[k]
    if not _has_planned_buffers(model):
        for buf in state_buffers(model, p):
            res = fifo_cost(buf["width"], buf["depth"], fpgapart, buffer_style)
            for k in RESOURCES:
                totals[k] += float(res.get(k, 0))
    return totals


def _has_planned_buffers(model: ModelWrapper) -> bool:
    return any(n.op_type.startswith("StreamingFIFO") for _, inst in loop_nodes(model)
               for n in inst.get_nodeattr("body").node)


def throughput(model: ModelWrapper, p: int, clock_mhz: float) -> dict:
    cycles = node_cycles_per_frame(model, p)
    worst = max(cycles, key=lambda k: cycles[k])
    max_cycles = cycles[worst]
    return {
        "pixel_parallelism": p,
        "max_cycles": max_cycles,
        "max_cycles_node_name": worst,
        "cycles_per_pixel": max_cycles / p,
        "pixels_per_second": clock_mhz * 1e6 * p / max_cycles,
    }


def divisors(n: int) -> list[int]:
    return [d for d in range(1, int(n) + 1) if n % d == 0]


def fits(used: dict[str, float], budget: dict[str, float]) -> bool:
    return all(used.get(k, 0) <= budget.get(k, np.inf) + 1e-9 for k in RESOURCES)


#: Threshold-search stages at least this deep go to BRAM (shallower ones stay in LUTRAM).
THRESHOLD_BRAM_DEPTH = 128
_NEVER = 2**31 - 1


def place_threshold_memories(model: ModelWrapper, bram_depth: int = THRESHOLD_BRAM_DEPTH) -> int:
    """Thresholding_rtl keeps one memory per binary-search stage, (C/PE) x 2^s deep. FINN's
    estimator picks the least-waste primitive among all (LUTRAM wins for every depth, and
    URAM is offered even on parts without it); its depth triggers restrict the choice.
    Deep stages go to BRAM18, the rest to LUTRAM, never URAM (the URAM trigger is set out
    of reach: FINN's rule sends every stage at or past it, 0 included, to URAM)."""
    placed = 0

    def place(graph_model):
        nonlocal placed
        for node, inst in hw_nodes(graph_model):
            if node.op_type == "Thresholding_rtl":
                inst.set_nodeattr("depth_trigger_bram", int(bram_depth))
                inst.set_nodeattr("depth_trigger_uram", _NEVER)
                placed += 1

    for_each_graph(model, place)
    return placed


def to_lut_mvau(node) -> None:
    """An MVAU_rtl node (FINN's DSP-based RTL MVU) becomes flimcc's MVAULut_rtl in place:
    the same matrix, folding and numpy semantics, its products in LUTs and its weights in a
    ROM inside the module (FINN's internal_embedded)."""
    node.op_type = "MVAULut_rtl"
    drop = ("pumpedCompute", "gen_top_module", "resType", "mem_mode", "ram_style", "runtime_writeable_weights")
    keep = [a for a in node.attribute if a.name not in drop]
    del node.attribute[:]
    node.attribute.extend(keep + [onnx.helper.make_attribute("resType", "lut"),
                                  onnx.helper.make_attribute("mem_mode", "internal_embedded")])


def to_dsp_mvau(node) -> None:
    """The inverse of `to_lut_mvau`: FINN's RTL MVU, weights streamed from a memory beside it
    (internal_decoupled), as lower-finn makes it."""
    node.op_type = "MVAU_rtl"
    keep = [a for a in node.attribute if a.name not in ("resType", "mem_mode")]
    del node.attribute[:]
    node.attribute.extend(keep + [onnx.helper.make_attribute("resType", "auto"),
                                  onnx.helper.make_attribute("mem_mode", "internal_decoupled")])


def lut_multipliers(model: ModelWrapper) -> int:
    """Every RTL MVAU (FINN's DSP-based MVU) becomes flimcc's MVAULut_rtl (`to_lut_mvau`),
    loop bodies included; the number converted."""
    changed = 0

    def convert(graph_model):
        nonlocal changed
        for node in graph_model.graph.node:
            if node.op_type == "MVAU_rtl":
                to_lut_mvau(node)
                changed += 1

    for_each_graph(model, convert)
    return changed


def name_lut_units(model: ModelWrapper) -> int:
    """Matrix units moved to LUTs keep the name lower-finn gave them (``MVAU_rtl_4``), which
    then misleads in folding_config.json, reports and HDL module names: each MVAULut_rtl
    named ``MVAU_rtl_<k>`` becomes ``MVAULut_rtl_<k>`` (unless taken; names are unique
    model-wide). Done once the folding is final (the search refers to nodes by name).
    Returns the number renamed."""
    names = set(all_node_names(model))
    renamed = 0

    def rename(graph_model):
        nonlocal renamed
        for node in graph_model.graph.node:
            new = "MVAULut_rtl" + node.name[len("MVAU_rtl"):]
            if node.op_type == "MVAULut_rtl" and node.name.startswith("MVAU_rtl") and new not in names:
                names.discard(node.name)
                names.add(new)
                node.name = new
                renamed += 1

    for_each_graph(model, rename)
    return renamed


def planned_resources(model: ModelWrapper, fpgapart: str, p: int) -> dict[str, float]:
    """Resources once plan-memory has put its FIFOs into the loop bodies (on a copy), the
    loops as built (`loop_res`: width converters and stream FIFOs included), which is what
    plan-memory checks and compile reports."""
    import copy as _copy

    planned = ModelWrapper(_copy.deepcopy(model.model))
    for _, inst in loop_nodes(planned):
        body = inst.body()
        if not any(n.op_type.startswith("StreamingFIFO") for n in body.graph.node):
            insert_loop_fifos(body, inst.get_nodeattr("num_state"), p)
            inst.set_nodeattr("body", body.model.graph)
    return total_resources(planned, fpgapart, p, built=True)

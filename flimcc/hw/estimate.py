"""flimcc's resource model: FINN's estimators, corrected where the RTL that will be
synthesised says otherwise, with the source of every figure.

FINN's ``node_res_estimation`` is the starting point for every node. Where it departs from
the hardware, flimcc replaces the figure and says so in the node's ``source``:

* ``MVAU_rtl`` DSPs. FINN estimates ``ceil(PE / 4) * SIMD`` for every DSP48 part and width;
  finn-rtllib's ``mvu/mvu.sv`` packs ``NUM_LANES = 1 + (A_WIDTH - !NARROW - W) / (W + A - 1)``
  products into one DSP (A_WIDTH 25 on a DSP48E1, 27 on a DSP48E2; one lane when
  W = A_WIDTH), so it uses ``ceil(PE / NUM_LANES) * SIMD`` (SIMD halved when the compute is
  clock-pumped). NARROW is what FINN's ``generate_hdl`` sets: constant weights whose minimum
  is above the weight type's minimum. Confirmed by Yosys synthesis of FINN's generated RTL
  (``../shared/reference/rtl-tools.md``; ``benchmarks/bench_yosys_referee.py``). DSP58
  parts keep FINN's figure (its INT8 mode is a different core).
* ``MVAU_rtl`` weights in LUTRAM (``ram_style`` distributed): one LUT per word bit per 64
  words (``lutram_weights``); FINN's RTL MVU estimate has no LUTs at all.
* ``Thresholding_rtl`` memories when the threshold tensor has one row (per-tensor scales:
  every channel thresholds alike). FINN's RTL generation then sets C = PE and stores one
  copy per PE lane (``prepare_codegen_rtl_values``, ``make_weight_file``); its estimator
  still counts C / PE copies per lane (a 32-channel, 255-level table: 16-32 BRAM18 estimated
  for what is ~100 LUTs of LUTRAM). flimcc estimates the memories of the node as generated.
* FINN's HLS elementwise ops count only their LUTRAM parameter table, no datapath (0 LUTs
  for an adder): flimcc adds one LUT per output bit and PE lane for an adder, subtractor or
  comparator, a x b per lane for a multiplier FINN does not put in a DSP.

* ``StreamingFIFO`` memories deeper than fifo.sv's URAM threshold (2,028) on a part without
  UltraRAM: fifo.sv asks for URAM, Vivado drops the request and builds BRAM (FINN's
  estimator reports what is asked for: URAM on a 7-series). flimcc prices them as BRAM.

flimcc's own RTL ops (``IntElementwise*_rtl``, ``DuplicateStreams_rtl``, ...) carry their own
estimates (``source`` says so); everything else is FINN's figure, ``source`` ``"finn"``.

Flip-flops (``FF``): FINN estimates none, so every FF figure is flimcc's (`node_ffs`; the
rule in ``FF_source``): the registers of the RTL as generated, counted from its structure:

* ``MVAU_rtl`` (and ``MVAU_hls``, not refereed: HLS is not synthesised here): the MVU core, W + A + 10 per PE x SIMD product (operand and pipeline
  registers beside the DSPs: Yosys gives 839 / 1,671 FFs for the bare 8 x 8 core at SIMD 8,
  PE 4 / 8, ``../shared/reference/rtl-tools.md``; this gives 832 / 1,664), plus memstream's
  two weight-word registers and address/credit counters;
* ``Thresholding_rtl``: one pipeline register per stage and PE lane holding the value and
  the partial result (stages = output bits), plus the output;
* ``StreamingFIFO_rtl``: the output register and two occupancy counters (the queue itself
  is SRL, LUTRAM or BRAM, which Vivado does not build of FFs);
* ``StreamingDataWidthConverter_rtl``: an input- and an output-wide register plus counters;
* flimcc's RTL ops: their ``ff_estimation`` (the skid buffers on every output, the core's
  counters; `flimcc.hw.rtl_op`);
* anything else (FINN's HLS ops): one register per input and output stream bit.

``benchmarks/bench_yosys_referee.py`` compares each with Yosys.
"""

from __future__ import annotations

import math

import numpy as np

#: width of the DSP's A (weight) datapath that lanes are packed into, per DSP block (mvu.sv)
A_WIDTH = {"DSP48E1": 25, "DSP48E2": 27}

FINN = "finn"
LANES = "flimcc: DSPs by finn-rtllib mvu.sv's lane packing"
ELEMENTWISE = "flimcc: LUTs of the elementwise datapath (FINN estimates 0)"
OWN = "flimcc: the op's own estimate (flimcc's RTL op)"
SHARED = "flimcc: one threshold row, stored once per PE lane as FINN's RTL generates it (C = PE)"
NO_URAM = "flimcc: fifo.sv asks for URAM, the part has none: built (and priced) as BRAM"

#: Zynq UltraScale+ devices with UltraRAM (DS891); 7-series parts have none, other
#: UltraScale+ families (Kintex/Virtex/Alveo) are taken to have it
_ZYNQ_USP_WITH_URAM = {4, 5, 7, 11, 17, 19}


def part_has_uram(fpgapart: str) -> bool:
    import re

    part = fpgapart.lower()
    if part.startswith("xc7"):
        return False
    zu = re.match(r"xczu(\d+)", part)
    return int(zu.group(1)) in _ZYNQ_USP_WITH_URAM if zu else True


def dsp_block(fpgapart: str) -> str:
    from finn.util.basic import get_dsp_block

    return get_dsp_block(fpgapart)


def mvu_lanes(weight_bits: int, act_bits: int, narrow: bool, block: str) -> int:
    """Products one DSP computes at once in finn-rtllib's MVU (mvu.sv's NUM_LANES)."""
    a = A_WIDTH[block]
    if a == weight_bits:
        return 1
    return 1 + (a - (0 if narrow else 1) - weight_bits) // (weight_bits + act_bits - 1)


def mvau_rtl_dsps(pe: int, simd: int, weight_bits: int, act_bits: int, narrow: bool, block: str,
                  pumped: bool = False) -> int:
    """DSPs of an MVAU_rtl: ceil(PE / lanes) per SIMD lane of the DSP chain."""
    dsp_simd = (simd + (simd % 2 if pumped else 0)) // (2 if pumped else 1)
    return math.ceil(pe / mvu_lanes(weight_bits, act_bits, narrow, block)) * dsp_simd


def lutram_weights(inst) -> int:
    """LUTs of a weight memory in LUTRAM: one LUT per word bit per 64 words (FINN's MVAU_rtl
    counts none, its memory estimate is BRAM/URAM only)."""
    width = inst.get_nodeattr("PE") * inst.get_nodeattr("SIMD") * inst.get_input_datatype(1).bitwidth()
    return width * math.ceil(inst.calc_wmem() / 64)


def narrow_weights(inst, weights) -> bool:
    """What FINN's MVAU_rtl.generate_hdl sets NARROW_WEIGHTS to."""
    if weights is None or inst.get_nodeattr("mem_mode") in ("dynamic", "external_mem"):
        return False
    return bool(np.min(weights) != inst.get_input_datatype(1).min())


def elementwise_luts(pe: int, in_bits: tuple[int, int], out_bits: int, multiply: bool, uses_dsp: bool,
                     table_bits: int = 0) -> int:
    """LUTs of a PE-lane elementwise datapath: an adder/subtractor/comparator is one LUT per
    output bit and lane (a carry chain), a LUT multiplier a x b per lane; a constant operand
    table in LUTRAM 64 bits per LUT (flimcc's IntElementwise*_rtl and FINN's HLS ops alike)."""
    a, b = in_bits
    datapath = (0 if uses_dsp else pe * a * b) if multiply else pe * out_bits
    return datapath + math.ceil(table_bits / 64)


def _clog2(n: int) -> int:
    return max(1, math.ceil(math.log2(max(int(n), 2))))


def mvau_rtl_ffs(pe: int, simd: int, weight_bits: int, act_bits: int, wmem_depth: int, decoupled: bool) -> int:
    """FFs of an MVAU_rtl: the MVU core (W + A + 10 per product) and, for weights streamed
    from memstream beside it (internal_decoupled), two weight-word registers and counters."""
    core = pe * simd * (weight_bits + act_bits + 10)
    stream = 2 * pe * simd * weight_bits + 2 * _clog2(wmem_depth) + 8 if decoupled else 0
    return core + stream


def thresholding_ffs(pe: int, in_bits: int, out_bits: int) -> int:
    """FFs of a Thresholding_rtl: per PE lane, `out_bits` pipeline stages each holding the
    value, the partial result and the op code, then the output register."""
    return pe * (out_bits * (in_bits + out_bits + 2) + out_bits)


def fifo_ffs(width: int, depth: int) -> int:
    """FFs of a StreamingFIFO_rtl (fifo.sv): the output register and two occupancy counters."""
    return width + 2 * (_clog2(depth + 1) + 1) + 4


def dwc_ffs(in_width: int, out_width: int) -> int:
    """FFs of a StreamingDataWidthConverter_rtl: an input- and an output-wide register and
    the beat counters."""
    return in_width + out_width + 2 * _clog2(max(in_width, out_width) // max(min(in_width, out_width), 1) + 1) + 4


def node_ffs(inst) -> tuple[int, str]:
    """(FFs, the rule): see the module docstring."""
    op = inst.onnx_node.op_type
    if hasattr(inst, "ff_estimation"):
        return int(inst.ff_estimation()), "flimcc: the op's own estimate (flimcc's RTL op)"
    if op.startswith("MVAU"):
        return mvau_rtl_ffs(inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD"), inst.get_input_datatype(1).bitwidth(),
                            inst.get_input_datatype(0).bitwidth(), inst.calc_wmem(),
                            inst.get_nodeattr("mem_mode") == "internal_decoupled"), "flimcc: MVU core + memstream"
    if op == "Thresholding_rtl":
        return thresholding_ffs(inst.get_nodeattr("PE"), inst.get_input_datatype(0).bitwidth(),
                                inst.get_output_datatype().bitwidth()), "flimcc: threshold pipeline"
    if op.startswith("StreamingFIFO"):
        return fifo_ffs(inst.get_instream_width_padded(), inst.get_nodeattr("depth")), "flimcc: FIFO output + counters"
    if op.startswith("StreamingDataWidthConverter"):
        return dwc_ffs(inst.get_instream_width(), inst.get_outstream_width()), "flimcc: width converter registers"
    outs = sum(inst.get_outstream_width(k) for k in range(len(inst.onnx_node.output)))
    return inst.get_instream_width(0) + outs, "flimcc: one register per stream bit (interfaces)"


def node_estimate(inst, fpgapart: str, narrow: bool = False, one_threshold_row: bool = False) -> dict:
    """The node's resources (FINN's keys, LUT/BRAM_18K/URAM/DSP) with ``source``: ``"finn"``
    or the flimcc rule that replaced a FINN figure (module docstring). The facts a node's
    attributes do not hold come from its graph (`graph_facts`): `narrow`, the MVAU_rtl's
    weights are narrow-range (``narrow_weights``); `one_threshold_row`, the thresholds are
    one row for all channels."""
    from flimcc.hw.rtl_op import FlimccRTLOp

    res = dict(inst.node_res_estimation(fpgapart))
    res["source"] = OWN if isinstance(inst, FlimccRTLOp) else FINN
    op = inst.onnx_node.op_type
    if op == "MVAU_rtl" and inst.get_nodeattr("ram_style") == "distributed" and \
            inst.get_nodeattr("mem_mode") == "internal_decoupled":
        res["LUT"] = res.get("LUT", 0) + lutram_weights(inst)
    if op == "MVAU_rtl":
        block = dsp_block(fpgapart)
        if block in A_WIDTH:
            res["DSP"] = mvau_rtl_dsps(inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD"),
                                       inst.get_input_datatype(1).bitwidth(), inst.get_input_datatype(0).bitwidth(),
                                       narrow, block, bool(inst.get_nodeattr("pumpedCompute")))
            res["source"] = LANES
        if inst.get_nodeattr("ram_style") == "distributed" and inst.get_nodeattr("mem_mode") == "internal_decoupled":
            res["source"] += "; weights in LUTRAM counted (FINN counts none)"
    elif op == "Thresholding_rtl" and one_threshold_row:
        res.update(_as_generated_thresholds(inst, fpgapart))
        res["source"] = SHARED
    elif op.startswith("StreamingFIFO") and res.get("URAM") and not part_has_uram(fpgapart):
        from finn.util.resource_models import _fifo_cost

        fifo = _fifo_cost(inst.get_nodeattr("depth"), inst.get_instream_width_padded(), "block")
        res.update({"BRAM_18K": fifo.bram, "LUT": fifo.lut, "URAM": 0, "source": NO_URAM})
    elif op.startswith("Elementwise") and op.endswith("_hls"):  # FINN counts only a LUTRAM parameter table
        pe = inst.get_nodeattr("PE")
        ins = (inst.get_input_datatype(0).bitwidth(), inst.get_input_datatype(1).bitwidth())
        res["LUT"] = res.get("LUT", 0) + elementwise_luts(pe, ins, inst.get_output_datatype().bitwidth(), "Mul" in op,
                                      bool(res.get("DSP")))
        res["source"] = ELEMENTWISE
    res["FF"], res["FF_source"] = node_ffs(inst)
    return res


def _as_generated_thresholds(inst, fpgapart: str) -> dict:
    """FINN's memory estimate of a Thresholding_rtl with C = PE (what it generates for one row)."""
    import copy

    from qonnx.custom_op.registry import getCustomOp

    node = copy.deepcopy(inst.onnx_node)
    shared = getCustomOp(node)
    shared.set_nodeattr("NumChannels", inst.get_nodeattr("PE"))
    return {"BRAM_18K": shared.bram_estimation(fpgapart), "LUT": shared.lut_estimation(fpgapart),
            "URAM": shared.uram_estimation(fpgapart),
            "BRAM_efficiency": shared.bram_efficiency_estimation(fpgapart),
            "URAM_efficiency": shared.uram_efficiency_estimation(fpgapart)}


def graph_facts(node, graph) -> dict:
    """What `node_estimate` needs from the node's graph (a GraphProto holding its
    initializers): ``narrow`` for an MVAU_rtl, ``one_threshold_row`` for a Thresholding_rtl."""
    if node.op_type not in ("MVAU_rtl", "Thresholding_rtl") or graph is None:
        return {}
    init = next((t for t in graph.initializer if t.name == node.input[1]), None)
    if node.op_type == "Thresholding_rtl":
        return {"one_threshold_row": init is not None and len(init.dims) == 2 and init.dims[0] == 1}
    # fold asks this for every body node at every move: the weights are read once per content
    key = (node.SerializeToString(deterministic=True),
           None if init is None else init.SerializeToString(deterministic=True))
    found = _NARROW.get(key)
    if found is None:
        from onnx import numpy_helper
        from qonnx.custom_op.registry import getCustomOp

        if len(_NARROW) > 10_000:
            _NARROW.clear()
        found = _NARROW[key] = narrow_weights(getCustomOp(node), None if init is None else numpy_helper.to_array(init))
    return {"narrow": found}


_NARROW: dict[tuple, bool] = {}


def graph_estimates(graph, fpgapart: str) -> dict[str, dict]:
    """``node_estimate`` of every FINN node of `graph` (a GraphProto), by node name, in order."""
    from qonnx.custom_op.registry import getCustomOp

    from flimcc.layout import FINN_HW_DOMAINS

    return {n.name: node_estimate(getCustomOp(n), fpgapart, **graph_facts(n, graph))
            for n in graph.node if n.domain in FINN_HW_DOMAINS}

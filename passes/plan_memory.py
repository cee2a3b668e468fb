"""plan-memory: the loop FIFOs, where every memory lives, and whether the design fits.

Inside each RecurrentLoop body this pass inserts FINN ``StreamingFIFO`` nodes:

* on every state's feedback path, the buffer that holds the P interleaved hidden states
  between steps: P x C/PE words of PE x bits (the folded stream of the node producing the
  new state);
* on the early input of every reconvergent join (an elementwise op fed by two paths of
  different latency, e.g. h_{t-1} waiting at ``h - c`` while the gates compute), deep enough
  that the early branch never stalls the late one: the latency difference in cycles (a
  stream moves at most one word per cycle), capped at one step of all P pixels.

Their ``ram_style`` is left to FINN's own rule ("auto": SRL, LUTRAM or BRAM by depth and
width); weights and thresholds keep the placement ``fold`` chose. FIFOs between the
top-level FINN nodes are FINN's job (``step_set_fifo_depths`` in the build folder's config).

The memory map (``memory_plan``) lists every weight, threshold and FIFO memory with FINN's
estimate of what it costs; a design over the budget stops here, naming the largest
consumers and what to change.
"""

from __future__ import annotations


from qonnx.core.modelwrapper import ModelWrapper

from flimcc.errors import TargetError
from flimcc.hw import cost
from flimcc.hw.estimate import graph_facts, node_estimate
from flimcc.hw.fifos import insert_loop_fifos
from flimcc.layout import hw_nodes, loop_nodes
from flimcc.passbase import Contract, Option, Pass, register

def memory_plan(model: ModelWrapper, fpgapart: str) -> dict:
    """Every memory of the design with its estimated cost (`flimcc.hw.estimate`)."""
    entries = []

    def add(where: str, graph_model: ModelWrapper):
        for node, inst in hw_nodes(graph_model):
            res = node_estimate(inst, fpgapart, **graph_facts(node, graph_model.graph))
            styles = {}
            if node.op_type.startswith("MVAU"):
                kind = "weights"
                styles = {"mem_mode": inst.get_nodeattr("mem_mode"), "ram_style": inst.get_nodeattr("ram_style")}
                bits = inst.get_nodeattr("MW") * inst.get_nodeattr("MH") * inst.get_input_datatype(1).bitwidth()
            elif node.op_type.startswith("Thresholding"):
                kind = "thresholds"
                styles = {k: inst.get_nodeattr(k) for k in ("depth_trigger_bram", "depth_trigger_uram")
                          if k in inst.get_nodeattr_types()}
                thr = graph_model.get_initializer(node.input[1])
                bits = int(thr.size) * inst.get_input_datatype(1).bitwidth() if thr is not None else 0
            elif node.op_type.startswith("StreamingFIFO"):
                kind = "fifo"
                styles = {"depth": inst.get_nodeattr("depth"), "ram_style": inst.get_nodeattr("ram_style"),
                          "resolved_ram_style": inst.get_ram_style()}
                bits = inst.get_nodeattr("depth") * inst.get_instream_width()
            else:
                continue
            entries.append({"memory": kind, "node": f"{where}{node.name}", "bits": int(bits), **styles,
                            "BRAM_18K": res["BRAM_18K"], "LUT": res["LUT"], "URAM": res["URAM"]})

    add("", model)
    for node, loop in loop_nodes(model):
        add(f"{node.name}_body_", loop.body())
    totals = {k: float(sum(e[k] for e in entries)) for k in ("BRAM_18K", "LUT", "URAM")}
    return {"memories": entries, "total": totals, "total_bits": int(sum(e["bits"] for e in entries))}


def _describe(node, inst) -> str:
    """What makes a node big, in a user's terms."""
    t = node.op_type
    try:
        if t.startswith("Thresholding"):
            return (f"{inst.get_nodeattr('numSteps'):,} thresholds x {inst.get_nodeattr('NumChannels')} channels, "
                    f"{inst.get_nodeattr('inputDataType')} -> {inst.get_nodeattr('outputDataType')}")
        if t.startswith("MVAU"):
            return (f"{inst.get_nodeattr('MW')}x{inst.get_nodeattr('MH')} {inst.get_nodeattr('weightDataType')} weights, "
                    f"PE {inst.get_nodeattr('PE')} SIMD {inst.get_nodeattr('SIMD')}")
        if t.startswith("StreamingFIFO"):
            return f"depth {inst.get_nodeattr('depth')}"
    except AttributeError:
        pass
    return t


def consumers(model: ModelWrapper, fpgapart: str) -> list[tuple[str, str, dict]]:
    """(name, description, resource estimate) of every FINN node, loop bodies included."""
    out = []
    for node, inst in hw_nodes(model):
        out.append((node.name, _describe(node, inst), node_estimate(inst, fpgapart, **graph_facts(node, model.graph))))
    for node, loop in loop_nodes(model):
        body = loop.body()
        for bnode, binst in hw_nodes(body):
            out.append((f"{node.name}/{bnode.name}", _describe(bnode, binst),
                        node_estimate(binst, fpgapart, **graph_facts(bnode, body.graph))))
    return out


def does_not_fit(model: ModelWrapper, target, used: dict, budget: dict, what: str = "the design") -> str:
    over = [k for k in cost.RESOURCES if used[k] > budget[k]]
    ranked = sorted(consumers(model, target.fpga_part),
                    key=lambda c: (-max(c[2].get(k, 0) / max(budget[k], 1) for k in over), c[0]))
    top = "; ".join(f"{name} [{desc}]: " + ", ".join(f"{k} {res.get(k, 0):,.0f}" for k in over)
                    for name, desc, res in ranked[:3])
    return (f"{what} does not fit {target.name}: "
            + ", ".join(f"{k} {used[k]:,.0f} > {budget[k]:,.0f} "
                        f"({100 * budget[k] / max(target.resources.get(k, 1), 1):.0f}% of {target.resources.get(k, 0):,})"
                        for k in over)
            + f"; largest consumers: {top}; use fewer bits (quantize{{bits=4}}: 15 thresholds per channel "
            "instead of 255), a smaller P (--pixels), less parallelism (--fps), or a larger board")


@register
class PlanMemory(Pass):
    """Loop FIFOs, memory map and the fit check (see module docstring)."""

    name = "plan-memory"
    summary = "state and reconvergence FIFOs in the loops, memory map, fit check against the board"
    contract = Contract.EXACT
    options = (
        Option("target", str, "pynq-z2", "board whose budget the design must fit"),
        Option("headroom", float, 0.85, "fraction of each resource the design may use"),
        Option("fifo-ram-style", str, "auto", "ram_style of the inserted FIFOs",
               ("auto", "srl", "distributed", "block", "ultra")),
    )

    def apply(self, model: ModelWrapper):
        from flimcc.targets import get_target

        target = get_target(self.target)
        loops = list(loop_nodes(model))
        if not loops and not list(hw_nodes(model)):
            raise TargetError("pass 'plan-memory': no hardware nodes (run lower-finn first)")
        fifos = []
        for node, inst in loops:
            body = inst.body()
            if any(n.op_type.startswith("StreamingFIFO") for n in body.graph.node):
                continue  # planned already
            p = inst.get_nodeattr("pixels")
            for f in insert_loop_fifos(body, inst.get_nodeattr("num_state"), p, self.fifo_ram_style,
                                       prefix=f"{node.name}_"):
                fifos.append({"loop": node.name, **f})
            inst.set_nodeattr("body", body.model.graph)
        p = max((inst.get_nodeattr("pixels") for _, inst in loops), default=1)
        used = cost.total_resources(model, target.fpga_part, p, built=True)  # as compile reports it
        budget = target.budget(self.headroom)
        if not cost.fits(used, budget):
            raise TargetError(does_not_fit(model, target, used, budget))
        plan = memory_plan(model, target.fpga_part)
        self.plan = plan
        self.metrics = {"fifos_inserted": len(fifos),
                        "state_fifo_words": sum(f["depth"] for f in fifos if f["kind"] == "state"),
                        "memory_bits": plan["total_bits"],
                        **{f"{k.lower()}_used": round(used[k]) for k in cost.RESOURCES}}
        return model, False

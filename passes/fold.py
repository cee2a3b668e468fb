"""fold: PE/SIMD of every hardware node (loop bodies included) within the board's budget.

FINN's ``SetFolding`` treats each node alone and aims at a cycle target; it knows nothing
of the recurrent loop (whose cost is T x max(P x II, L) per frame) nor of a resource
budget. This pass maximises pixels per second instead, subject to the target's LUT,
BRAM18, URAM and DSP times a headroom (default 85%), with FINN's own estimators as the
cost model (:mod:`flimcc.hw.cost`):

    for each placement of the threshold memories (BRAM18 from some depth on, else LUTRAM)
    and each kind of multiplier (matrix units on DSP slices, or all in LUTs):
    repeat: find the bottleneck (the node with the most cycles per pixel; inside a loop,
            the body node that sets its II); raise its parallelism one step (the next
            divisor of SIMD or PE, whichever cuts more cycles, the cheaper on ties);
            keep the move if the whole design still fits, else try the node's other
            step; when neither fits, relieve until it does (nodes faster than needed
            step down; elementwise products move to LUTs; where the step ran out of
            DSPs, single matrix units move to LUTs, flimcc's MVAULut_rtl, cheapest
            first) and go on; stop when relief cannot make the step fit.

    keep the fastest result; all-LUT multipliers only when they beat the best DSP design
    by LUT_MULTIPLIER_GAIN (LUT MACs cost more power and routing than DSP slices).

Without the fallback to a node's cheaper step, a larger budget would run a longer prefix of
the same move sequence and never lower throughput; with it a larger budget can take another
path, so that property is tested (tests/test_compile.py), not guaranteed. With ``fps`` the search stops as
soon as the target rate is met. When ``batch-pixels{p=auto}`` ran before, P follows each
move (the smallest P that keeps the loop pipelines full), is then doubled while that fits
and gains (`more_pixels`: a step's fixed overhead is shared by more pixels), and is set at
the end. Resources are flimcc's estimates (:mod:`flimcc.hw.estimate`: FINN's, corrected
where the RTL differs), the final check with the loops as built.
"""

from __future__ import annotations

import copy

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.errors import FlimccError
from flimcc.hw import cost
from flimcc.hw.estimate import graph_facts, node_estimate
from flimcc.layout import for_each_graph, hw_nodes, loop_nodes
from flimcc.passbase import Contract, Option, Pass, register

PIXELS_KEY = "flimcc.pixels"

#: Threshold memories placed in BRAM18 from this search-stage depth on (the rest LUTRAM);
#: the search runs once per placement and keeps the fastest design.
THRESHOLD_PLACEMENTS = (64, 256, 1024, cost._NEVER)

#: All matrix units on LUT multipliers are taken only when they are this much faster than
#: the best design on DSPs (which may itself move single units to LUTs).
LUT_MULTIPLIER_GAIN = 1.02


#: Where matrix products multiply: "dsp" keeps FINN's specialisation (the RTL MVU on DSP
#: slices, which FINN packs several 8-bit products into), "lut" makes every RTL MVU flimcc's
#: MVAULut_rtl (LUT multipliers, weights in a ROM). Searched like the placements.
MULTIPLIERS = ("dsp", "lut")


def pixels_setting(model: ModelWrapper) -> str:
    """'auto' or a number, as batch-pixels recorded it ('1' if it never ran)."""
    for prop in model.model.metadata_props:
        if prop.key == PIXELS_KEY:
            return prop.value
    return "1"


def current_pixels(model: ModelWrapper) -> int:
    setting = pixels_setting(model)
    return cost.auto_pixels(model) if setting == "auto" else int(setting)


def fold_knobs(inst) -> list[tuple[str, list[int]]]:
    """(attribute, allowed values ascending) for a FINN node's parallelism."""
    types = inst.get_nodeattr_types()
    knobs = []
    if "SIMD" in types and "MW" in types:
        mw = inst.get_nodeattr("MW")
        simd = cost.divisors(mw)
        if inst.onnx_node.op_type == "MVAU_rtl" and mw > 1:
            # never one beat per vector: FINN's RTL matrix unit overflows its output queue
            # under backpressure at SIMD = MW (see lower_finn.single_fold_matrices_to_hls)
            simd = [d for d in simd if d < mw]
        knobs.append(("SIMD", simd))
    elif "SIMD" in types and "ChannelsPerStream" in types:  # StreamingSplit: SIMD divides every part
        parts = list(inst.get_nodeattr("ChannelsPerStream"))
        knobs.append(("SIMD", [d for d in cost.divisors(min(parts)) if all(c % d == 0 for c in parts)]))
    if "PE" in types:
        if "MH" in types:
            channels = inst.get_nodeattr("MH")
        elif "NumChannels" in types:
            channels = inst.get_nodeattr("NumChannels")
        else:
            channels = int(inst.get_normal_output_shape()[-1])
        knobs.append(("PE", cost.divisors(channels)))
    return knobs


#: a larger P is taken when it gains at least this much throughput (it costs state memory
#: and latency); P stays at most cost.auto_pixels' cap
MORE_PIXELS_GAIN = 1.02


def more_pixels(model: ModelWrapper, part: str, budget: dict, clock: float, p: int, max_pixels: int = 256) -> int:
    """P beyond the smallest that keeps the loop pipelines full: each loop step costs a
    fixed overhead (and any body latency P x II does not cover) shared by the P pixels of a
    frame, so doubling P gains where II is small. Doubles P while the design still fits and
    each doubling gains at least 2%."""
    best = cost.throughput(model, p, clock)["pixels_per_second"]
    while 2 * p <= max_pixels:
        rate = cost.throughput(model, 2 * p, clock)["pixels_per_second"]
        if rate < best * MORE_PIXELS_GAIN or not cost.fits(cost.total_resources(model, part, 2 * p), budget):
            break
        p, best = 2 * p, rate
    return p


#: relief rounds per search (a trimmed node can become the bottleneck again)
MAX_RELIEFS = 16

#: flimcc's RTL ops whose products can leave the DSPs (``resType`` lut)
PRODUCT_OPS = ("IntElementwiseMul_rtl", "IntRequant_rtl")


def relieve(model: ModelWrapper, p: int, part: str | None = None, budget: dict | None = None,
            short: frozenset = frozenset(), step_fits=None, goal: dict | None = None) -> bool:
    """Free resources without slowing the design, for when the bottleneck's next step does
    not fit (`short`: the resources that step ran out of; `step_fits()`: whether it fits
    now, if known): (1) every node faster than it needs to be steps its parallelism down (a
    loop body node while it stays within its loop's II, a top-level node while it stays
    within the slowest node's cycles per frame); (2) the elementwise products and
    requantizations on DSPs go to LUTs (the DSPs are the matrix units'), kept only if the
    design still fits `budget` on `part`; (3) when the step ran out of DSPs, matrix units
    move from DSPs to LUTs (`matrix_to_luts`). Stops at the first stage after which the
    step fits (any change, without `step_fits`). True if it then fits (each change only
    lowers parallelism or moves products to LUTs, so relief ends). `goal`: see `_trim`."""
    def helped(changed: bool) -> bool:
        return changed and (step_fits is None or step_fits())

    if helped(_trim(model, p, goal)):
        return True
    moved = []

    def to_luts(graph_model):
        for node, inst in hw_nodes(graph_model):
            if node.op_type in PRODUCT_OPS and inst.get_nodeattr("resType") != "lut" and inst.dsp_estimation(None):
                moved.append((node.name, inst.get_nodeattr("resType")))
                inst.set_nodeattr("resType", "lut")

    for_each_graph(model, to_luts)
    if moved and budget is not None and not cost.fits(cost.total_resources(model, part, p), budget):
        styles = dict(moved)

        def back(graph_model):
            for node, inst in hw_nodes(graph_model):
                if node.name in styles:
                    inst.set_nodeattr("resType", styles[node.name])

        for_each_graph(model, back)
        moved = []
    if helped(bool(moved)):
        return True
    if "BRAM_18K" in short and budget is not None and weights_out_of_bram(model, p, part, budget, step_fits):
        return True
    return "DSP" in short and budget is not None and matrix_to_luts(model, p, part, budget, step_fits)


#: weight memories this shallow (words per PE x SIMD lane group) may move to LUTRAM: one
#: LUT per word bit per 64 words, where a BRAM18 would hold 512-1024 words
LUTRAM_MAX_DEPTH = 128


def weights_out_of_bram(model: ModelWrapper, p: int, part: str, budget: dict, step_fits=None) -> bool:
    """Move matrix units' weight memories out of BRAM18, biggest first, to LUTRAM when the
    memory is shallow (FINN's ``ram_style`` distributed; an 8-kbit matrix folded 16 deep
    takes 29 BRAM18 at 3% use). Each move is kept if the design still fits `budget`, until
    `step_fits()`; if the step never fits, every memory moved here moves back. True if the
    step fits. Not UltraRAM: FINN builds URAM weights only as runtime-writeable (loaded over
    AXI-lite after configuration), and a loop's RTL does not expose its body's AXI-lite."""
    candidates = []

    def collect(graph_model):
        for node, inst in hw_nodes(graph_model):
            if not node.op_type.startswith("MVAU") or inst.get_nodeattr("mem_mode") != "internal_decoupled":
                continue
            if inst.get_nodeattr("ram_style") not in ("auto", "block"):
                continue
            bram = cost.node_res(node, part, graph_model.graph).get("BRAM_18K", 0)
            depth = inst.calc_wmem()
            styles = ["distributed"] if depth <= LUTRAM_MAX_DEPTH else []
            if bram and styles:
                candidates.append((-bram, node.name, inst.get_nodeattr("ram_style"), styles))

    for_each_graph(model, collect)
    moved = {}
    for _, name, old, styles in sorted(candidates):
        for style in styles:
            trial = ModelWrapper(copy.deepcopy(model.model))
            _set_op(trial, {name}, lambda node, style=style: getCustomOp(node).set_nodeattr("ram_style", style))
            if cost.fits(cost.total_resources(trial, part, p), budget):
                _set_op(model, {name}, lambda node, style=style: getCustomOp(node).set_nodeattr("ram_style", style))
                moved[name] = old
                break
        if moved and (step_fits is None or step_fits()):
            return True
    for name, old in moved.items():
        _set_op(model, {name}, lambda node, old=old: getCustomOp(node).set_nodeattr("ram_style", old))
    return False


def tidy(model: ModelWrapper, p: int, part: str, budget: dict, clock: float) -> None:
    """The search's end state can hold what no longer buys speed: parallelism raised before
    another part of the design stopped the search (one loop at II 8 while the other cannot
    leave 16), and matrix units moved to LUTs for steps that are then undone. Step every
    node down while the design's pixels/s stay the same, then move matrix units back to
    DSPs where that still fits (biggest LUT saving first; FINN's RTL MVU needs
    SIMD < MW). Neither changes the throughput."""
    from flimcc.hw.mvau_lut_rtl import MVAULut_rtl

    rate = cost.throughput(model, p, clock)["pixels_per_second"]

    def same_rate() -> bool:
        return cost.throughput(model, p, clock)["pixels_per_second"] >= rate * (1 - 1e-9)

    for node, inst in hw_nodes(model):
        _step_down(inst, same_rate)
    for node, loop in loop_nodes(model):
        body = loop.body()

        def body_same_rate() -> bool:
            loop.set_nodeattr("body", body.model.graph)
            return same_rate()

        for bnode, binst in hw_nodes(body):
            _step_down(binst, body_same_rate)
        loop.set_nodeattr("body", body.model.graph)
    units = []

    def collect(graph_model):
        for node, inst in hw_nodes(graph_model):
            if isinstance(inst, MVAULut_rtl) and inst.get_nodeattr("SIMD") < inst.get_nodeattr("MW"):
                units.append((-inst.lut_estimation(), node.name))

    for_each_graph(model, collect)
    for _, name in sorted(units):
        trial = ModelWrapper(copy.deepcopy(model.model))
        _set_op(trial, {name}, cost.to_dsp_mvau)
        if cost.fits(cost.total_resources(trial, part, p), budget):
            _set_op(model, {name}, cost.to_dsp_mvau)


def _set_op(model: ModelWrapper, names: set[str], convert) -> None:
    """`convert(node)` on the nodes named `names`, wherever they are (node names are unique
    model-wide)."""
    def edit(graph_model):
        for node in graph_model.graph.node:
            if node.name in names:
                convert(node)

    for_each_graph(model, edit)


def matrix_to_luts(model: ModelWrapper, p: int, part: str, budget: dict, step_fits=None) -> bool:
    """Move matrix units off the DSPs, cheapest first: each MVAU_rtl whose LUT version
    (flimcc's MVAULut_rtl, same folding) still fits `budget` becomes that version, until
    `step_fits()` (one unit without it). True if that happened; otherwise every unit moved
    here moves back (LUTs spent for nothing)."""
    from flimcc.hw.mvau_lut_rtl import MVAULut_rtl

    candidates = []

    def collect(graph_model):
        for node, inst in hw_nodes(graph_model):
            if node.op_type == "MVAU_rtl":
                lut = copy.deepcopy(node)
                cost.to_lut_mvau(lut)
                candidates.append((MVAULut_rtl(lut).lut_estimation(), node.name, copy.deepcopy(node)))

    for_each_graph(model, collect)
    moved = {}
    for _, name, original in sorted(candidates, key=lambda c: (c[0], c[1])):
        trial = ModelWrapper(copy.deepcopy(model.model))
        _set_op(trial, {name}, cost.to_lut_mvau)
        if not cost.fits(cost.total_resources(trial, part, p), budget):
            continue
        _set_op(model, {name}, cost.to_lut_mvau)
        moved[name] = original
        if step_fits is None or step_fits():
            return True
    for name, original in moved.items():
        _set_op(model, {name}, lambda node, original=original: node.CopyFrom(original))
    return False


def _step_down(inst, fits) -> bool:
    """Lower the node's parallelism one step at a time while `fits()` still holds."""
    lowered = False
    for attr, values in fold_knobs(inst):
        while True:
            cur = inst.get_nodeattr(attr)
            lower = [v for v in values if v < cur]
            if not lower:
                break
            inst.set_nodeattr(attr, lower[-1])
            if not fits():
                inst.set_nodeattr(attr, cur)
                break
            lowered = True
    return lowered


def _trim(model: ModelWrapper, p: int, goal: dict | None = None) -> bool:
    """Step down every node faster than it needs to be. `goal`: the cycles the bottleneck's
    step aims at, per frame (key ``""``, a top-level bottleneck) or per vector of its loop
    (key: the loop's name); nodes there stay within the goal, not the current limit, or
    trimming would undo the steps that brought them to the goal (they tie with the
    bottleneck until it moves)."""
    goal = goal or {}
    changed = False
    frame = cost.node_cycles_per_frame(model, p)
    limit = min(max(frame.values()), goal.get("", float("inf")))
    batch = cost._batch(model)
    for node, inst in hw_nodes(model):
        changed |= _step_down(inst, lambda: inst.get_exp_cycles() * p / batch <= limit)
    for node, loop in loop_nodes(model):
        body = loop.body()
        vectors = body.get_tensor_shape(body.graph.input[0].name)[0]
        ii = min(cost.loop_timing(node, loop).ii, goal.get(node.name, float("inf")))
        trimmed = False
        for bnode, binst in hw_nodes(body):
            trimmed |= _step_down(binst, lambda: binst.get_exp_cycles() / vectors <= ii)
        if trimmed:
            loop.set_nodeattr("body", body.model.graph)
            changed = True
    return changed


def _moves(inst, fpgapart: str, budget: dict, facts: dict) -> list[tuple[str, int, int]]:
    """The node's one-step parallelism increases (attribute, value, cycles cut), best first:
    the one that cuts the node's cycles most; among equal cuts the one that costs least
    (resource increase as a fraction of the budget, so PE steps packed into shared DSPs win
    over SIMD steps that are not). Empty when the node is fully parallel."""
    moves = []
    base = inst.get_exp_cycles()
    base_res = node_estimate(inst, fpgapart, **facts)
    for attr, values in fold_knobs(inst):
        cur = inst.get_nodeattr(attr)
        higher = [v for v in values if v > cur]
        if not higher:
            continue
        inst.set_nodeattr(attr, higher[0])
        gain = base - inst.get_exp_cycles()
        res = node_estimate(inst, fpgapart, **facts)
        inst.set_nodeattr(attr, cur)
        # FFs are not priced (twice the LUTs on every part, they do not bind; `fits` checks them)
        price = sum(max(0.0, res.get(k, 0) - base_res.get(k, 0)) / budget[k]
                    for k in cost.RESOURCES if budget.get(k) and k != "FF")
        if gain > 0:
            moves.append(((gain, -price), (attr, higher[0], gain)))
    return [move for _, move in sorted(moves, key=lambda m: m[0], reverse=True)]


def _bottleneck(model: ModelWrapper, top: str, body_node: str | None):
    """(loop op or None, its body or None, the node's op): the node `top`, or the node
    `body_node` of loop `top`'s body."""
    top_node = model.get_node_from_name(top)
    if body_node is None:
        return None, None, getCustomOp(top_node)
    loop = getCustomOp(top_node)
    body = loop.body()
    return loop, body, getCustomOp(body.get_node_from_name(body_node))


def _try_moves(model: ModelWrapper, loop, body, inst, moves, part: str, budget: dict, auto: bool, p: int,
               keep: bool = True):
    """Try the node's `moves` in order (each set on `inst`, its loop's `body` written back):
    the first that keeps `model` within `budget` stays set when `keep`. Returns that move
    (None if none fits) and the resources the failed ones ran out of."""
    short = set()

    def put(attr, value):
        inst.set_nodeattr(attr, value)
        if loop is not None:
            loop.set_nodeattr("body", body.model.graph)

    for move in moves:
        attr, value = move[0], move[1]
        old = inst.get_nodeattr(attr)
        put(attr, value)
        used = cost.total_resources(model, part, cost.auto_pixels(model) if auto else p)
        fits = cost.fits(used, budget)
        if not (fits and keep):
            put(attr, old)
        if fits:
            return move, short
        short |= {k for k in cost.RESOURCES if used[k] > budget[k] + 1e-9}
    return None, short


def _step_check(model: ModelWrapper, top: str, body_node: str | None, moves, part: str, budget: dict,
                auto: bool, p: int):
    """A function telling whether one of the bottleneck's `moves` fits the budget now (tried
    on a copy; the bottleneck is `top`, or its loop body's `body_node`)."""
    def fits() -> bool:
        trial = ModelWrapper(copy.deepcopy(model.model))
        loop, body, inst = _bottleneck(trial, top, body_node)
        return _try_moves(trial, loop, body, inst, moves, part, budget, auto, p, keep=False)[0] is not None

    return fits


def folding_of(model: ModelWrapper) -> dict[str, dict]:
    """{node: {attr: value}} for every FINN node, loop bodies under FINN's subgraph key
    ``<loop>_body_<node>`` (the form ApplyConfig uses for nodes inside subgraphs)."""
    config = {}
    for node, inst in hw_nodes(model):
        config[node.name] = _node_config(inst)
    for node, inst in loop_nodes(model):
        for bnode, binst in hw_nodes(inst.body()):
            config[f"{node.name}_body_{bnode.name}"] = _node_config(binst)
    return config


def _node_config(inst) -> dict:
    out = {}
    types = inst.get_nodeattr_types()
    for attr in ("PE", "SIMD", "ram_style", "resType", "mem_mode", "depth", "impl_style"):
        if attr in types:
            value = inst.get_nodeattr(attr)
            out[attr] = value.item() if hasattr(value, "item") else value
    return out


@register
class Fold(Pass):
    """Budget-constrained folding of FINN nodes and loop bodies (see module docstring)."""

    name = "fold"
    summary = "PE/SIMD for every hardware node: max pixels/s within the board budget (FINN estimators)"
    contract = Contract.EXACT
    options = (
        Option("target", str, "pynq-z2", "board whose resources bound the design"),
        Option("headroom", float, 0.85, "fraction of each resource the design may use"),
        Option("fps", float, 0.0, "stop once this many pixels per second are reached (0: as fast as fits)"),
        Option("clock-mhz", float, 0.0, "clock for the fps target (0: the board's default)"),
        Option("max-steps", int, 10000, "upper bound on folding moves"),
    )

    def apply(self, model: ModelWrapper):
        from flimcc.passes.lower_finn import finn_settings
        from flimcc.targets import get_target

        finn_settings()
        target = get_target(self.target)
        if not target.fpga_part:
            raise FlimccError(f"pass 'fold': target '{self.target}' is not an FPGA board")
        if not list(hw_nodes(model)) and not list(loop_nodes(model)):
            raise FlimccError("pass 'fold': no hardware nodes (run lower-finn first)")
        budget = target.budget(self.headroom)
        clock = self.clock_mhz or target.default_clock_mhz
        auto = pixels_setting(model) == "auto"
        if auto and cost._batch(model) != 1:
            from flimcc.passes.batch_pixels import set_pixels

            model = set_pixels(model, 1, auto=True)  # search at one pixel (fast); P is set at the end
        results = []
        for multipliers in MULTIPLIERS:
            for depth in THRESHOLD_PLACEMENTS:
                trial = ModelWrapper(copy.deepcopy(model.model))
                cost.place_threshold_memories(trial, depth)
                if multipliers == "lut":
                    cost.lut_multipliers(trial)
                result = self._planned_search(trial, target.fpga_part, budget, clock, auto)
                if result is not None:
                    results.append((result["perf"]["pixels_per_second"], -len(results), (multipliers, depth), result))
        if not results:
            from flimcc.passes.plan_memory import does_not_fit

            p = current_pixels(model)
            cost.place_threshold_memories(model)
            used = cost.total_resources(model, target.fpga_part, p)
            raise FlimccError("pass 'fold': " + does_not_fit(model, target, used, budget,
                                                             what="even at the lowest parallelism the design"))
        _, _, (multipliers, depth), best = max(results)
        if multipliers == "lut":  # the RTL MVU (simulated here) unless LUT MACs gain enough
            fastest = max(r[0] for r in results)
            rtl = [r for r in results if r[2][0] == "dsp" and r[0] * LUT_MULTIPLIER_GAIN >= fastest]
            if rtl:
                _, _, (multipliers, depth), best = max(rtl)
        model, p, perf, used = best["model"], best["p"], best["perf"], best["used"]
        cost.name_lut_units(model)
        if auto:
            from flimcc.passes.batch_pixels import set_pixels

            model = set_pixels(model, p, auto=True)
        self.metrics = {
            "moves": best["moves"], "stopped_by": best["stop"], "pixel_parallelism": p,
            "threshold_bram_depth": depth if depth < cost._NEVER else "never", "multipliers": multipliers,
            "cycles_per_pixel": round(perf["cycles_per_pixel"], 1),
            "pixels_per_second": round(perf["pixels_per_second"]),
            "bottleneck": perf["max_cycles_node_name"],
            **{f"{k.lower()}_used": round(used[k]) for k in cost.RESOURCES},
        }
        return model, False

    def _planned_search(self, model: ModelWrapper, part: str, budget: dict, clock: float, auto: bool) -> dict | None:
        """The search, made to leave room for the FIFOs plan-memory will add to the loops
        (their depths depend on the folding): if the planned design overflows, search
        again with that resource's budget lowered by the overflow."""
        start = ModelWrapper(copy.deepcopy(model.model))
        limit = dict(budget)
        for _ in range(8):
            result = self._search(ModelWrapper(copy.deepcopy(start.model)), part, limit, clock, auto)
            if result is None:
                return None
            used = cost.planned_resources(result["model"], part, result["p"])
            over = {k: used[k] - budget[k] for k in cost.RESOURCES if used[k] > budget[k] + 1e-9}
            if not over:
                result["used"] = used
                return result
            for k, excess in over.items():
                limit[k] = limit[k] - excess - 1
        return None

    def _search(self, model: ModelWrapper, part: str, budget: dict, clock: float, auto: bool) -> dict | None:
        """The greedy move sequence for one memory placement; None if nothing fits."""
        p = current_pixels(model)
        used = cost.total_resources(model, part, p)
        if not cost.fits(used, budget):
            return None
        moves = reliefs = 0
        stop = "saturated"
        for _ in range(self.max_steps):
            perf = cost.throughput(model, p, clock)
            if self.fps and perf["pixels_per_second"] >= self.fps:
                stop = "fps reached"
                break
            node = model.get_node_from_name(perf["max_cycles_node_name"])
            body_node = cost.loop_timing(node, getCustomOp(node)).bottleneck if node.domain == "flimcc.hw" else None
            loop, body, inst = _bottleneck(model, node.name, body_node)
            candidates = _moves(inst, part, budget, graph_facts(inst.onnx_node, (body or model).graph))
            if not candidates:
                break
            # the best move that fits (a cheaper one may); short: what the others ran out of
            move, short = _try_moves(model, loop, body, inst, candidates, part, budget, auto, p)
            if move is None:
                reliefs += 1
                step = _step_check(model, node.name, body_node, candidates, part, budget, auto, p)
                best = (inst.get_exp_cycles() - candidates[0][2])  # the bottleneck's cycles after its best step
                if loop is not None:
                    goal = {node.name: best / body.get_tensor_shape(body.graph.input[0].name)[0]}
                else:
                    goal = {"": best * p / cost._batch(model)}
                if reliefs <= MAX_RELIEFS and relieve(model, p, part, budget, frozenset(short), step, goal):
                    # resources freed, not slower: go on
                    p = cost.auto_pixels(model) if auto else p
                    continue
                stop = "budget"
                break
            p = cost.auto_pixels(model) if auto else p
            moves += 1
        tidy(model, p, part, budget, clock)
        p = cost.auto_pixels(model) if auto else p
        if auto and stop != "fps reached":
            p = more_pixels(model, part, budget, clock, p)
        return {"model": model, "p": p, "moves": moves, "stop": stop,
                "perf": cost.throughput(model, p, clock), "used": cost.total_resources(model, part, p)}

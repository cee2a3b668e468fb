"""RecurrentLoop: a time-step recurrence as one FINN hardware op.

FINN graphs are acyclic and FINN has no Scan: its FINNLoop (finn-plus,
``custom_op/fpgadataflow/rtl/finn_loop.py``) runs a block ``iteration`` times with output i
fed back as input i+1 and per-iteration weights from DRAM, but it has no per-step input
and no state beside its single stream. A GRU needs both: a hidden state per pixel that
goes round the loop, and a projected input x_t that arrives every step. RecurrentLoop is
that op:

* inputs  ``[state_i.., seq_0..]``: initial states ``(P, H)`` for every state whose
  ``zero_init`` flag is 0 (a flagged state starts at zero, the GRU's default initial_h,
  and has no input), then sequences
  ``(1, T, P, C)`` in FINN's 4-D NHWC stream order (step-major, the P pixels of a step
  interleaved);
* outputs ``[state_0..state_{S-1}, seq_out_0..]``: final states ``(P, H)`` and per-step
  outputs ``(1, T, P, C)``;
* ``body``: one time step as a graph of FINN hardware ops with 2-D ``(P, C)`` tensors,
  inputs ``[states..., x_t...]`` and outputs ``[new states..., y_t...]`` (Scan's
  convention). The feedback path of each state holds a StreamingFIFO: the P hidden states
  waiting for their next step.

Semantics are ONNX Scan's (forward direction, axis 1 of the 4-D sequences). Execution runs
the body with flimcc's executor once per step, vectorised over every pixel in the batch
(FINN executes node by node; here no Python loop runs over pixels).

Cycle model (cycles for one frame of P pixels), from the body's own FINN estimates:
FINN's ``AnnotateCycles`` + ``dataflow_performance`` on the body at one vector give
II = the slowest body node's cycles per vector and L = the body's critical path per vector
(FINN's pessimistic no-overlap latency). A step of P interleaved pixels cannot start before
the first pixel's previous step left the pipeline, so one step costs max(P * II, L) plus
``step_overhead`` cycles of loop control, and the frame costs
``T * (max(P * II, L) + step_overhead)``. The default overhead, 40 cycles, is the constant
FINN's FINNLoop uses per iteration.

Resources are the sum of FINN's estimates (each node's own ``node_res_estimation``) over the
body as it is built (`hardware_body`: the width converters and stream FIFOs the RTL adds,
thresholds as integers), feedback FIFOs included; op and parameter counts are the body's FINN counts with ops times T.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import get_by_name

from finn.custom_op.fpgadataflow.hwcustomop import HWCustomOp

from flimcc.execute import prepare_nodes
from flimcc.layout import body_model, hw_nodes, rebatch

#: Per-step loop-control overhead in cycles (FINNLoop's constant in finn-plus).
DEFAULT_STEP_OVERHEAD = 40


class RecurrentLoop(HWCustomOp):
    """A recurrence over T steps with a hardware body; see the module docstring."""

    def get_nodeattr_types(self):
        attrs = {
            "body": ("g", True, ""),
            "iterations": ("i", True, 0),
            "num_state": ("i", True, 1),
            "zero_init": ("ints", False, []),
            "pixels": ("i", False, 1),
            "step_overhead": ("i", False, DEFAULT_STEP_OVERHEAD),
            # depths of the FIFOs of the body as built in RTL ("name=depth", from `flimcc rtlsim
            # --size-fifos`); FIFOs not listed keep FINN's shallow default
            "fifo_depths": ("strings", False, []),
        }
        attrs.update(HWCustomOp.get_nodeattr_types(self))
        return attrs

    def fifo_depths(self) -> dict[str, int]:
        return {k: int(v) for k, _, v in (e.partition("=") for e in self.get_nodeattr("fifo_depths"))}

    def set_fifo_depths(self, depths: dict[str, int]) -> None:
        self.set_nodeattr("fifo_depths", [f"{k}={int(v)}" for k, v in sorted(depths.items())])

    # -- the body ---------------------------------------------------------------------
    def get_nodeattr(self, name):
        if name == "body":
            attr = get_by_name(self.onnx_node.attribute, "body")
            if attr is None:
                raise AttributeError(f"RecurrentLoop '{self.onnx_node.name}' has no body")
            return attr.g
        return super().get_nodeattr(name)

    def set_nodeattr(self, name, value):
        if name == "body":
            graph = value.model.graph if isinstance(value, ModelWrapper) else value
            attr = get_by_name(self.onnx_node.attribute, "body")
            if attr is None:
                self.onnx_node.attribute.append(helper.make_attribute("body", graph))
            else:
                attr.g.CopyFrom(graph)
            return
        super().set_nodeattr(name, value)

    def body(self) -> ModelWrapper:
        return body_model(self.get_nodeattr("body"))

    def _split(self, items):
        s = self.get_nodeattr("num_state")
        return list(items[:s]), list(items[s:])

    def _zero_flags(self) -> list[int]:
        flags = list(self.get_nodeattr("zero_init"))
        return flags + [0] * (self.get_nodeattr("num_state") - len(flags))

    def _split_inputs(self, items):
        """(initial-state inputs aligned to states, None where zero-initialised; sequences)"""
        items = list(items)
        states = []
        for flag in self._zero_flags():
            states.append(None if flag else items.pop(0))
        return states, items

    # -- shapes and datatypes -------------------------------------------------------------
    def _output_shapes(self) -> list[list[int]]:
        body = self.get_nodeattr("body")
        t = self.get_nodeattr("iterations")
        state_outs, seq_outs = self._split(body.output)
        shapes = []
        for vi in state_outs:
            shapes.append([d.dim_value for d in vi.type.tensor_type.shape.dim])
        for vi in seq_outs:
            p, c = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            shapes.append([1, t, p, c])
        return shapes

    def make_shape_compatible_op(self, model):
        # An If whose branches yield constants of the output shapes: ONNX shape inference
        # reads the shapes off it (a multi-output op has no simpler stand-in).
        names = list(self.onnx_node.output)

        def branch(tag):
            # ConstantOfShape of a constant shape: small to build and to print (qonnx keys
            # the stand-ins by their text), and ONNX infers the shape from it
            nodes, vis, inits = [], [], []
            for name, shape in zip(names, self._output_shapes()):
                inner = f"{name}__{tag}"
                inits.append(helper.make_tensor(inner + "_shape", onnx.TensorProto.INT64, [len(shape)], shape))
                nodes.append(helper.make_node("ConstantOfShape", [inner + "_shape"], [inner]))
                vis.append(helper.make_tensor_value_info(inner, onnx.TensorProto.FLOAT, shape))
            return helper.make_graph(nodes, f"{self.onnx_node.name}_{tag}", [], vis, initializer=inits)

        cond = f"{self.onnx_node.name}__cond"
        model.set_initializer(cond, np.array(True))
        return helper.make_node("If", [cond], names, then_branch=branch("then"), else_branch=branch("else"))

    def infer_node_datatype(self, model):
        body = self.body()
        for out, vi in zip(self.onnx_node.output, body.graph.output):
            model.set_tensor_datatype(out, body.get_tensor_datatype(vi.name))

    def get_input_datatype(self, ind=0):
        body = self.body()
        return body.get_tensor_datatype(body.graph.input[self._body_input_index(ind)].name)

    def get_output_datatype(self, ind=0):
        body = self.body()
        return body.get_tensor_datatype(body.graph.output[ind].name)

    # The loop's external streams carry one element per cycle (PE = 1): the interface is
    # not on the critical path (T steps of body work per element pair).
    def _io_shape(self, vi_list, ind, sequence_from):
        t = self.get_nodeattr("iterations")
        vi = vi_list[ind]
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        return shape if ind < sequence_from else [1, t] + shape

    def _body_input_index(self, ind):
        flags = self._zero_flags()
        present = [i for i, f in enumerate(flags) if not f] + list(range(len(flags), len(self.get_nodeattr("body").input)))
        return present[ind]

    def get_normal_input_shape(self, ind=0):
        return self._io_shape(list(self.get_nodeattr("body").input), self._body_input_index(ind),
                              self.get_nodeattr("num_state"))

    def get_normal_output_shape(self, ind=0):
        return self._io_shape(list(self.get_nodeattr("body").output), ind, self.get_nodeattr("num_state"))

    def get_folded_input_shape(self, ind=0):
        return list(self.get_normal_input_shape(ind)) + [1]

    def get_folded_output_shape(self, ind=0):
        return list(self.get_normal_output_shape(ind)) + [1]

    def get_instream_width(self, ind=0):
        return self.get_input_datatype(ind).bitwidth()

    def get_outstream_width(self, ind=0):
        return self.get_output_datatype(ind).bitwidth()

    def verify_node(self):
        info = []
        body = self.get_nodeattr("body")
        s = self.get_nodeattr("num_state")
        n_inputs = len(self.onnx_node.input) + sum(self._zero_flags())
        if len(body.input) != n_inputs or len(body.output) != len(self.onnx_node.output):
            info.append("body inputs/outputs do not match the node's")
        if s < 1:
            info.append("num_state must be at least 1")
        if self.get_nodeattr("iterations") < 1:
            info.append("iterations must be at least 1")
        return info or ["RecurrentLoop node is consistent"]

    # -- execution ------------------------------------------------------------------------
    def execute_node(self, context, graph):

        node = self.onnx_node
        body = self.body()
        t_steps = self.get_nodeattr("iterations")
        state_ins, seq_ins = self._split_inputs(node.input)
        b_states, b_xs = self._split([i.name for i in body.graph.input])
        b_state_outs, b_ys = self._split([o.name for o in body.graph.output])
        seqs = [np.asarray(context[n]) for n in seq_ins]
        batch = None
        for n in state_ins:
            if n is not None:
                batch = np.shape(context[n])[0]
        if batch is None and seqs:
            batch = seqs[0].shape[2]
        if batch is None:
            batch = body.get_tensor_shape(b_states[0])[0]
        states = []
        for n, b in zip(state_ins, b_states):
            shape = [batch] + list(body.get_tensor_shape(b)[1:])
            states.append(np.asarray(context[n], dtype=np.float32) if n is not None else np.zeros(shape, np.float32))
        base = {t.name: body.get_initializer(t.name) for t in body.graph.initializer}
        ys: list[list[np.ndarray]] = [[] for _ in b_ys]
        steps = prepare_nodes(body)
        for t in range(t_steps):
            ctx = dict(base)
            ctx.update(zip(b_states, states))
            ctx.update({x: s[0, t] for x, s in zip(b_xs, seqs)})
            for run in steps:
                run(ctx)
            states = [np.asarray(ctx[o], dtype=np.float32) for o in b_state_outs]
            for k, y in enumerate(b_ys):
                ys[k].append(np.asarray(ctx[y], dtype=np.float32))
        state_outs, seq_outs = self._split(list(node.output))
        for name, value in zip(state_outs, states):
            context[name] = value
        for name, values in zip(seq_outs, ys):
            context[name] = np.stack(values, axis=0)[None]

    # -- estimates ------------------------------------------------------------------------
    def body_performance(self) -> dict:
        """FINN's dataflow_performance of the body at one vector per step: ``max_cycles``
        is the initiation interval II per vector, ``critical_path_cycles`` the latency L."""
        from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
        from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles


        body = self.body()
        if any(body.get_tensor_shape(i.name)[0] != 1 for i in body.graph.input):
            body = rebatch(body, 1)
        body = body.transform(AnnotateCycles(), cleanup=False)
        return body.analysis(dataflow_performance)

    def step_cycles(self) -> int:
        perf = self.body_performance()
        p = self.get_nodeattr("pixels")
        return max(p * perf["max_cycles"], perf["critical_path_cycles"]) + self.get_nodeattr("step_overhead")

    def get_exp_cycles(self):
        return int(self.get_nodeattr("iterations") * self.step_cycles())

    def hardware_body(self) -> ModelWrapper:
        """The body as its RTL is built (`flimcc.rtl.loop.hardware_body`): thresholds as the
        integers synthesised, FINN's width converters, a FIFO on every stream at this loop's
        `fifo_depths` (FINN's shallow default where none is given)."""
        from flimcc.rtl.loop import hardware_body

        return hardware_body(self.body(), self.onnx_node.name, self.get_nodeattr("num_state"), self.fifo_depths())

    def control_res_estimation(self, body: ModelWrapper | None = None) -> dict:
        """LUTs and FFs of the loop's own muxes and counters (`flimcc.rtl.loop.control_res`)
        around its hardware body (`body`, if already built)."""
        from flimcc.rtl.loop import control_res

        return control_res(body or self.hardware_body(), self.get_nodeattr("num_state"),
                           self.get_nodeattr("iterations"), self.get_nodeattr("pixels"))

    def node_res_estimation(self, fpgapart):
        body = self.hardware_body()
        from flimcc.hw.estimate import graph_estimates

        per_node = {**graph_estimates(body.graph, fpgapart),
                    f"{self.onnx_node.name}_control": self.control_res_estimation(body)}
        total = {k: 0 for k in ("BRAM_18K", "LUT", "FF", "URAM", "DSP")}
        bram_bits = uram_bits = 0.0
        for res in per_node.values():
            for k in total:
                total[k] += res.get(k, 0)
            bram_bits += res.get("BRAM_18K", 0) * res.get("BRAM_efficiency", 1)
            uram_bits += res.get("URAM", 0) * res.get("URAM_efficiency", 1)
        return {
            "BRAM_18K": total["BRAM_18K"],
            "BRAM_efficiency": bram_bits / total["BRAM_18K"] if total["BRAM_18K"] else 1,
            "LUT": total["LUT"],
            "FF": total["FF"],
            "URAM": total["URAM"],
            "URAM_efficiency": uram_bits / total["URAM"] if total["URAM"] else 1,
            "DSP": total["DSP"],
        }

    def bram_estimation(self, fpgapart):
        return self.node_res_estimation(fpgapart)["BRAM_18K"]

    def lut_estimation(self, fpgapart):
        return self.node_res_estimation(fpgapart)["LUT"]

    def uram_estimation(self, fpgapart):
        return self.node_res_estimation(fpgapart)["URAM"]

    def dsp_estimation(self, fpgapart):
        return self.node_res_estimation(fpgapart)["DSP"]

    def get_op_and_param_counts(self):
        from finn.analysis.fpgadataflow.op_and_param_counts import aggregate_dict_keys


        body = self.body()
        t_steps = self.get_nodeattr("iterations")
        per_node = {node.name: {k: (v * t_steps if k.startswith("op_") else v)
                                for k, v in inst.get_op_and_param_counts().items()}
                    for node, inst in hw_nodes(body)}
        return {k: int(v) for k, v in aggregate_dict_keys(per_node).items()}

    def get_number_output_values(self):
        return self.get_nodeattr("iterations") * self.get_nodeattr("pixels")

"""Integer elementwise add, subtract and multiply as RTL of flimcc's own.

FINN's ElementwiseAdd/Sub/Mul_rtl (finn-rtllib eltwise) serve float and int/float paths
on Versal; integer GRU arithmetic on a Zynq gets FINN's HLS versions, which cannot be
simulated without Vitis. These ops keep FINN's semantics, shapes, datatypes and Python
execution (they subclass FINN's abstract ops) and generate a SystemVerilog module: per
lane, both operands sign- or zero-extended to a common width, one `+`, `-` or `*`, the
result truncated to the output type (FINN's derived output types hold every result, so
truncation drops only sign copies). Two streamed operands join (a beat leaves when both
are there); a constant operand, a scalar or one value per channel, is a table indexed by
the channel fold of the current beat. No register: one beat per cycle, zero latency.

Estimates: add/sub one LUT per output bit per lane (a carry chain); multiply one DSP per
lane when both operands are wider than 4 bits, otherwise LUTs ~ the product of the widths
per lane (``resType`` lut puts every product in LUTs, marked ``use_dsp = "no"``; `fold`
does that when DSPs run out); a per-channel constant table adds its bits / 64 LUTs.
"""

from __future__ import annotations

import math

import numpy as np
from finn.custom_op.fpgadataflow.elementwise_binary import ElementwiseAdd, ElementwiseMul, ElementwiseSub

from flimcc.hw.estimate import elementwise_luts
from flimcc.hw.rtl_op import FlimccRTLOp, counter_bits, mult_style_attr, product_attribute, product_dsps, stream_ports

_SYMBOL = {"Add": "+", "Sub": "-", "Mul": "*"}


class _IntElementwise(FlimccRTLOp):
    """Shared HDL and estimates of the three ops (mixed into FINN's op classes)."""

    def get_nodeattr_types(self):
        attrs = super().get_nodeattr_types()  # RTLBackend's, then FINN's op (the MRO)
        # constants live in the module (no weight stream), as FINN's internal_embedded
        attrs.setdefault("mem_mode", ("s", False, "internal_embedded", {"internal_embedded"}))
        attrs["resType"] = mult_style_attr()  # used by Mul only
        return attrs

    def _const(self, side: int) -> np.ndarray:
        return self._model_consts[self.onnx_node.input[side]]

    def generate_hdl(self, model, fpgapart, clk):
        # constant operands are read from the model's initializers at generation time
        self._model_consts = {t: model.get_initializer(t) for t in self.onnx_node.input
                              if model.get_initializer(t) is not None}
        super().generate_hdl(model, fpgapart, clk)

    def hdl_text(self) -> str:
        op = self._operation[0]
        pe = self.get_nodeattr("PE")
        c = int(self.get_nodeattr("out_shape")[-1])
        folds = c // pe
        types = [self.get_input_datatype(0), self.get_input_datatype(1)]
        out_t = self.get_output_datatype()
        wide = max(t.bitwidth() for t in types) * 2 + 2
        name = self.onnx_node.name
        ports, lines, streams = [], [], []
        for side in (0, 1):
            if self.get_nodeattr("lhs_style" if side == 0 else "rhs_style") == "input":
                streams.append(side)
        for k, side in enumerate(streams):
            ports.append(stream_ports("in", f"in{k}_V", self.get_instream_width_padded(side)))
        ports.append(stream_ports("out", "out0_V", self.get_outstream_width_padded()))
        fb = max(1, math.ceil(math.log2(max(folds, 2))))
        lines.append(f"  logic [{fb - 1}:0] fold;  // channel fold of the current beat")
        # operand of lane l on side s: a slice of its stream, or the constant of its channel
        for side in (0, 1):
            t = types[side]
            bits = t.bitwidth()
            ext = "$signed" if t.signed() else "$unsigned"
            if side in streams:
                k = streams.index(side)
                for lane in range(pe):
                    lines.append(f"  wire signed [{wide - 1}:0] op{side}_{lane} = {wide}'({ext}"
                                 f"(in{k}_V_TDATA[{(lane + 1) * bits - 1}:{lane * bits}]));")
            else:
                values = np.asarray(self._const(side), dtype=np.int64).reshape(-1)
                table = values if values.size > 1 else np.repeat(values, c)
                if table.size != c:
                    raise ValueError(f"node '{name}': constant of {values.size} values for {c} channels")
                entries = ", ".join(f"{wide}'sd{int(v)}" if v >= 0 else f"-{wide}'sd{-int(v)}" for v in table)
                lines.append(f"  localparam logic signed [{wide - 1}:0] K{side} [{c}] = '{{{entries}}};")
                for lane in range(pe):
                    lines.append(f"  wire signed [{wide - 1}:0] op{side}_{lane} = K{side}[fold * {pe} + {lane}];")
        ob = out_t.bitwidth()
        res = [f"r_{lane}[{ob - 1}:0]" for lane in reversed(range(pe))]
        for lane in range(pe):
            mark = product_attribute(self) if op == "Mul" else ""
            lines.append(f"  {mark}wire signed [{wide - 1}:0] r_{lane} = op0_{lane} {_SYMBOL[op]} op1_{lane};")
        pad = self.get_outstream_width_padded() - pe * ob
        lines.append(f"  assign out0_V_TDATA = {{{(str(pad) + chr(39) + 'b0, ') if pad else ''}{', '.join(res)}}};")
        if len(streams) == 2:
            lines += ["  assign out0_V_TVALID = in0_V_TVALID && in1_V_TVALID;",
                      "  assign in0_V_TREADY = out0_V_TREADY && in1_V_TVALID;",
                      "  assign in1_V_TREADY = out0_V_TREADY && in0_V_TVALID;"]
        else:
            lines += ["  assign out0_V_TVALID = in0_V_TVALID;", "  assign in0_V_TREADY = out0_V_TREADY;"]
        lines += ["  always_ff @(posedge ap_clk) begin",
                  "    if (!ap_rst_n) fold <= '0;",
                  f"    else if (out0_V_TVALID && out0_V_TREADY) fold <= (fold == {folds - 1}) ? '0 : fold + 1'b1;",
                  "  end"]
        return (f"// generated by flimcc: {name}, integer {op} of {types[0].name} and {types[1].name} "
                f"into {out_t.name}, PE {pe}\n"
                f"module {name} (\n  input logic ap_clk, input logic ap_rst_n,\n" + ",\n".join(ports) + "\n);\n"
                + "\n".join(lines) + "\nendmodule\n")

    def lut_estimation(self, fpgapart=None):
        pe = self.get_nodeattr("PE")
        a, b = (self.get_input_datatype(k).bitwidth() for k in (0, 1))
        consts = [k for k in (0, 1) if self.get_nodeattr("lhs_style" if k == 0 else "rhs_style") == "const"]
        table = sum(int(self.get_nodeattr("out_shape")[-1]) * (a, b)[k] for k in consts)
        return elementwise_luts(pe, (a, b), self.get_output_datatype().bitwidth(), self._operation[0] == "Mul",
                                bool(self.dsp_estimation(fpgapart)), table)

    def core_ffs(self) -> int:  # the channel fold counter
        return counter_bits(int(self.get_nodeattr("out_shape")[-1]) // self.get_nodeattr("PE"))

    def dsp_estimation(self, fpgapart=None):
        a, b = (self.get_input_datatype(k).bitwidth() for k in (0, 1))
        return product_dsps(self, a, b, self.get_nodeattr("PE")) if self._operation[0] == "Mul" else 0


class IntElementwiseAdd_rtl(_IntElementwise, ElementwiseAdd):
    """Integer a + b (see the module docstring)."""


class IntElementwiseSub_rtl(_IntElementwise, ElementwiseSub):
    """Integer a - b (see the module docstring)."""


class IntElementwiseMul_rtl(_IntElementwise, ElementwiseMul):
    """Integer a * b (see the module docstring)."""

"""IntRequant_rtl: FINN's Requant, clip(floor(x * scale + bias + 0.5)), as integer RTL of
flimcc's own for the signed outputs FINN's Requant_rtl does not support.

flimcc only emits a Requant where the scale and bias are dyadic (integers over one power
of two 2^k; `lower-finn` proves such a Requant equal to the thresholds it replaces). Then
per lane, with S = scale * 2^k and B = bias * 2^k integers:

    y = clip((x * S + B + 2^(k-1)) >>> k, min, max)

(an arithmetic shift is a floor division). Code generation checks, over every integer the
input type can hold (or 2^20 of them, ends included, for wider inputs), that this equals
FINN's float32 execution of the node; where it does not (a scale not dyadic, float32
rounding in FINN's formula), it refuses the node by name. No register: one beat per cycle.

Estimates: one DSP per lane for the product when the input is wider than 4 bits (``resType``
lut: about ib x ib LUTs per lane instead, the product marked ``use_dsp = "no"``), plus LUTs
for the add, shift and clip (about two per output bit per lane).
"""

from __future__ import annotations

import numpy as np
from finn.custom_op.fpgadataflow.requant import Requant
from qonnx.custom_op.general.intquant import max_int, min_int

from flimcc.errors import UnsupportedError
from flimcc.hw.rtl_op import FlimccRTLOp, counter_bits, mult_style_attr, product_attribute, product_dsps, stream_ports

MAX_SHIFT = 40


def dyadic(scale: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(S, B, k) with scale = S / 2^k and bias = B / 2^k exactly, k smallest; None if none."""
    values = np.concatenate([np.ravel(scale), np.ravel(bias)]).astype(np.float64)
    for k in range(MAX_SHIFT + 1):
        scaled = values * 2.0 ** k
        if np.all(scaled == np.round(scaled)):
            return (np.round(np.ravel(scale) * 2.0 ** k).astype(np.int64),
                    np.round(np.ravel(bias) * 2.0 ** k).astype(np.int64), k)
    return None


class IntRequant_rtl(Requant, FlimccRTLOp):
    """See the module docstring."""

    def get_nodeattr_types(self):
        attrs = super().get_nodeattr_types()
        attrs["resType"] = mult_style_attr()
        return attrs

    def _params(self, model) -> tuple[np.ndarray, np.ndarray, int]:
        name = self.onnx_node.name
        c = self.get_nodeattr("NumChannels")
        scale, bias = self.get_scale(model), self.get_bias(model)
        found = dyadic(scale, bias)
        if found is None:
            raise UnsupportedError(f"node '{name}': scale/bias are not dyadic rationals; no integer RTL for it")
        s, b, k = found
        s, b = np.broadcast_to(s, (c,)), np.broadcast_to(b, (c,))
        idt, odt = self.get_input_datatype(0), self.get_output_datatype()
        lo, hi = int(idt.min()), int(idt.max())
        x = np.arange(lo, hi + 1, dtype=np.int64) if hi - lo <= 1 << 20 else \
            np.unique(np.concatenate([np.linspace(lo, hi, 1 << 20).astype(np.int64), [lo, hi]]))
        qlo, qhi = min_int(odt.signed(), self.get_nodeattr("narrow"), odt.bitwidth()), \
            max_int(odt.signed(), self.get_nodeattr("narrow"), odt.bitwidth())
        # each distinct (scale, bias) of the channels once: usually one for the whole tensor
        fs = np.broadcast_to(np.ravel(scale).astype(np.float32), (c,))
        fb = np.broadcast_to(np.ravel(bias).astype(np.float32), (c,))
        _, first = np.unique(np.stack([fs.astype(np.float64), fb.astype(np.float64), s, b], axis=1), axis=0,
                             return_index=True)
        xf = x.astype(np.float32)[:, None]
        finn = np.clip(np.floor(xf * fs[first][None, :] + fb[first][None, :] + np.float32(0.5)), qlo, qhi)
        half = (1 << (k - 1)) if k else 0
        ours = np.clip((x[:, None] * s[first][None, :] + b[first][None, :] + half) >> k, qlo, qhi)
        if not np.array_equal(finn, ours):
            raise UnsupportedError(f"node '{name}': integer requantization differs from FINN's float32 formula "
                                   "on some inputs; no integer RTL for it")
        return s, b, k

    def generate_hdl(self, model, fpgapart, clk):
        self._sbk = self._params(model)
        super().generate_hdl(model, fpgapart, clk)

    def hdl_text(self) -> str:
        s, b, k = self._sbk
        pe, c = self.get_nodeattr("PE"), self.get_nodeattr("NumChannels")
        folds = c // pe
        idt, odt = self.get_input_datatype(0), self.get_output_datatype()
        ib, ob = idt.bitwidth(), odt.bitwidth()
        wide = ib + max(int(np.abs(s).max()).bit_length(), 1) + max(int(np.abs(b).max()).bit_length(), 1) + k + 3
        qlo = min_int(odt.signed(), self.get_nodeattr("narrow"), ob)
        qhi = max_int(odt.signed(), self.get_nodeattr("narrow"), ob)
        ext = "$signed" if idt.signed() else "$unsigned"
        lit = (lambda v: f"{wide}'sd{int(v)}" if v >= 0 else f"-{wide}'sd{-int(v)}")
        fb = max(1, int(np.ceil(np.log2(max(folds, 2)))))
        lines = [f"  logic [{fb - 1}:0] fold;",
                 f"  localparam logic signed [{wide - 1}:0] S [{c}] = '{{{', '.join(lit(v) for v in s)}}};",
                 f"  localparam logic signed [{wide - 1}:0] B [{c}] = '{{{', '.join(lit(v) for v in b)}}};"]
        outs = []
        for lane in range(pe):
            lines += [
                f"  wire signed [{wide - 1}:0] x_{lane} = {wide}'({ext}(in0_V_TDATA[{(lane + 1) * ib - 1}:{lane * ib}]));",
                f"  {product_attribute(self)}wire signed [{wide - 1}:0] v_{lane} = "
                f"(x_{lane} * S[fold * {pe} + {lane}] + B[fold * {pe} + {lane}]"
                f" + {lit((1 << (k - 1)) if k else 0)}) >>> {k};",
                f"  wire signed [{wide - 1}:0] y_{lane} = v_{lane} < {lit(qlo)} ? {lit(qlo)} : "
                f"(v_{lane} > {lit(qhi)} ? {lit(qhi)} : v_{lane});"]
            outs.append(f"y_{lane}[{ob - 1}:0]")
        pad = self.get_outstream_width_padded() - pe * ob
        lines += [f"  assign out0_V_TDATA = {{{(str(pad) + chr(39) + 'b0, ') if pad else ''}"
                  f"{', '.join(reversed(outs))}}};",
                  "  assign out0_V_TVALID = in0_V_TVALID;", "  assign in0_V_TREADY = out0_V_TREADY;",
                  "  always_ff @(posedge ap_clk) begin",
                  "    if (!ap_rst_n) fold <= '0;",
                  f"    else if (out0_V_TVALID && out0_V_TREADY) fold <= (fold == {folds - 1}) ? '0 : fold + 1'b1;",
                  "  end"]
        ports = [stream_ports("in", "in0_V", self.get_instream_width_padded()),
                 stream_ports("out", "out0_V", self.get_outstream_width_padded())]
        return (f"// generated by flimcc: {self.onnx_node.name}, requantization {idt.name} -> {odt.name} as "
                f"(x * S + B + 2^{k}/2) >>> {k}, PE {pe}\n"
                f"module {self.onnx_node.name} (\n  input logic ap_clk, input logic ap_rst_n,\n"
                + ",\n".join(ports) + "\n);\n" + "\n".join(lines) + "\nendmodule\n")

    def core_ffs(self) -> int:  # the channel fold counter
        return counter_bits(self.get_nodeattr("NumChannels") // self.get_nodeattr("PE"))

    def lut_estimation(self, fpgapart=None):
        pe, ib = self.get_nodeattr("PE"), self.get_input_datatype(0).bitwidth()
        in_luts = 0 if self.dsp_estimation(fpgapart) else pe * ib * ib  # S taken as wide as x
        return 2 * pe * self.get_output_datatype().bitwidth() + in_luts

    def dsp_estimation(self, fpgapart=None):
        ib = self.get_input_datatype(0).bitwidth()
        return product_dsps(self, ib, ib, self.get_nodeattr("PE"))

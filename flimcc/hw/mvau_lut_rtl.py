"""MVAULut_rtl: FINN's matrix-vector unit (MVAU, no activation) with its products in LUTs,
as RTL of flimcc's own.

Why: FINN's RTL MVU (finn-rtllib ``mvu``) instantiates DSP slices and nothing else; its
LUT-multiplier MVU is the HLS one, which cannot be simulated here (no Vitis), so a loop
body holding it has no RTL. When a board's DSPs run out (the int8 Seq2SeqLite on a PYNQ-Z2
needs 192 DSPs for both loops at II = 16, the budget is 187), `fold` moves single matrix
units to this op, whose LUTs are otherwise idle.

Semantics, shapes, datatypes and Python execution are FINN's MVAU's (this class subclasses
it); PE, SIMD, MW, MH and the folded stream layout are the same as MVAU_rtl's, so a node can
switch between the two. The weights are a constant ROM inside the module (one word of
PE x SIMD weights per (neuron fold, synapse fold)); nothing streams them in.

Datapath, one input beat per cycle (MH/PE x MW/SIMD cycles per vector, as FINN's MVAU):

    input     beats go into two vector slots (LUTRAM, 2 x MW/SIMD entries): the next vector
              arrives while the current one is replayed for each neuron fold, so the
              producer is never held for the replay (a fork feeding this unit and others
              would otherwise stall every branch: 1.18x the loop's estimate, measured)
    issue     a beat issues once it has arrived (SIMD activations from its slot, the ROM
              word of (neuron fold, synapse fold)), registered
    multiply  PE x SIMD products, each marked ``use_dsp = "no"`` (LUT multipliers)
    reduce    per PE a balanced adder tree over SIMD, added to the PE's accumulator;
              after the last synapse fold the PE accumulators are the output beat

The whole pipeline advances unless its output register holds a beat nobody takes (one
stall signal); `registered_outputs` adds FINN's usual skid buffer, so the ready path is cut.

Estimates, calibrated on Yosys ``synth_xilinx -nodsp`` of this RTL (tests/test_mvau_lut.py:
within 3% of Yosys's LUTs and 1% of its flip-flops at 32 x 32 and 32 x 96): per product
1.75 a x b LUTs (``LUTS_PER_PRODUCT_BIT``), the adder trees and accumulators 1.4 LUTs per
sum bit, the ROM one LUT per word bit per 64 words, the vector slots one LUT per bit per
64 entries plus their read multiplexer; flip-flops for the pipeline registers (``ff_estimation``).
DSP and BRAM 0.
"""

from __future__ import annotations

import math

import numpy as np
from finn.custom_op.fpgadataflow.matrixvectoractivation import MVAU

from flimcc.hw.rtl_op import FlimccRTLOp, stream_ports


#: LUTs per bit of an a x b array multiplier (Yosys synth_xilinx of a registered signed x
#: unsigned product: 1.5 a b at 4 x 4, 1.72 at 8 x 4, 1.75 at 8 x 8, 1.81 at 6 x 6; FINN's
#: HLS formula gives 80 LUTs for 8 x 8 where Yosys maps 112, so this errs high for Vivado)
LUTS_PER_PRODUCT_BIT = 1.75

#: LUTs per sum bit of the adder trees and accumulators (Yosys: 460 LUTs for a 16-input
#: tree of 17-bit products into a 22-bit accumulator, 337 sum bits)
LUTS_PER_SUM_BIT = 1.4


def _bits(n: int) -> int:
    """Counter width for values 0..n-1 (at least one bit)."""
    return max(1, math.ceil(math.log2(max(n, 2))))


def _literal(value: int, width: int) -> str:
    return f"{width}'h{value & ((1 << width) - 1):x}"


def adder_tree(terms: list[str]) -> str:
    """A balanced sum of `terms` (depth ceil(log2 n)), as one SystemVerilog expression."""
    while len(terms) > 1:
        terms = [f"({terms[k]} + {terms[k + 1]})" if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


class MVAULut_rtl(MVAU, FlimccRTLOp):
    """Matrix-vector product with LUT multipliers (see the module docstring)."""

    def get_nodeattr_types(self):
        attrs = MVAU.get_nodeattr_types(self)
        attrs.update(FlimccRTLOp.get_nodeattr_types(self))
        # the weights are a ROM in the module (FINN's name for that is internal_embedded)
        attrs["mem_mode"] = ("s", False, "internal_embedded", {"internal_embedded"})
        attrs["resType"] = ("s", False, "lut", {"lut"})
        return attrs

    def execute_node(self, context, graph):
        MVAU.execute_node(self, context, graph)

    # --- widths ---------------------------------------------------------------------
    def _widths(self) -> dict:
        wb = self.get_input_datatype(1).bitwidth()
        ab = self.get_input_datatype(0).bitwidth()
        prod = wb + ab + 1  # both operands as signed: an unsigned one gains a sign bit
        tree = prod + _bits(self.get_nodeattr("SIMD")) if self.get_nodeattr("SIMD") > 1 else prod
        acc = max(self.get_output_datatype().bitwidth(), prod + _bits(self.get_nodeattr("MW")))
        return {"w": wb, "a": ab, "prod": prod, "tree": tree, "acc": acc,
                "out": self.get_output_datatype().bitwidth()}

    def _folds(self) -> tuple[int, int]:
        return (self.get_nodeattr("MH") // self.get_nodeattr("PE"),
                self.get_nodeattr("MW") // self.get_nodeattr("SIMD"))

    # --- code generation --------------------------------------------------------------
    def generate_hdl(self, model, fpgapart, clk):
        self._weights = np.asarray(model.get_initializer(self.onnx_node.input[1]), dtype=np.int64)
        super().generate_hdl(model, fpgapart, clk)

    def rom_words(self, weights: np.ndarray) -> list[int]:
        """ROM word k = nf * SF + sf: weight W[sf*SIMD + s, nf*PE + pe] at bits
        [(pe*SIMD + s)*WW +: WW] (two's complement)."""
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        nf, sf = self._folds()
        wb = self.get_input_datatype(1).bitwidth()
        mask = (1 << wb) - 1
        words = []
        for n in range(nf):
            for s in range(sf):
                word = 0
                block = weights[s * simd:(s + 1) * simd, n * pe:(n + 1) * pe]  # (SIMD, PE)
                for p in range(pe):
                    for k in range(simd):
                        word |= (int(block[k, p]) & mask) << ((p * simd + k) * wb)
                words.append(word)
        return words

    def hdl_text(self) -> str:
        name = self.onnx_node.name
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        nf, sf = self._folds()
        w = self._widths()
        wdt, adt, odt = self.get_input_datatype(1), self.get_input_datatype(0), self.get_output_datatype()
        word = pe * simd * w["w"]
        words = self.rom_words(self._weights)
        rom = ",\n    ".join(_literal(v, word) for v in words)
        a_ext = "$signed" if adt.signed() else "$unsigned"
        w_ext = "$signed" if wdt.signed() else "$unsigned"
        iw, ow = self.get_instream_width_padded(0), self.get_outstream_width_padded()
        lines = [
            f"  localparam int unsigned SF = {sf}, NF = {nf};",
            f"  // weights: word nf * SF + sf holds PE x SIMD weights, lane (pe, s) at [(pe * {simd} + s) * {w['w']}]",
            f"  localparam logic [{word - 1}:0] WROM [{nf * sf}] = '{{\n    {rom}\n  }};",
            f"  logic [{_bits(sf) - 1}:0] sf_i; logic [{_bits(nf) - 1}:0] nf_i;  // position of the next beat",
            "  logic o_vld; logic [" + str(pe * w["out"] - 1) + ":0] o_dat;",
            "  wire en = !o_vld || out0_V_TREADY;  // the pipeline moves unless its output waits",
            "  // input: two vector slots, one being computed (replayed NF times), the next arriving",
            f"  logic [{simd * w['a'] - 1}:0] vbuf [2][{sf}];",
            f"  logic [1:0] full; logic wbank, rbank; logic [{_bits(sf) - 1}:0] wsf;",
            "  assign in0_V_TREADY = !full[wbank];",
            f"  wire [{simd * w['a'] - 1}:0] a_in = in0_V_TDATA[{simd * w['a'] - 1}:0];",
            "  wire wrote = in0_V_TVALID && in0_V_TREADY;",
            "  // a beat can issue once it has arrived (the vector need not be complete)",
            "  wire issue = en && (full[rbank] || (rbank == wbank && wsf > sf_i));",
            "  wire done = issue && sf_i == SF - 1 && nf_i == NF - 1;  // the slot's last use",
            "  always_ff @(posedge ap_clk) begin",
            "    if (!ap_rst_n) begin",
            "      full <= '0; wbank <= 1'b0; rbank <= 1'b0; wsf <= '0;",
            "    end else begin",
            "      if (wrote) begin",
            "        vbuf[wbank][wsf] <= a_in;",
            "        if (wsf == SF - 1) begin wsf <= '0; wbank <= !wbank; end else wsf <= wsf + 1'b1;",
            "      end",
            "      // a slot fills with its last beat and frees with its last use (never the same slot at once)",
            "      full <= (full | ((wrote && wsf == SF - 1) ? (2'b01 << wbank) : 2'b00)) & ~(done ? (2'b01 << rbank) : 2'b00);",
            "      if (done) rbank <= !rbank;",
            "    end",
            "  end",
        ]
        lines += [
            f"  logic s1_vld, s1_first, s1_last; logic [{simd * w['a'] - 1}:0] s1_a; logic [{word - 1}:0] s1_w;",
            "  logic s2_vld, s2_first, s2_last;",
            f"  (* use_dsp = \"no\" *) logic signed [{w['prod'] - 1}:0] s2_p [{pe}][{simd}];",
            f"  logic signed [{w['acc'] - 1}:0] acc [{pe}];",
            "  always_ff @(posedge ap_clk) begin",
            "    if (!ap_rst_n) begin",
            "      sf_i <= '0; nf_i <= '0; s1_vld <= 1'b0; s2_vld <= 1'b0; o_vld <= 1'b0;",
            "    end else if (en) begin",
            "      s1_vld <= issue;",
            "      if (issue) begin",
            "        s1_a <= vbuf[rbank][sf_i]; s1_w <= WROM[nf_i * SF + sf_i];",
            "        s1_first <= (sf_i == 0); s1_last <= (sf_i == SF - 1);",
        ]
        lines += [
            "        if (sf_i == SF - 1) begin sf_i <= '0; nf_i <= (nf_i == NF - 1) ? '0 : nf_i + 1'b1; end",
            "        else sf_i <= sf_i + 1'b1;",
            "      end",
            "      // multiply: PE x SIMD products of sign-extended operands, in LUTs",
            "      s2_vld <= s1_vld; s2_first <= s1_first; s2_last <= s1_last;",
            f"      for (int p = 0; p < {pe}; p++)",
            f"        for (int s = 0; s < {simd}; s++)",
            f"          s2_p[p][s] <= {w['prod']}'({w_ext}(s1_w[(p * {simd} + s) * {w['w']} +: {w['w']}])) * "
            f"{w['prod']}'({a_ext}(s1_a[s * {w['a']} +: {w['a']}]));",
            "      // reduce: per PE a balanced adder tree into the accumulator; the last fold is a beat",
            "      o_vld <= s2_vld && s2_last;",
            "      if (s2_vld) begin",
        ]
        for p in range(pe):
            lines.append(f"        acc[{p}] <= sum{p}; o_dat[{(p + 1) * w['out'] - 1}:{p * w['out']}] <= "
                         f"sum{p}[{w['out'] - 1}:0];")
        lines += ["      end", "    end", "  end"]
        sums = ["  // per PE: the accumulator (zero at the first synapse fold) plus the products' tree"]
        for p in range(pe):
            tree = adder_tree([f"{w['acc']}'(s2_p[{p}][{s}])" for s in range(simd)])
            sums.append(f"  wire signed [{w['acc'] - 1}:0] sum{p} = (s2_first ? {w['acc']}'sd0 : acc[{p}]) + {tree};")
        at = lines.index("  always_ff @(posedge ap_clk) begin")
        lines[at:at] = sums
        pad = ow - pe * w["out"]
        lines.append(f"  assign out0_V_TDATA = {{{str(pad) + chr(39) + 'b0, ' if pad else ''}o_dat}};")
        lines.append("  assign out0_V_TVALID = o_vld;")
        return (f"// generated by flimcc: {name}, matrix-vector product {self.get_nodeattr('MW')} x "
                f"{self.get_nodeattr('MH')} of {adt.name} by {wdt.name} weights into {odt.name}, "
                f"PE {pe}, SIMD {simd}, LUT multipliers\n"
                f"module {name} (\n  input logic ap_clk, input logic ap_rst_n,\n"
                + ",\n".join([stream_ports("in", "in0_V", iw), stream_ports("out", "out0_V", ow)]) + "\n);\n"
                + "\n".join(lines) + "\nendmodule\n")

    # --- estimates --------------------------------------------------------------------
    def lut_estimation(self, fpgapart=None):
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        nf, sf = self._folds()
        w = self._widths()
        multipliers = pe * simd * math.ceil(LUTS_PER_PRODUCT_BIT * w["w"] * w["a"])
        adders = pe * math.ceil(LUTS_PER_SUM_BIT * ((simd - 1) * w["tree"] + w["acc"]))
        rom = pe * simd * w["w"] * math.ceil(nf * sf / 64) if nf * sf > 1 else 0
        replay = simd * w["a"] * (1 + math.ceil(2 * sf / 64))  # two vector slots in LUTRAM, the read mux
        return multipliers + adders + rom + replay

    def ff_estimation(self) -> int:
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        w = self._widths()
        _, sf = self._folds()
        return (2 * sf * simd * w["a"]  # the vector slots (Yosys keeps shallow ones in flip-flops)
                + simd * w["a"] + pe * simd * w["w"]  # issue stage: activations, ROM word
                + pe * simd * w["prod"]  # products
                + pe * (w["acc"] + w["out"]) * 2)  # accumulators, output and skid registers

    def dsp_estimation(self, fpgapart=None):
        return 0

    def bram_estimation(self, fpgapart=None):
        return 0

    def uram_estimation(self, fpgapart=None):
        return 0

    def get_exp_cycles(self):
        return MVAU.get_exp_cycles(self)

"""A quantized GRU from Brevitas primitives, and the quantized Seq2SeqLite student.

Brevitas has no QuantGRU, so :class:`QuantGRU` is assembled from ``QuantLinear`` (the
input and recurrent projections), ``QuantSigmoid`` / a quantized hard sigmoid (the update
and reset gates), ``QuantTanh`` / ``QuantHardTanh`` (the candidate) and ``QuantIdentity``
(the hidden state). Its arithmetic is the ONNX ``GRU`` operator's, gate order z, r, h, batch-first::

    z  = f(x W_z + h R_z + b_z)                 r = f(x W_r + h R_r + b_r)
    h~ = g(x W_h + Q(r * h) R_h + b_h)          linear_before_reset = 0 (Keras reset_after=False)
    h~ = g(x W_h + b_Wh + r * (h R_h + b_Rh))   linear_before_reset = 1 (PyTorch, Keras default)
    h' = Q((1 - z) * h~ + z * h)

with f the logistic sigmoid or the deployed student's hard sigmoid clip(0.5 x + 0.5, 0, 1)
(ONNX ``HardSigmoid`` alpha = beta = 0.5), and g tanh or the deployed student's hard tanh
clip(x, -1, 1) (QKeras' ``quantized_tanh`` with default settings; ONNX's GRU has no such
activation). Reset-before has one bias vector, as the authors' QKeras student; reset-after
has an input and a recurrent one, as ONNX and PyTorch.

The hard pair makes every operation piecewise linear, so an export computes bit for bit
what PyTorch computes. With the logistic sigmoid and tanh, torch's and onnxruntime's
float32 kernels differ in the last bit on most inputs, and a few values in a million then
round to the neighbouring level (measured: 16 of 2,000 test decays differ at T = 135).

Quantization (``bits`` = 8, 6 or 4; ``None`` turns every quantizer off, leaving exactly
the float ONNX GRU math). All scales are powers of two, so an integer lowering is exact:

- weights and biases: signed, narrow, per tensor, radix point from the tensor's max
  (Brevitas fixed-point quantizers, as QKeras' ``quantized_bits(b, 0, 1)``);
- gates: unsigned on the 2^-(b-1) grid. That wastes the top half of the codes but holds
  1.0 exactly: on the 2^-b grid z could never reach 1, so the state would leak a fixed
  fraction every step (at least 1/16 of it per step at 4 bits);
- candidate, hidden state and the reset product r * h: signed on the 2^-(b-1) grid,
  [-1, 1 - 2^-(b-1)] (QKeras' ``quantized_tanh``). Requantizing r * h keeps the input of
  the recurrent matrix product at the state's bits;
- ``state_bits`` (default ``act_bits``) widens the hidden state and r * h alone: the state
  carries its rounding error over all T steps, so a narrow model keeps a wider state
  (the seeds' "8-bit-state" variants) while its weights and gates stay at ``bits``;
- ``act_bits`` (default ``bits``) sets everything but the weights: the input, the gates,
  the candidate and the biases (W4A8 is ``bits=4, act_bits=8``). A gate on 4 bits moves
  the state in eighths; the biases fold into the threshold tables, so their bits cost nothing;
- accumulators (the matrix products plus biases) are not quantized: integer arithmetic
  on power-of-two grids, they are exact in float32 for these sizes. The one exception is
  reset-after's h R_h + Rb_h, which r multiplies: it is requantized to 13 signed bits
  with a learned power-of-two scale (`accumulator_quant`), else the product's integers
  pass float32's exact 2^24 and the compiler refuses the model.

The input projection of all T steps is one matrix product before the loop, and the
weights are quantized once per call, so an export holds one weight ``Quant`` per tensor
(FINN's weight folding wants one per consumer, a rewrite for the compiler). The loop
over T is Python: export unrolls it into a DAG.
"""

from __future__ import annotations

import torch
from brevitas.core.scaling import ScalingImplType
from brevitas.nn import QuantHardTanh, QuantIdentity, QuantLinear, QuantSigmoid, QuantTanh
from brevitas.nn.quant_layer import QuantNonLinearActLayer
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8BiasPerTensorFixedPointInternalScaling,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from brevitas.quant_tensor import QuantTensor
from torch import nn

SIGMOIDS = ("logistic", "hard")
TANHS = ("tanh", "hard")
BIT_WIDTHS = (4, 6, 8)


# --- quantizers --------------------------------------------------------------------------

def weight_quant(bits: int | None):
    """Signed narrow per-tensor weights, power-of-two scale from the max magnitude."""
    return None if bits is None else Int8WeightPerTensorFixedPoint.let(bit_width=bits)


def bias_quant(bits: int | None):
    """Biases with their own power-of-two scale (not the accumulator's), as QKeras does."""
    return None if bits is None else Int8BiasPerTensorFixedPointInternalScaling.let(bit_width=bits)


def signed_unit_quant(bits: int | None):
    """Signed codes on the constant 2^-(b-1) grid: [-1, 1 - 2^-(b-1)]."""
    if bits is None:
        return None
    return Int8ActPerTensorFixedPoint.let(
        bit_width=bits, scaling_impl_type=ScalingImplType.CONST, min_val=-1.0, max_val=1.0)


def unsigned_unit_quant(bits: int | None):
    """Unsigned codes on the constant 2^-(b-1) grid: [0, (2^b - 1) 2^-(b-1)], 1.0 included.
    (Brevitas' power-of-two scale of an unsigned range is max_val / 2^b.)"""
    if bits is None:
        return None
    return Uint8ActPerTensorFixedPoint.let(
        bit_width=bits, scaling_impl_type=ScalingImplType.CONST, min_val=0.0, max_val=2.0)


#: Bits of the reset-after accumulator h R_h + Rb_h.
ACCUMULATOR_BITS = 13


def accumulator_quant(bits: int | None):
    """The reset-after accumulator h R_h + Rb_h requantized to 13 signed bits with a learned
    power-of-two scale s before r multiplies it. Unrequantized, r times it needs integers
    beyond float32's exact 2^24, which the compiler refuses. Why 13 (c): the candidate's
    sum x W_h + b_Wh + r * acc lives on the product's grid 2^-(b-1) s, r < 2 on b bits,
    the accumulator's range A = 2^(c-1) s, G the bound of x W_h + b_Wh; its integers stay
    below 2^24 while 2 + G / A < 2^(26 - b - c): at 8 bits G < 30 A. At PTQ's 16 bits
    (whose scale comes from a loose static bound) a learned, tight scale leaves G < 2 A."""
    return None if bits is None else Int8ActPerTensorFixedPoint.let(bit_width=ACCUMULATOR_BITS)


# --- layers ------------------------------------------------------------------------------

class HardSigmoid(nn.Module):
    """QKeras' hard sigmoid clip(0.5 x + 0.5, 0, 1) (not torch's x / 6 + 0.5)."""

    def __init__(self):  # Brevitas' injector rejects nn.Module's (*args, **kwargs)
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(0.5 * x + 0.5, 0.0, 1.0)


class QuantHardSigmoid(QuantNonLinearActLayer):
    """Quantized :class:`HardSigmoid`, the counterpart of Brevitas' ``QuantSigmoid``."""

    def __init__(self, act_quant=None, **kwargs):
        super().__init__(act_impl=HardSigmoid, passthrough_act=False, input_quant=None,
                         act_quant=act_quant, return_quant_tensor=False, **kwargs)


def _candidate_activation(tanh: str, bits: int | None) -> nn.Module:
    if tanh == "tanh":
        return QuantTanh(act_quant=signed_unit_quant(bits))
    if bits is None:  # Brevitas' QuantHardTanh cannot be built without a quantizer
        return nn.Hardtanh()
    return QuantHardTanh(act_quant=signed_unit_quant(bits))


def _value(t: torch.Tensor | QuantTensor | None) -> torch.Tensor | None:
    return t.value if isinstance(t, QuantTensor) else t


class QuantGRU(nn.Module):
    """One quantized GRU layer, batch-first, ONNX gate order (see the module notes).

    Inputs are expected on a quantized grid already (the model's input quantizer or the
    layer below); ``forward(x, h0)`` returns the sequence of states (B, T, H) and the last
    state (B, H). The parameters have ONNX's layout: ``input.weight`` is W (3H, I),
    ``recurrent.weight`` is R (3H, H); reset-before keeps the single bias in
    ``input.bias``, reset-after has ``input.bias`` = Wb and ``recurrent.bias`` = Rb.
    """

    def __init__(self, input_size: int, hidden_size: int, linear_before_reset: int = 0,
                 bits: int | None = 8, sigmoid: str = "logistic", tanh: str = "tanh",
                 state_bits: int | None = None, act_bits: int | None = None):
        super().__init__()
        if linear_before_reset not in (0, 1):
            raise ValueError(f"linear_before_reset must be 0 or 1, got {linear_before_reset!r}")
        if sigmoid not in SIGMOIDS:
            raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {sigmoid!r}")
        if tanh not in TANHS:
            raise ValueError(f"tanh must be one of {TANHS}, got {tanh!r}")
        if bits is not None and not 2 <= bits <= 16:
            raise ValueError(f"bits must be in 2..16 or None (float), got {bits!r}")
        act_bits = bits if act_bits is None or bits is None else act_bits
        if bits is not None and not bits <= act_bits <= 16:
            raise ValueError(f"act_bits must be in {bits}..16 (at least bits), got {act_bits!r}")
        state_bits = act_bits if state_bits is None or bits is None else state_bits
        if bits is not None and not act_bits <= state_bits <= 16:
            raise ValueError(f"state_bits must be in {act_bits}..16 (at least bits and act_bits), got {state_bits!r}")
        self.state_bits, self.act_bits = state_bits, act_bits
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear_before_reset, self.bits, self.sigmoid, self.tanh = linear_before_reset, bits, sigmoid, tanh
        H = hidden_size
        self.input = QuantLinear(input_size, 3 * H, bias=True,
                                 weight_quant=weight_quant(bits), bias_quant=bias_quant(act_bits))
        self.recurrent = QuantLinear(H, 3 * H, bias=bool(linear_before_reset),
                                     weight_quant=weight_quant(bits), bias_quant=bias_quant(act_bits))
        gate_cls = QuantSigmoid if sigmoid == "logistic" else QuantHardSigmoid
        self.gate = gate_cls(act_quant=unsigned_unit_quant(act_bits))
        self.candidate = _candidate_activation(tanh, act_bits)
        # The state and r * h, the two inputs of the recurrent products, share one grid.
        self.state_quant = QuantIdentity(act_quant=signed_unit_quant(state_bits))
        self.reset_quant = QuantIdentity(act_quant=signed_unit_quant(state_bits))
        if linear_before_reset:
            self.accumulator_quant = QuantIdentity(act_quant=accumulator_quant(bits))
        self._init_like_pytorch()

    def _init_like_pytorch(self) -> None:
        # torch.nn.GRU's U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
        bound = self.hidden_size ** -0.5
        for p in (self.input.weight, self.input.bias, self.recurrent.weight, self.recurrent.bias):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        H = self.hidden_size
        # Loop-invariant work, done once so that an export holds it once: the input
        # projection of every step (one matrix product) and the quantized weights.
        gx_zr, gx_h = _value(self.input(x)).split([2 * H, H], dim=2)
        R_zr, R_h = _value(self.recurrent.quant_weight()).t().split([2 * H, H], dim=1)
        Rb = _value(self.recurrent.quant_bias())
        h = x.new_zeros(B, H) if h0 is None else _value(self.state_quant(h0))
        states = []
        for t in range(T):
            if self.linear_before_reset:
                h = self._step_reset_after(gx_zr[:, t], gx_h[:, t], h, R_zr, R_h, Rb)
            else:
                h = self._step_reset_before(gx_zr[:, t], gx_h[:, t], h, R_zr, R_h)
            states.append(h)
        return torch.stack(states, dim=1), h

    def _step_reset_before(self, gx_zr, gx_h, h, R_zr, R_h):
        z, r = _value(self.gate(gx_zr + h @ R_zr)).split(self.hidden_size, dim=1)
        candidate = _value(self.candidate(gx_h + _value(self.reset_quant(r * h)) @ R_h))
        return self._update(z, candidate, h)

    def _step_reset_after(self, gx_zr, gx_h, h, R_zr, R_h, Rb):
        Rb_zr, Rb_h = Rb.split([2 * self.hidden_size, self.hidden_size])
        z, r = _value(self.gate(gx_zr + h @ R_zr + Rb_zr)).split(self.hidden_size, dim=1)
        candidate = _value(self.candidate(gx_h + r * _value(self.accumulator_quant(h @ R_h + Rb_h))))
        return self._update(z, candidate, h)

    def _update(self, z, candidate, h):
        return _value(self.state_quant((1 - z) * candidate + z * h))

    def onnx_weights(self) -> dict[str, torch.Tensor]:
        """The (quantized) W, R, B of the equivalent ONNX ``GRU`` node, shapes
        (1, 3H, I), (1, 3H, H), (1, 6H); reset-before puts its bias in Wb, zeros in Rb."""
        with torch.no_grad():
            W = _value(self.input.quant_weight())
            R = _value(self.recurrent.quant_weight())
            Wb = _value(self.input.quant_bias())
            Rb = _value(self.recurrent.quant_bias())
            if Rb is None:
                Rb = torch.zeros_like(Wb)
            return {"W": W[None].clone(), "R": R[None].clone(), "B": torch.cat([Wb, Rb])[None]}


class QuantSeq2SeqLite(nn.Module):
    """The quantized student: input quantizer, QuantGRU encoder, QuantGRU decoder fed
    zeros from the encoder's final state, and a quantized Dense(3) head (float output).

    The defaults are the authors' deployed student: 32 units, reset-before
    (6,627 parameters), 8 bits; ``sigmoid="hard", tanh="hard"`` gives its activations.
    """

    def __init__(self, hidden: int = 32, bits: int | None = 8, linear_before_reset: int = 0,
                 sigmoid: str = "logistic", tanh: str = "tanh", outputs: int = 3,
                 state_bits: int | None = None, act_bits: int | None = None):
        super().__init__()
        self.hidden, self.bits = hidden, bits
        self.linear_before_reset, self.sigmoid, self.tanh = linear_before_reset, sigmoid, tanh
        # The input is peak-normalised to [0, 1]: unsigned, 1.0 exactly on the grid.
        self.input_quant = QuantIdentity(act_quant=unsigned_unit_quant(bits if act_bits is None else act_bits))
        self.encoder = QuantGRU(1, hidden, linear_before_reset, bits, sigmoid, tanh, state_bits, act_bits)
        self.decoder = QuantGRU(1, hidden, linear_before_reset, bits, sigmoid, tanh, state_bits, act_bits)
        self.state_bits, self.act_bits = self.encoder.state_bits, self.encoder.act_bits
        self.dense = QuantLinear(hidden, outputs, bias=True,
                                 weight_quant=weight_quant(bits), bias_quant=bias_quant(self.act_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.encoder(_value(self.input_quant(x)))
        decoded, _ = self.decoder(torch.zeros_like(x), state)
        return _value(self.dense(decoded))


def from_torch_gru(state: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """The weights of a float `Seq2SeqLite` (``torch.nn.GRU``, one layer per side) in
    `QuantSeq2SeqLite`'s names, for its reset-after form (``linear_before_reset=1``) with
    logistic/tanh activations: the same function exactly, so a quantized reset-after
    student can start its QAT from the trained float student (its float shadow).

    PyTorch orders the gates (r, z, n), ONNX and QuantGRU (z, r, h); PyTorch's b_ih/b_hh
    are QuantGRU's input.bias/recurrent.bias (Wb/Rb), both reset-after."""
    H = hidden

    def zrh(t: torch.Tensor) -> torch.Tensor:
        r, z, n = t.split(H)
        return torch.cat([z, r, n]).clone()

    out = {}
    for side in ("encoder", "decoder"):
        for torch_name, name in (("weight_ih_l0", "input.weight"), ("bias_ih_l0", "input.bias"),
                                 ("weight_hh_l0", "recurrent.weight"), ("bias_hh_l0", "recurrent.bias")):
            out[f"{side}.{name}"] = zrh(state[f"{side}.{torch_name}"])
    out["dense.weight"], out["dense.bias"] = state["dense.weight"].clone(), state["dense.bias"].clone()
    return out

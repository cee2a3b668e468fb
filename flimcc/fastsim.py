"""A fast bit-exact simulator of a compiled design: its hardware as generated C.

flimcc's executor (`flimcc.execute`) runs a loop body node by node, each node FINN's numpy
model over the whole batch, once per time step: exact, and ~1,000-2,000 pixels/s on a
compiled Seq2SeqLite (every step is ~20 small numpy calls with their temporaries). Here the
design's hardware region (every FINN node and loop between the software edges,
`region_program`) becomes straight-line C over one pixel's integer arrays, each loop's body
nested in its T steps, `LANES` pixels at a time node by node (independent chains the core
overlaps), blocks of pixels spread over the cores (OpenMP); the software edges (input
quantizer, layout changes, output scale) stay on flimcc's executor. Where the region is not
covered, each loop alone (`loop_program`), the rest on the executor.

The C computes what FINN's numpy models compute, in integers:

- MVAU (matrix units, LUT or DSP): x @ W accumulated in int32 (AVX-512 VNNI's 16-bit pair
  multiply-adds where the CPU has them, `_PREAMBLE`; plain C that compilers vectorise
  elsewhere); with an activation, the thresholds below;
- Thresholding: ActVal + #{k: x >= T[c, k]} over the thresholds rounded up (x is an
  integer, so x >= t exactly when x >= ceil(t)): buckets of 2^s inputs that each hold at most
  one distinct threshold (one small table, L1-sized, read by vector gathers), else a table
  over the input's integer range (`LUT_MAX`), else a binary search (`_thresholds`);
- ElementwiseAdd/Sub/Mul: the operation in int32 (FINN's model: int64, then float32; equal, as
  every operand and result is an integer below 2^24 by its datatype);
- DuplicateStreams, StreamingFIFO: the same vector; StreamingSplit: slices of it.

Equal to the numpy models only while every value is an integer below 2^24 in magnitude
(float32 holds it exactly, so FINN's float32 results do not round): `loop_program` checks
each tensor's FINN datatype and refuses a body where that does not hold, or that holds
another op; the loop then runs on flimcc's executor. The C source depends only on the
shapes and types (the weights and tables are passed at run time), is compiled once with the
system C compiler and cached by content hash (``~/.cache/flimcc/fastsim``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.errors import UnsupportedError

#: the magnitude below which float32 holds every integer (FINN's models compute in float32)
EXACT = 2 ** 24
#: the most entries a threshold table may take (all rows); larger: binary search
LUT_MAX = 2 ** 22
#: pixels through the region together (`region_program`)
LANES = 4
#: thresholds at least 2^this apart go in buckets (`_thresholds`), closer ones in a full table
BUCKET_MIN_SHIFT = 3
CACHE = Path(os.environ.get("FLIMCC_CACHE", Path.home() / ".cache" / "flimcc")) / "fastsim"


def _cname(i: int) -> str:
    return f"v{i}"


@dataclass
class _Program:
    """The C of one loop body and the arrays passed to it (weights, tables)."""

    lines: list[str] = field(default_factory=list)
    tables: list[np.ndarray] = field(default_factory=list)
    names: dict[str, tuple[str, int]] = field(default_factory=dict)  # tensor -> (C expression, width)

    def table(self, arr: np.ndarray, ctype: str) -> str:
        self.tables.append(np.ascontiguousarray(arr))
        k = len(self.tables) - 1
        self.lines.insert(0, f"  const {ctype}* T{k} = (const {ctype}*)tabs[{k}];")
        return f"T{k}"


def _ctype(values: np.ndarray) -> tuple[str, np.dtype]:
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for ct, dt in (("int8_t", np.int8), ("uint8_t", np.uint8), ("int16_t", np.int16), ("uint16_t", np.uint16),
                   ("int32_t", np.int32)):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return ct, dt
    raise UnsupportedError(f"values beyond int32 ({lo}..{hi})")


def _bounded(dt, what: str) -> None:
    if not dt.is_integer() or max(abs(dt.min()), abs(dt.max())) >= EXACT:
        raise UnsupportedError(f"{what}: {dt.name} is not an integer type below 2^24")


def _integers(arr: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if not np.all(np.floor(a) == a) or np.abs(a).max(initial=0) >= EXACT:
        raise UnsupportedError(f"{what}: not integers below 2^24")
    return a.astype(np.int64)


def _emit_node(prog: _Program, code: list, node, gm: ModelWrapper, width: dict, fresh, uid: str) -> None:
    """Append the C of one node (per pixel, one step) to `code`: its inputs are the C
    expressions `prog.names` holds, its output arrays come from `fresh(name)` (which
    declares them or points into a sequence); `uid` names its temporaries."""
    op = node.op_type.split("_")[0] if node.op_type.endswith(("_hls", "_rtl")) else node.op_type
    if op not in _KERNELS:
        raise UnsupportedError(f"node '{node.name}': {node.op_type} has no fast kernel")
    inst_n = getCustomOp(node)
    if op in ("DuplicateStreams", "StreamingFIFO"):
        for o in node.output:
            prog.names[o] = (prog.names[node.input[0]][0], width[o])
    elif op == "StreamingSplit":
        src, off = prog.names[node.input[0]][0], 0
        for o in node.output:
            prog.names[o] = (f"({src} + {off})", width[o])
            off += width[o]
        if off != width[node.input[0]]:
            raise UnsupportedError(f"node '{node.name}': split widths {off} != {width[node.input[0]]}")
    elif op in ("MVAU", "MVAULut"):
        if inst_n.get_nodeattr("binaryXnorMode") or "BIPOLAR" in (inst_n.get_nodeattr("inputDataType"),
                                                                inst_n.get_nodeattr("weightDataType")):
            raise UnsupportedError(f"node '{node.name}': binary MVAU")
        w = gm.get_initializer(node.input[1])
        if w is None:
            raise UnsupportedError(f"node '{node.name}': weights are not constant")
        w = _integers(w, f"node '{node.name}' weights")
        mw, mh = w.shape
        # FINN's model sums in float32 (BLAS, any order): exact while every partial sum
        # is below 2^24, which |x| <= max|x| guarantees when max|x| * sum_i |W[i, j]| is
        adt = inst_n.get_input_datatype(0)
        max_x = max(abs(adt.min()), abs(adt.max()))
        if not sums_exact_in_float32(max_x, np.abs(w).sum(axis=0)):
            raise UnsupportedError(f"node '{node.name}': FINN's float32 sums may round (max|x| * sum|W| >= 2^24)")
        x = prog.names[node.input[0]][0]
        out = fresh(node.output[0])
        acc = out if inst_n.get_nodeattr("noActivation") else f"{uid}_acc"
        if acc != out:
            code.append(f"    int32_t {acc}[{mh}];")
        if max_x <= 2 ** 15 - 1 and np.abs(w).max(initial=0) <= 2 ** 15 - 1:
            # int16 operands: with AVX-512 VNNI, 16 outputs at a time from pairs of inputs
            # (`mvu_vnni`, weights as [k][mh padded to 16][2]); elsewhere one dot product per
            # output over a transposed row, which compilers make 16-bit pair multiply-adds
            kk, mhp = (mw + 1) // 2, -(-mh // 16) * 16
            w2 = np.zeros((2 * kk, mhp), np.int16)
            w2[:mw, :mh] = w
            tv = prog.table(np.ascontiguousarray(w2.reshape(kk, 2, mhp).transpose(0, 2, 1)), "int16_t")
            tw = prog.table(np.ascontiguousarray(w.T).astype(np.int16), "int16_t")
            xi = [f"(uint32_t)(uint16_t)(int16_t){x}[{2 * k + h}]" if 2 * k + h < mw else "0u" for k in range(kk)
                  for h in (0, 1)]
            padded = mhp == mh  # else through a buffer of mhp outputs
            code += ["#if FLIMCC_VNNI",
                     f"    int32_t {uid}_x2[{kk}];" + ("" if padded else f" int32_t {uid}_p[{mhp}];"),
                     *[f"    {uid}_x2[{k}] = (int32_t)({xi[2 * k]} | ({xi[2 * k + 1]} << 16));" for k in range(kk)],
                     f"    mvu_vnni({uid}_x2, {kk}, {tv}, {mhp}, {acc if padded else uid + '_p'});",
                     *([] if padded else [f"    for (int j = 0; j < {mh}; j++) {acc}[j] = {uid}_p[j];"]),
                     "#else",
                     f"    int16_t {uid}_x[{mw}]; for (int i = 0; i < {mw}; i++) {uid}_x[i] = (int16_t){x}[i];",
                     f"    for (int j = 0; j < {mh}; j++) {{ const int16_t* w = {tw} + j * {mw}; int32_t s = 0;",
                     f"      for (int i = 0; i < {mw}; i++) s += (int32_t){uid}_x[i] * (int32_t)w[i];",
                     f"      {acc}[j] = s; }}",
                     "#endif"]
        else:
            ct, dt = _ctype(w)
            tw = prog.table(w.astype(dt), ct)
            code += [f"    for (int j = 0; j < {mh}; j++) {acc}[j] = 0;",
                     f"    for (int i = 0; i < {mw}; i++) {{ const int32_t xi = {x}[i]; const {ct}* w = {tw} + i * {mh};",
                     f"      for (int j = 0; j < {mh}; j++) {acc}[j] += xi * (int32_t)w[j]; }}"]
        if acc != out:
            thr = gm.get_initializer(node.input[2])
            _thresholds(prog, code, node, thr, acc, out, mh, *_activation(inst_n))
    elif op == "Thresholding":
        thr = gm.get_initializer(node.input[1])
        if thr is None:
            raise UnsupportedError(f"node '{node.name}': thresholds are not constant")
        x = prog.names[node.input[0]][0]
        out = fresh(node.output[0])
        _thresholds(prog, code, node, thr, x, out, width[node.output[0]], *_activation(inst_n))
    elif op in ("ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "IntElementwiseAdd", "IntElementwiseSub",
                "IntElementwiseMul"):
        sym = {"Add": "+", "Sub": "-", "Mul": "*"}[op[-3:]]
        c = width[node.output[0]]
        operands = []
        for k, name in enumerate(node.input[:2]):
            const = gm.get_initializer(name)
            if const is None:
                src, w_in = prog.names[name]
                if w_in not in (1, c):
                    raise UnsupportedError(f"node '{node.name}': input {k} of {w_in} channels for {c}")
                operands.append(f"{src}[{'j' if w_in == c else '0'}]")
            else:
                vals = _integers(const, f"node '{node.name}' constant").reshape(-1)
                if vals.size not in (1, c):
                    raise UnsupportedError(f"node '{node.name}': constant of {vals.size} values for {c} channels")
                if np.all(vals == vals[0]):
                    operands.append(f"({int(vals[0])})")
                else:
                    ct, dt = _ctype(vals)
                    operands.append(f"(int32_t){prog.table(vals.astype(dt), ct)}[j]")
        out = fresh(node.output[0])
        # int32 is exact: operands and result are integers below 2^24 (their datatypes)
        code.append(f"    for (int j = 0; j < {c}; j++) {out}[j] = {operands[0]} {sym} {operands[1]};")
    elif op == "IntRequant":
        # clip((x * S + B + 2^(k-1)) >> k): the node's own integer form, which its _params
        # proved equal to FINN's float32 formula over every input it can get.
        from qonnx.custom_op.general.intquant import max_int, min_int

        sc, bc, k = inst_n._params(gm)
        idt, odt = inst_n.get_input_datatype(0), inst_n.get_output_datatype()
        # int64 holds x * S + B exactly (C's >> on a negative int64 is arithmetic in gcc and clang)
        x_max = max(abs(int(idt.min())), abs(int(idt.max())))
        if x_max * int(np.abs(sc).max()) + int(np.abs(bc).max()) + (1 << max(k - 1, 0)) >= 1 << 62:
            raise UnsupportedError(f"node '{node.name}': its requantization's products pass int64")
        qlo = min_int(odt.signed(), inst_n.get_nodeattr("narrow"), odt.bitwidth())
        qhi = max_int(odt.signed(), inst_n.get_nodeattr("narrow"), odt.bitwidth())
        c = width[node.output[0]]
        x = prog.names[node.input[0]][0]
        out = fresh(node.output[0])
        ts, tb = prog.table(np.asarray(sc, np.int64), "int64_t"), prog.table(np.asarray(bc, np.int64), "int64_t")
        half = (1 << (k - 1)) if k else 0
        code += [f"    for (int j = 0; j < {c}; j++) {{",
                 f"      int64_t v = ((int64_t){x}[j] * {ts}[j] + {tb}[j] + {half}LL) >> {k};",
                 f"      {out}[j] = (int32_t)(v < {int(qlo)}LL ? {int(qlo)}LL : v > {int(qhi)}LL ? {int(qhi)}LL : v); }}"]
    else:
        raise UnsupportedError(f"node '{node.name}': {node.op_type} has no fast kernel")


def _body_interface(body: ModelWrapper) -> tuple[list[str], list[str], dict[str, int]]:
    """A loop body's streamed inputs and outputs, and every tensor's channels; refuses a
    tensor that is not (pixels, channels) or whose datatype the C cannot hold exactly."""
    from flimcc.execute import graph_input_names

    g = body.graph
    b_in, b_out = graph_input_names(body), [o.name for o in g.output]
    width = {}
    for name in b_in + [t for n in g.node for t in n.output]:
        shape = body.get_tensor_shape(name)
        if shape is None or len(shape) != 2:
            raise UnsupportedError(f"tensor '{name}': shape {shape}, not (pixels, channels)")
        width[name] = int(shape[1])
        _bounded(body.get_tensor_datatype(name), f"tensor '{name}'")
    return b_in, b_out, width


def loop_program(inst) -> tuple[str, list[np.ndarray], dict]:
    """C source of RecurrentLoop `inst`'s body (function ``loop_run``), the arrays it reads,
    and its interface. Raises UnsupportedError for what it does not cover (module docstring)."""
    body = inst.body()
    g = body.graph
    n_state = inst.get_nodeattr("num_state")
    b_in, b_out, width = _body_interface(body)
    prog = _Program()
    decl = []
    for k, name in enumerate(b_in):
        prog.names[name] = (f"in{k}", width[name])
    counter = 0

    def fresh(name: str) -> str:
        nonlocal counter
        counter += 1
        c = _cname(counter)
        decl.append(f"    int32_t {c}[{width[name]}];")
        prog.names[name] = (c, width[name])
        return c

    code = []
    for k, node in enumerate(g.node):
        _emit_node(prog, code, node, body, width, fresh, f"b{k}")
    iface = {"n_state": n_state, "in_widths": [width[n] for n in b_in], "out_widths": [width[n] for n in b_out],
             "b_in": b_in, "b_out": b_out}
    return _source(prog, decl, code, b_in, b_out, n_state, width), prog.tables, iface


_KERNELS = ("DuplicateStreams", "StreamingFIFO", "StreamingSplit", "MVAU", "MVAULut", "Thresholding",
            "ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "IntElementwiseAdd", "IntElementwiseSub",
            "IntElementwiseMul", "IntRequant")


def _activation(inst) -> tuple[int, int]:
    """(scale, bias) of a FINN threshold activation: bipolar outputs 2 * count - 1, others
    count + ActVal."""
    if inst.get_nodeattr("outputDataType") == "BIPOLAR":
        return 2, -1
    return 1, int(inst.get_nodeattr("ActVal"))


def _thresholds(prog: _Program, code: list, node, thr, x: str, out: str, c: int, scale: int, bias: int) -> None:
    """out[j] = bias + scale * #{k : x[j] >= thr[row(j), k]}: a table over x's range, or a
    binary search over the thresholds rounded up."""
    t = np.asarray(thr, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] not in (1, c):
        raise UnsupportedError(f"node '{node.name}': thresholds of shape {t.shape} for {c} channels")
    t = np.clip(np.ceil(t), -2 * EXACT, 2 * EXACT).astype(np.int64)  # integer x >= t iff x >= ceil(t)
    t = np.sort(t, axis=1)
    rows, steps = t.shape
    # below every threshold the count is 0, from the highest on it is `steps`: a table over
    # [min - 1, max] with the input clamped into it is exact for any input
    lo, hi = int(t.min()) - 1, int(t.max())
    span = hi - lo + 1
    row = "j" if rows > 1 else "0"
    shift = _bucket_shift(t)
    periodic = _periodic(t)
    if periodic is not None:
        # K thresholds repeating every P inputs (a requantization: no table at all)
        period, offsets = periodic
        base = t[:, 0]
        b = f"({int(base[0])})" if rows == 1 else f"(int32_t){prog.table(base.astype(np.int32), 'int32_t')}[j]"
        q = f"(uq >> {period.bit_length() - 1})" if period & (period - 1) == 0 else f"(uq / {period})"
        hits = " + ".join(f"(m >= {o})" for o in offsets[1:]) or "0"
        code.append(f"    for (int j = 0; j < {c}; j++) {{ int32_t u = {x}[j] - {b}; int32_t uq = u < 0 ? 0 : u;"
                    f" int32_t qq = {q}; int32_t m = uq - qq * {period}; int32_t k = {len(offsets)} * qq + 1 + {hits};"
                    f" k = u < 0 ? 0 : (k > {steps} ? {steps} : k); {out}[j] = {bias} + {scale} * k; }}")
    elif shift >= BUCKET_MIN_SHIFT:
        # buckets of 2^shift inputs, each holding at most one distinct threshold (2^shift
        # <= the least gap between distinct thresholds): the count is the bucket's count
        # at its start, or the one past its threshold; three small int32 tables (L1-sized
        # where the full table over the span would not fit L2)
        nb = ((hi - lo) >> shift) + 1
        starts = lo + (np.arange(nb, dtype=np.int64) << shift)
        firsts = np.empty((rows, nb), np.int64)
        below = np.empty((rows, nb), np.int64)
        above = np.empty((rows, nb), np.int64)
        for r, tr in enumerate(t):
            k = np.searchsorted(tr, starts, side="left")  # first threshold >= the bucket's start
            nxt = np.where(k < steps, tr[np.minimum(k, steps - 1)], hi + 1)
            inside = nxt < starts + (1 << shift)
            firsts[r] = np.where(inside, nxt, hi + 1)  # no threshold in the bucket: never reached
            below[r] = bias + scale * k
            above[r] = bias + scale * np.searchsorted(tr, firsts[r], side="right")
        if shift <= 15 and steps <= 255:
            # one int32 per bucket: threshold's offset in the bucket (bits 0-15; 2^shift:
            # none), the count below it (16-23) and the step at it (24-31): one gather
            offs = np.minimum(firsts - starts, 1 << shift)
            cnt = (below - bias) // scale
            inc = (above - below) // scale
            packed = (offs | (cnt << 16) | (inc << 24)).astype(np.uint32)
            tp = prog.table(packed, "uint32_t")
            code.append(f"    for (int j = 0; j < {c}; j++) {{ int32_t v = {x}[j]; v = v < {lo} ? {lo} : (v > {hi} ? {hi} : v);"
                        f" int32_t r = v - ({lo}); uint32_t e = {tp}[(long){row} * {nb} + (r >> {shift})];"
                        f" int32_t k = (int32_t)((e >> 16) & 255) + ((r & {(1 << shift) - 1}) >= (int32_t)(e & 65535) ? (int32_t)(e >> 24) : 0);"
                        f" {out}[j] = {bias} + {scale} * k; }}")
        else:
            tf, tb, ta = (prog.table(a.astype(np.int32), "int32_t") for a in (firsts, below, above))
            code.append(f"    for (int j = 0; j < {c}; j++) {{ int32_t v = {x}[j]; v = v < {lo} ? {lo} : (v > {hi} ? {hi} : v);"
                        f" long b = (long){row} * {nb} + ((v - ({lo})) >> {shift});"
                        f" {out}[j] = v >= {tf}[b] ? {ta}[b] : {tb}[b]; }}")
    elif span * rows <= LUT_MAX:
        values = np.arange(lo, hi + 1)
        lut = np.stack([bias + scale * np.searchsorted(r, values, side="right") for r in t])
        ct, dt = _ctype(lut)
        tl = prog.table(lut.astype(dt), ct)
        code.append(f"    for (int j = 0; j < {c}; j++) {{ int32_t v = {x}[j]; v = v < {lo} ? {lo} : (v > {hi} ? {hi} : v);"
                    f" {out}[j] = {tl}[(long){row} * {span} + (v - ({lo}))]; }}")
    else:
        ct, dt = _ctype(t)
        tt = prog.table(t.astype(dt), ct)
        code.append(f"    for (int j = 0; j < {c}; j++) {{ const {ct}* r = {tt} + (long){row} * {steps}; "
                    f"int32_t v = {x}[j]; int a = 0, b = {steps};"
                    f" while (a < b) {{ int m = (a + b) >> 1; if (r[m] <= v) a = m + 1; else b = m; }}"
                    f" {out}[j] = {bias} + {scale} * a; }}")


def _periodic(t: np.ndarray, most: int = 4) -> tuple[int, list[int]] | None:
    """(P, offsets) when every row's sorted integer thresholds are K <= `most` offsets
    repeating every P inputs from the row's first threshold (t[k + K] = t[k] + P; the same
    offsets in every row), as a requantizer's are; the count is then
    K * (u // P) + #{offsets <= u % P} for u = x - t[0] >= 0 (0 below, `steps` at most),
    checked here against the thresholds on every input from below the first to past the
    last. None: no such pattern."""
    rows, steps = t.shape
    rel = t - t[:, :1]
    for k in range(1, min(most, steps - 1) + 1):
        period = int(rel[0, k])
        if period <= 0 or not np.all(rel[:, k:] - rel[:, :-k] == period) or not np.all(rel[:, :k] == rel[0, :k]):
            continue
        offsets = [int(o) for o in rel[0, :k]]
        for r in range(rows):
            u = np.arange(-2, int(rel[r, -1]) + period + 2, dtype=np.int64)
            uq = np.maximum(u, 0)
            q = uq // period
            m = uq - q * period
            got = k * q + sum((m >= o).astype(np.int64) for o in offsets)
            got = np.where(u < 0, 0, np.minimum(got, steps))
            if not np.array_equal(got, np.searchsorted(rel[r], u, side="right")):
                return None
        return period, offsets
    return None


def _bucket_shift(t: np.ndarray) -> int:
    """The largest s with 2^s <= the least gap between distinct thresholds of any row (so
    a bucket of 2^s consecutive integers holds at most one distinct threshold); 30 when no
    row has two distinct thresholds."""
    gaps = [np.diff(np.unique(r)) for r in t]
    least = min((int(g.min()) for g in gaps if g.size), default=2 ** 30)
    return min(int(np.floor(np.log2(least))), 30)


#: C shared by the generated programs: the AVX-512 VNNI matrix kernel where the CPU has it
_PREAMBLE = r"""#include <stdint.h>
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && !defined(FLIMCC_PORTABLE)
#include <immintrin.h>
#define FLIMCC_VNNI 1
/* acc[j] = sum_k x2[k].lo * w2[k][j][0] + x2[k].hi * w2[k][j][1] for j < mhp (a multiple
   of 16): x2[k] packs inputs 2k and 2k + 1 as int16; vpdpwssd does 32 products at once,
   eight accumulators in flight hide its latency. Exact: int32, no saturation. */
static inline void mvu_vnni(const int32_t* x2, int kk, const int16_t* w2, int mhp, int32_t* acc) {
  int jb = 0;
  for (; jb + 64 <= mhp; jb += 64) {  /* two chains of four: even and odd k */
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int k = 0;
    for (; k + 1 < kk; k += 2) {
      const __m512i xa = _mm512_set1_epi32(x2[k]), xb = _mm512_set1_epi32(x2[k + 1]);
      const int16_t* w = w2 + ((long)k * mhp + jb) * 2;
      const int16_t* v = w + 2 * mhp;
      a0 = _mm512_dpwssd_epi32(a0, xa, _mm512_loadu_si512(w));
      a1 = _mm512_dpwssd_epi32(a1, xa, _mm512_loadu_si512(w + 32));
      a2 = _mm512_dpwssd_epi32(a2, xa, _mm512_loadu_si512(w + 64));
      a3 = _mm512_dpwssd_epi32(a3, xa, _mm512_loadu_si512(w + 96));
      b0 = _mm512_dpwssd_epi32(b0, xb, _mm512_loadu_si512(v));
      b1 = _mm512_dpwssd_epi32(b1, xb, _mm512_loadu_si512(v + 32));
      b2 = _mm512_dpwssd_epi32(b2, xb, _mm512_loadu_si512(v + 64));
      b3 = _mm512_dpwssd_epi32(b3, xb, _mm512_loadu_si512(v + 96));
    }
    if (k < kk) {
      const __m512i xa = _mm512_set1_epi32(x2[k]);
      const int16_t* w = w2 + ((long)k * mhp + jb) * 2;
      a0 = _mm512_dpwssd_epi32(a0, xa, _mm512_loadu_si512(w));
      a1 = _mm512_dpwssd_epi32(a1, xa, _mm512_loadu_si512(w + 32));
      a2 = _mm512_dpwssd_epi32(a2, xa, _mm512_loadu_si512(w + 64));
      a3 = _mm512_dpwssd_epi32(a3, xa, _mm512_loadu_si512(w + 96));
    }
    _mm512_storeu_si512(acc + jb, _mm512_add_epi32(a0, b0));
    _mm512_storeu_si512(acc + jb + 16, _mm512_add_epi32(a1, b1));
    _mm512_storeu_si512(acc + jb + 32, _mm512_add_epi32(a2, b2));
    _mm512_storeu_si512(acc + jb + 48, _mm512_add_epi32(a3, b3));
  }
  for (; jb < mhp; jb += 16) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    int k = 0;
    for (; k + 1 < kk; k += 2) {
      const int16_t* w = w2 + ((long)k * mhp + jb) * 2;
      a0 = _mm512_dpwssd_epi32(a0, _mm512_set1_epi32(x2[k]), _mm512_loadu_si512(w));
      a1 = _mm512_dpwssd_epi32(a1, _mm512_set1_epi32(x2[k + 1]), _mm512_loadu_si512(w + 2 * mhp));
    }
    if (k < kk) a0 = _mm512_dpwssd_epi32(a0, _mm512_set1_epi32(x2[k]), _mm512_loadu_si512(w2 + ((long)k * mhp + jb) * 2));
    _mm512_storeu_si512(acc + jb, _mm512_add_epi32(a0, a1));
  }
}
#else
#define FLIMCC_VNNI 0
#endif
"""


def _source(prog: _Program, decl: list, code: list, b_in, b_out, n_state: int, width: dict) -> str:
    lines = ["// generated by flimcc.fastsim: one loop body as integer C (see the module docstring)",
             _PREAMBLE,
             "void loop_run(long n, long steps, const void* const* tabs, const float* const* seqs,",
             "              const float* const* init, float* const* finals, float* const* outs) {"]
    lines += prog.lines
    lines += ["  #pragma omp parallel for schedule(static)", "  for (long p = 0; p < n; p++) {"]
    for k in range(n_state):
        w = width[b_in[k]]
        lines.append(f"    int32_t in{k}[{w}];")
        lines.append(f"    for (int j = 0; j < {w}; j++) in{k}[j] = init[{k}] ? (int32_t)init[{k}][p * {w} + j] : 0;")
    for k in range(n_state, len(b_in)):
        lines.append(f"    int32_t in{k}[{width[b_in[k]]}];")
    lines.append("    for (long t = 0; t < steps; t++) {")
    for k in range(n_state, len(b_in)):
        w = width[b_in[k]]
        lines.append(f"      for (int j = 0; j < {w}; j++) in{k}[j] = (int32_t)seqs[{k - n_state}][(t * n + p) * {w} + j];")
    lines += ["  " + d for d in decl]
    lines += ["  " + c for c in code]
    for k in range(n_state, len(b_out)):
        src, w = prog.names[b_out[k]]
        lines.append(f"      for (int j = 0; j < {w}; j++) outs[{k - n_state}][(t * n + p) * {w} + j] = (float){src}[j];")
    for k in range(n_state):  # the new states (copied after every output of the step is read)
        src, w = prog.names[b_out[k]]
        lines.append(f"      int32_t next{k}[{w}]; for (int j = 0; j < {w}; j++) next{k}[j] = {src}[j];")
    for k in range(n_state):
        lines.append(f"      for (int j = 0; j < {width[b_out[k]]}; j++) in{k}[j] = next{k}[j];")
    lines.append("    }")
    for k in range(n_state):
        w = width[b_out[k]]
        lines.append(f"    if (finals[{k}]) for (int j = 0; j < {w}; j++) finals[{k}][p * {w} + j] = (float)in{k}[j];")
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def compiler() -> str | None:
    """The system C compiler (``CC``, else cc/gcc/clang on PATH), or None."""
    import shutil

    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def _cpu() -> str:
    """This machine's CPU model and flags (what -march=native compiles for)."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        return platform.machine() + "".join(sorted({ln for ln in info if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.machine() + platform.processor()


def build(source: str, portable: bool = False) -> ctypes.CDLL:
    """Compile `source` into a shared library (cached by content hash) and load it.
    `portable`: without the CPU-specific kernels (`_PREAMBLE`), as a CPU without AVX-512
    VNNI runs it (the tests check both give the same integers)."""
    cc = compiler()
    if cc is None:
        raise UnsupportedError("no C compiler (cc, gcc or clang) on PATH")
    flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"] + (["-DFLIMCC_PORTABLE"] if portable else [])
    # -march=native: a library built on one CPU may not run on another sharing this cache
    key = hashlib.sha256("\n".join([source, " ".join(flags), cc, _cpu()]).encode()).hexdigest()[:20]
    lib = CACHE / f"loop-{key}.so"
    if not lib.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            src = Path(tmp) / "loop.c"
            src.write_text(source)
            run = subprocess.run([cc, *flags, str(src), "-o", str(Path(tmp) / "loop.so")], capture_output=True, text=True)
            if run.returncode != 0:
                raise UnsupportedError(f"the C compiler failed: {(run.stderr.strip().splitlines() or ['?'])[0]}")
            os.replace(Path(tmp) / "loop.so", lib)  # atomic: parallel workers may build the same
    return ctypes.CDLL(str(lib))


class FastLoop:
    """One RecurrentLoop as compiled C; `run(context)` does what the node's execute_node does."""

    def __init__(self, node, inst, model: ModelWrapper, portable: bool = False):
        for name in node.input:  # what the C reads as int32 (the body's own tensors: loop_program)
            _bounded(model.get_tensor_datatype(name), f"loop '{node.name}' input '{name}'")
        source, tables, self.iface = loop_program(inst)
        self.node, self.inst, self.source = node, inst, source
        self.tables = [np.ascontiguousarray(t) for t in tables]
        self.fn = build(source, portable).loop_run
        self.fn.restype = None

    def run(self, context: dict) -> None:
        inst, node, iface = self.inst, self.node, self.iface
        steps = inst.get_nodeattr("iterations")
        state_ins, seq_ins = inst._split_inputs(node.input)
        state_outs, seq_outs = inst._split(list(node.output))
        seqs = [np.ascontiguousarray(context[s], dtype=np.float32) for s in seq_ins]
        n = seqs[0].shape[2] if seqs else next(np.shape(context[s])[0] for s in state_ins if s is not None)
        for s, w in zip(seqs, iface["in_widths"][iface["n_state"]:]):
            if s.shape != (1, steps, n, w):
                raise UnsupportedError(f"loop '{node.name}': a sequence of shape {s.shape}")
        inits = [None if s is None else np.ascontiguousarray(context[s], dtype=np.float32).reshape(n, -1)
                 for s in state_ins]
        finals = [np.empty((n, w), np.float32) for w in iface["out_widths"][:iface["n_state"]]]
        ys = [np.empty((1, steps, n, w), np.float32) for w in iface["out_widths"][iface["n_state"]:]]
        P = ctypes.c_void_p
        tabs = (P * max(len(self.tables), 1))(*[t.ctypes.data for t in self.tables])
        cs = (P * max(len(seqs), 1))(*[s.ctypes.data for s in seqs])
        ci = (P * max(len(inits), 1))(*[None if a is None else a.ctypes.data for a in inits])
        cf = (P * max(len(finals), 1))(*[f.ctypes.data for f in finals])
        co = (P * max(len(ys), 1))(*[y.ctypes.data for y in ys])
        self.fn(ctypes.c_long(n), ctypes.c_long(steps), tabs, cs, ci, cf, co)
        for name, value in zip(state_outs, finals):
            context[name] = value
        for name, value in zip(seq_outs, ys):
            context[name] = value


def _lockstep(lines: list[str]) -> list[str]:
    """`lines` (one node's C for one pixel) once per pixel of the block: the pixels' chains
    are independent, so the core overlaps one pixel's latencies (table gathers, the
    accumulators) with the next one's work."""
    return ["    for (int q = 0; q < nq; q++) {"] + ["  " + ln for ln in lines] + ["    }"]


def region_program(model: ModelWrapper, lanes: int | None = None) -> tuple[str, list[np.ndarray], dict]:
    """C of the design's hardware region, per pixel: every node from the first FINN or loop
    node to the last (the software edges before and after stay on the executor). A
    sequence tensor (1, T, N, C) is a pixel's T x C array, a state (N, C) its C vector;
    the nodes between the loops run at every step (`for t`), each loop's body nested in its
    own step loop. Keeps every intermediate of a pixel in the core's cache, where the
    per-loop programs (`loop_program`) leave sequences of the whole batch in memory
    between numpy calls. `lanes` pixels go through the region together, node by node
    (`_lockstep`). Returns (source of ``region_run``, tables, interface)."""
    from flimcc.layout import FINN_HW_DOMAINS, LOOP_DOMAIN

    lanes = lanes or LANES
    nodes = list(model.graph.node)
    is_loop = [n.domain == LOOP_DOMAIN and n.op_type == "RecurrentLoop" for n in nodes]
    hw = [i for i, n in enumerate(nodes) if n.domain in FINN_HW_DOMAINS or is_loop[i]]
    if not hw:
        raise UnsupportedError("no hardware nodes")
    first, last = hw[0], hw[-1]
    if len(hw) != last - first + 1:
        raise UnsupportedError("a software node between the hardware nodes")
    region = nodes[first:last + 1]
    inits = {t.name for t in model.graph.initializer}
    produced = {o for n in region for o in n.output}
    ins = list(dict.fromkeys(t for n in region for t in n.input if t and t not in produced and t not in inits))
    outside = {t for n in nodes[:first] + nodes[last + 1:] for t in n.input} | {o.name for o in model.graph.output}
    outs = [t for n in region for t in n.output if t in outside]
    layout, steps, batch = {}, None, None
    for name in ins + [t for n in region for t in n.output]:
        shape = model.get_tensor_shape(name)
        if shape and len(shape) == 4 and shape[0] == 1:
            layout[name] = ("seq", int(shape[3]))
            steps, n_ = steps or int(shape[1]), int(shape[2])
            if int(shape[1]) != steps:
                raise UnsupportedError(f"tensor '{name}': {shape[1]} steps, others {steps}")
        elif shape and len(shape) == 2:
            layout[name] = ("vec", int(shape[1]))
            n_ = int(shape[0])
        else:
            raise UnsupportedError(f"tensor '{name}': shape {shape}, not (1, T, pixels, C) nor (pixels, C)")
        if batch not in (None, n_):
            raise UnsupportedError(f"tensor '{name}': {n_} pixels, others {batch}")
        batch = n_
        _bounded(model.get_tensor_datatype(name), f"tensor '{name}'")
    if steps is None:
        raise UnsupportedError("no sequence in the hardware region")
    prog = _Program()
    width = {t: c for t, (_, c) in layout.items()}
    arena: list[tuple[str, int]] = []  # per-pixel arrays in one per-thread buffer

    def array(size: int) -> str:
        name = f"A{len(arena)}"
        arena.append((name, size))
        return name

    code: list[str] = []
    loads = []
    for k, t in enumerate(ins):
        kind, c = layout[t]
        base = array(steps * c if kind == "seq" else c)
        prog.names[t] = (f"({base} + t * {c})" if kind == "seq" else base, c)
        if kind == "seq":
            loads.append(f"      for (long t = 0; t < {steps}; t++) for (int j = 0; j < {c}; j++) "
                         f"{base}[t * {c} + j] = (int32_t)ins[{k}][(t * n + p) * {c} + j];")
        else:
            loads.append(f"      for (int j = 0; j < {c}; j++) {base}[j] = (int32_t)ins[{k}][p * {c} + j];")
    for i, node in enumerate(region):
        if is_loop[first + i]:
            _emit_loop(prog, code, node, getCustomOp(node), steps, width, array, f"L{i}", lanes)
            continue
        kinds = {layout[o][0] for o in node.output} | {layout[t][0] for t in node.input if t in layout}
        if len(kinds) != 1:
            raise UnsupportedError(f"node '{node.name}': sequences and states mixed")
        seq = kinds == {"seq"}

        def fresh(name: str, seq=seq) -> str:
            c = width[name]
            a = array(steps * c if seq else c)
            prog.names[name] = (f"({a} + t * {c})" if seq else a, c)
            return prog.names[name][0]

        part: list[str] = []
        _emit_node(prog, part, node, model, width, fresh, f"n{i}")
        if seq and part:
            part = [f"    for (long t = 0; t < {steps}; t++) {{"] + ["  " + ln for ln in part] + ["    }"]
        code += _lockstep(part) if part else []
    stores = []
    for k, t in enumerate(outs):
        kind, c = layout[t]
        expr = prog.names[t][0]
        if kind == "seq":
            stores.append(f"      for (long t = 0; t < {steps}; t++) for (int j = 0; j < {c}; j++) "
                          f"outs[{k}][(t * n + p) * {c} + j] = (float){expr}[j];")
        else:
            stores.append(f"      for (int j = 0; j < {c}; j++) outs[{k}][p * {c} + j] = (float){expr}[j];")
    total = sum(size for _, size in arena)
    lines = ["// generated by flimcc.fastsim: a design's hardware region as integer C, per pixel",
             _PREAMBLE, "#include <stdlib.h>", ""]
    off = 0
    for name, size in arena:  # pixel q's arrays of the block (q: the lockstep loop's index)
        lines.append(f"#define {name} (arena + q * {total} + {off})")
        off += size
    lines += ["",
             "int region_run(long n, const void* const* tabs, const float* const* ins, float* const* outs) {"]
    lines += prog.lines
    lines += ["  int failed = 0;", "  #pragma omp parallel", "  {",
              f"  int32_t* arena = (int32_t*)malloc(sizeof(int32_t) * {total * lanes});",
              "  if (!arena) {", "    #pragma omp atomic write", "    failed = 1;", "  } else {"]
    lines += ["  #pragma omp for schedule(static)", f"  for (long p0 = 0; p0 < n; p0 += {lanes}) {{",
              f"    const int nq = n - p0 < {lanes} ? (int)(n - p0) : {lanes};"]
    lines += ["    for (int q = 0; q < nq; q++) {", "      const long p = p0 + q;"] + loads + ["    }"]
    lines += code
    lines += ["    for (int q = 0; q < nq; q++) {", "      const long p = p0 + q;"] + stores + ["    }"]
    lines += ["  }", "  free(arena);", "  }", "  }", "  return failed;", "}", ""]
    iface = {"ins": ins, "outs": outs, "layout": layout, "steps": steps,
             "nodes": [n.name for n in region]}
    return "\n".join(lines), prog.tables, iface


def _emit_loop(prog: _Program, code: list, node, inst, steps: int, width: dict, array, uid: str, lanes: int) -> None:
    """One RecurrentLoop inside `region_program`: its states in per-pixel vectors, its body
    (`_emit_node`) at every step, reading the loop's sequence inputs at step t and writing
    its sequence outputs there."""
    body = inst.body()
    g = body.graph
    if inst.get_nodeattr("iterations") != steps:
        raise UnsupportedError(f"loop '{node.name}': {inst.get_nodeattr('iterations')} steps, the region {steps}")
    n_state = inst.get_nodeattr("num_state")
    b_in, b_out, bwidth = _body_interface(body)
    state_ins, seq_ins = inst._split_inputs(node.input)
    state_outs, seq_outs = inst._split(list(node.output))
    states = []
    for k in range(n_state):
        s = array(bwidth[b_in[k]])
        states.append(s)
        src = state_ins[k]
        if src is None:
            code += _lockstep([f"    for (int j = 0; j < {bwidth[b_in[k]]}; j++) {s}[j] = 0;"])
        else:
            code += _lockstep([f"    for (int j = 0; j < {bwidth[b_in[k]]}; j++) {s}[j] = {prog.names[src][0]}[j];"])
        prog.names[b_in[k]] = (s, bwidth[b_in[k]])
    for name, src in zip(b_in[n_state:], seq_ins):
        prog.names[name] = prog.names[src]  # the step's slice of the loop's input sequence
    ys = []
    for name in seq_outs:
        a = array(steps * width[name])
        prog.names[name] = (f"({a} + t * {width[name]})", width[name])
        ys.append(prog.names[name][0])
    decl, part = [], []
    counter = 0

    def fresh(name: str) -> str:
        nonlocal counter
        counter += 1
        c = f"{uid}v{counter}"
        decl.append(f"    int32_t {c}[{lanes}][{bwidth[name]}];")
        prog.names[name] = (f"{c}[q]", bwidth[name])
        return prog.names[name][0]

    for k, bnode in enumerate(g.node):
        node_code: list[str] = []
        _emit_node(prog, node_code, bnode, body, bwidth, fresh, f"{uid}b{k}")
        part += _lockstep(node_code) if node_code else []
    tail = []
    for k, y in enumerate(ys):
        src, w = prog.names[b_out[n_state + k]]
        tail.append(f"    for (int j = 0; j < {w}; j++) {y}[j] = {src}[j];")
    for k in range(n_state):
        src, w = prog.names[b_out[k]]
        tail.append(f"    {{ int32_t nx[{w}]; for (int j = 0; j < {w}; j++) nx[j] = {src}[j];"
                    f" for (int j = 0; j < {w}; j++) {states[k]}[j] = nx[j]; }}")
    code.append(f"    for (long t = 0; t < {steps}; t++) {{")
    code += ["  " + ln for ln in decl + part + _lockstep(tail)]
    code.append("    }")
    for k, name in enumerate(state_outs):
        prog.names[name] = (states[k], bwidth[b_out[k]])


class FastRegion:
    """The design's hardware region as compiled C (`region_program`); `run(context)` reads
    its inputs from the context and writes its outputs there."""

    def __init__(self, model: ModelWrapper, portable: bool = False):
        source, tables, self.iface = region_program(model)
        self.source = source
        self.tables = [np.ascontiguousarray(t) for t in tables]
        self.fn = build(source, portable).region_run
        self.fn.restype = ctypes.c_int

    def run(self, context: dict, n: int) -> None:
        iface, steps = self.iface, self.iface["steps"]
        ins = [np.ascontiguousarray(context[t], dtype=np.float32) for t in iface["ins"]]
        outs = []
        for t in iface["outs"]:
            kind, c = iface["layout"][t]
            outs.append(np.empty((1, steps, n, c) if kind == "seq" else (n, c), np.float32))
        P = ctypes.c_void_p

        def arr(xs):
            return (P * max(len(xs), 1))(*[a.ctypes.data for a in xs])

        if self.fn(ctypes.c_long(n), arr(self.tables), arr(ins), arr(outs)) != 0:
            raise MemoryError("fastsim: no memory for a thread's pixel buffers")
        for t, value in zip(iface["outs"], outs):
            context[t] = value


class FastModel:
    """A compiled design run bit-exact: its hardware region as C (`FastRegion`), else each
    loop as C (`FastLoop`) and the rest on flimcc's executor; the software edges always on
    the executor. `why_slow` lists the loops left on the executor and why."""

    def __init__(self, model: ModelWrapper, region: bool = True, portable: bool = False):
        from flimcc.layout import LOOP_DOMAIN

        self.model = model
        self.loops: dict[str, FastLoop] = {}
        self.why_slow: dict[str, str] = {}
        self.region: FastRegion | None = None
        self.why_not_region = "" if region else "not asked for"
        try:
            if region:
                self.region = FastRegion(model, portable)
                return
        except UnsupportedError as e:  # loop by loop, then
            self.why_not_region = str(e)
        for node in model.graph.node:
            if node.domain == LOOP_DOMAIN and node.op_type == "RecurrentLoop":
                try:
                    self.loops[node.name] = FastLoop(node, getCustomOp(node), model, portable)
                except UnsupportedError as e:
                    self.why_slow[node.name] = str(e)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from flimcc.execute import _hardware_batch, _normalize_inputs, _run_node

        feeds = _normalize_inputs(self.model, feeds)
        model = _hardware_batch(self.model, feeds)
        context = {t.name: model.get_initializer(t.name) for t in model.graph.initializer}
        context.update(feeds)
        model._flimcc_declared_shapes = None
        region = set(self.region.iface["nodes"]) if self.region is not None else set()
        n = int(np.shape(next(iter(feeds.values())))[0])
        for node in model.graph.node:
            if node.name in region:
                if node.name == self.region.iface["nodes"][0]:
                    self.region.run(context, n)
                continue
            fast = self.loops.get(node.name)
            if fast is not None:
                try:
                    fast.run(context)
                    continue
                except UnsupportedError as e:  # inputs outside what the C covers: the executor
                    self.why_slow[node.name] = str(e)
            if not _elementwise(node, context) and not _data_movement(node, context):
                _run_node(node, context, model)
        return {o.name: context[o.name] for o in model.graph.output}


_NUMPY_OPS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


def _elementwise(node, context: dict) -> bool:
    """FINN's integer ElementwiseAdd/Sub/Mul outside the loops, in float32: FINN's model
    computes in int64 and rounds the result to float32; float32 arithmetic on the same
    integer-valued inputs rounds the exact result the same way (IEEE: the nearest float32),
    so the two are equal, without two int64 copies of every operand. False: not such a node."""
    op = node.op_type.removesuffix("_hls").removesuffix("_rtl").removeprefix("Int")
    if not op.startswith("Elementwise") or op[len("Elementwise"):] not in _NUMPY_OPS:
        return False
    inst = getCustomOp(node)
    if not (inst.get_input_datatype(0).is_integer() and inst.get_input_datatype(1).is_integer()):
        return False
    lhs = np.asarray(context[node.input[0]], dtype=np.float32)
    rhs = np.asarray(context[node.input[1]], dtype=np.float32)
    context[node.output[0]] = _NUMPY_OPS[op[len("Elementwise"):]](lhs, rhs)
    return True


def _data_movement(node, context: dict) -> bool:
    """ONNX Transpose, Squeeze, Unsqueeze, Identity and float32 Mul/Add/Sub at the software
    edges, in numpy: the same values as onnxruntime (moving data changes none; one IEEE
    float32 operation rounds the same everywhere), without building a session per node and
    batch. False: not such a node (onnxruntime runs it)."""
    if node.domain not in ("", "ai.onnx"):
        return False
    attrs = {a.name: a for a in node.attribute}
    x = context.get(node.input[0]) if node.input else None
    if not isinstance(x, np.ndarray):
        return False
    op = node.op_type
    if op == "Identity":
        y = x
    elif op == "Transpose":
        y = np.transpose(x, list(attrs["perm"].ints) if "perm" in attrs else None)  # a view, as numpy does
    elif op in ("Squeeze", "Unsqueeze"):
        if "axes" in attrs:
            axes = list(attrs["axes"].ints)
        elif len(node.input) > 1 and node.input[1]:
            axes = [int(a) for a in np.asarray(context[node.input[1]]).reshape(-1)]
        elif op == "Squeeze":
            axes = [k for k, d in enumerate(x.shape) if d == 1]
        else:
            return False
        y = np.squeeze(x, axis=tuple(axes)) if op == "Squeeze" else np.expand_dims(x, axis=tuple(axes))
    elif op in _NUMPY_OPS:
        other = context.get(node.input[1])
        if x.dtype != np.float32 or not isinstance(other, np.ndarray) or other.dtype != np.float32:
            return False
        y = _NUMPY_OPS[op](x, other)
    else:
        return False
    context[node.output[0]] = y
    return True


def sums_exact_in_float32(max_act: int, column_abs_sums) -> bool:
    """Whether float32 dot products x . W[:, j] with integer |x| <= max_act are exact in any
    summation order (BLAS's): every partial sum is at most max_act * sum_i |W[i, j]|, and
    float32 holds every integer below 2^24."""
    return bool(max_act * np.max(column_abs_sums, initial=0) < EXACT)


def float32_exact_terms(max_act: int = 127, max_weight: int = 127) -> int:
    """The most products |a| <= max_act, |w| <= max_weight that a float32 sum holds exactly
    in any order: floor((2^24 - 1) / (max_act * max_weight)), 1,040 for int8 x int8."""
    return (EXACT - 1) // (max_act * max_weight)


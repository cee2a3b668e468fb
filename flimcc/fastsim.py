"""A fast bit-exact simulator of a compiled design: its recurrent loops as generated C.

flimcc's executor (`flimcc.execute`) runs a loop body node by node, each node FINN's numpy
model over the whole batch, once per time step: exact, and ~1,000 pixels/s on a compiled
Seq2SeqLite (every step is ~20 small numpy calls with their temporaries). Here each
RecurrentLoop's body becomes straight-line C over one pixel's integer vectors, the T steps
inside, pixels spread over the cores (OpenMP); the nodes outside the loops (run once per
batch, not per step) stay on flimcc's executor.

The C computes what FINN's numpy models compute, in integers:

- MVAU (matrix units, LUT or DSP): x @ W accumulated in int32; with an activation, the
  thresholds below;
- Thresholding: ActVal + #{k: x >= T[c, k]}: a table over the input's integer range
  (`LUT_MAX`) or a binary search over the thresholds rounded up (x is an integer, so
  x >= t exactly when x >= ceil(t));
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


def loop_program(inst) -> tuple[str, list[np.ndarray], dict]:
    """C source of RecurrentLoop `inst`'s body (function ``loop_run``), the arrays it reads,
    and its interface. Raises UnsupportedError for what it does not cover (module docstring)."""
    body = inst.body()
    g = body.graph
    n_state = inst.get_nodeattr("num_state")
    inits = {t.name for t in g.initializer}
    b_in = [i.name for i in g.input if i.name not in inits]
    b_out = [o.name for o in g.output]
    prog = _Program()
    width = {}
    for name in b_in + [t for n in g.node for t in n.output]:
        shape = body.get_tensor_shape(name)
        if shape is None or len(shape) != 2:
            raise UnsupportedError(f"tensor '{name}': shape {shape}, not (pixels, channels)")
        width[name] = int(shape[1])
        _bounded(body.get_tensor_datatype(name), f"tensor '{name}'")
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
    for node in g.node:
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
            w = body.get_initializer(node.input[1])
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
            acc = out if inst_n.get_nodeattr("noActivation") else f"{out}_acc"
            if acc != out:
                code.append(f"    int32_t {acc}[{mh}];")
            if max_x <= 2 ** 15 - 1 and np.abs(w).max(initial=0) <= 2 ** 15 - 1:
                # int16 operands, one dot product per output over a transposed row: the
                # compiler makes it multiply-adds of 16-bit pairs (x86 pmaddwd)
                tw = prog.table(np.ascontiguousarray(w.T).astype(np.int16), "int16_t")
                code += [f"    int16_t {out}_x[{mw}]; for (int i = 0; i < {mw}; i++) {out}_x[i] = (int16_t){x}[i];",
                         f"    for (int j = 0; j < {mh}; j++) {{ const int16_t* w = {tw} + j * {mw}; int32_t s = 0;",
                         f"      for (int i = 0; i < {mw}; i++) s += (int32_t){out}_x[i] * (int32_t)w[i];",
                         f"      {acc}[j] = s; }}"]
            else:
                ct, dt = _ctype(w)
                tw = prog.table(w.astype(dt), ct)
                code += [f"    for (int j = 0; j < {mh}; j++) {acc}[j] = 0;",
                         f"    for (int i = 0; i < {mw}; i++) {{ const int32_t xi = {x}[i]; const {ct}* w = {tw} + i * {mh};",
                         f"      for (int j = 0; j < {mh}; j++) {acc}[j] += xi * (int32_t)w[j]; }}"]
            if acc != out:
                thr = body.get_initializer(node.input[2])
                odt = inst_n.get_nodeattr("outputDataType")
                scale, bias = (2, -1) if odt == "BIPOLAR" else (1, int(inst_n.get_nodeattr("ActVal")))
                _thresholds(prog, code, node, thr, acc, out, mh, scale, bias,
                            body.get_tensor_datatype(node.output[0]))
        elif op == "Thresholding":
            thr = body.get_initializer(node.input[1])
            if thr is None:
                raise UnsupportedError(f"node '{node.name}': thresholds are not constant")
            odt = inst_n.get_nodeattr("outputDataType")
            scale, bias = (2, -1) if odt == "BIPOLAR" else (1, int(inst_n.get_nodeattr("ActVal")))
            x = prog.names[node.input[0]][0]
            out = fresh(node.output[0])
            _thresholds(prog, code, node, thr, x, out, width[node.output[0]], scale, bias,
                        inst_n.get_input_datatype(0))
        elif op in ("ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "IntElementwiseAdd", "IntElementwiseSub",
                    "IntElementwiseMul"):
            sym = {"Add": "+", "Sub": "-", "Mul": "*"}[op[-3:]]
            c = width[node.output[0]]
            operands = []
            for k, name in enumerate(node.input[:2]):
                const = body.get_initializer(name)
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
        else:
            raise UnsupportedError(f"node '{node.name}': {node.op_type} has no fast kernel")
    iface = {"n_state": n_state, "in_widths": [width[n] for n in b_in], "out_widths": [width[n] for n in b_out],
             "b_in": b_in, "b_out": b_out}
    return _source(prog, decl, code, b_in, b_out, n_state, width), prog.tables, iface


_KERNELS = ("DuplicateStreams", "StreamingFIFO", "StreamingSplit", "MVAU", "MVAULut", "Thresholding",
            "ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "IntElementwiseAdd", "IntElementwiseSub",
            "IntElementwiseMul")


def _thresholds(prog: _Program, code: list, node, thr, x: str, out: str, c: int, scale: int, bias: int, in_dt) -> None:
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
    if span * rows <= LUT_MAX:
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


def _source(prog: _Program, decl: list, code: list, b_in, b_out, n_state: int, width: dict) -> str:
    lines = ["// generated by flimcc.fastsim: one loop body as integer C (see the module docstring)",
             "#include <stdint.h>", "",
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


def build(source: str) -> ctypes.CDLL:
    """Compile `source` into a shared library (cached by content hash) and load it."""
    cc = compiler()
    if cc is None:
        raise UnsupportedError("no C compiler (cc, gcc or clang) on PATH")
    flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    key = hashlib.sha256((source + " ".join(flags) + cc).encode()).hexdigest()[:20]
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

    def __init__(self, node, inst, model: ModelWrapper):
        for name in node.input:  # what the C reads as int32 (the body's own tensors: loop_program)
            _bounded(model.get_tensor_datatype(name), f"loop '{node.name}' input '{name}'")
        source, tables, self.iface = loop_program(inst)
        self.node, self.inst, self.source = node, inst, source
        self.tables = [np.ascontiguousarray(t) for t in tables]
        self.fn = build(source).loop_run
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


class FastModel:
    """A compiled design run bit-exact: loops as C (`FastLoop`), the rest on flimcc's
    executor. `why_slow` lists the loops left on the executor and why."""

    def __init__(self, model: ModelWrapper):
        from flimcc.layout import LOOP_DOMAIN

        self.model = model
        self.loops: dict[str, FastLoop] = {}
        self.why_slow: dict[str, str] = {}
        for node in model.graph.node:
            if node.domain == LOOP_DOMAIN and node.op_type == "RecurrentLoop":
                try:
                    self.loops[node.name] = FastLoop(node, getCustomOp(node), model)
                except UnsupportedError as e:
                    self.why_slow[node.name] = str(e)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from flimcc.execute import _hardware_batch, _normalize_inputs, _run_node

        feeds = _normalize_inputs(self.model, feeds)
        model = _hardware_batch(self.model, feeds)
        context = {t.name: model.get_initializer(t.name) for t in model.graph.initializer}
        context.update(feeds)
        model._flimcc_declared_shapes = None
        for node in model.graph.node:
            fast = self.loops.get(node.name)
            if fast is not None:
                try:
                    fast.run(context)
                    continue
                except UnsupportedError as e:  # inputs outside what the C covers: the executor
                    self.why_slow[node.name] = str(e)
            if not _elementwise(node, context):
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


def sums_exact_in_float32(max_act: int, column_abs_sums) -> bool:
    """Whether float32 dot products x . W[:, j] with integer |x| <= max_act are exact in any
    summation order (BLAS's): every partial sum is at most max_act * sum_i |W[i, j]|, and
    float32 holds every integer below 2^24."""
    return bool(max_act * np.max(column_abs_sums, initial=0) < EXACT)


def float32_exact_terms(max_act: int = 127, max_weight: int = 127) -> int:
    """The most products |a| <= max_act, |w| <= max_weight that a float32 sum holds exactly
    in any order: floor((2^24 - 1) / (max_act * max_weight)), 1,040 for int8 x int8."""
    return (EXACT - 1) // (max_act * max_weight)


"""The fast bit-exact simulator (issue 13): a compiled design's loops as generated C give
exactly what flimcc's executor gives, on random and simulated data, for every shipped
student (8 and 4 bits, logistic and hard sigmoid); and the float32 bound the executor's
exactness rests on."""

from __future__ import annotations

import numpy as np
import pytest

import flimcc
from flimcc.execute import execute
from flimcc.fastsim import EXACT, FastModel, compiler, float32_exact_terms, sums_exact_in_float32

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler")


def test_float32_holds_int8_sums_up_to_the_bound():
    """float32 sums of int8 x int8 products are exact in any order up to 1,040 terms:
    (2^24 - 1) // (127 * 127). One more term of the largest product, and a partial sum is an
    odd integer above 2^24, which float32 cannot hold."""
    n = float32_exact_terms()
    assert n == (2 ** 24 - 1) // 16129 == 1040
    worst = np.full(n + 1, 127 * 127, np.float32)  # all partial sums k * 16129 (odd for odd k)
    sums = np.cumsum(worst, dtype=np.float32)
    exact = np.cumsum(worst.astype(np.int64))
    assert np.array_equal(sums[:n].astype(np.int64), exact[:n])
    assert exact[n] > EXACT and sums[n].astype(np.int64) != exact[n]
    assert sums_exact_in_float32(127, np.array([127 * n])) and not sums_exact_in_float32(127, np.array([127 * (n + 1)]))


def _random_inputs(model, n: int, seed: int) -> np.ndarray:
    shape = model.get_tensor_shape(model.graph.input[0].name)
    return np.random.default_rng(seed).random((n, *shape[1:]), dtype=np.float32)


def _simulated_inputs(model, n: int, seed: int) -> np.ndarray:
    from flimcc.models.fli_data import simulate

    shape = model.get_tensor_shape(model.graph.input[0].name)
    return simulate(n, seed=seed).x[:, :shape[1]].astype(np.float32).reshape(n, *shape[1:])


def _check(build, n: int, region: bool = True, portable: bool = False) -> FastModel:
    model = flimcc.load(build / "model.onnx")
    fast = FastModel(model, region=region, portable=portable)
    if region:  # the whole hardware region as one C program
        assert fast.region is not None and not fast.loops
    else:  # loop by loop
        assert fast.region is None and fast.loops and not fast.why_slow, fast.why_slow
    name, out = model.graph.input[0].name, model.graph.output[0].name
    for x in (_random_inputs(model, n, 1), _simulated_inputs(model, n, 2)):
        ref = execute(model, {name: x})[out]
        got = fast({name: x})[out]
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)
    assert fast.why_slow == {}  # nothing fell back at run time either
    return fast


@pytest.mark.parametrize("region", [True, False])
def test_small_build_is_bit_exact(small_build, region):
    _check(small_build, 10, region)  # P = 2: frames of 2 pixels, 5 frames


@pytest.mark.parametrize("region", [True, False])
def test_portable_kernels_are_bit_exact(small_build, region):
    """Without the CPU-specific matrix kernel (AVX-512 VNNI where this CPU has it) the C
    gives the same integers: what a CPU without it runs."""
    fast = _check(small_build, 10, region, portable=True)
    source = fast.region.source if region else next(iter(fast.loops.values())).source
    assert "#if FLIMCC_VNNI" in source and "mvu_vnni(" in source


@pytest.mark.parametrize("name", ["seq2seqlite-int8", "seq2seqlite-int8-hard", "seq2seqlite-int4"])
def test_zoo_students_are_bit_exact(zoo_build, name):
    fast = _check(zoo_build(name), 338)  # not a multiple of the lanes: a last, partial block
    assert "#pragma omp for" in fast.region.source
    if name == "seq2seqlite-int8":
        _check(zoo_build(name), 336, region=False)
        _check(zoo_build(name), 336, portable=True)


def _threshold_kernel(t: np.ndarray, c: int, scale: int, bias: int):
    """`fastsim._thresholds` alone as a C function out = f(x) over c channels; returns
    (run(x) -> out, the C line)."""
    import ctypes
    from types import SimpleNamespace

    from flimcc import fastsim

    prog, code = fastsim._Program(), []
    fastsim._thresholds(prog, code, SimpleNamespace(name="thr"), t, "x", "out", c, scale, bias)
    src = "\n".join(["#include <stdint.h>", "void thr(long n, const void* const* tabs, const int32_t* xs, int32_t* outs) {",
                     *prog.lines, "  for (long p = 0; p < n; p++) {",
                     f"    const int32_t* x = xs + p * {c}; int32_t* out = outs + p * {c};", *code, "  }", "}"])
    fn = fastsim.build(src).thr
    tabs = [np.ascontiguousarray(a) for a in prog.tables]
    ptrs = (ctypes.c_void_p * max(len(tabs), 1))(*[a.ctypes.data for a in tabs])

    def run(x: np.ndarray, tabs=tabs) -> np.ndarray:  # tabs: the tables live as long as run
        x = np.ascontiguousarray(x, np.int32)
        out = np.empty_like(x)
        fn(ctypes.c_long(len(x)), ptrs, x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))
        return out
    return run, code[0]


def _threshold_cases():
    rng = np.random.default_rng(0)
    gaps = np.sort(rng.choice(np.arange(-9000, 9000, 9), 255, replace=False))  # >= 9 apart
    dup = np.sort(np.concatenate([gaps[:200], gaps[:55]]))  # 55 doubled: a bucket steps by 2
    close = np.sort(rng.choice(np.arange(-300, 300), 255, replace=False)).astype(float)  # some 1 apart
    alternating = -16319 + np.cumsum(np.r_[0, np.tile([127, 129], 127)])  # a requantizer's: 255 steps
    broken = alternating.copy()
    broken[100] += 1  # one threshold off the pattern: buckets instead
    return [
        ("periodic, every 128", (-500 + 128 * np.arange(255))[None, :] - 0.5, 1, -128, "uq >> 7"),
        ("periodic, pairs every 256", alternating[None, :], 1, -128, "uq >> 8"),
        ("periodic, threes every 100, a base per row", np.stack([np.sort(np.r_[np.arange(0, 2000, 100),
                                                                         np.arange(7, 2000, 100),
                                                                         np.arange(31, 2000, 100)]) + 5 * k
                                                               for k in range(3)]), 2, -1, "uq / 100"),
        ("off the pattern: buckets", broken[None, :], 1, -128, "e >> 24"),
        ("packed buckets", gaps[None, :] + 0.25, 1, 0, "e >> 24"),
        ("packed buckets, duplicates, bipolar", dup[None, :], 2, -1, "e >> 24"),
        ("packed buckets, a row per channel", np.stack([gaps - 7 * k for k in range(3)]) - 0.5, 1, -128, "e >> 24"),
        ("three tables (more than 255 steps)", np.sort(rng.choice(np.arange(-9000, 9000, 9), 300, replace=False))[None, :],
         1, 0, "? T"),
        ("full table", close[None, :], 1, 0, "T0[(long)"),
        ("binary search", np.concatenate([close, [2.0 ** 23]])[None, :], 1, 0, "while (a < b)"),
    ]


@pytest.mark.parametrize("case", _threshold_cases(), ids=lambda c: c[0])
def test_threshold_kernels_count_exactly(case):
    """Every form the C takes for a threshold activation (a periodic pattern computed, buckets
    packed in one int32 word, three bucket tables, a table over the whole span, a binary
    search) gives FINN's
    bias + scale * #{k: x >= T[row, k]} for every integer input across the thresholds'
    span and beyond it (thresholds with fractions: x >= t iff x >= ceil(t))."""
    _, t, scale, bias, marker = case
    c = 3
    run, line = _threshold_kernel(t, c, scale, bias)
    assert marker in line
    lo, hi = int(np.floor(t.min())) - 40, int(np.ceil(t.max())) + 40
    xs = np.concatenate([np.arange(lo, hi), [-2 ** 24 + 1, 2 ** 24 - 1]]).astype(np.int64)
    if len(xs) > 400_000:  # the binary search's span: every integer near a threshold, and ends
        near = (np.ceil(t).reshape(-1)[:, None] + np.arange(-2, 3)[None, :]).reshape(-1)
        xs = np.unique(np.concatenate([near, [lo, hi, -2 ** 24 + 1, 2 ** 24 - 1]])).astype(np.int64)
    x = np.repeat(xs[:, None], c, axis=1)
    rows = t if t.shape[0] == c else np.repeat(t, c, axis=0)
    want = bias + scale * (x[:, :, None] >= rows[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(run(x), want)


def test_unsupported_bodies_fall_back_to_the_executor(small_build):
    """A body op the C does not cover leaves that loop on flimcc's executor, saying why; the
    result is still the executor's."""
    from flimcc.layout import loop_nodes

    model = flimcc.load(small_build / "model.onnx")
    node, loop = next(loop_nodes(model))
    body = loop.body()
    body.graph.node[0].op_type = "Mystery_rtl"  # not a registered op: the C generator refuses it first
    loop.set_nodeattr("body", body.model.graph)
    fast = FastModel(model)
    assert fast.region is None and "Mystery_rtl has no fast kernel" in fast.why_not_region
    assert node.name in fast.why_slow and "Mystery_rtl has no fast kernel" in fast.why_slow[node.name]

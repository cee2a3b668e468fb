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


def _check(build, n: int, region: bool = True) -> FastModel:
    model = flimcc.load(build / "model.onnx")
    fast = FastModel(model, region=region)
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


@pytest.mark.parametrize("name", ["seq2seqlite-int8", "seq2seqlite-int8-hard", "seq2seqlite-int4"])
def test_zoo_students_are_bit_exact(zoo_build, name):
    fast = _check(zoo_build(name), 336)
    assert "#pragma omp for" in fast.region.source
    if name == "seq2seqlite-int8":
        _check(zoo_build(name), 336, region=False)


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

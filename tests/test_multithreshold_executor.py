"""The fast MultiThreshold executor is bit-identical to qonnx's own."""

import numpy as np
import pytest
from onnx import helper
from qonnx.custom_op.registry import getCustomOp

from flimcc.multithreshold_executor import run_multithreshold


@pytest.mark.parametrize("shape, layout", [((50, 6), "NC"), ((4, 7, 6), "NWC"), ((3, 6, 5), "NCW"),
                                           ((2, 6, 3, 3), "NCHW"), ((2, 3, 3, 6), "NHWC"), ((4, 7, 6), "")])
@pytest.mark.parametrize("rows", [1, 6])
def test_same_as_qonnx(shape, layout, rows):
    rng = np.random.default_rng(0)
    x = rng.integers(-40, 40, size=shape).astype(np.float32)
    thr = rng.integers(-45, 45, size=(rows, 15)).astype(np.float32)  # unsorted, with repeats and ties
    node = helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain="qonnx.custom_op.general",
                            out_dtype="INT5", out_bias=-7.0, out_scale=2.0, data_layout=layout)
    if layout in ("NCW",) or (layout == "" and len(shape) == 3 and rows > 1 and shape[-1] != rows):
        pytest.skip("qonnx's layout guess needs the channel axis to match the threshold rows")
    expected = {"x": x, "t": thr}
    getCustomOp(node).execute_node(expected, None)
    got = {"x": x, "t": thr}
    run_multithreshold(node, got, None)
    np.testing.assert_array_equal(got["y"], expected["y"])

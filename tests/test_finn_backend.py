"""The parts of FINN (finn-plus) flimcc stands on import and run here, without Vivado:
conversion to hardware ops, their Python execution, specialisation, folding, estimators."""

import copy

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

import flimcc

finn_settings = pytest.importorskip("finn.util.settings")
PART = "xc7z020clg400-1"


@pytest.fixture(autouse=True, scope="module")
def _finn_settings():
    finn_settings.initialize_dummy_settings()


def _matmul_threshold_model(rng):
    """INT4 x (T, 16) @ INT4 W (16, 8) -> MultiThreshold to UINT2, as a (T, C) sequence."""
    t, mw, mh = 6, 16, 8
    w = rng.integers(-8, 8, size=(mw, mh)).astype(np.float32)
    thr = np.sort(rng.integers(-40, 40, size=(mh, 3)), axis=1).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["acc"], name="mm"),
        helper.make_node("MultiThreshold", ["acc", "thr"], ["y"], name="mt", domain="qonnx.custom_op.general",
                         out_dtype="UINT2", data_layout="NC"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, mw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [t, mh])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(thr, "thr")])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model.set_tensor_datatype("x", DataType["INT4"])
    model.set_tensor_datatype("w", DataType["INT4"])
    return model.transform(InferShapes()).transform(InferDataTypes())


def test_mvau_conversion_execution_and_estimates():
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    rng = np.random.default_rng(0)
    model = _matmul_threshold_model(rng)
    x = rng.integers(-8, 8, size=(6, 16)).astype(np.float32)
    expected = flimcc.execute(model, {"x": x})["y"]

    hw = model.transform(InferQuantizedMatrixVectorActivation())
    assert [n.op_type for n in hw.graph.node] == ["MVAU"]
    np.testing.assert_array_equal(flimcc.execute(hw, {"x": x})["y"], expected)

    hw = hw.transform(SpecializeLayers(PART))
    op = hw.graph.node[0].op_type
    assert op in ("MVAU_hls", "MVAU_rtl")
    hw = hw.transform(SetFolding(target_cycles_per_frame=24))
    cycles = exp_cycles_per_layer(hw)
    node = hw.graph.node[0]
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    pe, simd = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
    # FINN's MVAU cycle formula, worked by hand: (MH/PE) * (MW/SIMD) * numInputVectors.
    assert cycles[node.name] == (8 // pe) * (16 // simd) * 6
    res = res_estimation(hw, PART)[node.name]
    assert set(res) >= {"BRAM_18K", "LUT", "URAM", "DSP"}
    np.testing.assert_array_equal(flimcc.execute(hw, {"x": x})["y"], expected)


def test_elementwise_mul_of_two_streams_is_exact():
    """ElementwiseMul is FINN's only stream x stream multiply (the GRU's z * h)."""
    from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
        InferElementwiseBinaryOperation,
    )

    rng = np.random.default_rng(1)
    node = helper.make_node("Mul", ["a", "b"], ["y"], name="mul")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 8]) for n in ("a", "b")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model.set_tensor_datatype("a", DataType["INT8"])
    model.set_tensor_datatype("b", DataType["UINT8"])
    model = model.transform(InferDataTypes()).transform(InferElementwiseBinaryOperation())
    assert model.graph.node[0].op_type == "ElementwiseMul"
    a = rng.integers(-128, 128, size=(4, 8)).astype(np.float32)
    b = rng.integers(0, 256, size=(4, 8)).astype(np.float32)
    np.testing.assert_array_equal(flimcc.execute(model, {"a": a, "b": b})["y"], a * b)


@pytest.mark.parametrize("low, high, typed, widened", [(-4, 3, "INT3", "INT4"), (-3, 3, "INT3", "INT4"),
                                                      (-8, 7, "INT4", "INT5"), (-7, 7, "INT4", None)])
def test_weight_types_are_widened_for_the_rtl_unit(low, high, typed, widened):
    """FINN's RTL matrix unit wants weights of 4 bits or more and, on a 7-series DSP,
    narrow-range ones (no code at the type's minimum); refused, the matrix would take
    FINN's HLS unit, which has no RTL here. Widened, it stays RTL with the same codes."""
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    from flimcc.passes.lower_finn import rtl_weight_types

    rng = np.random.default_rng(1)
    w = rng.integers(low, high + 1, size=(16, 8)).astype(np.float32)
    w[0, 0], w[1, 1] = low, high
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 8])],
                              [numpy_helper.from_array(w, "w")])
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model.set_tensor_datatype("x", DataType["INT8"])
    model.set_tensor_datatype("w", DataType[typed])
    model = model.transform(InferShapes()).transform(InferDataTypes())
    x = rng.integers(-128, 128, size=(6, 16)).astype(np.float32)
    hw = model.transform(InferQuantizedMatrixVectorActivation()).transform(MinimizeAccumulatorWidth())
    versal = rtl_weight_types(copy.deepcopy(hw), "xcvc1902-vsva2197-2MP-e-S")  # DSP58: any range
    assert versal == (["MVAU_mm"] if typed == "INT3" else [])
    assert rtl_weight_types(hw, PART) == (["MVAU_mm"] if widened else [])
    hw = hw.transform(SpecializeLayers(PART))
    from qonnx.custom_op.registry import getCustomOp

    node = hw.graph.node[0]
    assert (getCustomOp(node).get_input_datatype(1).name, node.op_type) == (widened or typed, "MVAU_rtl")
    np.testing.assert_array_equal(flimcc.execute(hw, {"x": x})["y"], x @ w)


def test_a_matrix_unit_with_thresholds_keeps_its_weight_type():
    # Thresholds inside the MVAU make it HLS whatever its weights: nothing to widen.
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from qonnx.custom_op.registry import getCustomOp

    from flimcc.passes.lower_finn import rtl_weight_types

    model = _matmul_threshold_model(np.random.default_rng(3))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((16, 8), -8, np.float32), "w"))
    hw = model.transform(InferQuantizedMatrixVectorActivation())
    assert getCustomOp(hw.graph.node[0]).get_nodeattr("noActivation") == 0
    assert rtl_weight_types(hw, PART) == [] and getCustomOp(hw.graph.node[0]).get_input_datatype(1).name == "INT4"

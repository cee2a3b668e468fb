"""flimcc.load on the zoo's large QONNX models (unrolled DAGs of ~5,000 nodes).

`load` used qonnx steps that are quadratic in the graph size (the `ModelWrapper` constructor's
initializer-ValueInfo check, InferShapes' node swaps); flimcc.ir now does the same in linear
time. These tests check the result, not the time (timing belongs in benchmarks): the big model
loads completely, and the linear-time helpers give byte-identical protos to qonnx's on a slice
of it small enough for qonnx's own code to be quick.
"""

import collections

import onnx
import pytest
from conftest import quant_mlp
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_shapes import InferShapes

import flimcc
from flimcc import ir
from flimcc.models import zoo

ZOO_MODEL = "seq2seqlite-int8"


@pytest.fixture(scope="module")
def zoo_proto():
    try:
        return onnx.load(str(zoo.path(ZOO_MODEL)))
    except KeyError as e:
        pytest.skip(str(e))


def test_zoo_qonnx_model_loads_completely(zoo_proto):
    model = flimcc.load(zoo.path(ZOO_MODEL))
    nodes = model.graph.node
    assert len(nodes) == len(zoo_proto.graph.node) == 5565
    ops = collections.Counter((n.domain, n.op_type) for n in nodes)
    # InferShapes hides the custom ops from ONNX and puts every one of them back
    assert ops[("qonnx.custom_op.general", "Quant")] == 1092
    assert ops == collections.Counter((n.domain, n.op_type) for n in zoo_proto.graph.node)
    names = [n.name for n in nodes]
    assert len(set(names)) == len(names) and all(names)
    for out in model.graph.output:
        shape = model.get_tensor_shape(out.name)
        assert shape and all(isinstance(d, int) and d > 0 for d in shape)
    # every tensor a node writes has a shape, as qonnx's passes expect
    assert all(model.get_tensor_shape(o) is not None for n in nodes[-50:] for o in n.output)


def _slice(proto: onnx.ModelProto, n_nodes: int) -> onnx.ModelProto:
    """The first `n_nodes` nodes of a topologically sorted model, the last node's output
    (shape unknown) as the graph output."""
    sliced = onnx.ModelProto()
    sliced.CopyFrom(proto)
    del sliced.graph.node[n_nodes:]
    del sliced.graph.output[:]
    sliced.graph.output.append(helper.make_tensor_value_info(sliced.graph.node[-1].output[0], TensorProto.FLOAT, None))
    return sliced


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(proto.SerializeToString())


@pytest.mark.parametrize("source", ["quant_mlp", "zoo_slice"])
def test_linear_time_helpers_match_qonnx(source, request):
    if source == "quant_mlp":
        proto = quant_mlp()
    else:
        proto = _slice(request.getfixturevalue("zoo_proto"), 400)
        assert any(n.op_type == "Quant" for n in proto.graph.node)

    # ModelWrapper(proto): its constructor adds ValueInfo for referenced initializers
    assert ir.wrap(_copy(proto)).model.SerializeToString() == ModelWrapper(_copy(proto)).model.SerializeToString()

    # model.transform(InferShapes(), cleanup=False), after ONNX's own inference as in canonicalize
    ir.name_nodes(proto.graph)
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    ours = ir._infer_shapes(ir.wrap(_copy(inferred)))
    theirs = ModelWrapper(_copy(inferred)).transform(InferShapes(), cleanup=False)
    assert ours.model.SerializeToString() == theirs.model.SerializeToString()
    assert [n.op_type for n in ours.graph.node] == [n.op_type for n in proto.graph.node]

"""Loading, canonicalising and saving models. The IR is qonnx's `ModelWrapper`.

`load` accepts a path, bytes or a `ModelProto` and returns a canonical model: every graph
input has a static shape, shapes are inferred for every tensor, node names are unique and
readable, and the default-domain opset is known. Everything that can go wrong with a
user's file becomes a one-line `ModelLoadError` that names the file and the cause.
"""

from __future__ import annotations

import collections
import copy
import os
import tempfile
from pathlib import Path
from typing import Mapping

import onnx
import onnx.helper as oh
import onnx.numpy_helper as np_helper
import onnx.shape_inference as si
from google.protobuf.message import DecodeError
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import is_custom_op
from qonnx.transformation.infer_shapes import InferShapes, _make_shape_compatible_op, _restore_finn_ops

from .errors import ModelLoadError

ModelSource = str | os.PathLike | bytes | onnx.ModelProto | ModelWrapper

#: The dimension name a leading symbolic axis gets bound to when the user gives none:
#: PyTorch exports name it "batch"; flimcc works on a fixed batch and re-batches at run time.
DEFAULT_BATCH = 1


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return "<bytes>"
    return "<model>"


def _read(source, what: str) -> onnx.ModelProto:
    if isinstance(source, ModelWrapper):
        return onnx.ModelProto.FromString(source.model.SerializeToString())
    if isinstance(source, onnx.ModelProto):
        return onnx.ModelProto.FromString(source.SerializeToString())
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.exists():
            raise ModelLoadError(f"{what}: no such file")
        if path.is_dir():
            raise ModelLoadError(f"{what}: is a directory, not an ONNX file")
        data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"{what}: empty file, not an ONNX model")
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RuntimeWarning) as e:
        raise ModelLoadError(f"{what}: not an ONNX model or truncated ({e})") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ModelLoadError(f"{what}: not an ONNX model (no graph or IR version)")
    if not isinstance(source, bytes) and not isinstance(source, onnx.ModelProto):
        # Weights stored beside the model (models over 2 GB) are loaded from its folder.
        try:
            onnx.load_external_data_for_model(model, str(Path(source).parent))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{what}: external data cannot be read ({e})") from None
    return model


def opset(model: ModelWrapper | onnx.ModelProto, domain: str = "") -> int | None:
    """The opset version the model imports for `domain` ("" is the default ONNX domain)."""
    proto = model.model if isinstance(model, ModelWrapper) else model
    for imp in proto.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return imp.version
    return None


def _bind_dims(graph: onnx.GraphProto, dims: Mapping[str, int], what: str, batch: int = DEFAULT_BATCH) -> None:
    """Give every graph input a static shape: named dims from `dims`, a symbolic leading
    (batch) axis `DEFAULT_BATCH`; any other symbolic axis is an error the user must fix."""
    initializers = {t.name for t in graph.initializer}
    for inp in graph.input:
        if inp.name in initializers or not inp.type.HasField("tensor_type"):
            continue
        ttype = inp.type.tensor_type
        if not ttype.HasField("shape"):
            raise ModelLoadError(f"{what}: input '{inp.name}' has no shape; flimcc needs ranked inputs")
        for axis, d in enumerate(ttype.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            name = d.dim_param
            if name and name in dims:
                value = int(dims[name])
            elif axis == 0:
                value = batch
            else:
                label = f"'{name}'" if name else "unnamed"
                raise ModelLoadError(
                    f"{what}: input '{inp.name}' has dynamic dimension {label} at axis {axis}; "
                    f"fix it with --dim {name or 'NAME'}=VALUE"
                )
            d.Clear()
            d.dim_value = value
    # Symbolic output/value_info shapes are re-derived by shape inference from the inputs.
    for vi in list(graph.output) + list(graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            if any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim):
                vi.type.tensor_type.ClearField("shape")
    graph.ClearField("value_info")


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give unnamed or duplicate-named nodes the name `<OpType>_<k>`; keep the others,
    because exporters' names (`/encoder/GRU`) are what a user recognises."""
    seen = collections.Counter(n.name for n in graph.node if n.name)
    taken = set(seen)
    counters: dict[str, int] = collections.defaultdict(int)
    for node in graph.node:
        if node.name and seen[node.name] == 1:
            continue
        while True:
            candidate = f"{node.op_type}_{counters[node.op_type]}"
            counters[node.op_type] += 1
            if candidate not in taken:
                break
        node.name = candidate
        taken.add(candidate)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                name_nodes(attr.g)


# --- Linear-time equivalents of qonnx steps that are quadratic on large graphs ----------------
# The zoo's QONNX models are unrolled DAGs of ~5,000 nodes. qonnx's `ModelWrapper(proto)` runs
# `check_all_tensor_shapes_specified(fix_missing_init_shape=True)`, which rebuilds the list of
# every ValueInfo for each tensor a node reads or writes (and converts an initializer to numpy on
# each lookup miss): O(nodes x tensors), tens of seconds per wrapper at that size, and `load` built
# three. The helpers below produce the same protos with one index built per call.


def _fix_missing_initializer_valueinfo(model: ModelWrapper) -> None:
    """What `ModelWrapper.check_all_tensor_shapes_specified(fix_missing_init_shape=True)` does to
    the graph, in one pass: every initializer a node references and that has no ValueInfo in
    graph.input/output/value_info gets one appended to value_info, in first-reference order; a
    name with several ValueInfos fails the same assertion qonnx's `get_tensor_shape` raises."""
    graph = model.graph
    vi_count = collections.Counter(x.name for x in graph.input)
    vi_count.update(x.name for x in graph.output)
    vi_count.update(x.name for x in graph.value_info)
    first_init: dict[str, int] = {}
    for k, t in enumerate(graph.initializer):
        first_init.setdefault(t.name, k)

    def visit(name: str) -> None:
        count = vi_count.get(name, 0)
        assert count <= 1, "Multiple ValueInfoProto found for " + name
        if count == 1:
            return
        k = first_init.get(name)
        if k is None:
            return
        init = graph.initializer[k]
        try:
            value = np_helper.to_array(init)
        except ValueError:  # qonnx's get_initializer treats this as "no initializer"
            return
        # = ModelWrapper.set_tensor_shape for a tensor in none of input/output/value_info
        graph.value_info.append(oh.make_tensor_value_info(name, init.data_type, value.shape))
        vi_count[name] = 1

    for n in graph.node:
        for i in n.input:
            if i != "":
                visit(i)
        for o in n.output:
            visit(o)


def wrap(proto: onnx.ModelProto) -> ModelWrapper:
    """`ModelWrapper(proto)`, with its initializer-ValueInfo fix done in linear time."""
    model = ModelWrapper(proto, fix_missing_initializer_valueinfo=False)
    _fix_missing_initializer_valueinfo(model)
    return model


def _infer_shapes(model: ModelWrapper) -> ModelWrapper:
    """`model.transform(InferShapes(), cleanup=False)` with the same result, in linear time.

    qonnx's pass swaps every custom op for a shape-compatible standard op with a
    `RepeatedField.insert` + `remove` (a linear scan comparing messages) and swaps it back by
    looking up `str(node)` of every node; here both swaps happen in place, by index. Node names
    are unique (`name_nodes`), so the node at a swapped index is the only one that could match."""
    if model.fix_float64:  # transform() would first run DoubleToSingleFloat
        return model.transform(InferShapes(), cleanup=False)
    model = copy.deepcopy(model)  # transform(make_deepcopy=True)
    nodes = model.graph.node
    hidden: list[tuple[int, onnx.NodeProto, onnx.NodeProto]] = []
    elem_types: dict[str, int] | None = None
    for k in range(len(nodes)):
        node = nodes[k]
        if is_custom_op(node.domain):
            if node.op_type in ("Quant", "IntQuant") and node.domain.startswith("qonnx"):
                # qonnx's IntQuant.make_shape_compatible_op (a Cast to the output's declared
                # type), without its per-node scan of every value info (quadratic on QAT exports)
                if elem_types is None:
                    g = model.graph
                    elem_types = {}
                    for vi in list(g.input) + list(g.output) + list(g.value_info):
                        elem_types.setdefault(vi.name, vi.type.tensor_type.elem_type)
                compatible = oh.make_node("Cast", [node.input[0]], [node.output[0]],
                                                   to=int(elem_types.get(node.output[0], onnx.TensorProto.FLOAT)))
            else:
                compatible = _make_shape_compatible_op(node, model)
            compatible.name = node.name
            original = onnx.NodeProto()
            original.CopyFrom(node)
            node.CopyFrom(compatible)
            hidden.append((k, compatible, original))
    inferred = wrap(si.infer_shapes(model.model))
    nodes = inferred.graph.node
    if all(k < len(nodes) and nodes[k] == compatible for k, compatible, _ in hidden):
        for k, _, original in hidden:
            nodes[k].CopyFrom(original)
    else:  # shape inference changed the nodes: restore the way qonnx does
        _restore_finn_ops(inferred, {str(compatible): original for _, compatible, original in hidden})
    return inferred


_HARDWARE_DOMAINS = ("finn.custom_op.fpgadataflow.hls", "finn.custom_op.fpgadataflow.rtl", "flimcc.hw")


def _is_hardware_graph(graph: onnx.GraphProto) -> bool:
    return any(n.domain in _HARDWARE_DOMAINS for n in graph.node)


def canonicalize(model: ModelWrapper, dims: Mapping[str, int] | None = None, what: str = "<model>",
                 batch: int = DEFAULT_BATCH) -> ModelWrapper:
    """Bind dynamic input dims, name nodes, infer shapes; raise `ModelLoadError` if some
    graph output is still without a static shape."""
    proto = model.model
    # Older exporters (and Brevitas) also list initializers as graph inputs; they are not
    # inputs a caller feeds, and passes that replace a weight would leave them dangling.
    inits = {t.name for t in proto.graph.initializer}
    static = [i for i in proto.graph.input if i.name in inits]
    for vi in static:
        proto.graph.input.remove(vi)
    if _is_hardware_graph(proto.graph):
        # A compiled hardware graph carries the static shapes its lowering wrote; FINN's
        # shape functions check their inputs against node attributes, so re-inference from
        # the graph input would fail on the first node whose neighbours ONNX cannot infer.
        name_nodes(proto.graph)
        return wrap(proto)
    _bind_dims(proto.graph, dims or {}, what, batch)
    name_nodes(proto.graph)
    try:
        # Data propagation resolves shapes computed from shapes (Shape -> ConstantOfShape, as
        # exporters write `zeros_like`); qonnx's pass then covers qonnx/FINN custom ops.
        model = wrap(onnx.shape_inference.infer_shapes(proto, data_prop=True))
    except Exception:  # noqa: BLE001 - qonnx's inference below reports the problem
        pass
    try:
        model = _infer_shapes(model)
    except Exception as e:  # noqa: BLE001 - ONNX and qonnx raise many kinds; all mean "bad model"
        raise ModelLoadError(f"{what}: shape inference failed: {_first_line(e)}") from None
    for out in model.graph.output:
        shape = model.get_tensor_shape(out.name)
        if shape is None or any((not isinstance(d, int)) or d <= 0 for d in shape):
            shown = "unknown" if shape is None else "(" + ", ".join(str(d) if d else "?" for d in shape) + ")"
            raise ModelLoadError(
                f"{what}: the shape of output '{out.name}' cannot be resolved (got {shown}); "
                "give the dynamic input dimensions with --dim NAME=VALUE"
            )
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def load(source: ModelSource, dims: Mapping[str, int] | None = None, check: bool = True,
         batch: int = DEFAULT_BATCH) -> ModelWrapper:
    """Load a model as canonical IR. `dims` binds named dynamic dimensions (e.g. {"T": 135});
    a symbolic leading (batch) axis becomes `batch`."""
    what = _describe(source)
    proto = _read(source, what)
    if check:
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            raise ModelLoadError(f"{what}: fails the ONNX checker: {_first_line(e)}") from None
    if opset(proto) is None:
        raise ModelLoadError(f"{what}: imports no default-domain (ai.onnx) opset")
    return canonicalize(wrap(proto), dims, what, batch)


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write a file so that a reader never sees it half-written (temp file + rename),
    with the permissions a plain open() would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".flimcc-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(model: ModelWrapper | onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write the model atomically and deterministically (same model, same bytes)."""
    proto = model.model if isinstance(model, ModelWrapper) else model
    return atomic_write(path, proto.SerializeToString(deterministic=True))


def op_histogram(model: ModelWrapper) -> dict[str, int]:
    """Node count by op type (top-level graph), sorted by name: what reports print."""
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))

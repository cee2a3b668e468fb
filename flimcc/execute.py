"""Execute any stage of a compilation.

- A graph of standard ONNX ops runs as one onnxruntime session (the IR version clamped to
  what the installed onnxruntime reads, the batch axis relaxed when the caller's batch
  differs from the model's).
- Any other graph runs node by node: a node whose (domain, op_type) has a registered
  executor runs that (later issues plug in flimcc's own ops and `Scan` bodies that hold
  custom ops); qonnx and FINN custom ops run their own `execute_node`; a standard node runs
  as a one-node onnxruntime session. No node executor is called per pixel: each gets the
  whole batch.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from .errors import FlimccError, UnsupportedError
from .layout import FINN_HW_DOMAINS, LOOP_DOMAIN, rebatch

#: The newest ONNX IR version the pinned onnxruntime accepts (onnx 1.21 writes newer ones).
MAX_ORT_IR_VERSION = 13
STANDARD_DOMAINS = ("", "ai.onnx")

NodeExecutor = Callable[[onnx.NodeProto, dict, ModelWrapper], None]
_NODE_EXECUTORS: dict[tuple[str, str], NodeExecutor] = {}


def register_node_executor(op_type: str, domain: str = "") -> Callable[[NodeExecutor], NodeExecutor]:
    """Register `fn(node, context, model)` that reads its inputs from `context` (name ->
    array) and writes its outputs there. A registered executor runs a custom-domain op in
    place of qonnx's `execute_node`, and a standard op (a `Scan`) whose body holds custom
    ops, which onnxruntime cannot run; standard ops with standard bodies always run on ORT."""

    def deco(fn: NodeExecutor) -> NodeExecutor:
        _NODE_EXECUTORS[(domain, op_type)] = fn
        return fn

    return deco


def is_standard_graph(graph: onnx.GraphProto) -> bool:
    """True if every node, in every subgraph, is in the default ONNX domain."""
    for node in graph.node:
        if node.domain not in STANDARD_DOMAINS:
            return False
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH and not is_standard_graph(attr.g):
                return False
            if attr.type == onnx.AttributeProto.GRAPHS and not all(is_standard_graph(g) for g in attr.graphs):
                return False
    return True


def _ort_ready(proto: onnx.ModelProto, relax_batch: bool) -> bytes:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    proto.ir_version = min(proto.ir_version, MAX_ORT_IR_VERSION)
    if relax_batch:
        # The caller's batch differs from the model's static one: let ORT take any batch.
        for vi in list(proto.graph.input) + list(proto.graph.output):
            shape = vi.type.tensor_type.shape
            if shape.dim:
                shape.dim[0].Clear()
                shape.dim[0].dim_param = "N"
        _forget_inner_shapes(proto.graph)
    return proto.SerializeToString()


def _forget_inner_shapes(graph: onnx.GraphProto) -> None:
    """Drop inferred shapes (value_info, and subgraph input/output shapes), which carry
    the model's static batch, so ORT re-derives them for the caller's batch."""
    graph.ClearField("value_info")
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                for vi in list(attr.g.input) + list(attr.g.output):
                    vi.type.tensor_type.ClearField("shape")
                _forget_inner_shapes(attr.g)


#: ORT fuses QuantizeLinear/DequantizeLinear pairs around ops into quantized kernels
#: (QLinear*, lookup tables) that round differently from the graph as written: a
#: reference run must execute the graph as written.
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@functools.lru_cache(maxsize=1024)
def _session(model_bytes: bytes, exact: bool = False, single_thread: bool = False) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Idle ORT worker threads spin by default; with many cached sessions (one per node of
    # a loop body) the spinning threads starve the machine.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if single_thread:  # one-node sessions run tiny kernels: threads cost more than they give
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
    if exact:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def run_ort(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a standard-ONNX model on onnxruntime; returns all graph outputs by name."""
    inits = {t.name for t in proto.graph.initializer}
    relax = False
    for vi in proto.graph.input:
        if vi.name in inits or vi.name not in feeds:
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and np.ndim(feeds[vi.name]) > 0:
            relax |= dims[0].dim_value != np.shape(feeds[vi.name])[0]
    sess = _session(_ort_ready(proto, relax), any(n.op_type in QDQ_OPS for n in proto.graph.node))
    names = [o.name for o in sess.get_outputs()]
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failure is raised below, in one line; no log on stderr
    try:
        values = sess.run(names, dict(feeds), quiet)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception hierarchy
        raise FlimccError(f"onnxruntime failed: {str(e).splitlines()[0][:400]}") from None
    return dict(zip(names, values))


def _free_inputs(graph: onnx.GraphProto) -> list[str]:
    """Names a (sub)graph reads from its enclosing scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    free: list[str] = []
    for node in graph.node:
        reads = list(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                reads += _free_inputs(attr.g)
        for name in reads:
            if name and name not in defined and name not in free:
                free.append(name)
        defined.update(node.output)
    return free


_ELEM_TYPES: dict[int, tuple[onnx.GraphProto, dict[str, int]]] = {}


def _declared(model: ModelWrapper, name: str) -> onnx.ValueInfoProto:
    """The tensor's declared element type without its shape (ORT re-infers shapes, which
    may differ in the batch axis); an untyped output where the model declares none."""
    entry = _ELEM_TYPES.get(id(model.graph))
    if entry is None or entry[0] is not model.graph or name not in entry[1]:
        # one index per graph (a lookup per node scanned every ValueInfo: quadratic)
        types = {vi.name: vi.type.tensor_type.elem_type
                 for vi in list(model.graph.value_info) + list(model.graph.output) if vi.type.tensor_type.elem_type}
        if len(_ELEM_TYPES) > 64:
            _ELEM_TYPES.clear()
        entry = _ELEM_TYPES[id(model.graph)] = (model.graph, types)
    elem = entry[1].get(name)
    if elem:
        return onnx.helper.make_tensor_value_info(name, elem, None)
    return onnx.ValueInfoProto(name=name)


#: One-node sessions by (node, graph, input dtypes and shapes): a Scan body runs the same
#: nodes on same-shaped tensors every step, so each is built, serialized and loaded once.
_NODE_SESSIONS: dict[tuple, tuple] = {}
_NODE_SESSIONS_MAX = 4096


def _run_standard_node(node: onnx.NodeProto, context: dict, model: ModelWrapper) -> None:
    reads = _node_reads(node)
    feeds = {n: np.asarray(context[n]) for n in reads}
    # The node's bytes, not its id: a node edited in place must not reuse a stale session.
    key = (node.SerializeToString(), id(model.graph), tuple((v.dtype.str, v.shape) for v in feeds.values()))
    entry = _NODE_SESSIONS.get(key)
    if entry is None or entry[1] is not model.graph:
        inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                  for n, v in feeds.items()]
        outputs = [_declared(model, n) for n in node.output if n]
        graph = onnx.helper.make_graph([node], f"{node.name}_graph", inputs, outputs)
        proto = qonnx_make_model(graph, opset_imports=list(model.model.opset_import))
        sess = _session(_ort_ready(proto, False), single_thread=True)
        if len(_NODE_SESSIONS) >= _NODE_SESSIONS_MAX:
            _NODE_SESSIONS.clear()
        # node and graph are held so that their ids are not reused while cached
        entry = _NODE_SESSIONS[key] = (node, model.graph, sess, [o.name for o in sess.get_outputs()])
    _, _, sess, names = entry
    try:
        values = sess.run(names, feeds)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception hierarchy
        raise FlimccError(f"onnxruntime failed: {str(e).splitlines()[0][:400]}") from None
    context.update(zip(names, values))


def _node_reads(node: onnx.NodeProto) -> list[str]:
    reads = [n for n in node.input if n]
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            reads += [n for n in _free_inputs(attr.g) if n not in reads]
    return reads


def _instance(node: onnx.NodeProto):
    """qonnx's op instance of a custom node, or a one-line error naming it."""
    from qonnx.custom_op.registry import getCustomOp

    try:
        return getCustomOp(node)
    except Exception as e:  # noqa: BLE001 - qonnx raises bare Exceptions for unknown ops
        raise UnsupportedError(
            f"node '{node.name}': no executor for op {node.domain}.{node.op_type} ({str(e).splitlines()[0]})"
        ) from None


def _run_custom_node(node: onnx.NodeProto, context: dict, model: ModelWrapper) -> None:
    inst = _instance(node)
    _preallocate_outputs(node, context, model)
    python_model(inst)(context, model.graph)


def python_model(inst) -> Callable:
    """The `execute_node` to use for a custom op instance. A FINN op specialised to
    `_hls`/`_rtl` executes by C++ or RTL simulation only (needs the vendor tools) unless its
    `exec_mode` says otherwise, so flimcc runs its abstract op's numpy model instead: FINN
    documents that model as the op's golden semantics."""
    domain = inst.onnx_node.domain
    if domain.endswith((".hls", ".rtl")) and not _get_attr(inst, "exec_mode"):
        for cls in type(inst).__mro__[1:]:
            module = cls.__module__
            if "execute_node" in cls.__dict__ and not module.endswith(("_hls", "_rtl", "backend")) \
                    and ".hls." not in module and ".rtl." not in module:
                return functools.partial(cls.__dict__["execute_node"], inst)
    return inst.execute_node


def _get_attr(inst, name: str):
    try:
        return inst.get_nodeattr(name)
    except AttributeError:
        return None


def _declared_shapes(model: ModelWrapper) -> dict[str, list[int]]:
    """Declared static shapes of the graph's tensors, built once per run (`run_nodes`
    resets it): qonnx's `get_tensor_shape` scans all value infos on every call, quadratic
    on the 5,000-node QAT exports."""
    cache = getattr(model, "_flimcc_declared_shapes", None)
    if cache is None:
        cache = {}
        g = model.graph
        for vi in list(g.input) + list(g.output) + list(g.value_info):  # qonnx's order and dims
            cache.setdefault(vi.name, [d.dim_value for d in vi.type.tensor_type.shape.dim])
        for t in g.initializer:  # qonnx's fallback for a tensor without a value info
            cache.setdefault(t.name, list(t.dims))
        model._flimcc_declared_shapes = cache
    return cache


def _preallocate_outputs(node: onnx.NodeProto, context: dict, model: ModelWrapper) -> None:
    """FINN's ops read their output's shape from a buffer the executor allocated (qonnx's
    executor pre-fills the context). Allocate it from the declared shape, with the batch
    axis following the node's first input when the caller's batch differs from the model's."""
    first = node.input[0] if node.input else None
    declared = _declared_shapes(model)
    declared_in = declared.get(first) if first else None
    actual_in = np.shape(context[first]) if first in context else None
    for name in node.output:
        if not name or name in context:
            continue
        shape = declared.get(name)
        if shape is None:
            continue
        shape = list(shape)
        if declared_in and actual_in and shape and declared_in[0] == shape[0] and actual_in[0] != declared_in[0]:
            shape[0] = actual_in[0]
        context[name] = np.zeros(shape, dtype=np.float32)


def _run_node(node: onnx.NodeProto, context: dict, model: ModelWrapper) -> None:
    standard = node.domain in STANDARD_DOMAINS
    if standard and all(is_standard_graph(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH):
        _run_standard_node(node, context, model)
        return
    fn = _NODE_EXECUTORS.get((node.domain, node.op_type))
    if fn is None and standard:
        raise UnsupportedError(f"node '{node.name}': no executor for a {node.op_type} whose body holds custom ops")
    (fn or _run_custom_node)(node, context, model)


def run_nodes(model: ModelWrapper, context: dict) -> dict:
    """Execute `model`'s nodes in order on `context` (name -> array), which must hold the
    graph inputs, initializers and any outer-scope values; returns the context."""
    model._flimcc_declared_shapes = None  # the graph may have changed since the last run
    for node in model.graph.node:
        _run_node(node, context, model)
    return context


def prepare_nodes(model: ModelWrapper) -> list[Callable[[dict], None]]:
    """`run_nodes` resolved once: one callable per node taking the context. A loop body
    runs T times on same-shaped tensors, so op instances, their numpy models and output
    shapes are looked up once instead of every step."""
    steps: list[Callable[[dict], None]] = []
    for node in model.graph.node:
        standard = node.domain in STANDARD_DOMAINS
        fn = _NODE_EXECUTORS.get((node.domain, node.op_type))
        if standard or fn is not None:
            steps.append(functools.partial(_run_node, node, model=model))
            continue
        steps.append(_prepared_custom(node, model))
    return steps


def _prepared_custom(node: onnx.NodeProto, model: ModelWrapper) -> Callable[[dict], None]:
    run = python_model(_instance(node))
    shapes: dict[str, list[int]] = {}

    def step(context: dict) -> None:
        if not shapes:  # the first step fixes the batch for the rest
            probe: dict = {k: context[k] for k in node.input if k in context}
            _preallocate_outputs(node, probe, model)
            shapes.update({k: list(np.shape(v)) for k, v in probe.items() if k in node.output})
        for name, shape in shapes.items():
            context[name] = np.zeros(shape, dtype=np.float32)
        run(context, model.graph)

    return step


def _normalize_inputs(model: ModelWrapper, inputs) -> dict[str, np.ndarray]:
    names = graph_input_names(model)
    if isinstance(inputs, np.ndarray):
        if len(names) != 1:
            raise FlimccError(f"the model has {len(names)} inputs {names}; pass a dict name -> array")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise FlimccError(f"missing input(s) {missing}; the model's inputs are {names}")
    return {n: np.asarray(inputs[n]) for n in names}


def graph_input_names(model: ModelWrapper) -> list[str]:
    """Graph inputs that are not initializers (what a caller must feed)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _hardware_batch(model: ModelWrapper, feeds: dict[str, np.ndarray]) -> ModelWrapper:
    """A hardware graph is written for one frame of P pixels and FINN's ops reshape to
    their declared vectors: run it on the caller's batch through a re-batched copy, so each
    node runs once over every pixel."""
    names = graph_input_names(model)
    if not names or not any(n.domain in FINN_HW_DOMAINS + (LOOP_DOMAIN,) for n in model.graph.node):
        return model  # no input (a loop from zero states): the declared frame is the batch
    first = names[0]
    n = int(np.shape(feeds[first])[0])
    if model.get_tensor_shape(first)[0] == n:
        return model
    return rebatch(model, n)


def static_batch(model: ModelWrapper) -> int | None:
    """The batch B a software graph is written for: the static first dimension shared by
    every input and output (None for a symbolic batch or a hardware graph).

    A model exported with a fixed batch (PyTorch's default) bakes B into its constants
    (zero states expanded to B rows, reshapes), so it runs only on B rows at a time.
    Hardware graphs are re-batched instead (`_hardware_batch`)."""
    if any(n.domain in FINN_HW_DOMAINS + (LOOP_DOMAIN,) for n in model.graph.node):
        return None
    feeds = set(graph_input_names(model))
    firsts = set()
    for vi in [i for i in model.graph.input if i.name in feeds] + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims or not dims[0].HasField("dim_value"):
            return None
        firsts.add(dims[0].dim_value)
    return firsts.pop() if len(firsts) == 1 and min(firsts) > 0 else None


def execute(model: ModelWrapper, inputs, return_context: bool = False) -> dict[str, np.ndarray]:
    """Run the model on `inputs` (name -> array, or one array for a one-input model).

    Returns the graph outputs by name, in graph order; with `return_context` every tensor
    computed on the node-by-node path (ORT-run graphs give only their outputs).

    A software graph with a fixed batch B (`static_batch`) fed another multiple of B rows
    runs in chunks of B. B = 1 is first tried whole: batch-1 constants broadcast over the
    rows in most exports (Brevitas', flimcc.load's binding of a symbolic batch), and a
    node-by-node run per row is slow; where they do not (a Scan state, a GRU's initial_h),
    the run fails and falls back to chunks."""
    feeds = _normalize_inputs(model, inputs)
    out_names = [o.name for o in model.graph.output]
    rows = {int(np.shape(v)[0]) for v in feeds.values() if np.ndim(v)}
    n = rows.pop() if len(rows) == 1 else 0
    b = static_batch(model) if n and not return_context else None
    if b and n != b and n % b == 0:
        if b == 1:
            try:
                return _execute(model, feeds, out_names, return_context)
            except Exception:  # noqa: BLE001 - any failure of the whole batch: run row by row
                pass
        parts = [_execute(model, {k: v[i:i + b] for k, v in feeds.items()}, out_names, False) for i in range(0, n, b)]
        return {name: np.concatenate([p[name] for p in parts]) for name in out_names}
    return _execute(model, feeds, out_names, return_context)


def _execute(model: ModelWrapper, feeds: dict, out_names: list[str], return_context: bool) -> dict[str, np.ndarray]:
    if is_standard_graph(model.graph):
        result = run_ort(model.model, feeds)
        return {n: result[n] for n in out_names} if not return_context else {**feeds, **result}
    model = _hardware_batch(model, feeds)
    context: dict[str, np.ndarray] = {t.name: model.get_initializer(t.name) for t in model.graph.initializer}
    context.update(feeds)
    run_nodes(model, context)
    return context if return_context else {n: context[n] for n in out_names}

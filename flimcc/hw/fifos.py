"""The FIFOs inside a loop body: the state FIFO that holds the P interleaved pixels' hidden
states between steps, and reconvergence FIFOs where two paths of different latency meet.

`plan-memory` inserts them into the design; `flimcc.hw.cost` inserts them into a copy to
price a folding before plan-memory runs. Both are FINN StreamingFIFO_rtl nodes.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

FIFO_DOMAIN = "finn.custom_op.fpgadataflow.rtl"


def _fifo(name: str, src: str, dst: str, folded: list[int], normal: list[int], dtype: str, depth: int,
          ram_style: str) -> "helper.NodeProto":
    return helper.make_node("StreamingFIFO_rtl", [src], [dst], name=name, domain=FIFO_DOMAIN, backend="fpgadataflow",
                            depth=int(depth), folded_shape=[int(d) for d in folded],
                            normal_shape=[int(d) for d in normal], dataType=dtype, ram_style=ram_style)


def _vector_cycles(inst, batch: int) -> float:
    return inst.get_exp_cycles() / batch


def insert_loop_fifos(body: ModelWrapper, n_state: int, p: int, ram_style: str = "auto", prefix: str = "") -> list[dict]:
    """Insert the state and reconvergence FIFOs into a loop body (in place). A reconvergence
    FIFO is named after the node it feeds, a state FIFO `<prefix>state<k>_fifo`: pass the
    loop's name as `prefix` so that names stay unique across the model."""
    graph = body.graph
    batch = body.get_tensor_shape(graph.input[0].name)[0]
    inserted = []
    # latency per vector at every tensor (FINN's no-overlap sum along paths)
    lat = {i.name: 0.0 for i in graph.input}
    for node in graph.node:
        inst = getCustomOp(node)
        start = max((lat.get(t, 0.0) for t in node.input if body.get_initializer(t) is None), default=0.0)
        for t in node.output:
            lat[t] = start + _vector_cycles(inst, batch)
    for node in list(graph.node):
        dyn = [(k, t) for k, t in enumerate(node.input) if t and body.get_initializer(t) is None]
        if len(dyn) < 2:
            continue
        inst = getCustomOp(node)
        late = max(lat.get(t, 0.0) for _, t in dyn)
        for k, t in dyn:
            slack = late - lat.get(t, 0.0)
            if slack <= 0:
                continue
            folded = list(inst.get_folded_input_shape(k))
            words = int(np.prod(folded[:-1]))
            depth = max(2, min(math.ceil(slack), words // max(batch, 1) * p))
            new = f"{t}/fifo"
            name = f"{node.name}_in{k}_fifo"
            graph.node.insert(list(graph.node).index(node),
                              _fifo(name, t, new, folded, body.get_tensor_shape(t),
                                    inst.get_input_datatype(k).name, depth, ram_style))
            node.input[k] = new
            body.set_tensor_shape(new, body.get_tensor_shape(t))
            body.set_tensor_datatype(new, body.get_tensor_datatype(t))
            inserted.append({"fifo": name, "kind": "reconvergence", "depth": depth,
                             "width": int(folded[-1]) * inst.get_input_datatype(k).bitwidth()})
    for k in range(n_state):
        out = graph.output[k].name
        prod = body.find_producer(out)
        pinst = getCustomOp(prod)
        idx = list(prod.output).index(out)
        folded = list(pinst.get_folded_output_shape(idx))
        pe, dtype = folded[-1], pinst.get_output_datatype(idx)
        depth = max(2, p * int(np.prod(folded[1:-1])))
        pre = f"{out}/to_fifo"
        prod.output[idx] = pre
        body.set_tensor_shape(pre, body.get_tensor_shape(out))
        body.set_tensor_datatype(pre, dtype)
        name = f"{prefix}state{k}_fifo"
        graph.node.append(_fifo(name, pre, out, folded, body.get_tensor_shape(out), dtype.name, depth, ram_style))
        inserted.append({"fifo": name, "kind": "state", "depth": depth, "width": int(pe) * dtype.bitwidth()})
    return inserted

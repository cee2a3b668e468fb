"""A fast executor for qonnx's `MultiThreshold`, bit-identical to qonnx's.

qonnx compares every element with every threshold ((N, C, K) booleans), which makes an
8-bit activation over a batch of pixels hundreds of times slower than the matrix product
before it. Counting thresholds <= x is a sorted search: per channel, `np.searchsorted`
on the ascending thresholds gives the same count in O(log K) per element. Where the input
is integer-valued (every MultiThreshold of an integer graph) and the thresholds span at
most `LUT_MAX_SPAN` integers per channel, the count is one table lookup per element,
LUT[c, clip(x) - lo], the table built once per thresholds array (a Scan runs its body's
MultiThresholds once per step with the same thresholds).
"""

from __future__ import annotations

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from .execute import register_node_executor

RANK_LAYOUT = {2: "NC", 3: "NWC", 4: "NCHW"}  # qonnx 1.0.0's guess when data_layout is ""
#: Largest integer span of a channel's thresholds tabulated as a lookup table, and the
#: most table entries (all channels) one thresholds array may take.
LUT_MAX_SPAN = 2**20
LUT_MAX_ENTRIES = 2**21
_PREPARED_MAX = 256


class _Prepared:
    """Sorted thresholds and a count table over a window [lo, hi] of integers holding the
    thresholds that matter (the runs of "always" / "never" thresholds at a row's ends,
    placed at the accumulator's bounds, are left outside it). Inputs outside the window
    are counted by a sorted search, so the result is exact for any input."""

    def __init__(self, thresholds: np.ndarray) -> None:
        self.source = thresholds  # held so that its id is not reused while cached
        self.sorted = np.sort(np.asarray(thresholds), axis=1)
        self.lut: np.ndarray | None = None
        rows = self.sorted
        if not rows.size or not np.all(np.isfinite(rows)):
            return
        inner_lo, inner_hi = [], []
        for row in rows:
            first = int(np.searchsorted(row, row[0], side="right"))  # past the leading run
            last = int(np.searchsorted(row, row[-1], side="left"))  # start of the trailing run
            inner = row[first:last] if first < last else row[:1]
            inner_lo.append(inner.min() if inner.size else row[0])
            inner_hi.append(inner.max() if inner.size else row[-1])
        lo, hi = int(np.floor(min(inner_lo))) - 1, int(np.ceil(max(inner_hi)))
        if hi - lo + 1 > LUT_MAX_SPAN or (hi - lo + 1) * rows.shape[0] > LUT_MAX_ENTRIES:
            return
        # widen to the full span where it fits (then no input falls outside)
        full_lo, full_hi = int(np.floor(rows.min())) - 1, int(np.ceil(rows.max()))
        if full_hi - full_lo + 1 <= LUT_MAX_SPAN and (full_hi - full_lo + 1) * rows.shape[0] <= LUT_MAX_ENTRIES:
            lo, hi = full_lo, full_hi
        if abs(lo) >= 2**24 or abs(hi) >= 2**24:
            return
        values = np.arange(lo, hi + 1, dtype=np.float64)
        self.lo, self.hi = lo, hi
        self.lut = np.stack([np.searchsorted(row.astype(np.float64), values, side="right")
                             for row in rows]).astype(np.float32)


_prepared: dict[int, _Prepared] = {}


def _prepare(thresholds: np.ndarray) -> _Prepared:
    entry = _prepared.get(id(thresholds))
    if entry is None or entry.source is not thresholds:
        if len(_prepared) >= _PREPARED_MAX:
            _prepared.clear()
        entry = _prepared[id(thresholds)] = _Prepared(thresholds)
    return entry


def _integer_valued(x: np.ndarray) -> bool:
    if x.dtype.kind in "iub":
        return True
    if x.dtype.kind != "f":
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.floor(x) == x))


def threshold_count(x: np.ndarray, thresholds: np.ndarray, channel_axis: int) -> np.ndarray:
    """#{k : x >= T[c, k]} for every element, c its index along `channel_axis`."""
    prepared = _prepare(thresholds) if isinstance(thresholds, np.ndarray) else _Prepared(thresholds)
    if prepared.lut is not None and x.size and _integer_valued(x):
        lut = prepared.lut
        index = np.clip(x, prepared.lo, prepared.hi).astype(np.int64) - prepared.lo
        if lut.shape[0] == 1:
            counts = lut[0][index]
        else:
            moved = np.moveaxis(index, channel_axis, -1)
            if lut.shape[0] != moved.shape[-1]:
                raise ValueError(f"MultiThreshold: {lut.shape[0]} threshold rows for {moved.shape[-1]} channels")
            flat = lut.reshape(-1)
            counts = np.moveaxis(flat[moved + np.arange(lut.shape[0], dtype=np.int64) * lut.shape[1]],
                                 -1, channel_axis)
        outside = (x < prepared.lo) | (x > prepared.hi)
        if outside.any():  # beyond the table's window: a sorted search for those elements
            where = np.nonzero(outside)
            chans = where[channel_axis] if prepared.sorted.shape[0] > 1 else np.zeros(len(where[0]), np.int64)
            vals = x[where]
            fixed = np.empty(vals.shape, np.float32)
            for c in np.unique(chans):
                sel = chans == c
                fixed[sel] = np.searchsorted(prepared.sorted[c], vals[sel], side="right")
            counts = np.array(counts, copy=True)
            counts[where] = fixed
        return counts
    thresholds = prepared.sorted
    if thresholds.shape[0] == 1:  # one row, shared by all channels
        return np.searchsorted(thresholds[0], x, side="right").astype(np.float32)
    moved = np.moveaxis(x, channel_axis, -1)
    counts = np.empty(moved.shape, dtype=np.float32)
    for c in range(moved.shape[-1]):
        counts[..., c] = np.searchsorted(thresholds[c], moved[..., c], side="right")
    return np.moveaxis(counts, -1, channel_axis)


@register_node_executor("MultiThreshold", domain="qonnx.custom_op.general")
def run_multithreshold(node: onnx.NodeProto, context: dict, model: ModelWrapper) -> None:
    layout, out_scale, out_bias = _node_attrs(node)
    x = np.asarray(context[node.input[0]])
    layout = layout or RANK_LAYOUT.get(x.ndim)
    axis = layout.index("C") if layout and "C" in layout else 1
    count = threshold_count(x, context[node.input[1]], axis)
    out = count * out_scale + out_bias
    context[node.output[0]] = out.astype(np.float32)


_attr_cache: dict[bytes, tuple] = {}


def _node_attrs(node: onnx.NodeProto) -> tuple[str, np.float32, np.float32]:
    """(data_layout, out_scale, out_bias) as qonnx's op reads them, cached per attribute set."""
    key = b"".join(a.SerializeToString() for a in node.attribute)
    found = _attr_cache.get(key)
    if found is None:
        inst = getCustomOp(node)
        found = (inst.get_nodeattr("data_layout"), np.float32(inst.get_nodeattr("out_scale")),
                 np.float32(inst.get_nodeattr("out_bias")))
        if len(_attr_cache) < 4096:
            _attr_cache[key] = found
    return found


_act_cache: dict[bytes, tuple[np.float32, bool]] = {}


def _thresholding_attrs(node: onnx.NodeProto) -> tuple[np.float32, bool]:
    key = b"".join(a.SerializeToString() for a in node.attribute if a.name in ("ActVal", "outputDataType"))
    found = _act_cache.get(key)
    if found is None:
        inst = getCustomOp(node)
        found = (np.float32(inst.get_nodeattr("ActVal")), inst.get_nodeattr("outputDataType") == "BIPOLAR")
        if len(_act_cache) < 4096:
            _act_cache[key] = found
    return found


def run_finn_thresholding(node: onnx.NodeProto, context: dict, model: ModelWrapper) -> None:
    """FINN's Thresholding (its abstract op's numpy model: ActVal + count over the last
    axis, bipolar as 2y - 1) with the fast count; used for the _hls and _rtl variants,
    which run a loop body's thresholds every time step."""
    act_val, bipolar = _thresholding_attrs(node)
    x = np.asarray(context[node.input[0]])
    y = threshold_count(x, context[node.input[1]], x.ndim - 1) + act_val
    if bipolar:
        y = 2 * y - 1
    context[node.output[0]] = y.astype(np.float32)


for _domain, _op in (("finn.custom_op.fpgadataflow", "Thresholding"),
                     ("finn.custom_op.fpgadataflow.hls", "Thresholding_hls"),
                     ("finn.custom_op.fpgadataflow.rtl", "Thresholding_rtl")):
    register_node_executor(_op, domain=_domain)(run_finn_thresholding)

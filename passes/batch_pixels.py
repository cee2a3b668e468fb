"""batch-pixels: the pixel interleave P of the recurrent loops.

A time step of one pixel cannot start before that pixel's previous step has left the loop
body's pipeline; interleaving P pixels keeps the pipeline busy once P x II covers the
body's latency L (:mod:`flimcc.hw.recurrent_loop`). The hardware graph is then written for
a frame of P pixels: the graph's batch becomes P (FINN's numInputVectors carry it) and each
loop's ``pixels`` attribute says P.

``p=N`` sets P now; ``p=auto`` records the choice so that ``fold`` re-derives the smallest
full-pipeline P after every folding move (P and folding are coupled), and sets it now from
the current folding. ``max`` caps auto P (state buffers grow with P).
"""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper

from flimcc.errors import FlimccError
from flimcc.hw import cost
from flimcc.layout import loop_nodes, rebatch_graph
from flimcc.passbase import Contract, Option, Pass, register

PIXELS_KEY = "flimcc.pixels"


def set_pixels(model: ModelWrapper, p: int, auto: bool = False) -> ModelWrapper:
    """Write the graph for frames of p pixels (in place; returns the re-inferred model)."""
    for _, inst in loop_nodes(model):
        inst.set_nodeattr("pixels", int(p))
    model = rebatch_graph(model, int(p))
    props = [x for x in model.model.metadata_props if x.key != PIXELS_KEY]
    del model.model.metadata_props[:]
    model.model.metadata_props.extend(props)
    model.model.metadata_props.append(_entry(PIXELS_KEY, "auto" if auto else str(p)))
    return model


def _entry(key: str, value: str):
    from onnx import StringStringEntryProto

    return StringStringEntryProto(key=key, value=value)


@register
class BatchPixels(Pass):
    """Set the pixel interleave P (see module docstring)."""

    name = "batch-pixels"
    summary = "pixel interleave P of the recurrent loops: p=N, or auto (smallest P that keeps the loop pipelines full)"
    contract = Contract.EXACT
    options = (
        Option("p", str, "auto", "pixels per frame: a number, or auto"),
        Option("max", int, 256, "largest P auto may choose"),
    )

    def apply(self, model: ModelWrapper):
        if not list(loop_nodes(model)):
            raise FlimccError("pass 'batch-pixels': no recurrent loop (run lower-finn first)")
        if self.p == "auto":
            p = cost.auto_pixels(model, self.max)
            model = set_pixels(model, p, auto=True)
        else:
            try:
                p = int(self.p)
            except ValueError:
                raise FlimccError(f"pass 'batch-pixels': option 'p' takes a number or auto, got {self.p!r}") from None
            if p < 1:
                raise FlimccError(f"pass 'batch-pixels': option 'p' must be at least 1, got {p}")
            model = set_pixels(model, p)
        timings = [cost.loop_timing(n, i) for n, i in loop_nodes(model)]
        self.metrics = {"pixel_parallelism": p,
                        "full_pipeline_needs": max(t.min_pixels() for t in timings)}
        return model, False

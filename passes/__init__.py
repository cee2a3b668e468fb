"""flimcc's passes, one per module; importing this package registers them all.

Each module holds one qonnx `Transformation` subclass of `flimcc.passbase.Pass`, named
for what it does, registered under its kebab-case pipeline name.
"""

from . import batch_pixels, canonicalize, fold, fold_constants, fold_weights, lower_finn, plan_memory, quantize, roll_loop, streamline, unroll_gru  # noqa: F401

__all__ = ["batch_pixels", "canonicalize", "fold", "fold_constants", "fold_weights", "lower_finn", "plan_memory", "quantize", "roll_loop", "streamline", "unroll_gru"]

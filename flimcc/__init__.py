"""flimcc: an ONNX-centric compiler for GRU fluorescence-lifetime models on FPGAs.

The IR is qonnx's `ModelWrapper`. The public API:

- `load`, `save`: models in, canonicalised; models out, atomically.
- `execute`: run any stage (onnxruntime, qonnx/FINN custom ops, flimcc's executors).
- `Pipeline`, `Pass`: verified pass pipelines (`Pipeline.parse("unroll-gru,fold-weights")`).
- `diff`: structural and numeric graph comparison.
"""

__version__ = "0.1.0"

from .diff import diff
from .errors import FlimccError
from .execute import execute
from . import hw, multithreshold_executor, scan_executor  # noqa: F401  - register ops and executors
from .ir import load, save
from .pipeline import Contract, Option, Pass, Pipeline, register

__all__ = ["Contract", "FlimccError", "Option", "Pass", "Pipeline", "diff", "execute", "load", "register", "save"]

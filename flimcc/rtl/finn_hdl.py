"""FINN's own HDL for FINN's RTL nodes, generated without a vendor tool, in one folder.

FINN's RTL ops (MVAU_rtl, Thresholding_rtl, StreamingFIFO_rtl, ...) fill their finn-rtllib
templates in `generate_hdl`; no Vivado is involved. This module runs that per node into a
folder and copies the finn-rtllib sources each node lists beside the generated files, so
the folder is self-contained (and content-addressed by `flimcc.rtl.verilator.build`).

Simulation copies: a few finn-rtllib files use constructs Verilator 5.48 rejects. Their
copies in the folder are patched (`SIM_PATCHES`, each a plain text substitution that keeps
the logic), the originals, which FINN synthesises, are never touched, and every patch
applied is listed in ``SIM_PATCHES.md`` in the folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flimcc.errors import UnsupportedError

#: file name -> [(what, old text, new text)] applied to the simulation copy.
SIM_PATCHES: dict[str, list[tuple[str, str, str]]] = {}


def _settings() -> None:
    """FINN reads its settings (finn-rtllib's path) from FINN_BUILD_DIR; any folder does."""
    if not os.environ.get("FINN_BUILD_DIR"):
        import tempfile

        os.environ["FINN_BUILD_DIR"] = tempfile.mkdtemp(prefix="flimcc-finn-")


def round_thresholds(model: ModelWrapper) -> ModelWrapper:
    """FINN's RoundAndClipThresholds: Thresholding_rtl's generator refuses float thresholds
    on integer inputs (flimcc keeps them FLOAT32-typed; their values are integers already)."""
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    return model.transform(RoundAndClipThresholds())


def generate_node_hdl(model: ModelWrapper, node, out_dir: Path, fpgapart: str, clk_ns: float) -> list[Path]:
    """Generate `node`'s HDL into `out_dir`; return its source files, in compile order
    (finn-rtllib packages first), all inside `out_dir`."""
    _settings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inst = getCustomOp(node)
    if not hasattr(inst, "generate_hdl") or not node.domain.endswith(".rtl"):
        raise UnsupportedError(f"node '{node.name}' ({node.op_type}) has no RTL implementation")
    inst.set_nodeattr("code_gen_dir_ipgen", str(out_dir))
    inst.generate_hdl(model, fpgapart, clk_ns)
    files = []
    for f in inst.get_rtl_file_list(abspath=True):
        src = Path(f)
        dst = out_dir / src.name
        if src.resolve() != dst.resolve():
            shutil.copy2(src, dst)
            _patch(dst)
        files.append(dst)
    # packages first: Verilator needs a package before the modules that import it
    return sorted(files, key=lambda p: (not p.stem.endswith("_pkg"), files.index(p)))


def _patch(path: Path) -> None:
    patches = SIM_PATCHES.get(path.name)
    if not patches:
        return
    text = path.read_text()
    notes = []
    for what, old, new in patches:
        if old not in text:
            raise UnsupportedError(f"finn-rtllib {path.name} changed: the simulation patch '{what}' no longer applies")
        text = text.replace(old, new)
        notes.append(f"- `{path.name}`: {what}")
    path.write_text(text)
    with open(path.parent / "SIM_PATCHES.md", "a") as f:
        f.write("\n".join(notes) + "\n")


def stream_beats(values: np.ndarray, dtype, folded_shape, width: int) -> list[int]:
    """FINN's packing of a tensor into stream beats (lane 0 in the LSBs), as integers."""
    from finn.util.data_packing import npy_to_rtlsim_input

    return [int(v) for v in npy_to_rtlsim_input(np.asarray(values).reshape(folded_shape), dtype, width)]


def beats_to_array(beats: list[int], dtype, folded_shape, width: int) -> np.ndarray:
    """The inverse of `stream_beats` for an output stream."""
    from finn.util.data_packing import rtlsim_output_to_npy

    return rtlsim_output_to_npy(beats, None, dtype, tuple(folded_shape), width, dtype.bitwidth())

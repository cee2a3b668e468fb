"""Hand a build folder to FINN: the model as FINN's flow takes it, and the entry script a user
runs on a machine with Vivado and Vitis HLS.

FINN's own steps carry the build on from the dataflow partition to a bitstream. Its builder
needs Vivado at import, so here flimcc runs the transformations of the steps that need no
vendor tool (tests/test_finn_flow.py: dataflow partition, folding configuration, HDL/HLS
code generation of every node, the loops' RTL included) and writes `finn_build.py` into the
folder for the rest.
"""

from __future__ import annotations

import copy

from qonnx.core.modelwrapper import ModelWrapper

from flimcc.rtl.stitch import RTL_DOMAIN


#: The FINN steps of dataflow_build_config.json and the vendor tool each needs ("" for none).
STEP_TOOLS = {
    "step_create_dataflow_partition": "",
    "step_apply_folding_config": "",
    "step_minimize_bit_width": "",
    "step_generate_estimate_reports": "",
    "step_hw_codegen": "",
    "step_hw_ipgen": "Vitis HLS (the HLS nodes outside the loops)",
    "step_set_fifo_depths": "Vivado (FINN sizes FIFOs by simulating the stitched design)",
    "step_create_stitched_ip": "Vivado",
    "step_synthesize_bitfile": "Vivado",
    "step_make_driver": "",
    "step_deployment_package": "",
}


def for_finn(model: ModelWrapper) -> ModelWrapper:
    """A copy of `model` whose RecurrentLoops are `RecurrentLoop_rtl` nodes of FINN's RTL
    domain (`flimcc.hw.recurrent_loop_rtl`); a loop body node without RTL is refused by name."""
    from flimcc.layout import LOOP_DOMAIN, loop_nodes
    from flimcc.rtl.loop import check_loop_rtl

    for node, _ in loop_nodes(model):
        check_loop_rtl(node)
    out = ModelWrapper(copy.deepcopy(model.model))
    for node in out.graph.node:
        if node.domain == LOOP_DOMAIN and node.op_type == "RecurrentLoop":
            node.op_type, node.domain = "RecurrentLoop_rtl", RTL_DOMAIN
    return out


ENTRY_SCRIPT = '''"""Continue this flimcc build with FINN: on a machine with Vivado and Vitis HLS ({vivado}),
in this folder, with flimcc installed (`pip install flimcc`, which brings finn-plus):

    python finn_build.py

flimcc is imported first so that its hardware ops (the recurrent loops, its RTL forks,
splits and integer elementwise ops) are registered in FINN's domains. The model FINN builds
is model.onnx with each RecurrentLoop as a RecurrentLoop_rtl node (model_finn.onnx); the
steps are those of dataflow_build_config.json, output in output/.

Steps that need a vendor tool:
{tools}
"""

import json
from pathlib import Path

import flimcc
from flimcc.finn_flow import for_finn

from finn.builder.build_dataflow import build_dataflow_cfg
from finn.builder.build_dataflow_config import DataflowBuildConfig

here = Path(__file__).resolve().parent
flimcc.save(for_finn(flimcc.load(here / "model.onnx")), here / "model_finn.onnx")
cfg = DataflowBuildConfig.from_json((here / "dataflow_build_config.json").read_text())
cfg.output_dir = str(here / cfg.output_dir)
cfg.folding_config_file = str(here / cfg.folding_config_file)
raise SystemExit(build_dataflow_cfg(str(here / "model_finn.onnx"), cfg))
'''


def entry_script() -> str:
    tools = "\n".join(f"    {step}: {tool}" for step, tool in STEP_TOOLS.items() if tool)
    return ENTRY_SCRIPT.format(vivado="Vivado and Vitis HLS", tools=tools)

"""A build handed to FINN (issue 12): the loops as RTL nodes of FINN's own flow, FINN's
steps that need no vendor tool run on the folder here, and the entry script for the rest."""

from __future__ import annotations

import ast
import json
import re

import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

import flimcc
from flimcc.errors import UnsupportedError
from flimcc.finn_flow import STEP_TOOLS, for_finn


def test_finn_steps_without_vendor_tools_run_on_the_build(small_build, tmp_path, monkeypatch):
    """FINN's step_create_dataflow_partition, step_apply_folding_config,
    step_minimize_bit_width, step_generate_estimate_reports and step_hw_codegen, as their
    transformations (FINN's builder itself needs Vivado to import)."""
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.general import ApplyConfig

    import finn.util.settings as finn_settings

    # FINN's settings from the environment, as a FINN run has them (code generation makes
    # folders under FINN_BUILD_DIR); compile's dummy settings point at a folder nobody made
    monkeypatch.setenv("FINN_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(finn_settings, "_SETTINGS", None)
    cfg = json.loads((small_build / "dataflow_build_config.json").read_text())
    assert set(cfg["steps"]) <= set(STEP_TOOLS)
    parent = for_finn(flimcc.load(small_build / "model.onnx")).transform(CreateDataflowPartition())
    sdps = [n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition"]
    assert len(sdps) == 1  # one contiguous dataflow partition, software head and tail outside
    dp = ModelWrapper(getCustomOp(sdps[0]).get_nodeattr("model"))
    dp = dp.transform(ApplyConfig(str(small_build / "folding_config.json")))
    dp = dp.transform(MinimizeWeightBitWidth()).transform(MinimizeAccumulatorWidth())
    assert dp.analysis(lambda m: res_estimation(m, cfg["fpga_part"]))
    dp = dp.transform(PrepareIP(cfg["fpga_part"], cfg["synth_clk_period_ns"]))
    loops = [n for n in dp.graph.node if n.op_type == "RecurrentLoop_rtl"]
    assert [n.name for n in loops] == ["RecurrentLoop_0", "RecurrentLoop_1"]
    for node in loops:
        inst = getCustomOp(node)
        files = inst.get_rtl_file_list(abspath=True)
        top = next(f for f in files if f.endswith(f"/{node.name}.sv"))
        text = open(top).read()
        # every stream FINN will connect is a port of the generated module, at its width
        intf = inst.get_verilog_top_module_intf_names()
        assert len(intf["s_axis"]) == len([t for t in node.input if t])
        assert len(intf["m_axis"]) == len(node.output)
        consumed = {k for k, t in enumerate(node.output) if dp.find_consumers(t) or t in
                    {o.name for o in dp.graph.output}}
        for kind, names in (("input", intf["s_axis"]), ("output", [m for k, m in enumerate(intf["m_axis"])
                                                                    if k in consumed])):
            for port, width in names:
                assert re.search(rf"{kind} logic \[{width - 1}:0\] {port}_TDATA", text), (node.name, port)
        ipi = inst.code_generation_ipi()
        assert ipi[-1] == f"create_bd_cell -type module -reference {node.name} {node.name}"
        assert any(c.endswith(".dat") for c in ipi)  # weights and thresholds go into the project


def test_entry_script_names_the_vendor_steps(small_build):
    script = (small_build / "finn_build.py").read_text()
    ast.parse(script)
    assert "import flimcc" in script and "for_finn" in script and "build_dataflow_cfg" in script
    for step, tool in STEP_TOOLS.items():
        assert (f"{step}: {tool}" in script) == bool(tool)
    summary = json.loads((small_build / "summary.json").read_text())
    assert "finn_build.py" in summary["finn_build"]


def test_for_finn_refuses_a_loop_node_without_rtl(small_build):
    model = flimcc.load(small_build / "model.onnx")
    loop = next(n for n in model.graph.node if n.op_type == "RecurrentLoop")
    inst = getCustomOp(loop)
    body = inst.body()
    victim = next(n for n in body.graph.node if n.op_type == "IntElementwiseAdd_rtl")
    victim.op_type, victim.domain = "ElementwiseAdd_hls", "finn.custom_op.fpgadataflow.hls"
    inst.set_nodeattr("body", body.graph)
    with pytest.raises(UnsupportedError, match=f"body node '{victim.name}' \\(ElementwiseAdd_hls\\) has no RTL"):
        for_finn(model)

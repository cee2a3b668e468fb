"""Board descriptions: data that agrees with FINN's own tables, names as users type them."""

import pytest

from flimcc.errors import TargetError
from flimcc.targets import RESOURCE_KEYS, all_targets, get_target


@pytest.mark.parametrize("name", ["pynq-z2", "Pynq-Z2", "pynqz2", "PYNQ_Z2", "pynq z2"])
def test_pynq_z2_by_any_spelling(name):
    t = get_target(name)
    assert t.name == "pynq-z2" and t.fpga_part == "xc7z020clg400-1" and t.finn_board == "Pynq-Z2"
    assert t.resources == {"LUT": 53200, "FF": 106400, "BRAM_18K": 280, "URAM": 0, "DSP": 220}
    assert t.dsp_type == "DSP48E1" and t.default_clock_mhz == 100


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError) as exc:
        get_target("de10-nano")
    assert "unknown target 'de10-nano'" in str(exc.value) and "pynq-z2" in str(exc.value) and "cpu" in str(exc.value)


def test_boards_agree_with_finn():
    from finn.util.basic import get_dsp_block, pynq_native_port_width, pynq_part_map

    fpgas = [t for t in all_targets().values() if t.is_fpga]
    assert len(fpgas) >= 8
    for t in fpgas:
        assert pynq_part_map[t.finn_board] == t.fpga_part
        assert get_dsp_block(t.fpga_part) == t.dsp_type
        assert pynq_native_port_width[t.finn_board] == t.axi_port_width
        assert set(t.resources) == set(RESOURCE_KEYS) and all(v >= 0 for v in t.resources.values())


def test_budget_applies_headroom():
    assert get_target("pynq-z2").budget(0.85)["DSP"] == pytest.approx(187.0)


def test_cpu_target():
    t = get_target("onnxruntime")
    assert t.name == "cpu" and not t.is_fpga and t.runtime == "onnxruntime"

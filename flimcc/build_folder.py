"""Output folders that flimcc owns: written whole or not at all, replaced only if flimcc wrote them.

A build folder is filled in a temporary sibling and renamed into place at the end, so a
reader never sees a half-written folder and a failure leaves nothing behind. Every folder
flimcc writes carries a marker file listing the files it wrote; an existing folder is
replaced only when it holds that marker and nothing but the files the marker lists. Any
other non-empty folder (the current directory, a folder of recordings, a build folder a
user has added a file to) is refused before any work is done: flimcc never deletes what
it did not write.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from flimcc.errors import FlimccError

#: The marker file of a flimcc-written folder (JSON: what wrote it and the files it holds).
MARKER = ".flimcc-build.json"


class OutputFolderError(FlimccError):
    """An output folder flimcc may not write or replace."""


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def check_output_folder(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), option: str = "-o") -> Path:
    """Refuse, before any work, an output folder flimcc may not (over)write; return it.

    `inputs` are the files the command reads: an output folder that holds one is refused
    (replacing the folder would delete the input)."""
    out = Path(out)
    shown = str(out)
    resolved = out.resolve()
    for f in inputs:
        f = Path(f).resolve()
        if resolved == f or resolved in f.parents:
            raise OutputFolderError(f"{option} {shown}: the folder holds the input '{f.name}'; choose another folder")
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise OutputFolderError(f"{option} {shown}: cannot replace the current directory; choose a new folder")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise OutputFolderError(f"{option} {shown}: exists and is not a folder")
        if any(out.iterdir()):
            _check_owned(out, shown, option)
    else:
        # The nearest existing ancestor must be a writable folder.
        parent = resolved.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise OutputFolderError(f"{option} {shown}: '{parent}' is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputFolderError(f"{option} {shown}: cannot write in '{parent}' (permission denied)")
    return out


def _check_owned(out: Path, shown: str, option: str) -> None:
    marker = out / MARKER
    if not marker.is_file():
        raise OutputFolderError(f"{option} {shown}: the folder is not empty and was not written by flimcc; "
                                "flimcc replaces only its own build folders, marked since flimcc 0.1 (choose a new or empty folder, "
                                "or remove a build an older flimcc wrote)")
    try:
        listed = set(json.loads(marker.read_text())["files"])
    except (ValueError, KeyError, TypeError, OSError):
        raise OutputFolderError(f"{option} {shown}: its {MARKER} is unreadable; not replacing the folder") from None
    extra = [f for f in _files(out) if f != MARKER and f not in listed]
    if extra:
        raise OutputFolderError(f"{option} {shown}: holds '{extra[0]}', which flimcc did not write; "
                                "not replacing the folder (move the file or choose another folder)")
    if not os.access(out.resolve().parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"{option} {shown}: cannot replace it (permission denied on its parent folder)")


def write_folder(out: str | os.PathLike, write: Callable[[Path], None], kind: str = "build",
                 option: str = "-o") -> Path:
    """Fill a temporary sibling of `out` with `write(tmp)`, mark it, then swap it into place.

    Checks `out` again first (a folder may have appeared since the command started)."""
    from flimcc import __version__

    out = check_output_folder(out, option=option)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.", dir=out.resolve().parent))
    except OSError as e:
        raise OutputFolderError(f"{option} {out}: cannot create the folder ({os.strerror(e.errno or errno.EIO)})") \
            from None
    try:
        write(tmp)
        marker = {"written_by": f"flimcc {__version__}", "kind": kind, "files": _files(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        old = None
        if out.exists():
            # Move the old folder aside first, so the rename below is a plain rename and a
            # failure in between can put it back.
            old = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.old.", dir=out.resolve().parent))
            os.replace(out, old / "build")
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old / "build", out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputFolderError(f"{option} {out}: writing failed ({e.strerror or e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

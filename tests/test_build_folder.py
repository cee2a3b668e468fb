"""Output folders (issue 11): flimcc replaces only what it wrote; bad options and folders get
one line on stderr, exit 2, before any work, and nothing of the user's is touched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli

from flimcc.build_folder import MARKER, OutputFolderError, check_output_folder, write_folder

EXAMPLE = Path(__file__).parent.parent / "examples" / "models" / "seq2seqlite_random.onnx"


def _write(files: dict[str, str]):
    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
    return write


# -- the mechanism --------------------------------------------------------------------------------
def test_written_folder_is_marked_and_replaced_only_while_untouched(tmp_path):
    out = tmp_path / "b"
    write_folder(out, _write({"a.txt": "1", "sub/b.txt": "2"}))
    marker = json.loads((out / MARKER).read_text())
    assert marker["files"] == ["a.txt", "sub/b.txt"]
    write_folder(out, _write({"c.txt": "3"}))  # flimcc's own folder: replaced
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "c.txt"])
    (out / "notes.txt").write_text("mine")  # the user adds a file: no longer replaceable
    with pytest.raises(OutputFolderError, match="notes.txt"):
        write_folder(out, _write({"d.txt": "4"}))
    assert (out / "notes.txt").read_text() == "mine" and (out / "c.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary sibling left


def test_foreign_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "recording.ptu").write_bytes(b"x")
    with pytest.raises(OutputFolderError, match="not written by flimcc"):
        check_output_folder(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty") == tmp_path / "empty"  # an empty folder is fine


def test_folder_holding_the_input_is_refused(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(OutputFolderError, match="holds the input 'm.onnx'"):
        check_output_folder(tmp_path, inputs=[model])


def test_failed_write_leaves_the_old_folder_and_no_temporary(tmp_path):
    out = tmp_path / "b"
    write_folder(out, _write({"a.txt": "old"}))

    def boom(tmp: Path) -> None:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError):
        write_folder(out, boom)
    assert (out / "a.txt").read_text() == "old" and not (out / "half.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_unwritable_places_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        check_output_folder(tmp_path / "file" / "b")
    with pytest.raises(OutputFolderError, match="not a folder"):
        check_output_folder(tmp_path / "file")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputFolderError, match="permission denied"):
                check_output_folder(ro / "b")
        finally:
            ro.chmod(0o700)


# -- the command line: one line, exit 2, nothing touched ------------------------------------------
def _one_line_exit_2(r, *words):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_compile_into_the_current_folder_deletes_nothing(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "keep.txt").write_text("user data")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("compile", "m.onnx", "-o", ".", "--verify", 0, "--no-size-fifos", cwd=tmp_path)
    _one_line_exit_2(r, "-o .")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert model.read_bytes() == EXAMPLE.read_bytes()


def test_compile_refuses_a_foreign_folder_and_a_file_parent(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("user data")
    r = run_cli("compile", EXAMPLE, "-o", tmp_path / "data", "--verify", 0)
    _one_line_exit_2(r, "not written by flimcc")
    assert (tmp_path / "data" / "keep.txt").read_text() == "user data"
    (tmp_path / "afile").write_text("x")
    r = run_cli("compile", EXAMPLE, "-o", tmp_path / "afile" / "b", "--verify", 0)
    _one_line_exit_2(r, "is a file")


@pytest.mark.parametrize("option,value", [
    ("--clock-mhz", "-5"), ("--clock-mhz", "0"), ("--headroom", "2"), ("--headroom", "0"),
    ("--verify", "-1"), ("--pixels", "0"), ("--pixels", "many"), ("--bits", "1"), ("--fps", "-1"),
])
def test_compile_bad_numeric_options(tmp_path, option, value):
    r = run_cli("compile", EXAMPLE, "-o", tmp_path / "b", option, value)
    _one_line_exit_2(r, option, value)
    assert not list(tmp_path.iterdir())


def test_compile_model_api_checks_options(tmp_path):
    from flimcc.compile import compile_model
    from flimcc.errors import FlimccError

    with pytest.raises(FlimccError, match="clock_mhz=-5"):
        compile_model(EXAMPLE, out_dir=tmp_path / "b", clock_mhz=-5)
    with pytest.raises(FlimccError, match="pixels=0"):
        compile_model(EXAMPLE, out_dir=tmp_path / "b", pixels=0)
    assert not list(tmp_path.iterdir())

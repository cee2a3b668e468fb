"""The examples and the shipped example model stay working and honest."""

import importlib.util
from pathlib import Path

import onnx

from flimcc.models.seq2seq_onnx import build_seq2seq

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_shipped_example_model_is_what_the_builder_makes():
    shipped = onnx.load(EXAMPLES / "models" / "seq2seqlite_random.onnx")
    assert shipped.SerializeToString() == build_seq2seq().SerializeToString()


def test_script_pipeline_example_runs_and_verifies(tmp_path):
    spec = importlib.util.spec_from_file_location("script_pipeline", EXAMPLES / "script_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(out=tmp_path / "out.onnx")
    assert [s["verdict"] for s in report["stages"]] == ["ok", "ok", "ok"]
    assert report["stages"][-1]["vs_golden"]["max_abs_err"] < 1e-4
    assert (tmp_path / "out.onnx").exists()

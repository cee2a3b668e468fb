"""A graph-diff check for your CI: copy this file into your repository's tests.

It compiles a model with a fixed pipeline and compares the result with a checked-in
snapshot (`snapshots/<name>.onnx` beside this file), structurally and numerically. When a
change to the compiler or the model is intended, rewrite the snapshot with
`pytest --update-snapshots` (or FLIMCC_UPDATE_SNAPSHOTS=1) and commit it: the diff of the
snapshot is then part of your review.
"""

from pathlib import Path

import flimcc
from flimcc.pipeline import Pipeline
from flimcc.testing import assert_equivalent

MODEL = Path(__file__).parent / "models" / "seq2seqlite_random.onnx"
PIPELINE = "unroll-gru,fold-constants"


def test_compiled_graph_matches_snapshot(onnx_snapshot):
    compiled = Pipeline.parse(PIPELINE).run(flimcc.load(MODEL), verify=False).model
    onnx_snapshot(compiled, "seq2seqlite_unrolled")


def test_saving_and_reloading_changes_nothing(tmp_path):
    model = flimcc.load(MODEL)
    flimcc.save(model, tmp_path / "copy.onnx")
    assert_equivalent(MODEL, tmp_path / "copy.onnx", numeric=True)
